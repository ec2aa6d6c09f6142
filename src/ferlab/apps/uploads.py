"""Upload checks for the web service: request-body size and time limits, and image types told by
content."""

from __future__ import annotations

import json

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SIGNATURES = (  # (offset, magic bytes, type)
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),
    (0, b"BM", "image/bmp"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
)
IMAGE_TYPES = sorted({kind.removeprefix("image/").upper() for _, _, kind in _SIGNATURES})


def sniff_image_type(data: bytes) -> str | None:
    """The image media type that ``data`` starts like, whatever the client declared; or None."""
    for offset, magic, kind in _SIGNATURES:
        riff = kind != "image/webp" or data[:4] == b"RIFF"
        if riff and data[offset : offset + len(magic)] == magic:
            return kind
    return None


class BodyLimit:
    """ASGI middleware: answers 413 to a request whose body (declared or streamed) exceeds
    ``max_bytes``, and 408 to one whose body takes longer than ``max_seconds`` to arrive, before
    the application sees it; other bodies are passed on whole. The bodies of the requests in
    progress share ``in_flight_bytes`` (default: 16 times ``max_bytes``, at least 256 MiB): a
    request that would take more gets 503 with ``Retry-After``, so memory does not grow with
    the number of clients."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, max_seconds: float, in_flight_bytes: int | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.in_flight_bytes = max(in_flight_bytes or max(16 * max_bytes, 2**28), max_bytes)
        self._held = 0  # bytes of bodies in progress (the event loop is one thread)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        held = 0
        try:
            chunks: list[bytes] = []
            with anyio.move_on_after(self.max_seconds) as arrival:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    chunk = message.get("body", b"")
                    if held + len(chunk) > self.max_bytes:
                        await self._refuse(send)
                        return
                    if self._held + len(chunk) > self.in_flight_bytes:
                        await send_error(send, 503, BUSY, retry_after=1)
                        return
                    chunks.append(chunk)
                    held += len(chunk)
                    self._held += len(chunk)
                    if not message.get("more_body", False):
                        break
            if arrival.cancelled_caught:
                late = f"upload too slow: the body did not arrive within {self.max_seconds:g} s"
                await send_error(send, 408, late)
                return
            try:
                body = b"".join(chunks)
            except MemoryError:
                await send_error(send, 503, BUSY, retry_after=1)
                return
            chunks.clear()
            await self.app(scope, _replay(body, receive), send)
        finally:
            self._held -= held

    async def _refuse(self, send: Send) -> None:
        mib = self.max_bytes / 2**20
        limit = f"{mib:.3g} MiB" if mib >= 1 else f"{self.max_bytes} bytes"
        await send_error(send, 413, f"upload too large: the limit is {limit}")


BUSY = "the server holds too many uploads at once: try again later"


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` that gives ``body`` whole first, then what the client sends next."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_error(send: Send, status: int, message: str, *, retry_after: int = 0) -> None:
    """Answer ``{"error": message}`` with ``status`` from ASGI middleware, and close the
    connection (the rest of the request is not read); ``retry_after``: seconds, when above 0."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

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
    the application sees it; other bodies are passed on whole."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_seconds: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        body = bytearray()
        with anyio.move_on_after(self.max_seconds) as arrival:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                if len(body) > self.max_bytes:
                    await self._refuse(send)
                    return
                if not message.get("more_body", False):
                    break
        if arrival.cancelled_caught:
            late = f"upload too slow: the body did not arrive within {self.max_seconds:g} s"
            await send_error(send, 408, late)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        mib = self.max_bytes / 2**20
        limit = f"{mib:.3g} MiB" if mib >= 1 else f"{self.max_bytes} bytes"
        await send_error(send, 413, f"upload too large: the limit is {limit}")


async def send_error(send: Send, status: int, message: str) -> None:
    """Answer ``{"error": message}`` with ``status`` from ASGI middleware."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

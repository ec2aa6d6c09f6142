"""Who may call the web service: requests must name this server in ``Host`` (against DNS
rebinding) and come from its own page or an allowed ``Origin`` (against cross-site requests)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ferlab.apps.uploads import send_error
from ferlab.errors import ConfigError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")


def parse_origin(text: str) -> str:
    """``text`` as an origin, ``scheme://host[:port]`` in lower case; ConfigError if it is not."""
    try:
        parts = urlsplit(text.strip().lower())
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ConfigError(f"--allow-origin {text!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"--allow-origin {text!r}: expected http(s)://HOST[:PORT]")
    return f"{parts.scheme}://{parts.netloc}"


class HostOriginGuard:
    """ASGI middleware: 403 to a request whose ``Host`` names neither a loopback name, the bound
    address nor an allowed origin's host (any IP address when bound to all interfaces), or whose
    ``Origin`` is neither the server itself nor one of ``allow_origins``."""

    def __init__(self, app: ASGIApp, host: str, allow_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.origins = {parse_origin(origin) for origin in allow_origins}
        allowed = {urlsplit(origin).hostname for origin in self.origins}
        self.names = {*LOOPBACK_NAMES, host.strip("[]").lower(), *allowed}
        self.any_address = host in ANY_ADDRESS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            host = headers.get("host", "")
            origin = headers.get("origin")
            if not self._known_host(host):
                message = f"host {host!r} is not a name of this server (see --allow-origin)"
                await send_error(send, 403, message)
                return
            if origin is not None and not self._allowed_origin(origin, host):
                await send_error(send, 403, f"origin {origin!r} may not call this server")
                return
        await self.app(scope, receive, send)

    def _known_host(self, host: str) -> bool:
        if not host:
            return True  # not a browser: they always send one
        try:
            name = urlsplit(f"//{host}").hostname or ""
        except ValueError:
            return False
        if name in self.names:
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return self.any_address

    def _allowed_origin(self, origin: str, host: str) -> bool:
        if origin.lower() in self.origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        # the page this server sent
        return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


class ApiKeyGuard:
    """ASGI middleware: 401 to a request under ``prefix`` that does not carry ``key`` in the
    ``X-API-Key`` header or as ``Authorization: Bearer``, before its body is read."""

    def __init__(self, app: ASGIApp, key: str, prefix: str = "/v1/") -> None:
        self.app = app
        self.key = key.encode()  # compared with the header's bytes: a UTF-8 key matches
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and scope["path"].startswith(self.prefix)
            and not key_matches(Headers(scope=scope), self.key)
        ):
            await send_error(send, 401, KEY_REFUSED)
            return
        await self.app(scope, receive, send)


API_KEY_HEADER = "X-API-Key"
KEY_REFUSED = f"missing or wrong API key (header {API_KEY_HEADER} or Authorization: Bearer)"


def key_matches(headers: Headers, key: bytes) -> bool:
    """Whether ``headers`` carry ``key`` in ``X-API-Key`` or as ``Authorization: Bearer``
    (compared in constant time)."""
    given = headers.get(API_KEY_HEADER)
    if given is None:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        given = credentials.strip() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(given.encode("latin-1", "replace"), key)  # header bytes as sent

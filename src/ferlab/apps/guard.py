"""Who may call the web service: requests must name this server in ``Host`` (against DNS
rebinding) and come from its own page or an allowed ``Origin`` (against cross-site requests)."""

from __future__ import annotations

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
            return urlsplit(origin).netloc.lower() == host.lower()  # the page this server sent
        except ValueError:
            return False

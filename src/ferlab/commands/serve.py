"""``ferlab serve``: the web service and its page, on this machine only unless told otherwise."""

from __future__ import annotations

import argparse
import errno
import math
import socket
import sys
from typing import Any

from ferlab.commands.recognizer_options import add_recognizer_options, face_options
from ferlab.errors import ConfigError

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "serve",
        help="web service and page: predictions, heatmaps, webcam",
        description="Serve POST /v1/predict, POST /v1/explain, GET /v1/models, GET /healthz, the "
        "web page at / and the API docs at /docs. With --api-key (or FERLAB_API_KEY) every /v1 "
        "request needs that key in the X-API-Key header or as Authorization: Bearer. Requests "
        "naming another host than the bound address or localhost, and requests from other web "
        "pages' origins, get 403 unless --allow-origin names them.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="address to bind (default: 127.0.0.1, this machine)",
    )
    parser.add_argument("--port", type=int, default=8000, metavar="N", help="default: 8000")
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help="require this key on /v1 requests (default: $FERLAB_API_KEY; none when unset)",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin, http(s)://HOST[:PORT], whose pages may call the API (its host is "
        "then also accepted in the Host header); repeatable",
    )
    add_recognizer_options(parser, detect=False)
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=10.0,
        metavar="MB",
        help="largest request body in MiB (default: 10)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds a request may take before it gets 504 (default: 30)",
    )
    parser.add_argument(
        "--explain-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="the same for /v1/explain, which runs one heatmap at a time (default: 120)",
    )
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ferlab.apps.guard import parse_origin
    from ferlab.apps.server import API_KEY_ENV, ServerSettings, create_app

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535, got {args.port}")
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb * 2**20 >= 1):
        given = args.max_upload_mb
        raise ConfigError(f"--max-upload-mb must be a number of MiB above 0, got {given:g}")
    settings = ServerSettings(
        max_upload_bytes=round(args.max_upload_mb * 2**20),
        timeout_s=args.timeout,
        explain_timeout_s=args.explain_timeout,
        host=args.host,
        allow_origins=tuple(parse_origin(origin) for origin in args.allow_origin),
        **({"api_key": args.api_key} if args.api_key else {}),
    )
    check_port_free(args.host, args.port)
    if args.host not in LOOPBACK and settings.api_key is None:
        print(
            f"ferlab: warning: listening on {args.host} without an API key "
            f"(use --api-key or set {API_KEY_ENV} to require one)",
            file=sys.stderr,
        )
    options = face_options(args)
    app = create_app(
        args.model, settings, options=options, backend=args.backend, prior_tau=args.prior_tau
    )
    uvicorn.run(app, host=args.host, port=args.port, timeout_keep_alive=5)
    return 0


def check_port_free(host: str, port: int) -> None:
    """Raise ConfigError when ``host:port`` cannot be bound (in use, or not this machine's
    address), before the model is loaded."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot resolve this address ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} is in use on {host}; stop what holds it or give --port N"
                ) from None
            problem = (exc.strerror or type(exc).__name__).lower()
            where = f"--host {host} --port {port}"
            raise ConfigError(f"{where}: cannot listen there ({problem})") from None

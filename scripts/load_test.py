"""Load test of the web service: N clients post a photo to /v1/predict for T seconds each, one
request after another; prints requests/s, latency percentiles and the error count (exit code 1
when any request failed).

    python scripts/load_test.py --model runs/demo [--clients 4] [--seconds 10]
    python scripts/load_test.py --url http://127.0.0.1:8000 [--api-key KEY]

Without --url it starts `ferlab serve` on a free loopback port in a subprocess and stops it after.
Needs httpx (pip install -e '.[test]').
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

DEFAULT_PHOTO = Path(__file__).resolve().parents[1].parent / "shared/data/photos/astronaut.png"


@contextmanager
def local_server(model: str, backend: str, startup_s: float = 120) -> Iterator[str]:
    """`ferlab serve --model MODEL` on a free port until the block ends; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "ferlab", "serve", "--model", model, "--backend", backend]
    process = subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                raise SystemExit(f"load_test: ferlab serve exited with code {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"load_test: no answer from {url} after {startup_s:g} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


async def client(
    http: httpx.AsyncClient, url: str, photo: bytes, until: float, latencies: list[float]
) -> list[str]:
    """Requests one after another until ``until``; latencies (s) of the good ones, the errors."""
    errors = []
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            response = await http.post(url, files={"file": ("photo", photo)})
        except httpx.HTTPError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            continue
        if response.status_code == 200:
            latencies.append(time.perf_counter() - started)
        else:
            errors.append(f"{response.status_code}: {response.text[:200]}")
    return errors


async def load(
    url: str, photo: bytes, clients: int, seconds: float, api_key: str | None
) -> tuple[list[float], list[str], float]:
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as http:
        warm = await http.post(f"{url}/v1/predict", files={"file": ("photo", photo)})
        if warm.status_code != 200:
            raise SystemExit(f"load_test: warm-up request got {warm.status_code}: {warm.text}")
        latencies: list[float] = []
        started = time.perf_counter()
        until = started + seconds
        jobs = [client(http, f"{url}/v1/predict", photo, until, latencies) for _ in range(clients)]
        errors = [error for found in await asyncio.gather(*jobs) for error in found]
        return latencies, errors, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--model", help="start `ferlab serve --model MODEL` locally")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--api-key", default=os.environ.get("FERLAB_API_KEY"))
    args = parser.parse_args()
    photo = args.photo.read_bytes()

    def run(url: str) -> tuple[list[float], list[str], float]:
        return asyncio.run(load(url, photo, args.clients, args.seconds, args.api_key))

    if args.url:
        latencies, errors, elapsed = run(args.url.rstrip("/"))
    else:
        with local_server(args.model, args.backend) as url:
            latencies, errors, elapsed = run(url)
    ms = 1000 * np.array(latencies or [np.nan])
    print(
        f"{args.clients} clients x {args.seconds:g} s, POST /v1/predict with {args.photo.name} "
        f"({len(photo) / 1024:.0f} KiB); {platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(f"requests    {len(latencies) + len(errors)}  ({len(latencies) / elapsed:.1f}/s ok)")
    print(
        f"latency ms  p50 {np.percentile(ms, 50):.0f}  p95 {np.percentile(ms, 95):.0f}  "
        f"p99 {np.percentile(ms, 99):.0f}  max {ms.max():.0f}"
    )
    print(f"errors      {len(errors)}")
    for error in sorted(set(errors))[:5]:
        print(f"  {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

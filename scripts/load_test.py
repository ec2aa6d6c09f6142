"""Load test of the web service: N clients post a photo to /v1/predict for T seconds each, one
request after another; prints requests/s, latency percentiles and the error count (exit code 1
when any request failed).

    python scripts/load_test.py --model runs/demo [--clients 4] [--seconds 10]
    python scripts/load_test.py --url http://127.0.0.1:8000 [--api-key KEY]
    python scripts/load_test.py --model default --hostile [--bombs 16] [--explains 3]

--hostile: while --clients post the photo to /v1/predict (one request every --interval s each),
first --bombs clients at once post a PNG of 8900x8900 pixels that compresses to about 230 KB and
--slow clients trickle the photo over --slow-seconds (40, past the server's 30 s limit); then
--explains clients ask for ScoreCAM heatmaps for --seconds. It prints the server's peak and
final memory (VmHWM and VmRSS from /proc; Linux), the /v1/predict latency in each phase and the
answers by status; exit code 1 for any answer but 200 and the intended 408, 413, 429 and 503.
Loopback only: the server it starts, or --url on 127.0.0.1 with --server-pid for its memory.

Without --url it starts `ferlab serve` on a free loopback port in a subprocess and stops it after.
Needs httpx (pip install -e '.[test]').
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

DEFAULT_PHOTO = Path(__file__).resolve().parents[1].parent / "shared/data/photos/astronaut.png"
BOMB_SIDE = 8900  # 79.2 MP, under the server's 80 MP limit
INTENDED = {"200", "408", "413", "429", "503"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@contextmanager
def local_server(model: str, backend: str, startup_s: float = 120) -> Iterator[tuple[str, int]]:
    """`ferlab serve --model MODEL` on a free port until the block ends; yields its URL and
    process id."""
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
        yield url, process.pid
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


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A black side x side RGB PNG: 79 megapixels in about 230 KB."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def memory_mib(pid: int) -> tuple[float, float]:
    """Peak and current resident memory of process ``pid`` in MiB (VmHWM, VmRSS)."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["VmRSS"].split()[0]) / 1024


async def post(http: httpx.AsyncClient, url: str, data: bytes) -> str:
    """The status of one upload, or the name of the transport error."""
    try:
        return str((await http.post(url, files={"file": ("upload", data)})).status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def slow_upload(url: str, photo: bytes, seconds: float, api_key: str | None) -> str:
    """``photo`` posted to /v1/predict in 20 pieces over ``seconds``; the status line's code."""
    request = httpx.Request("POST", f"{url}/v1/predict", files={"file": ("photo", photo)})
    body, target = request.read(), httpx.URL(url)
    key = f"X-API-Key: {api_key}\r\n" if api_key else ""
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n{key}"
        f"Content-Type: {request.headers['content-type']}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(target.host, target.port)

    async def trickle() -> None:
        writer.write(head.encode())
        for piece in np.array_split(np.frombuffer(body, np.uint8), 20):
            await asyncio.sleep(seconds / 20)
            writer.write(piece.tobytes())
            await writer.drain()

    sending = asyncio.create_task(trickle())
    try:
        status_line = await reader.readline()
    finally:
        sending.cancel()
        writer.close()
    return status_line.split()[1].decode() if status_line.startswith(b"HTTP/") else "no answer"


async def hostile(url: str, pid: int, photo: bytes, args: argparse.Namespace) -> int:
    """The hostile profile (see the module docstring); prints its report, returns the exit code."""
    bomb = bomb_png()
    answers: Counter[tuple[str, str]] = Counter()
    latencies: dict[str, list[float]] = defaultdict(list)
    phase, stop, samples = ["bombs"], asyncio.Event(), []
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    limits = httpx.Limits(max_connections=None)
    load = os.getloadavg()[0]
    async with httpx.AsyncClient(headers=headers, timeout=120, limits=limits) as http:
        if (warm := await post(http, f"{url}/v1/predict", photo)) != "200":
            raise SystemExit(f"load_test: warm-up request got {warm}")
        before = memory_mib(pid)[1]

        async def predictor() -> None:
            while not stop.is_set():
                started, current = time.perf_counter(), phase[0]
                status = await post(http, f"{url}/v1/predict", photo)
                answers["predict", status] += 1
                if status == "200":
                    latencies[current].append(time.perf_counter() - started)
                await asyncio.sleep(max(0.0, started + args.interval - time.perf_counter()))

        async def explainer(until: float) -> None:
            while time.perf_counter() < until:
                status = await post(http, f"{url}/v1/explain?method=scorecam", photo)
                answers["explain", status] += 1
                if status == "429":
                    await asyncio.sleep(1)

        async def sampler() -> None:
            while not stop.is_set():
                samples.append(memory_mib(pid)[1])
                await asyncio.sleep(0.05)

        background = [asyncio.create_task(predictor()) for _ in range(args.clients)]
        background.append(asyncio.create_task(sampler()))
        slow = [slow_upload(url, photo, args.slow_seconds, args.api_key) for _ in range(args.slow)]
        slowed = asyncio.gather(*slow)
        bombs = await asyncio.gather(
            *(post(http, f"{url}/v1/predict", bomb) for _ in range(args.bombs))
        )
        answers.update(("bomb", status) for status in bombs)
        phase[0] = "explains"
        until = time.perf_counter() + args.seconds
        await asyncio.gather(*(explainer(until) for _ in range(args.explains)))
        answers.update(("slow", status) for status in await slowed)
        stop.set()
        await asyncio.gather(*background)
        await asyncio.sleep(2)
        peak, after = memory_mib(pid)
    print(
        f"hostile: {args.bombs} concurrent {BOMB_SIDE}x{BOMB_SIDE} PNG uploads "
        f"({len(bomb) / 1024:.0f} KiB each) and {args.slow} uploads trickled over "
        f"{args.slow_seconds:g} s, then {args.explains} ScoreCAM clients for {args.seconds:g} s; "
        f"{args.clients} /v1/predict clients with {args.photo.name} throughout, one request "
        f"every {args.interval:g} s each"
    )
    print(f"machine      {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}")
    print(
        f"server RSS   before {before:.0f} MiB  peak {max(peak, *samples):.0f} MiB (VmHWM)  "
        f"after {after:.0f} MiB"
    )
    for name, seen in latencies.items():
        ms = 1000 * np.array(seen)
        print(
            f"predict ms   during {name}: n {len(ms)}  p50 {np.percentile(ms, 50):.0f}  "
            f"p99 {np.percentile(ms, 99):.0f}  max {ms.max():.0f}"
        )
    kinds = sorted({kind for kind, _ in answers})
    for kind in kinds:
        counts = "  ".join(
            f"{status}: {n}" for (k, status), n in sorted(answers.items()) if k == kind
        )
        print(f"{kind:<12} {counts}")
    unintended = sum(n for (_, status), n in answers.items() if status not in INTENDED)
    print(f"unintended   {unintended}")
    return 1 if unintended else 0


def report(
    args: argparse.Namespace,
    photo: bytes,
    latencies: list[float],
    errors: list[str],
    elapsed: float,
) -> int:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--model", help="start `ferlab serve --model MODEL` locally")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO)
    parser.add_argument("--api-key", default=os.environ.get("FERLAB_API_KEY"))
    hostile_options = parser.add_argument_group("hostile profile")
    hostile_options.add_argument("--hostile", action="store_true")
    hostile_options.add_argument("--bombs", type=int, default=16)
    hostile_options.add_argument("--slow", type=int, default=4)
    hostile_options.add_argument("--slow-seconds", type=float, default=40.0)
    hostile_options.add_argument("--explains", type=int, default=3)
    hostile_options.add_argument(
        "--interval", type=float, default=0.5, help="seconds between a predict client's requests"
    )
    hostile_options.add_argument("--server-pid", type=int, help="with --url: for its memory")
    args = parser.parse_args()
    photo = args.photo.read_bytes()

    def run(url: str, pid: int | None) -> int:
        if args.hostile:
            return asyncio.run(hostile(url, pid, photo, args))
        latencies, errors, elapsed = asyncio.run(
            load(url, photo, args.clients, args.seconds, args.api_key)
        )
        return report(args, photo, latencies, errors, elapsed)

    if args.model:
        with local_server(args.model, args.backend) as (url, pid):
            return run(url, pid)
    if args.hostile and (httpx.URL(args.url).host not in LOOPBACK or args.server_pid is None):
        parser.error("--hostile with --url: only a server on this machine, given --server-pid")
    return run(args.url.rstrip("/"), args.server_pid)


if __name__ == "__main__":
    sys.exit(main())

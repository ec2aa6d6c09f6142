"""``ferlab video``: faces tracked through video files, with annotated copies and timelines."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferlab.commands.engine_option import add_engine_options
from ferlab.commands.exist_ok_option import add_exist_ok_option
from ferlab.commands.recognizer_options import (
    add_recognizer_options,
    add_top_k_option,
    load_recognizer,
    recognizer_options,
)
from ferlab.errors import ConfigError, FerlabError
from ferlab.outputs import check_new, check_not_input, check_writable
from ferlab.progress import add_quiet_option, bar

if TYPE_CHECKING:
    from ferlab.apps.video import VideoSummary


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "video",
        help="track faces and their expressions through video files or from a camera",
        description="Detect faces in every frame, keep an id per person, smooth each track's "
        "probabilities over time; write an annotated video, a CSV timeline (one row per frame "
        "and track, or one row for a frame without a face) and a plot per track next to the CSV. "
        "With --camera it records from a camera, no window needed, until --seconds or Ctrl-C. "
        "It needs somewhere to write: --out, --csv or --out-dir; files there from an earlier "
        "run are written over only with --exist-ok.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "videos",
        nargs="*",
        type=Path,
        default=[],
        metavar="IN",
        help="video files OpenCV can decode",
    )
    source.add_argument(
        "--camera",
        metavar="CAM",
        help="record from a camera instead: an index (0: the first), a device path or a stream "
        "URL; Ctrl-C stops it and keeps the outputs",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        metavar="N",
        help="stop after N seconds of video (N x the frame rate frames)",
    )
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="annotated video (.mp4, .mov, .mkv or .avi)"
    )
    parser.add_argument(
        "--csv",
        type=Path,
        metavar="FILE",
        help="timeline CSV; the plots go beside it as <stem>-track<id>.png",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="for several videos: each one's timeline as DIR/<stem>.csv, plots beside it",
    )
    parser.add_argument(
        "--annotated-video",
        action="store_true",
        help="with --out-dir: also each annotated video as DIR/<stem>.mp4",
    )
    add_stream_options(parser)
    parser.add_argument(
        "--batch-size", type=int, default=64, metavar="N", help="faces per model batch"
    )
    add_exist_ok_option(parser, "the --out, --csv or --out-dir files")
    add_quiet_option(parser)
    add_engine_options(parser)
    parser.set_defaults(handler=_run_video)


def add_stream_options(parser: argparse.ArgumentParser) -> None:
    """The model, face and frame-loop options that ``video`` and ``webcam`` share."""
    add_recognizer_options(parser, detect=False)
    parser.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="detect faces every N frames (sooner when a face is new, lost or unsure); the "
        "frames between classify each face at the box its track predicts (default: 1)",
    )
    parser.add_argument(
        "--smooth",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="time constant of the exponential smoothing per track; 0: off (default: 0.5)",
    )
    add_top_k_option(parser, "drawn per face")


def _run_video(args: argparse.Namespace) -> int:
    from ferlab.apps.capture import interrupt_stops, open_camera, open_video
    from ferlab.apps.video import process_video
    from ferlab.inference.stream import check_stream_options

    if args.camera is None and not args.videos:
        raise ConfigError("nothing to read: give video files or --camera CAM")
    if args.seconds is not None and not 0 < args.seconds < math.inf:
        raise ConfigError(f"--seconds must be a finite number above 0, got {args.seconds:g}")
    check_stream_options(args.every, args.smooth, args.batch_size)
    jobs = _jobs(args)
    _check_outputs(jobs, args.exist_ok)
    targets = [path for job in jobs for path in (job["out"], job["csv_path"]) if path is not None]
    for folder in sorted({target.parent for target in targets}):
        check_writable(folder)
    if args.camera is None and (len(jobs) > 1 or args.engine == "ray"):
        if args.seconds is not None:
            raise ConfigError("--seconds is for one video or a camera")
        return _run_videos(args, jobs)
    out, csv_path = jobs[0]["out"], jobs[0]["csv_path"]
    video = open_video(jobs[0]["path"]) if args.camera is None else open_camera(args.camera)
    limit = None if args.seconds is None else _frame_limit(args.seconds, video.fps)
    recognizer = load_recognizer(args)
    stops = contextlib.nullcontext() if args.camera is None else interrupt_stops(video)
    total = video.frame_count if limit is None else min(limit, video.frame_count or limit)
    with _terminate_as_exit(), bar("video", total or None, unit="frames") as line, stops:
        summary = process_video(
            recognizer,
            video,
            out=out,
            csv_path=csv_path,
            every=args.every,
            smooth=args.smooth,
            batch_size=args.batch_size,
            top_k=args.top_k,
            max_frames=limit,
            on_frame=lambda _: line.advance(),
        )
    _print_summary(args, video.name, summary)
    return 1 if _broke_off(video.name, summary) else 0


def _frame_limit(seconds: float, fps: float) -> int | None:
    """The frames in the first ``seconds`` of a video at ``fps``; None for more than any video
    has."""
    frames = seconds * fps
    return max(1, round(frames)) if frames < sys.maxsize else None


def _broke_off(name: str | Path, summary: VideoSummary) -> bool:
    """Say so and return True where ``summary``'s stream ended before its declared frames."""
    if not summary.broke_off:
        return False
    print(
        f"ferlab: error: {name}: the stream broke off: {summary.frames} of {summary.declared} "
        "declared frames read (the outputs hold those)",
        file=sys.stderr,
    )
    return True


def _jobs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per video, ``video_job``'s path and outputs."""
    if args.camera is not None:
        if args.out_dir is not None:
            raise ConfigError("--camera records one stream: use --out and --csv, not --out-dir")
        return [{"path": None, "out": args.out, "csv_path": args.csv}]
    if args.out_dir is None:
        if args.annotated_video:
            raise ConfigError("--annotated-video writes into --out-dir; give --out-dir")
        if len(args.videos) > 1 and (args.out is not None or args.csv is not None):
            raise ConfigError("--out and --csv name one video's outputs; use --out-dir for several")
        return [{"path": path, "out": args.out, "csv_path": args.csv} for path in args.videos]
    if args.out is not None or args.csv is not None:
        raise ConfigError("--out-dir names the outputs itself; drop --out and --csv")
    stems = [path.stem for path in args.videos]
    if len(set(stems)) < len(stems):
        raise ConfigError("--out-dir: two videos have the same name; give them separate runs")
    return [
        {
            "path": path,
            "out": args.out_dir / f"{path.stem}.mp4" if args.annotated_video else None,
            "csv_path": args.out_dir / f"{path.stem}.csv",
        }
        for path in args.videos
    ]


def _check_outputs(jobs: list[dict[str, Any]], exist_ok: bool) -> None:
    """Refuse a run that writes nothing, writes over its video, or over earlier outputs
    without ``exist_ok``."""
    if all(job["out"] is None and job["csv_path"] is None for job in jobs):
        raise ConfigError(
            "nothing would be written: give --out FILE.mp4 (annotated video) and/or --csv "
            "FILE.csv (timeline), or --out-dir DIR for several videos"
        )
    from ferlab.apps.video import check_video_outputs, timeline_plots

    for job in jobs:
        check_video_outputs(job["out"], job["csv_path"])
        targets = [path for path in (job["out"], job["csv_path"]) if path is not None]
        for target in targets:
            if job["path"] is not None:
                check_not_input(target, {job["path"].resolve()})
        if job["csv_path"] is not None:
            targets += timeline_plots(job["csv_path"])
        check_new(targets, exist_ok)


def _run_videos(args: argparse.Namespace, jobs: list[dict[str, Any]]) -> int:
    """Every video in this process one after another, or one Ray task each with --engine ray;
    a video that fails is reported and the others go on."""
    from ferlab.apps.video import video_job

    options = recognizer_options(args)
    settings = {
        "every": args.every,
        "smooth": args.smooth,
        "batch_size": args.batch_size,
        "top_k": args.top_k,
    }
    tasks = [{**job, "options": options, **settings} for job in jobs]
    if args.engine == "ray":
        from ferlab.inference.ray_engine import run_tasks

        done = run_tasks(video_job, tasks, address=args.ray_address)
    else:
        done = _one_by_one(video_job, tasks)
    failed = broken = 0
    with bar("videos", len(jobs), unit="videos") as line:
        for index, summary, error in done:
            line.advance()
            if error is not None:
                failed += 1
                line.note(f"{failed} failed")
                print(f"ferlab: error: {error}", file=sys.stderr)
            else:
                _print_summary(args, jobs[index]["path"], summary)
                broken += _broke_off(jobs[index]["path"], summary)
    if failed:
        print(f"ferlab: {failed} of {len(jobs)} videos failed", file=sys.stderr)
    return 2 if failed == len(jobs) else 1 if failed or broken else 0


def _one_by_one(
    function: Callable[..., Any], tasks: list[dict[str, Any]]
) -> Iterator[tuple[int, Any, str | None]]:
    for index, task in enumerate(tasks):
        try:
            yield index, function(**task), None
        except FerlabError as exc:
            yield index, None, str(exc)


def _print_summary(args: argparse.Namespace, path: str | Path, summary: VideoSummary) -> None:
    width, height = summary.size
    detection = "every frame" if args.every == 1 else f"every {args.every} frames at most"
    smoothing = f"{args.smooth:g} s" if args.smooth > 0 else "off"
    print(
        f"{path}: {summary.frames} frames, {width}x{height}, {summary.fps:g} fps "
        f"({summary.frames / summary.fps:.1f} s); detection {detection}; smoothing {smoothing}"
    )
    print(f"{'track':>5}  {'frames':>6}  {'seconds':>11}  label (most frames)")
    for track, timeline in summary.tracks.items():
        span = f"{timeline.first:.2f}-{timeline.last:.2f}"
        print(f"{track:>5}  {timeline.frames:>6}  {span:>11}  {timeline.label}")
    print(f"frames without a face: {summary.no_face_frames}")
    print(
        f"{summary.frames} frames in {summary.seconds:.1f} s: {summary.frames_per_s:.1f} frames/s"
    )
    for written in summary.written:
        print(f"wrote {written}")


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """SIGTERM ends the block like Ctrl-C does, through the partial files' clean-up: one line,
    exit code 143."""

    def terminate(signum: int, frame: Any) -> None:
        print("ferlab: terminated", file=sys.stderr)
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

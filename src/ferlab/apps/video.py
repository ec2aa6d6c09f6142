"""A video file through the frame loop: annotated video, timeline CSV and plots per track.

Outputs are written under hidden ``.partial`` names beside their targets and renamed into place
only when the whole video is done, so an error or an interrupt leaves no half-written file, nor a
folder made for them.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferlab.apps.capture import Capture, open_video, opencv_path
from ferlab.apps.timeline import TrackTimeline, add_frame, plot_timeline
from ferlab.errors import ConfigError, DataError, OutputError, os_error_line
from ferlab.inference.image_results import FrameResult, csv_header
from ferlab.inference.recognizer import Recognizer
from ferlab.inference.stream import check_stream_options

FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


@dataclass
class VideoSummary:
    """What a video gave: frame count and size, tracks, faceless frames, time taken, files;
    ``declared``: the frames its source said it had (up to the frames asked for; 0: unknown)."""

    frames: int = 0
    declared: int = 0
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    tracks: dict[int, TrackTimeline] = field(default_factory=dict)
    no_face_frames: int = 0
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def broke_off(self) -> bool:
        """Whether over 1% of the declared frames could not be read (a declared count may be a
        little off)."""
        return self.frames < self.declared - self.declared // 100


def check_video_out(path: Path) -> None:
    """Raise DataError unless ``path`` has a video extension this module can write and a name
    OpenCV can take."""
    if path.suffix.lower() not in FOURCC:
        raise DataError(f"{path}: cannot write this video type; use {', '.join(sorted(FOURCC))}")
    opencv_path(path)


def check_video_outputs(out: Path | None, csv_path: Path | None) -> None:
    """Raise DataError for a video ``out`` this module cannot write, ConfigError for a timeline
    not named ``.csv`` (so the two can never be the same file)."""
    if out is not None:
        check_video_out(out)
    if csv_path is not None and csv_path.suffix.lower() != ".csv":
        raise ConfigError(f"{csv_path}: the timeline is a CSV file; give a name ending in .csv")
    for path in (out, csv_path):
        if path is not None and path.is_dir():
            raise OutputError(f"{path}: a folder, not a file; name the file to write")


def timeline_plots(csv_path: Path) -> list[Path]:
    """The track plots an earlier run wrote beside ``csv_path`` (``<stem>-track<id>.png``)."""
    pattern = re.compile(re.escape(csv_path.stem) + r"-track\d+\.png")
    folder = csv_path.parent
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if pattern.fullmatch(path.name))


def process_video(
    recognizer: Recognizer,
    video: Capture,
    *,
    out: Path | None = None,
    csv_path: Path | None = None,
    every: int = 1,
    smooth: float = 0.5,
    batch_size: int = 64,
    top_k: int = 3,
    max_frames: int | None = None,
    on_frame: Callable[[FrameResult], None] | None = None,
) -> VideoSummary:
    """Run ``video`` (its first ``max_frames`` frames, where given) through the frame loop, with
    each frame's time from ``video.time``; write the annotated video to ``out`` and the timeline
    to ``csv_path`` with one plot per track beside it (``<csv stem>-track<id>.png``, the plots of
    an earlier run's other tracks removed)."""
    check_video_outputs(out, csv_path)
    check_stream_options(every, smooth, batch_size)
    made = _missing_folders([path for path in (out, csv_path) if path is not None])
    partials: dict[Path, Path] = {}
    try:
        frames = video.frames(max_frames)
        summary = _run(
            recognizer,
            video,
            frames,
            out,
            csv_path,
            partials,
            every,
            smooth,
            batch_size,
            top_k,
            on_frame,
        )
    except BaseException:
        video.close()
        for partial in partials.values():
            partial.unlink(missing_ok=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    count = video.frame_count
    summary.declared = count if max_frames is None else min(count, max_frames)
    for target, partial in partials.items():
        os.replace(partial, target)
        summary.written.append(target)
    if csv_path is not None:
        for plot in timeline_plots(csv_path):
            if plot not in partials:
                plot.unlink(missing_ok=True)
    return summary


def video_job(path: Path, options: dict[str, Any], **settings: Any) -> VideoSummary:
    """One video's whole job, for a worker process: open it, load the Recognizer that
    ``options`` (``Recognizer.load``'s arguments) describe and ``process_video`` it with
    ``settings`` (its keyword arguments)."""
    return process_video(Recognizer.load(**options), open_video(path), **settings)


def _run(
    recognizer: Recognizer,
    video: Capture,
    frames: Iterator[np.ndarray],
    out: Path | None,
    csv_path: Path | None,
    partials: dict[Path, Path],
    every: int,
    smooth: float,
    batch_size: int,
    top_k: int,
    on_frame: Callable[[FrameResult], None] | None,
) -> VideoSummary:
    """Write every output to its partial file (registered in ``partials``)."""
    classes = recognizer.classes
    summary = VideoSummary(fps=video.fps)
    started = time.perf_counter()
    video_partial = None if out is None else _partial(out, partials)
    with contextlib.ExitStack() as stack:
        table = None
        if csv_path is not None:
            handle = stack.enter_context(_partial(csv_path, partials).open("w", newline=""))
            table = csv.writer(handle)
            table.writerow(csv_header(classes, recognizer.va))
        writer = None
        results = recognizer.stream(
            frames,
            fps=video.fps,
            every=every,
            smooth=smooth,
            batch_size=batch_size,
            clock=video.time,
        )
        for result in results:
            if out is not None and video_partial is not None:
                if writer is None:
                    writer = _video_writer(out, video_partial, video.fps, result)
                    stack.callback(writer.release)
                writer.write(result.annotate(top_k=top_k))
            if table is not None:
                table.writerows(result.csv_rows(classes, recognizer.va, video.name))
            add_frame(summary.tracks, result, classes)
            summary.frames += 1
            summary.no_face_frames += not result.faces
            summary.size = (result.frame.shape[1], result.frame.shape[0])
            if on_frame is not None:
                on_frame(result)
    if summary.frames == 0:
        raise DataError(f"{video.name}: no frame could be decoded")
    summary.seconds = time.perf_counter() - started
    if csv_path is not None:
        for track, timeline in summary.tracks.items():
            plot = csv_path.with_name(f"{csv_path.stem}-track{track}.png")
            plot_timeline(_partial(plot, partials), track, timeline, classes)
    return summary


def _missing_folders(targets: list[Path]) -> list[Path]:
    """The folders above ``targets`` that do not exist yet, deepest first."""
    missing = {folder for target in targets for folder in target.parents if not folder.exists()}
    return sorted(missing, key=lambda folder: len(folder.parts), reverse=True)


def _partial(target: Path, partials: dict[Path, Path]) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(os_error_line(exc, target.parent)) from None
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    partials[target] = partial
    return partial


def _video_writer(out: Path, partial: Path, fps: float, first: FrameResult) -> cv2.VideoWriter:
    height, width = first.frame.shape[:2]
    fourcc = cv2.VideoWriter.fourcc(*FOURCC[out.suffix.lower()])
    writer = cv2.VideoWriter(opencv_path(partial), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise DataError(f"{out}: OpenCV cannot write a {out.suffix} video here")
    return writer

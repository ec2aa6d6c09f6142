"""Video files and cameras opened with OpenCV.

OpenCV's and FFmpeg's own messages on stderr are silenced while a source is opened (FFmpeg's for
the whole process, through ``OPENCV_FFMPEG_LOGLEVEL``): a source that cannot be opened is reported
once, as a DataError.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import warnings
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
import cv2
import numpy as np

from ferlab.errors import DataError

DEFAULT_FPS = 30.0


@dataclass
class Capture:
    """An open video source: ``fps`` (``DEFAULT_FPS`` where the source does not say) and
    ``frame_count`` (0 where unknown, as for cameras); ``stopped``: set to end ``frames`` after the
    frame being read; ``timestamps``: whether to take each frame's time from the source (see
    ``time``)."""

    name: str
    capture: cv2.VideoCapture
    fps: float
    frame_count: int
    timestamps: bool = True
    stopped: bool = field(default=False, init=False)
    _times: array[float] = field(default_factory=lambda: array("d"), init=False, repr=False)

    def frames(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """BGR frames until the source ends, ``limit`` frames were read, ``stopped`` is set or the
        consumer stops; the source is then closed."""
        try:
            for count in itertools.count():
                if self.stopped or count == limit:
                    return
                ok, frame = self.capture.read()
                if not ok:
                    return
                self._note_time(count)
                yield frame
        finally:
            self.close()

    def time(self, index: int) -> float:
        """Seconds from the first frame to frame ``index`` (read already): the source's own
        timestamp, so that a variable frame rate is followed, where the source gives consistent
        ones (0 at the first frame, rising from frame to frame); else ``index / fps``, or 1 / fps
        per frame after the last consistent timestamp."""
        return self._times[index] if self.timestamps else index / self.fps

    def close(self) -> None:
        self.capture.release()

    def _note_time(self, index: int) -> None:
        """Keep the time of frame ``index``, just read. Some backends give the position of the
        next frame or nothing (0, -1): a first frame not at 0 turns ``timestamps`` off."""
        if not self.timestamps:
            return
        seconds = self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000
        if index == 0:
            self.timestamps = seconds == 0
            if self.timestamps:
                self._times.append(0.0)
            return
        previous = self._times[-1]
        self._times.append(seconds if previous < seconds < math.inf else previous + 1 / self.fps)


def opencv_path(path: Path) -> str:
    """``path`` as the text OpenCV's video functions take, or DataError: a name that is not
    valid UTF-8 (undecodable bytes) would crash OpenCV itself."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"{path}: OpenCV cannot open a video whose file name is not valid UTF-8; rename it"
        ) from None
    return text


def open_video(path: str | Path) -> Capture:
    """Open a video file, or raise DataError naming it."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a video file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    name = opencv_path(path)
    with _quiet():
        capture = cv2.VideoCapture(name)
    if not capture.isOpened():
        raise DataError(f"{path}: not a video OpenCV can decode")
    fps = capture.get(cv2.CAP_PROP_FPS)
    if not 0 < fps <= 1000:
        warnings.warn(f"{path}: frame rate unknown, taking {DEFAULT_FPS:g} fps", stacklevel=2)
        fps = DEFAULT_FPS
    count = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
    return Capture(str(path), capture, fps, count)


def open_camera(camera: int | str) -> Capture:
    """Open a camera by index (0 is the first; "0" too) or device path/URL, or raise DataError."""
    if isinstance(camera, str) and camera.isdigit():
        camera = int(camera)
    with _quiet():
        capture = cv2.VideoCapture(camera)
    if not capture.isOpened():
        capture.release()
        raise DataError(f"camera {camera}: cannot open it (no such device, or busy)")
    fps = capture.get(cv2.CAP_PROP_FPS)
    fps = fps if 0 < fps <= 1000 else DEFAULT_FPS
    return Capture(f"camera {camera}", capture, fps, 0, timestamps=False)


@contextlib.contextmanager
def interrupt_stops(source: Capture) -> Iterator[None]:
    """Within the block, a first Ctrl-C (SIGINT) ends ``source`` after the frame being read, so
    that what came before is kept; a second one interrupts as usual."""

    def stop(signum: int, frame: FrameType | None) -> None:
        if source.stopped:
            raise KeyboardInterrupt
        source.stopped = True

    previous = signal.signal(signal.SIGINT, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """OpenCV logs errors only, for the duration of the block."""
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)

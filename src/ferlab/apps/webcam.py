"""A live camera in a window: the same frame loop as video files, drawn as frames arrive."""

from __future__ import annotations

import os
import sys

import cv2

from ferlab.apps.capture import Capture
from ferlab.errors import ConfigError
from ferlab.inference.recognizer import Recognizer

WINDOW = "ferlab webcam (q or Esc to quit)"
_ELSEWHERE = (
    "record with `ferlab video --camera 0 --out rec.mp4`, or use `ferlab serve` and a browser"
)


def check_display() -> None:
    """Raise ConfigError when no window can be shown: no display, or OpenCV built without GUI."""
    no_display = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if sys.platform.startswith("linux") and no_display:
        raise ConfigError(
            f"no display to show the webcam window on (DISPLAY and WAYLAND_DISPLAY are unset); "
            f"{_ELSEWHERE}"
        )
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise ConfigError(
            f"this OpenCV cannot open windows (built without GUI support, e.g. "
            f"opencv-python-headless); install the gui extra (pip install 'ferlab[gui]', see "
            f"the README) or {_ELSEWHERE}"
        ) from None


def run_webcam(
    recognizer: Recognizer,
    camera: Capture,
    *,
    every: int = 1,
    smooth: float = 0.5,
    top_k: int = 3,
) -> int:
    """Show ``camera`` with boxes, labels and bars until q or Esc is pressed or the window is
    closed; returns the number of frames shown. Call ``check_display`` first."""
    shown = 0
    results = recognizer.stream(
        camera.frames(), fps=camera.fps, every=every, smooth=smooth, frames_per_batch=1
    )
    try:
        for result in results:
            cv2.imshow(WINDOW, result.annotate(top_k=top_k))
            shown += 1
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27) or cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:
                break
    finally:
        results.close()
        camera.close()
        cv2.destroyWindow(WINDOW)
    return shown

"""Annotations: panel placement clear of other faces, colours and text that contrast, and the
rendered group photo and video frame of docs/ (scripts/render_annotations.py)."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from ferlab.inference import Recognizer
from ferlab.inference.annotate import (
    PALETTE,
    Style,
    annotate,
    contrast_ratio,
    panel_rects,
    text_colour,
)
from ferlab.inference.label_layout import Rect, overlap, place_panels

REPO = Path(__file__).resolve().parents[1]


def _render_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("render", REPO / "scripts/render_annotations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clashes(boxes: list[Rect], panels: list[Rect]) -> list[tuple[int, str, int]]:
    """(panel, "face" or "panel", other) for each panel covering another face or panel."""
    found = [
        (i, "face", j)
        for i, panel in enumerate(panels)
        for j, box in enumerate(boxes)
        if i != j and overlap(panel, box)
    ]
    found += [
        (i, "panel", j)
        for i, j in itertools.combinations(range(len(panels)), 2)
        if overlap(panels[i], panels[j])
    ]
    return found


def _inside(rect: Rect, width: int, height: int) -> bool:
    return 0 <= rect[0] < rect[2] <= width and 0 <= rect[1] < rect[3] <= height


def test_panels_go_where_they_cover_no_other_face_or_panel() -> None:
    # a 3 x 3 grid of 80 px faces, rows 130 px apart: a 60 px panel below a face would cover the
    # face under it, so panels must go beside their faces; the bottom row's go above or below
    boxes = [
        (40 + 220 * c, 20 + 130 * r, 120 + 220 * c, 100 + 130 * r)
        for r in range(3)
        for c in range(3)
    ]
    sizes = [(120, 60)] * len(boxes)
    panels = place_panels(boxes, sizes, (640, 400))
    assert _clashes(boxes, panels) == []
    assert all(_inside(p, 640, 400) for p in panels)
    assert [(p[2] - p[0], p[3] - p[1]) for p in panels] == sizes
    assert panels[0] == (122, 20, 242, 80)  # below would cover the face under it: on the right
    # a face at the image's edge: its panel is moved inside
    [edge] = place_panels([(560, 350, 640, 400)], [(120, 60)], (640, 400))
    assert _inside(edge, 640, 400) and edge[3] <= 348  # above it, the only side with room
    # no room anywhere: still inside the image, covering as little of the other faces as it can
    crowded = [(0, 0, 50, 50), (50, 0, 100, 50), (0, 50, 50, 100), (50, 50, 100, 100)]
    placed = place_panels(crowded, [(60, 30)] * 4, (100, 100))
    assert all(_inside(p, 100, 100) for p in placed)
    assert place_panels([None], [(60, 30)], (100, 100)) == [(0, 0, 60, 30)]


def test_colours_are_not_gray_and_their_text_contrasts() -> None:
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21)
    assert text_colour((0, 220, 255)) == (0, 0, 0)  # yellow: black text
    assert text_colour((140, 30, 0)) == (255, 255, 255)  # dark blue: white text
    for colour in PALETTE:
        assert max(colour) - min(colour) >= 120, colour  # a hue, not a gray
        assert contrast_ratio(text_colour(colour), colour) >= 4.5, colour


def test_lines_and_text_grow_with_the_image() -> None:
    small, large = Style.for_image((240, 320, 3)), Style.for_image((2160, 3840, 3))
    assert small.line >= 2 and large.line >= 3 * small.line
    assert large.scale >= 5 * small.scale and large.text > small.text


@pytest.fixture(scope="module")
def render() -> ModuleType:
    return _render_script()


@pytest.fixture(scope="module")
def shipped() -> Recognizer:
    return Recognizer.load()


def _differs(image_bgr: np.ndarray, png: Path) -> float:
    """Mean absolute difference from ``png``, both with the same 256-colour quantization."""
    rgb = Image.fromarray(np.ascontiguousarray(image_bgr[:, :, ::-1]))
    ours = np.asarray(rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT).convert("RGB"))
    theirs = np.asarray(Image.open(png).convert("RGB"))
    assert ours.shape == theirs.shape
    return float(np.abs(ours.astype(int) - theirs).mean())


def test_group_photo_panels_cover_no_other_face(
    render: ModuleType, shipped: Recognizer, photos: Path
) -> None:
    group = render.group_photo(photos)
    faces = shipped.predict(group, rgb=True)
    assert len(faces) == len(render.GROUP)
    boxes = [face.box for face in faces]
    panels = panel_rects(group.shape, faces)
    assert _clashes(boxes, panels) == []
    assert all(_inside(p, group.shape[1], group.shape[0]) for p in panels)
    drawn = annotate(group, faces)
    for face, (x1, y1, _, _) in zip(faces, panels, strict=True):
        colour = PALETTE[shipped.classes.index(face.label) % len(PALETTE)]
        assert tuple(drawn[y1 + 1, x1 + 1]) == colour  # the label row, in the label's colour
    picture = REPO / "docs/group-annotation.png"
    assert picture.stat().st_size < 200_000
    assert _differs(drawn, picture) < 2


def _off_segment(pixels: np.ndarray, a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """The largest distance of ``pixels`` (N, 3) from the colour segment between ``a`` and ``b``."""
    start, direction = np.array(a, float), np.subtract(b, a).astype(float)
    t = np.clip((pixels - start) @ direction / (direction @ direction), 0, 1)
    return float(np.linalg.norm(pixels - (start + t[:, None] * direction), axis=1).max())


def test_video_frame_has_track_ids_in_the_label_rows(
    render: ModuleType, shipped: Recognizer, photos: Path
) -> None:
    *_, last = shipped.stream(render.video_frames(photos), fps=10.0)
    assert [tracked.track for tracked in last.faces] == [1, 2]
    faces = [tracked.face for tracked in last.faces]
    frame = last.frame.copy()
    drawn, untagged = last.annotate(), annotate(last.frame[:, :, ::-1], faces)
    assert np.array_equal(last.frame, frame)  # drawn on a copy
    panels = panel_rects(last.frame.shape, faces, tags=["#1", "#2"])
    assert _clashes([face.box for face in faces], panels) == []
    row = Style.for_image(last.frame.shape).pad + 12  # within the label row
    for face, (x1, y1, x2, _) in zip(faces, panels, strict=True):
        colour = PALETTE[shipped.classes.index(face.label) % len(PALETTE)]
        title = drawn[y1 : y1 + row, x1:x2].reshape(-1, 3).astype(float)
        assert _off_segment(title, colour, text_colour(colour)) < 40  # text on a solid colour
        assert np.abs(drawn[y1 : y1 + row, x1:x2] - untagged[y1 : y1 + row, x1:x2]).any()
    picture = REPO / "docs/video-annotation.png"
    assert picture.stat().st_size < 200_000
    assert _differs(drawn, picture) < 2

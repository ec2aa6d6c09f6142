"""Where each face's label panel goes: beside its box, inside the image, clear of other faces."""

from __future__ import annotations

from collections.abc import Sequence

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2


def overlap(a: Rect, b: Rect) -> int:
    """Area shared by two (x1, y1, x2, y2) rectangles."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def place_panels(
    boxes: Sequence[Rect | None],
    sizes: Sequence[tuple[int, int]],
    image_size: tuple[int, int],
    *,
    gap: int = 2,
) -> list[Rect]:
    """A rectangle for each panel (``sizes``: width, height) of the face ``boxes``, in order.

    Each panel tries below, above, right and left of its box (aligned with either edge), moved
    inside the ``image_size`` (width, height). It takes the place covering the least area of
    other faces' boxes and of the panels already placed, then the least of its own box, then the
    first in that order. A face without a box gets the top left corner.
    """
    placed: list[Rect] = []
    for index, (box, size) in enumerate(zip(boxes, sizes, strict=True)):
        options = [(0, 0)] if box is None else _candidates(box, size, gap)
        rects = [_inside(x, y, size, image_size) for x, y in options]
        others = [b for i, b in enumerate(boxes) if b is not None and i != index] + placed
        placed.append(min(rects, key=lambda rect: _cost(rect, others, box)))
    return placed


def _cost(rect: Rect, others: list[Rect], own: Rect | None) -> tuple[int, int]:
    """Area of ``others`` that ``rect`` covers, then area of its own box."""
    return sum(overlap(rect, other) for other in others), 0 if own is None else overlap(rect, own)


def _candidates(box: Rect, size: tuple[int, int], gap: int) -> list[tuple[int, int]]:
    """Top-left corners beside ``box``, in order of preference."""
    x1, y1, x2, y2 = box
    width, height = size
    below, above = y2 + gap, y1 - gap - height
    right, left = x2 + gap, x1 - gap - width
    return [
        (x1, below),
        (x2 - width, below),
        (x1, above),
        (x2 - width, above),
        (right, y1),
        (right, y2 - height),
        (left, y1),
        (left, y2 - height),
    ]


def _inside(x: int, y: int, size: tuple[int, int], image_size: tuple[int, int]) -> Rect:
    """The ``size`` rectangle at (x, y), moved inside the image where it sticks out."""
    width, height = size
    x = min(max(0, x), max(0, image_size[0] - width))
    y = min(max(0, y), max(0, image_size[1] - height))
    return x, y, x + width, y + height

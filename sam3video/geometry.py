"""Box and mask geometry on numpy arrays, one definition of each for inference, tracking and training.

Boxes are (..., 4) pixels ``x0, y0, x1, y1`` with ``x1, y1`` exclusive (a one-pixel mask at (3, 5) has
the box (3, 5, 4, 6)), unless named ``cxcywh`` (centre and size); ``normalised`` means divided by the
image width and height. The model's torch versions are ``sam3video.model.box_ops``, as officially named.
"""

from __future__ import annotations

import numpy as np


def xyxy_to_cxcywh(boxes) -> np.ndarray:
    """(..., 4) xyxy -> (..., 4) cx, cy, w, h (float32)."""
    boxes = np.asarray(boxes, np.float32)
    return np.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def cxcywh_to_xyxy(boxes) -> np.ndarray:
    """(..., 4) cx, cy, w, h -> (..., 4) xyxy (float32)."""
    boxes = np.asarray(boxes, np.float32)
    half = boxes[..., 2:] / 2
    return np.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1).astype(np.float32)


def normalised_cxcywh(boxes, width: int, height: int) -> np.ndarray:
    """(..., 4) xyxy pixels -> (..., 4) float32 cx, cy, w, h in [0, 1] of a ``width`` x ``height`` image
    (computed in float64, rounded once)."""
    boxes = np.asarray(boxes, np.float64)
    centre_size = np.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], axis=-1)
    return (centre_size / np.array([width, height, width, height], np.float64)).astype(np.float32)


def box_centre(boxes) -> np.ndarray:
    """(..., 4) xyxy -> (..., 2) centre x, y."""
    boxes = np.asarray(boxes)
    return (boxes[..., :2] + boxes[..., 2:]) / 2


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(H, W) bool -> its xyxy extent, or None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 xyxy extents; zeros for empty masks."""
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        box = mask_box(mask)
        if box is not None:
            boxes[i] = box
    return boxes


def even_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the overlay video: H.264 4:2:0 needs even sizes, so an odd side gets one
    more column/row (``OverlayWriter`` repeats the edge; the content is never scaled)."""
    return width + width % 2, height + height % 2

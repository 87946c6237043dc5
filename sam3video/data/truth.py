"""Exact per-frame ground truth of a synthetic clip, derived from its label map.

The label map (H, W) int32 holds, for every pixel, the id of the object seen there (0 = background).
Masks are therefore the VISIBLE parts of the objects, never overlap, and are clipped to the frame.
Boxes are tight boxes of the visible mask, xyxy in pixels with x0, y0 inclusive and x1, y1 exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sam3video.data.concepts import concept_matches
from sam3video.detections import Detections
from sam3video.geometry import mask_box


@dataclass(frozen=True)
class ObjectTruth:
    """One object visible in one frame.

    ``mask`` (H, W) bool visible pixels; ``box`` (x0, y0, x1, y1) ints, tight around ``mask``;
    ``visibility`` visible pixels / pixels of the whole unoccluded, unclipped object, in (0, 1];
    ``area`` number of visible pixels.
    """

    object_id: int
    shape: str
    colour: str
    mask: np.ndarray
    box: tuple[int, int, int, int]
    visibility: float
    area: int


@dataclass(frozen=True)
class FrameTruth:
    """Ground truth of frame ``frame_index`` (0-based): the visible objects, in ascending id order.
    ``gray``: the frame is gray (R = G = B), so colour words cannot be told apart in it (objects keep
    their colour names; ``training.split_prompts`` asks only shape prompts of such frames)."""

    frame_index: int
    label_map: np.ndarray
    objects: tuple[ObjectTruth, ...]
    gray: bool = False

    @property
    def object_ids(self) -> tuple[int, ...]:
        return tuple(o.object_id for o in self.objects)

    def matching(self, prompt: str) -> tuple[ObjectTruth, ...]:
        """The visible objects that are instances of ``prompt``."""
        return tuple(o for o in self.objects if concept_matches(o, prompt))

    def to_detections(self, prompt: str | None = None, class_id: int = 0) -> Detections:
        """The visible objects (those matching ``prompt`` if given) as ``Detections`` with confidence 1,
        ``tracker_id`` = object id, ``mask`` (N, H, W) and ``data["visibility"]`` (N,) float32."""
        objs = self.objects if prompt is None else self.matching(prompt)
        height, width = self.label_map.shape
        if not objs:
            det = Detections.empty(height, width)
            det.tracker_id = np.zeros(0, np.int64)
            det.data["visibility"] = np.zeros(0, np.float32)
            return det
        return Detections(
            xyxy=np.array([o.box for o in objs], np.float32),
            confidence=np.ones(len(objs), np.float32),
            class_id=np.full(len(objs), class_id, np.int64),
            mask=np.stack([o.mask for o in objs]),
            tracker_id=np.array([o.object_id for o in objs], np.int64),
            data={"visibility": np.array([o.visibility for o in objs], np.float32)},
        )


def object_truth(
    label_map: np.ndarray,
    object_id: int,
    shape: str,
    colour: str,
    region: tuple[int, int, int, int],
    full_pixels: int,
    min_visible_px: int = 1,
) -> ObjectTruth | None:
    """Truth of one object from the label map, looking only inside ``region`` = (x0, y0, x1, y1), which
    must contain all its pixels; ``full_pixels`` is its unoccluded, unclipped pixel count. None when
    fewer than ``min_visible_px`` pixels are visible."""
    height, width = label_map.shape
    x0, y0 = max(region[0], 0), max(region[1], 0)
    x1, y1 = min(region[2], width), min(region[3], height)
    if x1 <= x0 or y1 <= y0:
        return None
    sub = label_map[y0:y1, x0:x1] == object_id
    area = int(np.count_nonzero(sub))
    if area < max(min_visible_px, 1):
        return None
    bx0, by0, bx1, by1 = mask_box(sub)
    box = (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1)
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = sub
    visibility = min(1.0, area / max(full_pixels, 1))
    return ObjectTruth(object_id, shape, colour, mask, box, visibility, area)

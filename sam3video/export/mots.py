"""MOTS mask tracks: ``tracks.mots.txt`` writer and reader (the format TrackEval's MOTS readers load).

One line per tracked object per frame, space separated::

    frame id class_id img_height img_width rle

- ``frame``: ``frame_index + first_frame``. TrackEval's ``MOTSChallenge`` reads frames 1-based (the
  default, ``first_frame=1``, like ``tracks.txt``); its ``KittiMOTS`` reads them 0-based
  (``first_frame=0``). A frame id outside the sequence makes TrackEval stop with "invalid timesteps".
- ``id``: the ``tracker_id`` as is — the same id as in ``tracks.txt``, the overlay and the summary.
  TrackEval treats tracker ids as opaque labels (unique per frame, relabelled contiguously), so the
  KITTI ground-truth habit ``class_id * 1000 + instance`` is not needed and not used.
- ``class_id``: prompt index + ``class_offset`` (default 1: the first prompt is class 1). TrackEval
  keeps only the rows whose class equals the evaluated class (MOTSChallenge: pedestrian = 2;
  KITTI-MOTS: car = 1, pedestrian = 2; 10 marks ignore regions in ground truth), so to score the
  prompt "person" against MOTS pedestrians write with ``class_offset`` such that it maps to 2.
- ``rle``: COCO compressed RLE ``counts`` of the (H, W) mask, from pycocotools (column-major).

Masks in one frame must not overlap (TrackEval raises "Tracker has overlapping masks"). The writer
therefore calls :func:`make_disjoint`: a pixel claimed by several masks goes to the detection with the
highest confidence (ties: the earlier detection). An object left with an empty mask is not written.
"""

from __future__ import annotations

import os

import numpy as np
from pycocotools import mask as mask_utils

from ..detections import Detections
from ..geometry import masks_to_boxes
from .mot import TrackFileWriter


def make_disjoint(masks: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks with every pixel kept only by its most confident claimant.

    Ties in confidence go to the lower index. Returns a new array; masks may become empty.
    """
    masks = np.asarray(masks, dtype=bool)
    out = np.zeros_like(masks)
    claimed = np.zeros(masks.shape[1:], dtype=bool)
    for i in np.argsort(-np.asarray(confidence, dtype=np.float64), kind="stable"):
        out[i] = masks[i] & ~claimed
        claimed |= masks[i]
    return out


def encode_rle(masks: np.ndarray) -> list[str]:
    """COCO compressed RLE ``counts`` strings of (N, H, W) bool masks."""
    if len(masks) == 0:
        return []
    stacked = np.asfortranarray(np.moveaxis(np.asarray(masks, dtype=np.uint8), 0, -1))  # (H, W, N)
    return [rle["counts"].decode("ascii") for rle in mask_utils.encode(stacked)]


def decode_rle(counts: list[str], height: int, width: int) -> np.ndarray:
    """``encode_rle``'s inverse: (N, height, width) bool masks."""
    if not counts:
        return np.zeros((0, height, width), bool)
    decoded = mask_utils.decode([{"size": [height, width], "counts": c.encode("ascii")} for c in counts])
    return np.moveaxis(decoded, -1, 0).astype(bool)


class MOTSWriter(TrackFileWriter):
    """Context manager writing ``(frame_index, Detections)`` with masks as a MOTS file, atomically.

    >>> with MOTSWriter("tracks.mots.txt") as w:
    ...     for frame_index, dets in results:
    ...         w.write(frame_index, dets)

    Only detections with a ``tracker_id`` >= 1 are written; their masks are made disjoint first (see
    the module docstring). Lines of a frame are sorted by id.
    """

    def __init__(self, path: str | os.PathLike, *, first_frame: int = 1, class_offset: int = 1) -> None:
        super().__init__(path)
        self.first_frame = first_frame
        self.class_offset = class_offset

    def write(self, frame_index: int, detections: Detections) -> None:
        """Append one frame (0-based ``frame_index``, strictly increasing). Needs ``detections.mask``."""
        frame, dets = self._begin_frame(frame_index, detections)
        frame += self.first_frame
        if len(dets) == 0:
            return
        if dets.mask is None:
            raise ValueError("MOTSWriter needs detections with masks (detections.mask is None)")
        order = np.argsort(dets.tracker_id, kind="stable")
        dets = dets[order]
        masks = make_disjoint(dets.mask, dets.confidence)
        keep = masks.reshape(len(masks), -1).any(axis=1)
        height, width = masks.shape[1:]
        for i, counts in zip(np.flatnonzero(keep), encode_rle(masks[keep])):
            class_id = int(dets.class_id[i]) + self.class_offset
            self._file.write(f"{frame} {int(dets.tracker_id[i])} {class_id} {height} {width} {counts}\n")
            self.num_lines += 1


def read_mots(path: str | os.PathLike, *, first_frame: int = 1, class_offset: int = 1) -> dict[int, Detections]:
    """A MOTS file as ``{frame_index (0-based): Detections}``, only for frames that have rows.

    ``frame_index = frame - first_frame``; ``class_id = class - class_offset`` (pass ``class_offset=0``
    for the classes as written); ``tracker_id`` from ``id``; ``mask`` decoded with pycocotools;
    ``xyxy`` the mask's bounding box (zeros if empty); ``confidence`` 1 (MOTS has no score).
    Parsed and checked line by line (malformed line, frame before ``first_frame``, mixed image sizes,
    overlapping masks: ``InputError`` naming file and line) by ``sam3video.export.tables.read_mots``.
    """
    from .tables import read_mots as read_table

    table = read_table(path, first_frame=first_frame)
    result: dict[int, Detections] = {}
    for frame in np.unique(table.frames):
        rows = np.flatnonzero(table.frames == frame)
        masks = [mask_utils.decode(table.rles[r]).astype(bool) for r in rows]
        result[int(frame) - first_frame] = _to_detections(
            [(int(table.ids[r]), int(table.class_ids[r]), m) for r, m in zip(rows, masks)], class_offset)
    return result


def _to_detections(rows: list[tuple[int, int, np.ndarray]], class_offset: int) -> Detections:
    masks = np.stack([m for _, _, m in rows])
    return Detections(
        xyxy=masks_to_boxes(masks), confidence=np.ones(len(rows), np.float32),
        class_id=np.array([c for _, c, _ in rows], np.int64) - class_offset,
        mask=masks, tracker_id=np.array([t for t, _, _ in rows], np.int64),
    )

"""``summary.json``: what a run says of its source (``RunFacts``), the per-track table (``TrackStats``) and an
atomic JSON writer."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ..detections import Detections
from .atomic import atomic_open
from .mot import tracked


@dataclass(frozen=True)
class RunFacts:
    """Where a run's detections come from, for ``summary.json`` and ``detections.npz``: ``input`` and
    ``model`` (None: no model), ``sampling`` (fps, start, end, window_seconds), the ``thresholds``
    (``Thresholds`` fields) its config was made from with the model's calibrated ``score_default``;
    ``detection`` replaces the summary's detection config; ``retracked_from`` (retrack only), ``refined_from`` (refine only)."""

    input: dict
    model: dict | None
    sampling: dict
    thresholds: dict
    score_default: float
    detection: dict | None = None
    retracked_from: dict | None = None
    refined_from: dict | None = None  # ``refine``: the run its edits were applied to


@dataclass
class _Track:
    first_frame: int
    last_frame: int
    num_frames: int = 0
    score_sum: float = 0.0
    classes: Counter = field(default_factory=Counter)


class TrackStats:
    """Accumulates ``(frame_index, Detections)`` into one row per track id.

    >>> stats = TrackStats(class_names=["dog"])
    >>> for frame_index, dets in results:
    ...     stats.update(frame_index, dets)
    >>> stats.table()  # [{"track_id": 1, "class_id": 0, "class_name": "dog", ...}, ...]

    Only detections with a ``tracker_id`` >= 1 count. Frame indices are 0-based video frames.
    """

    def __init__(self, class_names: Sequence[str] = ()) -> None:
        self.class_names = list(class_names)
        self._tracks: dict[int, _Track] = {}

    def update(self, frame_index: int, detections: Detections) -> None:
        dets = tracked(detections)
        frame_index = int(frame_index)
        for track_id, class_id, score in zip(dets.tracker_id, dets.class_id, dets.confidence):
            track = self._tracks.setdefault(int(track_id), _Track(frame_index, frame_index))
            track.first_frame = min(track.first_frame, frame_index)
            track.last_frame = max(track.last_frame, frame_index)
            track.num_frames += 1
            track.score_sum += float(score)
            track.classes[int(class_id)] += 1

    def __len__(self) -> int:
        return len(self._tracks)

    def table(self) -> list[dict]:
        """Rows sorted by ``track_id``: track_id, class_id (the most frequent; ties: smallest), class_name,
        first_frame_index, last_frame_index (0-based, inclusive), num_frames (frames the track was
        present in), mean_score (mean confidence over those frames)."""
        rows = []
        for track_id in sorted(self._tracks):
            t = self._tracks[track_id]
            class_id = min(t.classes, key=lambda c: (-t.classes[c], c))
            name = self.class_names[class_id] if 0 <= class_id < len(self.class_names) else str(class_id)
            rows.append({
                "track_id": track_id, "class_id": class_id, "class_name": name,
                "first_frame_index": t.first_frame, "last_frame_index": t.last_frame,
                "num_frames": t.num_frames, "mean_score": round(t.score_sum / t.num_frames, 6),
            })
        return rows


def _jsonable(value):
    """numpy scalars/arrays, Fractions, paths and tuples to JSON types; NaN and infinities to None (JSON has none)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Fraction):
        value = float(value)  # e.g. fps 30000/1001
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def summary_text(summary: dict, *, indent: int = 2) -> str:
    """``summary`` as indented JSON text with a final newline (numpy values converted, NaN -> null)."""
    return json.dumps(_jsonable(summary), indent=indent, ensure_ascii=False, allow_nan=False) + "\n"


def write_summary(path: str | os.PathLike, summary: dict, *, indent: int = 2) -> None:
    """Write ``summary`` as indented UTF-8 JSON, atomically (numpy values converted, NaN -> null)."""
    with atomic_open(Path(path), "w") as file:
        file.write(summary_text(summary, indent=indent))

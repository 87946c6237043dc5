"""``Detections``: one frame's instances as numpy arrays (the shape of supervision's ``Detections``).

Conventions: ``xyxy`` (N, 4) float32 in pixels of the original frame (x0, y0 inclusive corner, x1, y1
exclusive); ``mask`` (N, H, W) bool or None; ``confidence`` (N,) float32 in [0, 1]; ``class_id`` (N,)
int64 — index of the prompt; ``tracker_id`` (N,) int64, 1-based, or None before tracking; ``data``
holds extra per-instance arrays (first dimension N), e.g. ``"embedding"`` (N, D) appearance vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError


def _converted(name: str, value, dtype) -> np.ndarray:
    """``np.asarray(value, dtype)``, or ``InputError`` naming the field when numpy cannot convert it."""
    try:
        return np.asarray(value, dtype=dtype)
    except (ValueError, TypeError, OverflowError):
        got = f"{value.dtype} array of shape {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise InputError(f"Detections.{name}: cannot convert a {got} to {np.dtype(dtype)}") from None


def _integers(name: str, value) -> np.ndarray:
    """(N,) int64 from ints, or from floats that are finite and within int64 (not complex numbers)."""
    array = value if isinstance(value, np.ndarray) else _converted(name, value, None)
    if array.size and (array.dtype.kind == "c" or array.dtype.kind == "f" and not (
            np.isfinite(array).all() and (np.abs(array) < 2.0**63).all())):
        raise InputError(f"Detections.{name} must be integers, got {array.dtype} values such as "
                         f"{array.reshape(-1)[0]!r}")
    return _converted(name, array, np.int64).reshape(-1)


@dataclass
class Detections:
    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    mask: np.ndarray | None = None
    tracker_id: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Convert to the documented dtypes; ``InputError`` (a ``ValueError``) for values that are not
        numbers, boxes that are not (N, 4), integer fields that are NaN/Inf, or lengths other than N."""
        xyxy = _converted("xyxy", self.xyxy, np.float32)
        if xyxy.size and (xyxy.ndim == 0 or xyxy.shape[-1] != 4):
            raise InputError(f"xyxy must be (N, 4) boxes, got shape {xyxy.shape}")
        self.xyxy = xyxy.reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = _converted("confidence", self.confidence, np.float32).reshape(-1)
        self.class_id = _integers("class_id", self.class_id)
        if self.mask is not None:
            self.mask = _converted("mask", self.mask, bool)
            if self.mask.ndim != 3 or len(self.mask) != n:
                raise InputError(f"mask must be (N, H, W) with N={n}, got {self.mask.shape}")
        if self.tracker_id is not None:
            self.tracker_id = _integers("tracker_id", self.tracker_id)
        for name in ("confidence", "class_id", "tracker_id"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise InputError(f"{name} has {len(value)} entries, xyxy has {n}")
        if not isinstance(self.data, dict):
            raise InputError(f"data must be a dict of per-instance arrays, got a {type(self.data).__name__}")
        for key, value in self.data.items():
            try:
                length = len(value)
            except TypeError:
                raise InputError(f"data[{key!r}] must be an array with N={n} rows, got a "
                                 f"{type(value).__name__}") from None
            if length != n:
                raise InputError(f"data[{key!r}] has {length} entries, xyxy has {n}")

    @classmethod
    def empty(cls, height: int | None = None, width: int | None = None) -> "Detections":
        """No detections; with a frame size, an empty (0, H, W) mask array."""
        mask = np.zeros((0, height, width), bool) if height is not None and width is not None else None
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), mask=mask)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index) -> "Detections":
        """Select by boolean mask, integer array or slice; always returns ``Detections``."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            mask=None if self.mask is None else self.mask[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    @classmethod
    def merge(cls, parts: list["Detections"]) -> "Detections":
        """Concatenate detections of the same frame (e.g. of several prompts)."""
        parts = [p for p in parts if len(p)] or parts[:1]
        if not parts:
            return cls.empty()
        masks = [p.mask for p in parts]
        keys = set.intersection(*(set(p.data) for p in parts)) if parts else set()
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            mask=None if any(m is None for m in masks) else np.concatenate(masks),
            tracker_id=None if any(p.tracker_id is None for p in parts)
            else np.concatenate([p.tracker_id for p in parts]),
            data={k: np.concatenate([p.data[k] for p in parts]) for k in keys},
        )

    @property
    def area(self) -> np.ndarray:
        """(N,) mask area in pixels if masks are present, else box area."""
        if self.mask is not None:
            return self.mask.reshape(len(self), -1).sum(1).astype(np.float32)
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    def to_supervision(self):
        """The same detections as ``supervision.Detections`` (needs the ``supervision`` package)."""
        import supervision as sv

        return sv.Detections(
            xyxy=self.xyxy, mask=self.mask, confidence=self.confidence, class_id=self.class_id,
            tracker_id=self.tracker_id, data=dict(self.data),
        )

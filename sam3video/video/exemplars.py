"""Exemplar boxes: parsing, and a memory that carries them forward through the clip.

On its frame an exemplar box goes to the geometry encoder with the text, as in the image model. Unlike
the official video code (one box, effective on its frame only), exemplars here accumulate and carry
forward, any number, on any frames:
- each exemplar leaves a *prototype*: the mask-pooled appearance of the object it marks (the
  text-only detection that best overlaps the box, else the box region itself);
- a positive exemplar is attached to the track that its frame's detection starts or continues; on later
  frames its box moves with that track and keeps going to the geometry encoder ("keeps helping its
  object"), and detections that look like a positive prototype are kept even in the low-score band;
- a negative exemplar suppresses, on every later frame, detections that look more like it than like
  any positive prototype of the same prompt (cosine similarity of prototypes, measured against the
  distance between the two prototypes; thresholds in ``ExemplarConfig``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..detections import Detections
from ..errors import InputError


@dataclass(frozen=True)
class Exemplar:
    """A box on one frame: ``frame`` 0-based, ``box`` xyxy in pixels of the original video."""

    frame: int
    box: tuple[float, float, float, float]
    positive: bool = True
    prompt: str | None = None  # the prompt it refines; None = every prompt


def parse_exemplar(text: str) -> Exemplar:
    """``FRAME:X1,Y1,X2,Y2[:neg|:pos]`` (frame 0-based, pixels) -> ``Exemplar``."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise InputError(f"exemplar {text!r}: expected FRAME:X1,Y1,X2,Y2[:neg]")
    try:
        frame = int(parts[0])
        box = tuple(float(v) for v in parts[1].split(","))
    except ValueError:
        raise InputError(f"exemplar {text!r}: FRAME must be an integer and the box four numbers") from None
    if len(box) != 4:
        raise InputError(f"exemplar {text!r}: the box needs 4 numbers X1,Y1,X2,Y2")
    label = parts[2].lower() if len(parts) == 3 else "pos"
    if label not in ("pos", "neg", "positive", "negative"):
        raise InputError(f"exemplar {text!r}: label must be 'pos' or 'neg'")
    return Exemplar(frame=frame, box=box, positive=label.startswith("pos"))


def load_exemplars(path: "str | Path") -> list[Exemplar]:
    """A JSON list of ``{"frame": int, "box": [x1, y1, x2, y2], "label": "pos"|"neg", "prompt": str?}``."""
    try:
        items = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"exemplars file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"exemplars file {path} is not valid JSON: {e}") from None
    if not isinstance(items, list):
        raise InputError(f"exemplars file {path}: expected a JSON list of exemplars")
    exemplars = []
    for i, item in enumerate(items):
        try:
            label = str(item.get("label", "pos")).lower()
            if label not in ("pos", "neg", "positive", "negative"):
                raise ValueError("label must be 'pos' or 'neg'")
            box = tuple(float(v) for v in item["box"])
            if len(box) != 4:
                raise ValueError("box needs 4 numbers")
            exemplars.append(Exemplar(int(item["frame"]), box, label.startswith("pos"), item.get("prompt")))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"exemplars file {path}, item {i}: {e}") from None
    return exemplars


def check_exemplar(exemplar: Exemplar, num_frames: int | None, width: int, height: int) -> None:
    """Raise ``InputError`` if the frame is out of range or the box is not a box on the frame."""
    if exemplar.frame < 0 or (num_frames is not None and exemplar.frame >= num_frames):
        limit = f"[0, {num_frames})" if num_frames is not None else ">= 0"
        raise InputError(f"exemplar frame {exemplar.frame} out of range {limit}")
    x0, y0, x1, y1 = exemplar.box
    if not all(np.isfinite(exemplar.box)) or x1 <= x0 or y1 <= y0:
        raise InputError(f"exemplar box {exemplar.box} on frame {exemplar.frame} has non-positive size")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise InputError(f"exemplar box {exemplar.box} on frame {exemplar.frame} lies off the "
                         f"{width}x{height} frame")


def box_xyxy_to_cxcywh_normalised(box, width: int, height: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height],
                    np.float32)


@dataclass(frozen=True)
class ExemplarConfig:
    attach_min_iou: float = 0.3  # box IoU for an exemplar to mark a detection
    attach_frames: int = 10  # a positive exemplar joins a reported track at most this many frames later
    negative_similarity: float = 0.9  # cosine above which a detection "looks like" a negative exemplar
    positive_similarity: float = 0.9  # cosine above which a low-score detection is kept as positive
    # With both kinds: a detection's place between its nearest positive (+1) and negative (-1) prototype,
    # (cos_pos - cos_neg) / (1 - cos(pos, neg)). Features of similar objects can all lie within a few
    # hundredths of cosine (the demo model: 0.98-0.99 between a red and a blue circle), so the decision
    # is made in units of the two prototypes' own distance, not by absolute cosines alone.
    suppress_below: float = -0.25  # at or below: suppressed (closer to the negative)
    lift_above: float = 0.5  # at or above (and positive_similarity reached): kept as confident


@dataclass
class Prototype:
    """What one exemplar left for one prompt: the appearance of the object it marked."""

    exemplar: Exemplar
    class_id: int
    embedding: np.ndarray  # (d,) L2-normalised
    track_id: int | None = None  # positive exemplars: the track their box follows

    @property
    def positive(self) -> bool:
        return self.exemplar.positive


@dataclass
class ExemplarMemory:
    """Exemplars of a run, and the prototypes they left (see the module docstring)."""

    exemplars: list[Exemplar]
    class_names: list[str]
    config: ExemplarConfig = field(default_factory=ExemplarConfig)
    prototypes: list[Prototype] = field(default_factory=list)

    def classes_of(self, exemplar: Exemplar) -> list[int]:
        if exemplar.prompt is None:
            return list(range(len(self.class_names)))
        if exemplar.prompt not in self.class_names:
            raise InputError(f"exemplar prompt {exemplar.prompt!r} is not one of the prompts {self.class_names}")
        return [self.class_names.index(exemplar.prompt)]

    def on_frame(self, frame: int) -> list[Exemplar]:
        return [e for e in self.exemplars if e.frame == frame]

    def boxes_for_frame(self, frame: int, width: int, height: int, track_boxes: dict[int, np.ndarray]):
        """Per prompt, the (cxcywh normalised, positive) boxes for the geometry encoder on ``frame``:
        this frame's exemplars, plus carried positives at their track's last box."""
        boxes: list[list[tuple[np.ndarray, bool]]] = [[] for _ in self.class_names]
        for exemplar in self.on_frame(frame):
            for c in self.classes_of(exemplar):
                boxes[c].append((box_xyxy_to_cxcywh_normalised(exemplar.box, width, height), exemplar.positive))
        for proto in self.prototypes:
            if proto.positive and proto.track_id in track_boxes:
                box = np.clip(track_boxes[proto.track_id], 0, [width, height, width, height])
                if box[2] > box[0] and box[3] > box[1]:
                    boxes[proto.class_id].append((box_xyxy_to_cxcywh_normalised(box, width, height), True))
        return boxes

    def learn(self, frame: int, text_only: Detections, box_embeddings: dict[tuple, np.ndarray]) -> None:
        """Record prototypes of this frame's exemplars from the text-only detections (mask-pooled
        embeddings) or, where none overlaps enough, from ``box_embeddings[exemplar.box]``."""
        from .association import box_iou

        for exemplar in self.on_frame(frame):
            for c in self.classes_of(exemplar):
                candidates = np.flatnonzero(text_only.class_id == c)
                embedding = box_embeddings[exemplar.box]
                if len(candidates):
                    ious = box_iou(np.asarray([exemplar.box], np.float32), text_only.xyxy[candidates])[0]
                    best = int(np.argmax(ious))
                    if ious[best] >= self.config.attach_min_iou:
                        embedding = text_only.data["embedding"][candidates[best]]
                self.prototypes.append(Prototype(exemplar, c, embedding))

    def attach_tracks(self, frame: int, tracked: Detections) -> None:
        """A positive exemplar follows the reported track that overlaps its box most, on its frame or, if
        that object is not reported yet (tentative), within ``attach_frames`` frames after it."""
        from .association import box_iou

        if tracked.tracker_id is None or len(tracked) == 0:
            return
        for proto in self.prototypes:
            waited = frame - proto.exemplar.frame
            if proto.positive and proto.track_id is None and 0 <= waited <= self.config.attach_frames:
                ious = box_iou(np.asarray([proto.exemplar.box], np.float32), tracked.xyxy)[0]
                ious[tracked.class_id != proto.class_id] = 0
                if ious.max() >= self.config.attach_min_iou:
                    proto.track_id = int(tracked.tracker_id[int(np.argmax(ious))])

    def filter(self, detections: Detections, score_threshold: float) -> Detections:
        """Drop detections that look like a negative exemplar; lift those that look like a positive one
        to ``score_threshold`` (kept as confident). Needs ``data["embedding"]``."""
        if not self.prototypes or len(detections) == 0:
            return detections
        keep = np.ones(len(detections), bool)
        confidence = detections.confidence.copy()
        for c in np.unique(detections.class_id):
            rows = np.flatnonzero(detections.class_id == c)
            embeddings = detections.data["embedding"][rows]
            pos = [p.embedding for p in self.prototypes if p.class_id == c and p.positive]
            neg = [p.embedding for p in self.prototypes if p.class_id == c and not p.positive]
            pos_all = embeddings @ np.stack(pos).T if pos else np.full((len(rows), 1), -1.0)
            pos_sim = pos_all.max(1)
            lifted = pos_sim >= self.config.positive_similarity
            if neg:
                neg_all = embeddings @ np.stack(neg).T
                neg_sim = neg_all.max(1)
                suppressed = neg_sim >= self.config.negative_similarity
                if pos:
                    nearest_pos = np.stack(pos)[pos_all.argmax(1)]
                    nearest_neg = np.stack(neg)[neg_all.argmax(1)]
                    spread = np.maximum(1.0 - (nearest_pos * nearest_neg).sum(1), 1e-6)
                    place = (pos_sim - neg_sim) / spread
                    suppressed &= place <= self.config.suppress_below
                    lifted &= place >= self.config.lift_above
                keep[rows[suppressed]] = False
            confidence[rows[lifted]] = np.maximum(confidence[rows[lifted]], score_threshold)
        detections = Detections(detections.xyxy, confidence, detections.class_id, detections.mask,
                                detections.tracker_id, detections.data)
        return detections[keep]

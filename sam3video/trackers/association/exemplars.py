"""Exemplar boxes: parsing, and a memory that carries them forward through the clip.

On its frame an exemplar box goes to the geometry encoder with the text, as in the image model. Unlike
the official video code (one box, effective on its frame only), exemplars here accumulate and carry
forward, any number, on any frames:
- each exemplar leaves a *prototype*: the mask-pooled appearance of the object it marks (the query of
  a text-only pass on its frame whose box overlaps the exemplar box most, else the box region itself),
  and follows the track that object is reported as (within ``attach_frames``);
- with ``carry_boxes``, positive boxes keep going to the geometry encoder at their track's box;
- on every later frame each reported detection of a prompt with prototypes passes or fails an
  appearance test (like a positive, closer to a positive than to a negative; ``ExemplarConfig``), and a
  track is reported while most of its detections since the prototypes were learnt pass. A track an
  exemplar marked is always reported (positive) or never (negative). Deciding per track, not per
  detection, keeps one object's identity whole instead of dropping frames of it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.geometry import normalised_cxcywh


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
    """A JSON list of ``{"frame": int, "box": [x1, y1, x2, y2], "label": "pos"|"neg", "prompt": str?}``.

    ``frame`` an integer (3.0 passes), ``box`` four numbers, ``label`` (default "pos") and ``prompt``
    (default: every prompt) text; other keys are ignored. Anything else: ``InputError`` naming the item.
    """
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"exemplars file not found: {path}") from None
    except OSError as e:  # a folder, no permission ...
        raise InputError(f"cannot read exemplars file {path}: {e.strerror or e}") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a number of more than 4300 digits
        raise InputError(f"exemplars file {path} is not valid JSON: {_one_line(str(e))}") from None
    except RecursionError:
        raise InputError(f"exemplars file {path} is not valid JSON: nested too deeply") from None
    if not isinstance(items, list):
        raise InputError(f"exemplars file {path}: expected a JSON list of exemplars")
    exemplars = []
    for i, item in enumerate(items):
        try:
            exemplars.append(_exemplar_from_json(item))
        except ValueError as e:
            raise InputError(f"exemplars file {path}, item {i}: {e}") from None
    return exemplars


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(text.split())[:limit]


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _exemplar_from_json(item) -> Exemplar:
    """One item of an exemplars file -> ``Exemplar``; ``ValueError`` (one line) saying what is wrong."""
    if not isinstance(item, dict):
        raise ValueError(f"expected an object with frame and box, got {_shown(item)}")
    if "frame" not in item or "box" not in item:
        raise ValueError(f"needs 'frame' and 'box', got keys {_shown(sorted(map(str, item)))}")
    frame = item["frame"]
    if not (_is_real(frame) and (isinstance(frame, int) or math.isfinite(frame) and frame == int(frame))):
        raise ValueError(f"frame must be an integer, got {_shown(frame)}")
    box = item["box"]
    if not (isinstance(box, list) and len(box) == 4 and all(_is_real(v) for v in box)):
        raise ValueError(f"box must be 4 numbers [x1, y1, x2, y2], got {_shown(box)}")
    try:
        box = tuple(float(v) for v in box)
    except OverflowError:  # an integer of hundreds of digits
        raise ValueError(f"box numbers must fit a float, got {_shown(box)}") from None
    label = item.get("label", "pos")
    if not isinstance(label, str) or label.lower() not in ("pos", "neg", "positive", "negative"):
        raise ValueError(f"label must be 'pos' or 'neg', got {_shown(label)}")
    prompt = item.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise ValueError(f"prompt must be text, got {_shown(prompt)}")
    return Exemplar(int(frame), box, label.lower().startswith("pos"), prompt)


def exemplar_record(exemplar: Exemplar) -> dict:
    """How a run records an exemplar (``summary.json``, ``detections.npz``, batch manifests):
    ``{"frame", "box", "positive", "prompt"}``."""
    return {"frame": exemplar.frame, "box": list(exemplar.box), "positive": exemplar.positive, "prompt": exemplar.prompt}


def exemplar_from_record(record: dict) -> Exemplar:
    """``exemplar_record``'s inverse; KeyError, TypeError or ValueError for a malformed record."""
    return Exemplar(int(record["frame"]), tuple(float(v) for v in record["box"]), bool(record["positive"]),
                    record.get("prompt"))


def exemplar_file_item(exemplar: Exemplar) -> dict:
    """One item of an exemplars file (``load_exemplars``'s format)."""
    return {"frame": exemplar.frame, "box": list(exemplar.box), "label": "pos" if exemplar.positive else "neg",
            "prompt": exemplar.prompt}


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


@dataclass(frozen=True)
class ExemplarConfig:
    """How exemplars act on later frames. Similarities are cosines of L2-normalised mask-pooled features
    (``DetectionConfig.embedding_level``)."""

    attach_min_iou: float = 0.3  # box IoU for an exemplar to mark a detection or a reported track
    attach_frames: int = 10  # an exemplar joins a reported track at most this many frames later
    # Positive boxes keep going to the geometry encoder at their track's box on later frames. Off by
    # default (the official code uses a box on its frame only): with the demo model, whose exemplar
    # pathway is undertrained, carrying cut HOTA on 12 ambiguous validation clips from 58.1 to 26.7.
    carry_boxes: bool = False
    # A detection passes if it is like a positive (cosine to the nearest positive prototype at least
    # ``positive_similarity``), and, with negatives too, its place between the nearest positive (+1) and
    # negative (-1) prototype, (cos_pos - cos_neg) / (1 - cos(pos, neg)), is above ``place_above``; with
    # negatives only, if its cosine to every negative is below ``negative_similarity``. Measured with the
    # demo model (level-1 features) on 12 ambiguous validation clips: the intended colour's detections
    # have cosine 0.93 (median) to the positive prototype, other colours -0.04.
    positive_similarity: float = 0.5
    negative_similarity: float = 0.5
    place_above: float = 0.0
    majority: float = 0.5  # a track is reported while more than this fraction of its detections pass

    def __post_init__(self) -> None:
        if not 0 <= self.majority < 1 or self.attach_frames < 0 or not 0 < self.attach_min_iou <= 1:
            raise InputError("exemplar config needs 0 <= majority < 1, attach_frames >= 0 and "
                             "0 < attach_min_iou <= 1")


@dataclass
class Prototype:
    """What one exemplar left for one prompt: the appearance of the object it marked."""

    exemplar: Exemplar
    class_id: int
    embedding: np.ndarray  # (d,) L2-normalised
    track_id: int | None = None  # the reported track of the object it marked, once known

    @property
    def positive(self) -> bool:
        return self.exemplar.positive


@dataclass
class ExemplarMemory:
    """Exemplars of a run, the prototypes they left, and each track's appearance votes (see the module
    docstring). ``votes[track_id]`` = (detections that passed, detections tested); ``hidden[track_id]``
    = frames on which the track was reported by the tracker but hidden by exemplars."""

    exemplars: list[Exemplar]
    class_names: list[str]
    config: ExemplarConfig = field(default_factory=ExemplarConfig)
    prototypes: list[Prototype] = field(default_factory=list)
    votes: dict[int, tuple[int, int]] = field(default_factory=dict)
    hidden: dict[int, int] = field(default_factory=dict)

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
        this frame's exemplars, plus carried positives at their track's last box (``carry_boxes``)."""
        boxes: list[list[tuple[np.ndarray, bool]]] = [[] for _ in self.class_names]
        for exemplar in self.on_frame(frame):
            for c in self.classes_of(exemplar):
                boxes[c].append((normalised_cxcywh(exemplar.box, width, height), exemplar.positive))
        for proto in self.prototypes if self.config.carry_boxes else ():
            if proto.positive and proto.track_id in track_boxes:
                box = np.clip(track_boxes[proto.track_id], 0, [width, height, width, height])
                if box[2] > box[0] and box[3] > box[1]:
                    boxes[proto.class_id].append((normalised_cxcywh(box, width, height), True))
        return boxes

    def learn(self, frame: int, candidates: Detections, box_embeddings: dict[tuple, np.ndarray]) -> None:
        """Record prototypes of this frame's exemplars from ``candidates`` (every query of a text-only
        pass, with mask-pooled ``data["embedding"]``): the one whose box overlaps the exemplar's most, or,
        where none reaches ``attach_min_iou``, ``box_embeddings[exemplar.box]`` (the box region)."""
        from .matching import box_iou

        for exemplar in self.on_frame(frame):
            for c in self.classes_of(exemplar):
                rows = np.flatnonzero(candidates.class_id == c)
                embedding = box_embeddings[exemplar.box]
                if len(rows):
                    ious = box_iou(np.asarray([exemplar.box], np.float32), candidates.xyxy[rows])[0]
                    best = int(np.argmax(ious))
                    if ious[best] >= self.config.attach_min_iou:
                        embedding = candidates.data["embedding"][rows[best]]
                self.prototypes.append(Prototype(exemplar, c, embedding))

    def attach_tracks(self, frame: int, tracked: Detections) -> None:
        """Each prototype follows the reported track that overlaps its exemplar box most, on its frame
        or, if that object is not reported yet (tentative), within ``attach_frames`` frames after it."""
        from .matching import box_iou

        if tracked.tracker_id is None or len(tracked) == 0:
            return
        for proto in self.prototypes:
            waited = frame - proto.exemplar.frame
            if proto.track_id is None and 0 <= waited <= self.config.attach_frames:
                ious = box_iou(np.asarray([proto.exemplar.box], np.float32), tracked.xyxy)[0]
                ious[tracked.class_id != proto.class_id] = 0
                if ious.max() >= self.config.attach_min_iou:
                    proto.track_id = int(tracked.tracker_id[int(np.argmax(ious))])

    def passes(self, detections: Detections) -> np.ndarray:
        """(N,) bool: the appearance test of each detection against its prompt's prototypes (True for
        prompts without prototypes). Needs ``data["embedding"]``."""
        cfg, ok = self.config, np.ones(len(detections), bool)
        for c in np.unique(detections.class_id):
            rows = np.flatnonzero(detections.class_id == c)
            pos = [p.embedding for p in self.prototypes if p.class_id == c and p.positive]
            neg = [p.embedding for p in self.prototypes if p.class_id == c and not p.positive]
            if not pos and not neg:
                continue
            embeddings = detections.data["embedding"][rows]
            if pos:
                pos_all = embeddings @ np.stack(pos).T
                ok[rows] &= pos_all.max(1) >= cfg.positive_similarity
            if neg:
                neg_all = embeddings @ np.stack(neg).T
                if pos:
                    nearest_pos, nearest_neg = np.stack(pos)[pos_all.argmax(1)], np.stack(neg)[neg_all.argmax(1)]
                    spread = np.maximum(1.0 - (nearest_pos * nearest_neg).sum(1), 1e-6)
                    ok[rows] &= (pos_all.max(1) - neg_all.max(1)) / spread > cfg.place_above
                else:
                    ok[rows] &= neg_all.max(1) < cfg.negative_similarity
        return ok

    def select(self, tracked: Detections) -> Detections:
        """The reported detections (``tracker_id`` set) whose track exemplars keep: marked positive, or
        not marked negative and more than ``majority`` of its tested detections passed (this frame's
        included). Tracks of prompts without prototypes are kept."""
        if not self.prototypes or len(tracked) == 0:
            return tracked
        marked = {p.track_id: p.positive for p in self.prototypes if p.track_id is not None}
        has_prototypes = np.isin(tracked.class_id, [p.class_id for p in self.prototypes])
        passed = self.passes(tracked)
        keep = np.ones(len(tracked), bool)
        for row, track_id in enumerate(tracked.tracker_id.tolist()):
            if not has_prototypes[row]:
                continue
            good, seen = self.votes.get(track_id, (0, 0))
            self.votes[track_id] = good, seen = good + int(passed[row]), seen + 1
            keep[row] = marked[track_id] if track_id in marked else good > self.config.majority * seen
            if not keep[row]:
                self.hidden[track_id] = self.hidden.get(track_id, 0) + 1
        return tracked[keep]

    def summary(self) -> dict:
        """What the exemplars did, for ``summary.json``: each prototype's exemplar, prompt and the track
        it marked (None if its object was never reported), and the tracks hidden (frames hidden)."""
        return {
            "prototypes": [{"frame": p.exemplar.frame, "box": list(p.exemplar.box), "positive": p.positive,
                            "prompt": self.class_names[p.class_id], "track_id": p.track_id}
                           for p in self.prototypes],
            "hidden_tracks": {str(k): v for k, v in sorted(self.hidden.items())},
        }

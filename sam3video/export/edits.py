"""The edits file of ``sam3video track --edits`` and ``sam3video refine``: a JSON list of actions, in order.

    [{"frame": 12, "obj_id": 3, "points": [[310, 200], [330, 260]], "labels": [1, 0]},
     {"frame": 40, "obj_id": 7, "box": [100, 80, 180, 160]},
     {"frame": 20, "obj_id": 9, "points": [[40, 60]], "labels": [1], "prompt": "dog"},
     {"remove": 5}]

- ``points`` + ``labels`` (1 positive, 0 negative) on ``obj_id``: clicks on that frame. An id of the run refines
  that object (the frame becomes its conditioning frame); a new id starts an object there, under ``prompt`` (needed
  when the run has several prompts). The clicks replace the object's earlier clicks on that frame unless
  ``"keep_old_points": true``.
- ``box`` (x1, y1, x2, y2) on ``obj_id``: a box prompt for that object on that frame (SAM 2's tracker box, as its
  first two points; the official SAM 3 request API takes boxes for the detector only), with optional ``points``.
- ``remove``: that object leaves the run (every frame).
- ``"propagate": false`` on clicks: apply them and track nothing yet (several clicks, one propagation, as in a
  session): the next action that propagates, or the end of the list, tracks every object clicked since, both ways
  from its frame.

Ids are those of the run's ``tracks.txt`` (1-based); frames are 0-based output frames (after ``--fps`` /
``--start``); coordinates are pixels of the video. After each action the objects it touched are tracked again
through the clip, both ways from its frame; the rest is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

MAX_EDITS = 10_000


@dataclass(frozen=True)
class ClickEdit:
    """Clicks (and / or a box) on object ``obj_id`` on ``frame``: ``points`` ((x, y), ...) with ``labels``,
    ``box`` (x1, y1, x2, y2) or None; ``prompt`` names the concept of a new object (None: the run's only one)."""

    frame: int
    obj_id: int
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    prompt: str | None = None
    keep_old_points: bool = False
    propagate: bool = True  # False: the clicks wait for the next propagation (the module docstring)

    def describe(self) -> dict:
        out = {"frame": self.frame, "obj_id": self.obj_id}
        if self.points:
            out |= {"points": [list(p) for p in self.points], "labels": list(self.labels)}
        if self.box is not None:
            out["box"] = list(self.box)
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.keep_old_points:
            out["keep_old_points"] = True
        if not self.propagate:
            out["propagate"] = False
        return out


@dataclass(frozen=True)
class RemoveEdit:
    """Object ``obj_id`` leaves the run."""

    obj_id: int

    def describe(self) -> dict:
        return {"remove": self.obj_id}


Edit = ClickEdit | RemoveEdit
CLICK_KEYS = {"frame", "obj_id", "points", "labels", "box", "prompt", "keep_old_points", "propagate"}


def load_edits(path: "str | Path") -> list[Edit]:
    """The edits of a JSON file; a bad file or entry raises ``InputError`` naming the file and the entry (0-based)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"edits file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"edits file {path} cannot be read: {error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    return parse_edits(data, str(path))


def parse_edits(data, name: str = "edits") -> list[Edit]:
    """A JSON value (a list of action objects) -> edits; ``name`` prefixes every error."""
    if not isinstance(data, list):
        raise InputError(f"{name}: expected a JSON list of actions, got {type(data).__name__}")
    if len(data) > MAX_EDITS:
        raise InputError(f"{name}: {len(data)} actions, at most {MAX_EDITS}")
    return [_parse_entry(entry, f"{name}: entry {i}") for i, entry in enumerate(data)]


def _parse_entry(entry, where: str) -> Edit:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object such as {{\"frame\": 12, \"obj_id\": 3, \"points\": "
                         f"[[x, y]], \"labels\": [1]}} or {{\"remove\": 5}}, got {type(entry).__name__}")
    if "remove" in entry:
        if set(entry) != {"remove"}:
            raise InputError(f"{where}: a remove action has only \"remove\", got {sorted(entry)}")
        return RemoveEdit(_obj_id(entry["remove"], where, "remove"))
    unknown = set(entry) - CLICK_KEYS
    if unknown:
        raise InputError(f"{where}: unknown key {sorted(unknown)[0]!r} (keys: {', '.join(sorted(CLICK_KEYS))}, "
                         f"or \"remove\")")
    for key in ("frame", "obj_id"):
        if key not in entry:
            raise InputError(f"{where}: missing {key!r}")
    if "points" not in entry and "box" not in entry:
        raise InputError(f"{where}: give \"points\" with \"labels\", or a \"box\"")
    frame = entry["frame"]
    if isinstance(frame, bool) or not isinstance(frame, int) or frame < 0:
        raise InputError(f"{where}: frame must be a whole number >= 0, got {frame!r}")
    points, labels = (), ()
    if "points" in entry or "labels" in entry:
        points = _points(entry.get("points"), where)
        labels = entry.get("labels")
        if not isinstance(labels, list) or len(labels) != len(points) or \
                any(isinstance(v, bool) or v not in (0, 1) for v in labels):
            raise InputError(f"{where}: labels must be a list of 1 (positive) or 0 (negative), one per point "
                             f"({len(points)})")
        labels = tuple(int(v) for v in labels)
    box = None
    if "box" in entry:
        box = _numbers(entry["box"], 4, where, "box")
        if not (box[0] < box[2] and box[1] < box[3]):
            raise InputError(f"{where}: box must be x1, y1, x2, y2 with x1 < x2 and y1 < y2, got {list(box)}")
    prompt = entry.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or not prompt.strip()):
        raise InputError(f"{where}: prompt must be a non-empty string, got {prompt!r}")
    keep = entry.get("keep_old_points", False)
    if not isinstance(keep, bool):
        raise InputError(f"{where}: keep_old_points must be true or false, got {keep!r}")
    if keep and box is not None:
        raise InputError(f"{where}: a box replaces the object's earlier clicks on its frame (it comes before any "
                         f"point): drop keep_old_points")
    propagate = entry.get("propagate", True)
    if not isinstance(propagate, bool):
        raise InputError(f"{where}: propagate must be true or false, got {propagate!r}")
    return ClickEdit(frame, _obj_id(entry["obj_id"], where, "obj_id"), points, labels, box, prompt, keep, propagate)


def _obj_id(value, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{where}: {key} must be a track id (a whole number >= 1, as in tracks.txt), got {value!r}")
    return value


def _numbers(value, count: int, where: str, key: str) -> tuple[float, ...]:
    if not isinstance(value, list) or len(value) != count or \
            any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in value):
        raise InputError(f"{where}: {key} must be a list of {count} numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _points(value, where: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: points must be a non-empty list of [x, y], got {value!r}")
    return tuple(_numbers(p, 2, where, "each point") for p in value)


def check_edits(edits: list[Edit], num_frames: int | None, width: int, height: int, prompts: list[str],
                name: str = "edits") -> None:
    """What can be checked before tracking: frames within the clip, points and boxes within the frame, a known
    prompt (and one named for a new object when there are several: checked when it is applied)."""
    for i, edit in enumerate(edits):
        if not isinstance(edit, ClickEdit):
            continue
        where = f"{name}: entry {i}"
        if num_frames is not None and edit.frame >= num_frames:
            raise InputError(f"{where}: frame {edit.frame} is past the end of the clip ({num_frames} frames to track)")
        for x, y in edit.points:
            if not (0 <= x <= width and 0 <= y <= height):
                raise InputError(f"{where}: point ({x:g}, {y:g}) is outside the {width}x{height} frame")
        if edit.box is not None:
            x0, y0, x1, y1 = edit.box
            if not (0 <= x0 and 0 <= y0 and x1 <= width and y1 <= height):
                raise InputError(f"{where}: box {list(edit.box)} is outside the {width}x{height} frame")
        if edit.prompt is not None and edit.prompt not in prompts:
            raise InputError(f"{where}: prompt {edit.prompt!r} is not one of the run's ({', '.join(prompts)})")

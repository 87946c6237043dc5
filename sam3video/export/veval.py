"""SA-Co/VEval files: the ground truth and the official prediction format, read strictly, and
``predictions.veval.json``, written from a run's files.

Ground truth (YT-VIS-like JSON, ``sam3/eval/saco_veval_eval.py``)::

    {"videos": [{"id", "file_names": [T], "height", "width", "video_name"?, ...}],
     "annotations": [{"id", "video_id", "category_id", "segmentations": [T] RLE|null, "bboxes": [T] xywh|null,
                      "areas": [T] number|null, "iscrowd", "tags"?}],                  positive masklets
     "categories": [{"id", "name"}],
     "video_np_pairs": [{"video_id", "category_id", "noun_phrase", "num_masklets"}]}     positives and negatives

Predictions (what the official ``YTVISResultsWriter`` dumps): a list of masklets ``{"video_id", "category_id",
"score", "segmentations": [T] RLE|null, "bboxes": [T] xywh ([0, 0, 0, 0] where absent), "areas": [T]}``, RLEs
``{"size": [h, w], "counts": str}`` at the video's size, T the video's frame count (``len(file_names)``).
Masklets that sam3video writes carry two more keys, ``video_name`` and ``noun_phrase`` (ignored by the
official evaluators): ``read_predictions`` ties such a masklet to the ground truth by these names, so a run
made without the ground truth's ids can be scored.

Every problem raises ``InputError`` naming the file and the entry.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from .tables import RLE_CHARS, _rle_runs, read_mot, read_mots

PREDICTIONS_NAME = "predictions.veval.json"  # beside tracks.txt in a run folder


@dataclass(frozen=True)
class VevalVideo:
    """One ground-truth video: ``num_frames`` = ``len(file_names)`` (what every masklet's lists hold)."""

    id: int
    name: str
    file_names: tuple[str, ...]
    height: int
    width: int

    @property
    def num_frames(self) -> int:
        return len(self.file_names)


@dataclass
class Masklet:
    """One object through a video: per frame an RLE dict (``counts`` a str) or None, an ``xywh`` box or None,
    an area or None. Ground truth: ``id``, ``iscrowd``, ``tags``; predictions: ``score``."""

    video_id: int
    category_id: int
    segmentations: list
    bboxes: list
    areas: list
    score: float = 1.0
    id: int = 0
    iscrowd: bool = False
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"video_id": self.video_id, "category_id": self.category_id, "score": self.score,
                "segmentations": self.segmentations, "bboxes": self.bboxes, "areas": self.areas}


@dataclass(frozen=True)
class VevalPair:
    """A (video, noun phrase) pair of the ground truth; ``num_masklets`` 0 for a negative pair."""

    video_id: int
    category_id: int
    noun_phrase: str
    num_masklets: int


@dataclass
class VevalGroundTruth:
    path: Path
    videos: dict[int, VevalVideo]
    annotations: list[Masklet]
    pairs: list[VevalPair]
    categories: dict[int, str] = field(default_factory=dict)

    @property
    def has_tags(self) -> bool:
        """Whether every annotation has ``tags`` (the official evaluator then also scores the challenging pairs)."""
        return bool(self.annotations) and all(a.tags is not None for a in self.annotations)

    def video_by_name(self, name: str) -> VevalVideo | None:
        for video in self.videos.values():
            if name == video.name:
                return video
        return None


def _load_json(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a folder, not a JSON file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what} {path} is not JSON: {e}") from None


def _integer(value, where: str, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or isinstance(value, float) and (
            not math.isfinite(value) or value != int(value)):
        raise InputError(f"{where}: {name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise InputError(f"{where}: {name} must be at least {minimum}, got {value!r}")
    return int(value)


def _number(value, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: {name} must be a finite number, got {value!r}")
    return value


def _rle(value, where: str, height: int, width: int):
    """A checked RLE (compressed ``counts`` str; uncompressed integer lists are compressed) or None."""
    if value is None:
        return None
    if not isinstance(value, dict) or "counts" not in value or "size" not in value:
        raise InputError(f"{where}: a segmentation must be null or an RLE {{'size': [h, w], 'counts': ...}}")
    size = value["size"]
    if not (isinstance(size, list) and len(size) == 2) or [_integer(s, where, "size", 1) for s in size] != [
            height, width]:
        raise InputError(f"{where}: RLE size {size} is not the video's {height}x{width} ([h, w])")
    counts = value["counts"]
    if isinstance(counts, list):
        runs = [_integer(c, where, "an RLE count", 0) for c in counts]
        if sum(runs) != height * width:
            raise InputError(f"{where}: RLE counts cover {sum(runs)} pixels, not {height}x{width}")
        from pycocotools import mask as mask_utils

        compressed = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
        return {"size": [height, width], "counts": compressed["counts"].decode("ascii")}
    if not isinstance(counts, str) or not set(counts) <= RLE_CHARS:
        raise InputError(f"{where}: RLE counts must be a compressed RLE string or a list of integers")
    runs = _rle_runs(counts)
    if not runs or runs[0] < 0 or any(run < 0 for run in runs[1:]) or sum(runs) != height * width:
        raise InputError(f"{where}: RLE counts do not cover the video's {height}x{width} pixels")
    return {"size": [height, width], "counts": counts}


def _box(value, where: str):
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 4:
        raise InputError(f"{where}: a box must be null or [x, y, w, h]")
    return [_number(v, where, "a box coordinate") for v in value]


def _masklet(entry, where: str, videos: dict[int, VevalVideo], is_gt: bool,
             video_id: int | None = None, category_id: int | None = None) -> Masklet:
    if not isinstance(entry, dict):
        raise InputError(f"{where}: must be an object")
    missing = [k for k in ("video_id", "category_id", "segmentations", "bboxes", "areas") + (
        ("id",) if is_gt else ("score",)) if k not in entry]
    if missing:
        raise InputError(f"{where}: has no {', '.join(missing)}")
    video_id = _integer(entry["video_id"], where, "video_id") if video_id is None else video_id
    category_id = _integer(entry["category_id"], where, "category_id") if category_id is None else category_id
    video = videos.get(video_id)
    if video is None:
        raise InputError(f"{where}: video_id {video_id} is not a video of the ground truth")
    lists = {k: entry[k] for k in ("segmentations", "bboxes", "areas")}
    for key, value in lists.items():
        if not isinstance(value, list) or len(value) != video.num_frames:
            got = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
            raise InputError(f"{where}: {key} has {got}; video {video_id} has {video.num_frames} frames")
    height, width = video.height, video.width
    if is_gt:
        height = _integer(entry.get("height", height), where, "height", 1)
        width = _integer(entry.get("width", width), where, "width", 1)
    segmentations = [_rle(s, f"{where}, frame {t}", height, width) for t, s in enumerate(lists["segmentations"])]
    bboxes = [_box(b, f"{where}, frame {t}") for t, b in enumerate(lists["bboxes"])]
    areas = [None if a is None else _number(a, f"{where}, frame {t}", "area") for t, a in enumerate(lists["areas"])]
    tags = entry.get("tags")
    return Masklet(video_id=video_id, category_id=category_id, segmentations=segmentations, bboxes=bboxes, areas=areas,
                   score=1.0 if is_gt else float(_number(entry["score"], where, "score")),
                   id=_integer(entry["id"], where, "id") if is_gt else 0,
                   iscrowd=bool(entry.get("iscrowd", 0)),
                   tags=tuple(tags) if isinstance(tags, list) else None)


def read_ground_truth(path: str | Path) -> VevalGroundTruth:
    """Read and check a SA-Co/VEval ground-truth file (``InputError`` naming the entry for any problem)."""
    path = Path(path)
    data = _load_json(path, "ground truth")
    if not isinstance(data, dict):
        raise InputError(f"ground truth {path}: must be a JSON object with videos, annotations and video_np_pairs")
    for key in ("videos", "annotations", "video_np_pairs"):
        if key not in data:
            hint = (" (cgF1 needs every (video, noun phrase) pair, the negative ones included)"
                    if key == "video_np_pairs" else "")
            raise InputError(f"ground truth {path} has no {key}{hint}")
        if not isinstance(data[key], list):
            raise InputError(f"ground truth {path}: {key} must be a list")
    videos: dict[int, VevalVideo] = {}
    for i, entry in enumerate(data["videos"]):
        where = f"ground truth {path}, videos[{i}]"
        if not isinstance(entry, dict) or not {"id", "file_names", "height", "width"} <= set(entry):
            raise InputError(f"{where}: needs id, file_names, height and width")
        names = entry["file_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise InputError(f"{where}: file_names must be a non-empty list of paths")
        video_id = _integer(entry["id"], where, "id")
        if video_id in videos:
            raise InputError(f"{where}: video id {video_id} appears twice")
        name = entry.get("video_name") or names[0].split("/")[0]
        videos[video_id] = VevalVideo(video_id, str(name), tuple(names), _integer(entry["height"], where, "height", 1),
                                      _integer(entry["width"], where, "width", 1))
    annotations = [_masklet(entry, f"ground truth {path}, annotations[{i}]", videos, is_gt=True)
                   for i, entry in enumerate(data["annotations"])]
    seen: dict[tuple[int, int, int], int] = {}
    for i, a in enumerate(annotations):
        key = (a.video_id, a.category_id, a.id)
        if key in seen:
            raise InputError(f"ground truth {path}, annotations[{i}]: id {a.id} is also annotations[{seen[key]}] "
                             f"of the same video and category")
        seen[key] = i
    pairs = []
    for i, entry in enumerate(data["video_np_pairs"]):
        where = f"ground truth {path}, video_np_pairs[{i}]"
        if not isinstance(entry, dict) or not {"video_id", "category_id"} <= set(entry):
            raise InputError(f"{where}: needs video_id and category_id")
        video_id = _integer(entry["video_id"], where, "video_id")
        if video_id not in videos:
            raise InputError(f"{where}: video_id {video_id} is not a video of the ground truth")
        pairs.append(VevalPair(video_id, _integer(entry["category_id"], where, "category_id"),
                               str(entry.get("noun_phrase", "")), _integer(entry.get("num_masklets", 0), where,
                                                                         "num_masklets", 0)))
    categories = {}
    for entry in data.get("categories", []) or []:
        if isinstance(entry, dict) and "id" in entry and "name" in entry:
            categories[entry["id"]] = str(entry["name"])
    return VevalGroundTruth(path, videos, annotations, pairs, categories)


def prediction_files(path: str | Path) -> list[Path]:
    """The prediction JSON files of ``path``: itself (a file), a run folder's ``predictions.veval.json``, or
    those of the run folders under a folder (a ``benchmark veval`` output), in sorted order."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise InputError(f"predictions {path} do not exist")
    if (path / PREDICTIONS_NAME).is_file():
        return [path / PREDICTIONS_NAME]
    found = sorted(p for p in path.rglob(PREDICTIONS_NAME) if ".partial" not in p.parts)
    if not found:
        raise InputError(f"no {PREDICTIONS_NAME} in {path} (give a prediction JSON file, a run folder of "
                         f"`sam3video track`, or a folder of them)")
    return found


def _resolve_by_name(entry: dict, gt: VevalGroundTruth, where: str) -> tuple[int, int] | None:
    """(video_id, category_id) of a sam3video masklet by its ``video_name`` and ``noun_phrase``, or None if it
    names none; ``InputError`` if it names a video or phrase the ground truth does not have."""
    name, phrase = entry.get("video_name"), entry.get("noun_phrase")
    if not isinstance(name, str) or not isinstance(phrase, str):
        return None
    video = gt.video_by_name(name)
    if video is None:
        raise InputError(f"{where}: video {name!r} is not in the ground truth {gt.path} (its videos are named by "
                         f"video_name, else by the folder of their frames)")
    for pair in gt.pairs:
        if pair.video_id == video.id and pair.noun_phrase == phrase:
            return video.id, pair.category_id
    for category_id, category in gt.categories.items():
        if category == phrase:
            return video.id, category_id
    raise InputError(f"{where}: noun phrase {phrase!r} is not a category of the ground truth {gt.path}")


def read_predictions(path: str | Path, gt: VevalGroundTruth) -> list[Masklet]:
    """The masklets of ``prediction_files(path)``, checked against ``gt`` (videos, frame counts, mask sizes)."""
    masklets: list[Masklet] = []
    for file in prediction_files(path):
        data = _load_json(file, "predictions")
        if not isinstance(data, list):
            raise InputError(f"predictions {file}: must be a JSON list of masklets (the official format)")
        for i, entry in enumerate(data):
            where = f"predictions {file}, entry {i}"
            video_id, category_id = (_resolve_by_name(entry, gt, where) if isinstance(entry, dict) else None
                                     ) or (None, None)
            masklets.append(_masklet(entry, where, gt.videos, is_gt=False, video_id=video_id,
                                     category_id=category_id))
    return masklets


# --- writing a run's masklets ------------------------------------------------------------------------------


def official_box(rle: dict) -> list[float]:
    """The official writer's box of a mask, ``xywh`` with the last pixel's coordinate as its far corner
    (``mask_to_box`` then ``convert_to_xywh``: a one-pixel mask has w = h = 0); [0, 0, 0, 0] if empty."""
    from pycocotools import mask as mask_utils

    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return [x, y, w - 1, h - 1] if w > 0 else [0.0, 0.0, 0.0, 0.0]


@dataclass(frozen=True)
class VevalIds:
    """How a run's masklets name their video and noun phrases in a VEval ground truth: ``video_name`` (matched
    to the ground truth's by ``read_predictions``), and the ground truth's ids when known (``benchmark
    veval``): ``video_id``, ``category_ids`` one per prompt (None: 1, 2, ... in prompt order)."""

    video_name: str
    video_id: int = 0
    category_ids: tuple[int, ...] | None = None


def video_name_of(source: str) -> str:
    """A video's name from how a run names its source: a file's stem, a frame folder's name."""
    path = Path(str(source).rstrip("/"))
    return path.stem if path.suffix else path.name or str(source)


def run_masklets(mots_paths: Sequence[Path], mot_paths: Sequence[Path], num_frames: int,
                 class_names: Sequence[str], ids: VevalIds) -> list[dict]:
    """One masklet per track of a run's MOTS files (masks) and MOT files (scores) — the final files or one
    segment per window, frames numbered through the run — in the official prediction format, plus
    ``video_name`` and ``noun_phrase`` (the track's prompt).

    ``score``: the mean of the track's per-frame confidence over its frames, as the official writer scores a
    tracking-by-detection masklet (``PostProcessAPIVideo``); with the official loop each frame's confidence is
    the object's detection score at birth (``obj_id_to_score``), so this is that score. Boxes are the
    official writer's (``official_box``); a frame without the track has no mask, a zero box and area 0."""
    from pycocotools import mask as mask_utils

    category_ids = list(ids.category_ids) if ids.category_ids is not None else list(range(1, len(class_names) + 1))
    if len(category_ids) != len(class_names):
        raise InputError(f"{len(category_ids)} category ids for {len(class_names)} prompts")
    confidence: dict[tuple[int, int], float] = {}
    for path in mot_paths:
        boxes = read_mot(path)
        confidence.update({(int(f), int(i)): float(c) for f, i, c in zip(boxes.frames, boxes.ids, boxes.confidence)})
    tracks: dict[int, dict] = defaultdict(dict)
    classes: dict[int, int] = {}
    for path in mots_paths:
        masks = read_mots(path)
        for frame, track_id, class_id, rle in zip(masks.frames, masks.ids, masks.class_ids, masks.rles):
            tracks[int(track_id)][int(frame) - 1] = rle
            classes[int(track_id)] = int(class_id) - 1
    out = []
    for track_id in sorted(tracks):
        frames, prompt = tracks[track_id], classes[track_id]
        segmentations, bboxes, areas = [None] * num_frames, [[0.0, 0.0, 0.0, 0.0]] * num_frames, [0] * num_frames
        for t, rle in frames.items():
            if 0 <= t < num_frames:
                segmentations[t] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
                areas[t] = int(mask_utils.area(rle))
                bboxes[t] = official_box(rle)
        scores = [confidence.get((t + 1, track_id), 0.0) for t in frames]
        out.append({"video_id": ids.video_id, "category_id": category_ids[prompt], "score": float(np.mean(scores)),
                    "segmentations": segmentations, "bboxes": bboxes, "areas": areas,
                    "video_name": ids.video_name, "noun_phrase": class_names[prompt]})
    return out


def write_masklets(file, masklets: list[dict]) -> None:
    json.dump(masklets, file, separators=(",", ":"))

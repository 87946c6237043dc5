"""Strict readers of MOTChallenge box files and MOTS mask files (for evaluation, rendering, tests).

MOT (boxes), one instance per line, commas (or blanks) between fields, at least 6 numeric fields:
``frame,id,x,y,w,h[,conf,class,visibility,...]`` — frames 1-based, ``x, y`` the top-left corner and
``w, h`` the size in pixels. In ground truth a row whose ``conf`` (7th field) is 0 is not evaluated
(MOTChallenge's "ignore" flag; synthetic ground truth writes 1). In predictions ``conf`` is a score.

MOTS (masks), one instance per line, blanks between exactly 6 fields: ``frame id class_id h w rle`` —
frames 1-based, ``rle`` pycocotools' compressed run-length string of an ``h x w`` mask in column-major
order. Ground-truth rows of class ``MOTS_IGNORE_CLASS`` (10) are ignore regions, as in MOTSChallenge.
The RLE is checked in Python (its runs must cover exactly ``h x w`` pixels) before pycocotools sees it,
and a mask may have at most ``MAX_MASK_PIXELS`` pixels, so a short line cannot ask for gigabytes.

Frames, ids and classes are integers below ``MAX_INTEGER`` (2**53: exact in float64, fits int64).

Every problem raises ``InputError`` naming the file and the line. These are the only parsers of the two
formats: ``sam3video.export.read_mot`` / ``read_mots`` turn their tables into per-frame ``Detections``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from sam3video.errors import InputError

MOT_MIN_FIELDS = 6
MOT_MAX_FIELDS = 10  # frame, id, x, y, w, h, conf, then three more (gt: class, visibility; tracker: -1)
MOTS_FIELDS = 6
MOTS_IGNORE_CLASS = 10
MOT_CONF_COLUMN = 6  # 0-based index of ``conf`` in a MOT line
RLE_CHARS = frozenset(chr(c) for c in range(48, 112))  # pycocotools' compressed RLE alphabet
MAX_INTEGER = 2**53  # frames, ids and classes must be below it (exact in float64, fits int64)
MAX_MASK_PIXELS = 2**28  # h * w of a MOTS mask (16384 x 16384); 8K video is 2**25
_MOT_SPLIT = re.compile(r"\s*,\s*|\s+")


@dataclass(frozen=True)
class TrackTable:
    """The instances of one file; row ``r`` is one instance in one frame, rows sorted by frame.

    ``frames`` (R,) int64 1-based; ``ids`` (R,) int64; ``lines`` (R,) int64, 1-based line numbers in
    ``path``; ``class_ids`` (R,) int64 (MOT: 8th field, -1 when absent); MOT only: ``boxes`` (R, 4)
    float64 ``x, y, w, h`` in pixels, ``confidence`` (R,) float64 and ``extra`` (R, 3) float64 fields
    8-10 (-1 when absent; ground truth: class, visibility); MOTS only: ``rles``, R pycocotools
    RLE dicts ``{"size": [h, w], "counts": bytes}`` and ``image_size`` ``(h, w)`` (None for an empty file).
    """

    path: Path
    kind: str
    frames: np.ndarray
    ids: np.ndarray
    lines: np.ndarray
    class_ids: np.ndarray
    boxes: np.ndarray | None = None
    confidence: np.ndarray | None = None
    extra: np.ndarray | None = None
    rles: tuple[dict, ...] | None = None
    image_size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_frames(self) -> int:
        """The last frame that has an instance (1-based), 0 for an empty file."""
        return int(self.frames.max()) if len(self.frames) else 0

    def select(self, keep: np.ndarray) -> "TrackTable":
        """The rows where the boolean ``keep`` (R,) is true."""
        keep = np.asarray(keep, bool)
        return replace(
            self,
            frames=self.frames[keep],
            ids=self.ids[keep],
            lines=self.lines[keep],
            class_ids=self.class_ids[keep],
            boxes=None if self.boxes is None else self.boxes[keep],
            confidence=None if self.confidence is None else self.confidence[keep],
            extra=None if self.extra is None else self.extra[keep],
            rles=None if self.rles is None else tuple(r for r, k in zip(self.rles, keep) if k),
        )

    def frame_slices(self, num_frames: int) -> list[slice]:
        """For frames 1..num_frames, the slice of rows in each (rows are sorted by frame)."""
        bounds = np.searchsorted(self.frames, np.arange(1, num_frames + 2), side="left")
        return [slice(int(bounds[t]), int(bounds[t + 1])) for t in range(num_frames)]


def _bad_line(path: Path, lineno: int, line: str, problem: str) -> InputError:
    """``InputError("<path>:<line>: <problem> (line: '<text>')")``."""
    text = line.strip()
    shown = repr(text[:80]) + ("..." if len(text) > 80 else "")
    return InputError(f"{path}:{lineno}: {problem} (line: {shown})")


def _content_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of ``path`` with their 1-based numbers, read lazily."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as handle:
            for lineno, line in enumerate(handle, start=1):
                if line.strip():
                    yield lineno, line
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it as text ({err})") from None


def detect_kind(path: str | Path) -> str | None:
    """``"mots"`` if the first line ends in a non-numeric RLE field, ``"mot"`` if not, None if empty."""
    first = next(_content_lines(Path(path)), None)
    if first is None:
        return None
    line = first[1]
    fields = line.split()
    if len(fields) == MOTS_FIELDS and "," not in line and not _is_number(fields[-1]):
        return "mots"
    return "mot"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_unique(path: Path, frames: np.ndarray, ids: np.ndarray, lines: np.ndarray) -> None:
    """An id may appear only once per frame."""
    seen: dict[tuple[int, int], int] = {}
    for frame, track_id, lineno in zip(frames.tolist(), ids.tolist(), lines.tolist()):
        first = seen.setdefault((frame, track_id), lineno)
        if first != lineno:
            raise InputError(f"{path}:{lineno}: id {track_id} appears twice in frame {frame} "
                             f"(also on line {first})")


def _sorted_table(**columns) -> TrackTable:
    order = np.argsort(columns["frames"], kind="stable")
    for key in ("frames", "ids", "lines", "class_ids", "boxes", "confidence", "extra"):
        if columns.get(key) is not None:
            columns[key] = columns[key][order]
    if columns.get("rles") is not None:
        columns["rles"] = tuple(columns["rles"][i] for i in order)
    return TrackTable(**columns)


def _parse_mot_line(path: Path, lineno: int, line: str, detections: bool = False) -> list[float]:
    """The 10 fields ``[frame, id, x, y, w, h, conf, f8, f9, f10]`` of one MOT line (conf 1 and the
    others -1 when absent). ``detections``: a detection file, where the id is -1 (or any integer)."""
    def bad(problem: str) -> InputError:
        return _bad_line(path, lineno, line, problem)

    fields = _MOT_SPLIT.split(line.strip())
    if fields[-1] == "":  # a trailing comma
        fields = fields[:-1]
    if not MOT_MIN_FIELDS <= len(fields) <= MOT_MAX_FIELDS:
        raise bad(f"expected {MOT_MIN_FIELDS} to {MOT_MAX_FIELDS} fields frame,id,x,y,w,h[,conf,x,y,z], "
                  f"got {len(fields)}")
    not_numbers = [f for f in fields if not _is_number(f)]
    if not_numbers:
        raise bad(f"field {not_numbers[0]!r} is not a number")
    values = [float(f) for f in fields]
    frame, track_id, _, _, w, h = values[:MOT_MIN_FIELDS]
    if not all(math.isfinite(v) for v in values[:MOT_MIN_FIELDS]):
        raise bad("frame, id and box must be finite numbers")
    if frame != int(frame) or not 1 <= frame < MAX_INTEGER:
        raise bad(f"frame must be an integer in [1, 2**53) (frames are 1-based), got {fields[0]}")
    if track_id != int(track_id) or not (-1 if detections else 0) <= track_id < MAX_INTEGER:
        raise bad(f"id must be an integer in [{-1 if detections else 0}, 2**53), got {fields[1]}")
    if w < 0 or h < 0:
        raise bad(f"box width and height must be >= 0, got {fields[4]}, {fields[5]}")
    return values + [1.0, -1.0, -1.0, -1.0][len(values) - MOT_MIN_FIELDS:]


def read_mot(path: str | Path, *, is_gt: bool = False) -> TrackTable:
    """Read a MOTChallenge box file; with ``is_gt`` rows whose ``conf`` field is 0 are dropped."""
    path = Path(path)
    parsed = [(lineno, _parse_mot_line(path, lineno, line)) for lineno, line in _content_lines(path)]
    table = np.asarray([values for _, values in parsed], np.float64).reshape(-1, MOT_MAX_FIELDS)
    lines = np.asarray([lineno for lineno, _ in parsed], np.int64)
    if is_gt:
        keep = table[:, MOT_CONF_COLUMN] != 0
        table, lines = table[keep], lines[keep]
    frames, ids = table[:, 0].astype(np.int64), table[:, 1].astype(np.int64)
    _check_unique(path, frames, ids, lines)
    return _sorted_table(path=path, kind="mot", frames=frames, ids=ids, lines=lines,
                         class_ids=table[:, 7].astype(np.int64), boxes=table[:, 2:6].copy(),
                         confidence=table[:, MOT_CONF_COLUMN].copy(), extra=table[:, 7:10].copy())


def read_detections(path: str | Path) -> TrackTable:
    """Read a MOTChallenge detection file, ``frame,-1,x,y,w,h,score[,...]`` (public detections, or any
    detector's output in that format): the id is -1 or any integer and is not a track (not checked for
    uniqueness); ``confidence`` is the score. Bad lines raise ``InputError`` naming file and line."""
    path = Path(path)
    parsed = [(lineno, _parse_mot_line(path, lineno, line, detections=True)) for lineno, line in _content_lines(path)]
    table = np.asarray([values for _, values in parsed], np.float64).reshape(-1, MOT_MAX_FIELDS)
    lines = np.asarray([lineno for lineno, _ in parsed], np.int64)
    return _sorted_table(path=path, kind="mot", frames=table[:, 0].astype(np.int64), ids=table[:, 1].astype(np.int64),
                         lines=lines, class_ids=np.zeros(len(table), np.int64), boxes=table[:, 2:6].copy(),
                         confidence=table[:, MOT_CONF_COLUMN].copy(), extra=table[:, 7:10].copy())


def _parse_mots_line(path: Path, lineno: int, line: str, first_frame: int = 1
                     ) -> tuple[int, int, int, int, int, str]:
    """``(frame, id, class_id, h, w, rle)`` of one MOTS line."""
    def bad(problem: str) -> InputError:
        return _bad_line(path, lineno, line, problem)

    fields = line.split()
    if len(fields) != MOTS_FIELDS:
        raise bad(f"expected {MOTS_FIELDS} fields 'frame id class_id h w rle', got {len(fields)}")
    try:
        frame, track_id, class_id, h, w = (int(f) for f in fields[:5])
    except ValueError:
        raise bad("frame, id, class_id, h and w must be integers") from None
    if frame < first_frame:
        first = "frames are 1-based" if first_frame == 1 else "the first frame"
        raise bad(f"frame must be >= {first_frame} ({first}), got {frame}")
    if track_id < 0 or h <= 0 or w <= 0:
        raise bad("id must be >= 0, and h and w > 0")
    if max(frame, track_id, abs(class_id)) >= MAX_INTEGER:
        raise bad("frame, id and class_id must be below 2**53 in magnitude")
    if h * w > MAX_MASK_PIXELS:
        raise bad(f"mask size {h}x{w} exceeds {MAX_MASK_PIXELS} pixels")
    if not set(fields[5]) <= RLE_CHARS:
        raise bad("the mask is not a compressed RLE string (characters '0'..'o')")
    return frame, track_id, class_id, h, w, fields[5]


def read_mots(path: str | Path, *, allow_overlap: bool = False, first_frame: int = 1) -> TrackTable:
    """Read a MOTS mask file; masks of one frame must not overlap unless ``allow_overlap``. Frames are
    1-based unless ``first_frame`` says otherwise (``frames`` holds them as written)."""

    path = Path(path)
    frames, ids, classes, linenos, rles = [], [], [], [], []
    size = None
    for lineno, line in _content_lines(path):
        frame, track_id, class_id, h, w, counts = _parse_mots_line(path, lineno, line, first_frame)
        if size is None:
            size = (h, w)
        elif (h, w) != size:
            raise _bad_line(path, lineno, line, f"mask size {h}x{w} differs from {size[0]}x{size[1]} above")
        rle = {"size": [h, w], "counts": counts.encode("ascii")}
        if not _is_valid_rle(rle):
            raise _bad_line(path, lineno, line, f"the mask is not a valid COCO RLE of a {h}x{w} mask")
        frames.append(frame)
        ids.append(track_id)
        classes.append(class_id)
        linenos.append(lineno)
        rles.append(rle)
    table = _sorted_table(path=path, kind="mots", frames=np.asarray(frames, np.int64),
                          ids=np.asarray(ids, np.int64), lines=np.asarray(linenos, np.int64),
                          class_ids=np.asarray(classes, np.int64), rles=tuple(rles), image_size=size)
    _check_unique(path, table.frames, table.ids, table.lines)
    if not allow_overlap:
        _check_no_overlap(table)
    return table


def _rle_runs(counts: str) -> list[int] | None:
    """The run lengths of a compressed RLE string, decoded as pycocotools' ``rleFrString`` does (5 bits
    a character, offset 48, bit 0x20 "more", sign from bit 0x10, runs from the fourth on stored as
    differences to the run two before); None if the last run is cut off."""
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if position == len(counts):
                return None
            c = ord(counts[position]) - 48
            value |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            position, shift = position + 1, shift + 5
            if not more and c & 0x10:
                value |= -1 << shift
        runs.append(value + runs[-2] if len(runs) > 2 else value)
    return runs


def _rle_string(runs: list[int]) -> str:
    """pycocotools' ``rleToString``: the one compressed string of ``runs``."""
    chars = []
    for i, run in enumerate(runs):
        value = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = value & 0x1F
            value >>= 5
            more = value != -1 if c & 0x10 else value != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
    return "".join(chars)


def _is_valid_rle(rle: dict) -> bool:
    """Whether ``rle`` is the encoding pycocotools gives a mask of exactly ``size`` pixels: its runs
    cover ``h * w`` pixels, none is negative, only the first may be empty, and the string is the one
    encoding of its runs. Checked in Python, without decoding the mask (nor trusting pycocotools' C
    decoder with a malformed string)."""
    h, w = rle["size"]
    counts = rle["counts"].decode("ascii")
    runs = _rle_runs(counts)
    if not runs or runs[0] < 0 or any(run <= 0 for run in runs[1:]) or sum(runs) != h * w:
        return False
    return _rle_string(runs) == counts


def _check_no_overlap(table: TrackTable) -> None:
    """MOTS masks of one frame are disjoint: the union's area equals the sum of the areas."""
    from pycocotools import mask as mask_utils

    _, starts = np.unique(table.frames, return_index=True)  # rows are sorted by frame
    for rows in (slice(int(a), int(b)) for a, b in zip(starts, list(starts[1:]) + [len(table)])):
        rles = list(table.rles[rows])
        if len(rles) < 2:
            continue
        union = mask_utils.area(mask_utils.merge(rles, intersect=False))
        if union != int(np.sum(mask_utils.area(rles))):
            lines = ", ".join(str(n) for n in table.lines[rows])
            raise InputError(f"{table.path}: masks overlap in frame {int(table.frames[rows.start])} "
                             f"(lines {lines}); MOTS masks of one frame must be disjoint")


def read_tracks(
    path: str | Path, kind: str, *, is_gt: bool = False, allow_overlap: bool = False
) -> TrackTable:
    """Read ``path`` as ``kind`` ("mot" or "mots")."""
    if kind == "mot":
        return read_mot(path, is_gt=is_gt)
    if kind == "mots":
        return read_mots(path, allow_overlap=allow_overlap)
    raise InputError(f"unknown file kind {kind!r}: expected 'mot' or 'mots'")

"""MOTChallenge box tracks: ``tracks.txt`` writer and reader.

One line per tracked object per frame, comma separated::

    frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1

``frame`` is 1-based (``frame_index + 1``; frame indices are 0-based everywhere else in sam3video),
``id`` is the 1-based ``tracker_id``. Boxes are in pixels of the original video with the top-left pixel
at (0, 0) — the convention of ByteTrack and most MOT tracker outputs; TrackEval compares boxes of a
ground-truth and a tracker file without any offset, so both must use the same origin.
``bb_width = x1 - x0`` since ``x1`` is exclusive. Only detections with a ``tracker_id`` >= 1 are written.
"""

from __future__ import annotations

import os
import re
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..detections import Detections
from ..errors import InputError
from .atomic import atomic_open

MOT_COLUMNS = 10  # frame, id, left, top, width, height, conf, x, y, z (MOT tracker / det layout)
MIN_MOT_COLUMNS = 6  # frame, id and the box are required; conf defaults to 1, the rest to -1
_DEFAULT_TAIL = [1.0, -1.0, -1.0, -1.0]  # conf, x, y, z when a line stops after the box
_SEPARATOR = re.compile(r"\s*,\s*|\s+")


def tracked(detections: Detections) -> Detections:
    """The detections that carry a tracker id >= 1 (none if ``tracker_id`` is None); ``tracker_id`` is set."""
    if detections.tracker_id is None:
        none = detections[np.zeros(len(detections), bool)]
        none.tracker_id = np.zeros(0, np.int64)
        return none
    return detections[detections.tracker_id >= 1]


class _FrameOrder:
    """Checks that frame indices arrive strictly increasing (each frame written once, in order)."""

    def __init__(self) -> None:
        self.last: int | None = None

    def check(self, frame_index: int) -> int:
        frame_index = int(frame_index)
        if frame_index < 0 or (self.last is not None and frame_index <= self.last):
            raise ValueError(f"frame_index must increase and be >= 0; got {frame_index} after {self.last}")
        self.last = frame_index
        return frame_index


class TrackFileWriter:
    """Base of the line-per-detection writers: an atomic text file, frames strictly increasing."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._stack: ExitStack | None = None
        self._file = None
        self._order = _FrameOrder()
        self.num_lines = 0

    def __enter__(self):
        self._stack = ExitStack()
        self._file = self._stack.enter_context(atomic_open(self.path, "w"))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack, self._file = self._stack, None, None
        return stack.__exit__(exc_type, exc, tb)

    def _begin_frame(self, frame_index: int, detections: Detections) -> tuple[int, Detections]:
        """(0-based frame index checked to increase, the tracked detections); only inside the with-block."""
        if self._file is None:
            raise RuntimeError(f"{type(self).__name__}.write called outside its with-block")
        return self._order.check(frame_index), tracked(detections)


class MOTWriter(TrackFileWriter):
    """Context manager writing ``(frame_index, Detections)`` as a MOTChallenge file, atomically.

    >>> with MOTWriter("tracks.txt") as w:
    ...     for frame_index, dets in results:
    ...         w.write(frame_index, dets)

    Lines of a frame are sorted by id. ``box_decimals`` / ``conf_decimals`` set the printed precision.
    """

    def __init__(self, path: str | os.PathLike, *, box_decimals: int = 2, conf_decimals: int = 4) -> None:
        super().__init__(path)
        self.box_decimals = box_decimals
        self.conf_decimals = conf_decimals

    def write(self, frame_index: int, detections: Detections) -> None:
        """Append one frame (0-based ``frame_index``, strictly increasing); untracked detections are skipped."""
        frame, dets = self._begin_frame(frame_index, detections)
        frame += 1
        b, c = self.box_decimals, self.conf_decimals
        for i in np.argsort(dets.tracker_id, kind="stable"):
            x0, y0, x1, y1 = (float(v) for v in dets.xyxy[i])
            self._file.write(
                f"{frame},{int(dets.tracker_id[i])},{x0:.{b}f},{y0:.{b}f},{x1 - x0:.{b}f},{y1 - y0:.{b}f},"
                f"{float(dets.confidence[i]):.{c}f},-1,-1,-1\n"
            )
            self.num_lines += 1


def _parse_line(line: str, path: Path, lineno: int) -> list[float]:
    fields = _SEPARATOR.split(line.strip())
    if not MIN_MOT_COLUMNS <= len(fields) <= MOT_COLUMNS:
        raise InputError(
            f"{path}:{lineno}: expected {MIN_MOT_COLUMNS} to {MOT_COLUMNS} comma-separated values "
            f"(frame,id,bb_left,bb_top,bb_width,bb_height,conf,x,y,z), got {len(fields)}"
        )
    try:
        values = [float(f) for f in fields]
    except ValueError:
        raise InputError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
    if not all(np.isfinite(values)):
        raise InputError(f"{path}:{lineno}: non-finite value in {line.strip()!r}")
    frame, track_id, _, _, width, height = values[:MIN_MOT_COLUMNS]
    if frame != int(frame) or frame < 1:
        raise InputError(f"{path}:{lineno}: frame must be an integer >= 1 (MOT frames are 1-based), got {fields[0]}")
    if track_id != int(track_id):
        raise InputError(f"{path}:{lineno}: id must be an integer, got {fields[1]}")
    if width < 0 or height < 0:
        raise InputError(f"{path}:{lineno}: negative box width or height in {line.strip()!r}")
    return values + _DEFAULT_TAIL[len(values) - MIN_MOT_COLUMNS:]


def read_mot_array(path: str | os.PathLike) -> np.ndarray:
    """All rows of a MOT file as an (M, 10) float64 array, in file order.

    Accepts comma- or space-separated lines of 6 to 10 values (tracker, det and gt files); a missing
    ``conf`` is 1 and missing trailing columns are -1. Blank lines are skipped. A malformed line raises
    ``InputError`` naming the file and the 1-based line number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"MOT file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read MOT file {path}: {error}") from None
    rows = [_parse_line(line, path, n) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    return np.asarray(rows, dtype=np.float64).reshape(-1, MOT_COLUMNS)


def read_mot(path: str | os.PathLike) -> dict[int, Detections]:
    """A MOT file as ``{frame_index (0-based): Detections}``, only for frames that have rows.

    ``xyxy`` from the box, ``confidence`` from column 7, ``tracker_id`` from ``id``, ``class_id`` 0
    (MOT tracker files carry no class), ``data["extra"]`` (N, 3) columns 8-10 (in MOTChallenge
    ground truth: class, visibility, -1; in tracker files: -1).
    """
    rows = read_mot_array(path)
    result: dict[int, Detections] = {}
    frames = rows[:, 0].astype(np.int64)
    for frame in np.unique(frames):
        r = rows[frames == frame]
        xyxy = np.concatenate([r[:, 2:4], r[:, 2:4] + r[:, 4:6]], axis=1)
        result[int(frame) - 1] = Detections(
            xyxy=xyxy, confidence=r[:, 6], class_id=np.zeros(len(r), np.int64),
            tracker_id=r[:, 1].astype(np.int64), data={"extra": r[:, 7:10].astype(np.float32)},
        )
    return result

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
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from ..detections import Detections
from .atomic import atomic_open


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


def read_mot(path: str | os.PathLike) -> dict[int, Detections]:
    """A MOT file as ``{frame_index (0-based): Detections}``, only for frames that have rows.

    ``xyxy`` from the box, ``confidence`` from field 7, ``tracker_id`` from ``id``, ``class_id`` 0
    (MOT tracker files carry no class), ``data["extra"]`` (N, 3) fields 8-10 (in MOTChallenge ground
    truth: class, visibility, -1; in tracker files: -1). Parsed (and checked, line by line) by
    ``sam3video.export.tables.read_mot``.
    """
    from .tables import read_mot as read_table

    return _by_frame(read_table(path), with_ids=True)


def read_detection_file(path: str | os.PathLike, max_frames: int | None = None) -> dict[int, Detections]:
    """A MOTChallenge detection file (``frame,-1,x,y,w,h,score,...``, any detector's boxes) as
    ``{frame_index (0-based): Detections}`` (boxes and scores, class 0, no ids), only for frames that
    have rows; checked line by line by ``sam3video.export.tables.read_detections``. ``max_frames``:
    a frame beyond it is an ``InputError`` naming the file and line (a bound for what follows)."""
    from ..errors import InputError
    from .tables import read_detections

    table = read_detections(path)
    if max_frames is not None and len(table) and table.frames.max() > max_frames:
        row = int(np.argmax(table.frames))
        raise InputError(f"{path}:{int(table.lines[row])}: frame {int(table.frames[row])} is beyond the "
                         f"{max_frames} frames a detection file may span")
    return _by_frame(table, with_ids=False)


def _by_frame(table, with_ids: bool) -> dict[int, Detections]:
    result: dict[int, Detections] = {}
    for frame in np.unique(table.frames):
        rows = table.frames == frame
        boxes = table.boxes[rows]
        result[int(frame) - 1] = Detections(
            xyxy=np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1),
            confidence=table.confidence[rows], class_id=np.zeros(int(rows.sum()), np.int64),
            tracker_id=table.ids[rows] if with_ids else None, data={"extra": table.extra[rows].astype(np.float32)},
        )
    return result

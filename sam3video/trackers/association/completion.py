"""Track completion: the output stream of our tracker held a few frames so that its tracks are whole.

``Tracker`` decides online: a track is reported once it is confirmed (``min_hits`` matched frames in a row),
and a track missed for a few frames has a hole there. Held ``delay`` frames, both can be mended before a frame
is written (``TrackCompletion.push``):

- **back-fill**: when a track is confirmed, the frames it was tentative in are reported too, with the
  detections it was matched to there (``Tracker.early_rows``); a long confirmation (9 frames) then costs no
  detection, only latency;
- **gap filling**: a confirmed track found again after at most ``max_gap`` missed frames is filled in: the box
  interpolated linearly between the two ends (as ByteTrack's and BoT-SORT's offline results do), the mask,
  score and data of the nearer end, the mask moved with the box centre.

The official SAM 3 loop holds its outputs in the same way (``hotstart_delay``: 15 frames). Measured on
MOT15, KITTI, MOT20-01 and the synthetic benchmark, docs/benchmarks.md. Frame indices are 0-based and
increasing; what is pushed comes out in the same order, ``delay`` frames later (``flush`` for the rest).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

import numpy as np

from sam3video.detections import Detections
from sam3video.geometry import box_centre

from .tracker import EarlyRow, shifted_mask


class _Result(Protocol):
    """A frame of the output stream (``FrameResult``): dataclass with these fields."""

    frame_index: int
    detections: Detections  # the reported ones, tracker_id set
    candidates: Detections  # what the tracker was given; early rows index these


Result = TypeVar("Result", bound=_Result)


class TrackCompletion:
    """``push(result, early_rows) -> results released``; ``flush() -> the rest``. See the module docstring.
    ``delay`` frames held (>= ``max_gap``, or older gaps are not filled; >= ``min_hits - 1``, or early rows of
    frames already released are dropped)."""

    def __init__(self, delay: int, max_gap: int):
        if delay < 0 or max_gap < 0:
            raise ValueError(f"delay and max_gap must be >= 0, got {delay}, {max_gap}")
        self.delay, self.max_gap = delay, max_gap
        self._held: deque[list] = deque()  # [result, [Detections added]] oldest first
        # track id -> (frame, detections, row) of its last report, while a gap from there could still be filled
        self._last: dict[int, tuple[int, Detections, int]] = {}

    @classmethod
    def for_tracker(cls, tracker, peer_gap_s: float = 0.0) -> "TrackCompletion | None":
        """The completion ``track`` runs ``tracker`` through: ours by its ``report_delay`` and ``max_gap``; a peer
        (no early rows) with gaps up to ``peer_gap_s`` filled. None where nothing would be held."""
        delay = getattr(tracker, "report_delay", None)
        if delay is None:
            delay = max_gap = round(peer_gap_s * tracker.fps)
        else:
            max_gap = tracker.max_gap
        return cls(delay, max_gap) if delay else None

    def push(self, result: Result, early_rows: list[EarlyRow] | tuple = ()) -> list[Result]:
        """Hold ``result`` (mending the frames held before it); returns the results now ``delay`` frames old."""
        held = {entry[0].frame_index: entry for entry in self._held}
        for early in early_rows:
            if early.frame_index in held:
                entry = held[early.frame_index]
                entry[1].append(_with_id(entry[0].candidates[early.row], early.track_id))
        dets, now = result.detections, result.frame_index
        for i, track_id in enumerate(() if dets.tracker_id is None else dets.tracker_id.tolist()):
            seen = self._last.get(track_id)
            if seen is not None and now - seen[0] > 1:
                self._fill(seen[0], seen[1][seen[2]], now, dets[i], held)
            self._last[track_id] = now, dets, i
        self._last = {k: v for k, v in self._last.items() if now - v[0] <= self.max_gap}  # bounded memory
        self._held.append([result, []])
        released = []
        while len(self._held) > self.delay:
            released.append(self._release())
        return released

    def flush(self) -> list[Result]:
        """Every result still held, completed as far as it is; gaps and tracks are not carried past it."""
        released = [self._release() for _ in range(len(self._held))]
        self._last.clear()
        return released

    def _fill(self, f0: int, d0: Detections, f1: int, d1: Detections, held: dict) -> None:
        """Frames ``f0 < f < f1`` still held get a row between ``d0`` (seen on ``f0``) and ``d1`` (on ``f1``)."""
        for frame_index in range(f0 + 1, f1):
            if frame_index not in held:
                continue
            t = (frame_index - f0) / (f1 - f0)
            near = d0 if t <= 0.5 else d1
            box = ((1 - t) * d0.xyxy[0] + t * d1.xyxy[0]).astype(np.float32)
            filled = dataclasses.replace(near, xyxy=box[None], confidence=np.minimum(d0.confidence, d1.confidence),
                                         mask=None if near.mask is None else shifted_mask(
                                             near.mask[0], *(box_centre(box) - box_centre(near.xyxy[0])))[None])
            held[frame_index][1].append(filled)

    def _release(self):
        result, added = self._held.popleft()
        if not added:
            return result
        return dataclasses.replace(result, detections=Detections.merge([result.detections, *added]))


def _with_id(row: Detections, track_id: int) -> Detections:
    row.tracker_id = np.array([track_id], np.int64)
    return row


@dataclasses.dataclass(frozen=True)
class TrackedFrame:
    """One frame tracked by ``track_frames``: the reported ``detections`` (tracker_id set) among ``candidates``."""

    frame_index: int
    detections: Detections
    candidates: Detections


def track_frames(tracker, frames: Iterable[tuple], gap_s: float = 0.0) -> Iterator[TrackedFrame]:
    """``tracker`` (ours, or a peer) on ``frames`` ((frame index, detections[, image (H, W, 3) uint8 RGB]), in
    order) as ``track`` runs it: ours through its completion (``report_delay`` frames late); a peer at once, or
    with gaps up to ``gap_s`` filled the same way (peers have no early rows to back-fill)."""
    completion = TrackCompletion.for_tracker(tracker, gap_s)
    for frame_index, candidates, *image in frames:
        result = TrackedFrame(frame_index, tracker.update(candidates, frame_index, *image), candidates)
        if completion is None:
            yield result
        else:
            yield from completion.push(result, getattr(tracker, "early_rows", ()))
    if completion is not None:
        yield from completion.flush()

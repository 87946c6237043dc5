"""Track completion: back-fill of the frames before confirmation, gaps filled, frames held in order."""

import numpy as np
import pytest

from sam3video.detections import Detections
from sam3video.trackers.association.completion import TrackCompletion
from sam3video.trackers.association.exemplars import ExemplarConfig, ExemplarMemory
from sam3video.trackers.association.tracker import EarlyRow, Tracker, TrackerConfig
from sam3video.video.session import FrameResult, TrackingSession, complete, flush_completion

H, W = 120, 200


def box_frame(boxes, masks=True, score=0.9):
    """Detections of (x0, y0, size) squares, row k = ``data["gt"]`` k (None: no detection)."""
    rows = [(k, b) for k, b in enumerate(boxes) if b is not None]
    xyxy = np.array([[x, y, x + s, y + s] for _, (x, y, s) in rows], np.float32).reshape(-1, 4)
    mask = None
    if masks:
        mask = np.zeros((len(rows), H, W), bool)
        for m, (x0, y0, x1, y1) in zip(mask, xyxy.astype(int)):
            m[y0:y1, x0:x1] = True
    return Detections(xyxy, np.full(len(rows), score, np.float32), np.zeros(len(rows), np.int64), mask=mask,
                      data={"gt": np.array([k for k, _ in rows], np.int64)})


def track_all(frames, config=None, fps=30.0):
    """(online reports, completed reports): per frame {gt: (tracker id, (4,) box)} through ``Tracker`` alone
    and through ``TrackCompletion`` as ``track`` runs it."""
    tracker = Tracker(config or TrackerConfig(), fps=fps)
    completion = TrackCompletion(tracker.report_delay, tracker.max_gap)
    online, released = [], []
    for i, dets in enumerate(frames):
        tracked = tracker.update(dets, i)
        online.append(tracked)
        released += completion.push(FrameResult(i, i / fps, 0, tracked, None, dets), tracker.early_rows)
    released += completion.flush()
    assert [r.frame_index for r in released] == list(range(len(frames)))  # each once, in order
    return [_by_gt(d) for d in online], [_by_gt(r.detections) for r in released], released


def _by_gt(dets):
    return {int(g): (int(t), dets.xyxy[i]) for i, (g, t) in enumerate(zip(dets.data["gt"], dets.tracker_id))}


@pytest.mark.parametrize("masks", [True, False], ids=["masks", "boxes"])
def test_a_track_is_reported_from_its_first_frame_once_confirmed(masks):
    """Default confirmation (9 hits): online the walker is reported from frame 8; completed from frame 0, with
    the rows it was matched to there. A 5-frame false positive is reported nowhere."""
    frames = [box_frame([(10 + 3 * i, 20, 30), (150, 60, 20) if i < 5 else None], masks) for i in range(14)]
    online, done, released = track_all(frames)
    assert [0 in f for f in online] == [False] * 8 + [True] * 6
    assert all(f.keys() == {0} and f[0][0] == 1 for f in done)
    for i, f in enumerate(done):
        np.testing.assert_array_equal(f[0][1], frames[i].xyxy[0])
    if masks:
        np.testing.assert_array_equal(released[3].detections.mask[0], frames[3].mask[0])


def test_early_rows_name_the_rows_of_the_frames_before_confirmation():
    tracker = Tracker(TrackerConfig(min_hits=4), fps=30.0)
    rows = []
    for i in range(6):  # the walker is row 1 of every frame, behind a weak detection (never tracked)
        dets = Detections(np.array([[0, 0, 5, 5], [10 + i, 20, 40 + i, 50]], np.float32), np.array([0.05, 0.9]),
                          np.zeros(2, np.int64))
        tracker.update(dets, i)
        rows.append(list(tracker.early_rows))
    assert rows == [[], [], [], [EarlyRow(0, 1, 1), EarlyRow(1, 1, 1), EarlyRow(2, 1, 1)], [], []]
    off = Tracker(TrackerConfig(min_hits=4, backfill=False), fps=30.0)
    assert off.report_delay == off.max_gap == 15
    for i in range(6):
        off.update(Detections(np.array([[10 + i, 20, 40 + i, 50]], np.float32), np.array([0.9]), np.zeros(1, np.int64)), i)
        assert off.early_rows == []


@pytest.mark.parametrize("masks", [True, False], ids=["masks", "boxes"])
def test_a_short_gap_is_filled_by_interpolation_and_a_long_one_is_not(masks):
    """A walker at 4 px/frame missed for 4 frames (0.13 s): filled, boxes on the line between the ends, the
    mask of the nearer end moved with the box; missed for 20 frames (0.67 s > fill_gaps_s 0.5): left empty."""
    def walk(hidden):
        return [box_frame([None if i in hidden else (10 + 4 * i, 30, 30)], masks) for i in range(40)]

    _, done, released = track_all(walk(range(12, 16)))
    assert all(f.keys() == {0} and f[0][0] == 1 for f in done)
    for i in range(12, 16):
        np.testing.assert_allclose(done[i][0][1], [10 + 4 * i, 30, 40 + 4 * i, 60], atol=1e-4)
        assert released[i].detections.confidence[0] == pytest.approx(0.9)
        if masks:
            expected = np.zeros((H, W), bool)
            expected[30:60, 10 + 4 * i:40 + 4 * i] = True
            np.testing.assert_array_equal(released[i].detections.mask[0], expected)
    _, done, _ = track_all(walk(range(12, 32)))
    assert [0 in f for f in done] == [True] * 12 + [False] * 20 + [True] * 8
    assert {f[0][0] for f in done if 0 in f} == {1}  # found again: the same id


def test_frames_are_held_report_delay_frames_and_flushed():
    tracker = Tracker(fps=10.0)  # 9 hits, gaps up to 5 frames
    assert tracker.report_delay == 8
    completion = TrackCompletion(tracker.report_delay, tracker.max_gap)
    out = []
    for i in range(20):
        dets = box_frame([(10 + i, 20, 30)])
        released = completion.push(FrameResult(i, i / 10, 0, tracker.update(dets, i), None, dets), tracker.early_rows)
        out.append([r.frame_index for r in released])
    assert out == [[]] * 8 + [[i] for i in range(12)]
    assert [r.frame_index for r in completion.flush()] == list(range(12, 20))
    assert completion.flush() == []


def test_only_tracks_the_exemplars_keep_are_back_filled():
    """``complete``: a track confirmed on a frame where the exemplars hid it (not in the result) is not
    back-filled; the session's completion is made on the first frame and emptied at a window's end."""
    tracker = Tracker(TrackerConfig(min_hits=3), fps=30.0)
    session = TrackingSession(["walker"], {}, ExemplarMemory([], ["walker"], ExemplarConfig()), tracker)
    released = []
    for i in range(6):
        dets = box_frame([(10 + i, 20, 30), (120 - i, 60, 30)])
        tracked = tracker.update(dets, i)
        shown = tracked[tracked.data["gt"] == 0]  # the exemplars hide the second walker
        released += complete(session, FrameResult(i, 0.0, 0, shown, None, dets))
    released += flush_completion(session)
    assert [r.detections.data["gt"].tolist() for r in released] == [[0]] * 6
    assert session.completion is not None and flush_completion(session) == []

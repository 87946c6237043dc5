"""The tracker's defaults on crafted pedestrian scenes, box-only as from a plain detector (640 x 480,
people 24 x 60 px, scores 0.9): crossing, occlusion gaps at 7 and 30 fps, someone walking into a
crowd, a camera pan. Each scene states who is who (``gt``); ids must follow them."""

import numpy as np
import pytest

from sam3video.detections import Detections
from sam3video.trackers.association.completion import TrackCompletion
from sam3video.trackers.association.tracker import Tracker
from sam3video.video.session import FrameResult

PERSON_W, PERSON_H = 24, 60


def person(gt: int, x: float, y: float, score: float = 0.9) -> tuple:
    return gt, (x, y, x + PERSON_W, y + PERSON_H), score


def track_scene(frames: list[list[tuple]], fps: float) -> list[dict[int, int]]:
    """Per frame {gt: reported id} for frames of person() tuples, tracked with the default config through the
    track completion, as ``track`` runs it."""
    tracker = Tracker(fps=fps)
    completion, released = TrackCompletion(tracker.report_delay, tracker.max_gap), []
    for index, people in enumerate(frames):
        gts = np.array([p[0] for p in people], np.int64)
        dets = Detections(np.array([p[1] for p in people], np.float32).reshape(-1, 4),
                          np.array([p[2] for p in people], np.float32), np.zeros(len(people), np.int64),
                          data={"gt": gts})
        result = FrameResult(index, index / fps, 0, tracker.update(dets, index), None, dets)
        released += completion.push(result, tracker.early_rows)
    released += completion.flush()
    return [dict(zip(r.detections.data["gt"].tolist(), r.detections.tracker_id.tolist())) for r in released]


def ids_of(out, gt) -> set[int]:
    return {frame[gt] for frame in out if gt in frame}


@pytest.mark.parametrize("fps", [7.0, 30.0])
def test_crossing_walkers_keep_their_ids(fps):
    # 1.5 m/s-like walkers: 70 px/s towards each other, 8 px apart vertically, boxes overlapping for
    # about 0.3 s in the middle.
    step = 70.0 / fps
    frames = [[person(0, 100 + step * i, 200), person(1, 400 - step * i, 208)] for i in range(round(4 * fps))]
    out = track_scene(frames, fps)
    assert ids_of(out, 0) == {1} and ids_of(out, 1) == {2}


@pytest.mark.parametrize("fps", [7.0, 30.0])
def test_crossing_walkers_keep_their_ids_when_one_is_hidden_behind_the_other(fps):
    # As above, but the farther walker (1) is not detected while the boxes overlap, and 0.2 s more.
    step = 70.0 / fps
    frames = []
    for i in range(round(4 * fps)):
        a, b = person(0, 100 + step * i, 200), person(1, 400 - step * i, 208)
        hidden = abs(a[1][0] - b[1][0]) < PERSON_W + 0.2 * 70.0
        frames.append([a] if hidden else [a, b])
    assert sum(len(f) == 1 for f in frames) >= 2
    out = track_scene(frames, fps)
    assert ids_of(out, 0) == {1} and ids_of(out, 1) == {2}


@pytest.mark.parametrize("fps", [7.0, 30.0])
@pytest.mark.parametrize("gap_s", [0.5, 1.5])
def test_walker_hidden_for_a_while_comes_back_with_its_id(fps, gap_s):
    # Walks 40 px/s; hidden gap_s seconds (behind a pillar), reappears where it would be.
    step, hidden = 40.0 / fps, round(gap_s * fps)
    seen = round(2 * fps)
    frames = [[person(0, 50 + step * i, 200)] if not seen <= i < seen + hidden else []
              for i in range(2 * seen + hidden)]
    out = track_scene(frames, fps)
    filled = gap_s <= 0.5  # gaps up to fill_gaps_s are filled in with the walker's id, longer ones left empty
    assert all(out[i] == ({0: 1} if filled else {}) for i in range(seen, seen + hidden))
    assert ids_of(out, 0) == {1} and out[-1] == {0: 1}


@pytest.mark.parametrize("fps", [7.0, 30.0])
def test_a_hidden_walker_is_not_given_to_someone_standing_near_where_it_vanished(fps):
    # Walker 0 (going right) vanishes for good; 0.5 s later a bystander (1) appears 30 px behind where it
    # vanished, not where it was heading: a new id, not 1.
    step = 40.0 / fps
    walking = round(2 * fps)
    frames = [[person(0, 50 + step * i, 200)] for i in range(walking)] + [[] for _ in range(round(0.5 * fps))]
    frames += [[person(1, 50 + step * walking - 30, 200)] for _ in range(round(2 * fps))]
    out = track_scene(frames, fps)
    assert ids_of(out, 0) == {1} and ids_of(out, 1) == {2}


@pytest.mark.parametrize("fps", [7.0, 30.0])
def test_someone_walking_into_a_crowd_gets_a_track_and_the_crowd_keeps_its_ids(fps):
    # Four people stand side by side (6 px apart); a fifth walks in from the left at 60 px/s, in front
    # of them, 10 px lower: its box overlaps each of theirs in turn.
    step = 60.0 / fps
    crowd = [person(k, 300 + 30 * k, 200) for k in range(4)]
    frames = [crowd + [person(9, 150 + step * i, 210)] for i in range(round(5 * fps))]
    out = track_scene(frames, fps)
    assert [ids_of(out, k) for k in range(4)] == [{1}, {2}, {3}, {4}]
    assert ids_of(out, 9) == {5}
    assert all(9 in frame for frame in out)  # reported from its first frame on (back-filled once confirmed)


@pytest.mark.parametrize("fps", [10.0, 30.0])
@pytest.mark.parametrize("pan", ["sudden", "accelerating"])
def test_a_camera_pan_keeps_every_id(fps, pan):
    # Three people 40 px apart (16 px gaps). After 1 s the camera pans: everything moves left, at once at
    # 90 px/s ("sudden"), or speeding up by 150 px/s^2 for a second, to 150 px/s ("accelerating").
    # (Faster pans at 10 fps, 300 px/s: 30 px a frame for 24 px wide people, lose ids without camera
    # motion compensation.)
    frames = []
    for i in range(round(4 * fps)):
        t = max(0.0, i / fps - 1.0)
        shift = 90.0 * t if pan == "sudden" else 75.0 * min(t, 1.0) ** 2 + 150.0 * max(t - 1.0, 0.0)
        frames.append([person(k, 500 + 40 * k - shift, 200 + 5 * k) for k in range(3)])
    out = track_scene(frames, fps)
    assert [ids_of(out, k) for k in range(3)] == [{1}, {2}, {3}]

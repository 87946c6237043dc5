"""The resume state on disk (JSON + .npz, no pickles): round trips, and what is refused when writing and reading."""

from __future__ import annotations

import enum
import json
from collections import Counter, OrderedDict, defaultdict, deque

import numpy as np
import pytest
import torch

from sam3video.batch.inputs import BatchVideo
from sam3video.export.run_state import ARRAYS_NAME, TREE_NAME, StateError, load_state, save_state
from sam3video.trackers.association.exemplars import Exemplar
from sam3video.trackers.association.peers import PeerTracker
from sam3video.trackers.association.tracker import Track, Tracker, TrackState


def test_round_trip_of_every_kind(tmp_path):
    value = {
        "none": None, "flag": True, "n": 3, "x": 0.25, "nan": float("nan"), "s": "é",
        "list": [1, [2, 3]], "tuple": (1, (2, "a")), "set": {1, 2}, "frozen": frozenset({3}),
        "deque": deque([1, 2], maxlen=5), "counter": Counter({4: 2, 5: 1}), "ordered": OrderedDict(b=1, a=2),
        "default": defaultdict(list, {1: [2]}), (1, 2): "tuple key", 7: "int key",
        "array": np.arange(6, dtype=np.float32).reshape(2, 3), "empty": np.zeros((0, 4), np.int64),
        "scalar": np.float64(1.5), "bool_array": np.array([True, False]),
        "tensor": torch.arange(4, dtype=torch.float16), "bf16": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "enum": TrackState.CONFIRMED, "class": Tracker,
        "frozen_dataclass": Exemplar(2, (1.0, 2.0, 3.0, 4.0), False, "dog"),
        "nested": BatchVideo("a", "/x.mp4", (Exemplar(0, (1, 2, 3, 4)),)),
    }
    save_state(tmp_path, value)
    back = load_state(tmp_path)
    assert set(back) == set(value)
    assert back["nan"] != back["nan"] and back["s"] == "é" and back["tuple"] == (1, (2, "a"))
    assert back["set"] == {1, 2} and isinstance(back["frozen"], frozenset) and back["deque"].maxlen == 5
    assert type(back["counter"]) is Counter and back["counter"][4] == 2 and list(back["ordered"]) == ["b", "a"]
    assert back["default"][1] == [2] and back["default"][9] == [] and back[(1, 2)] == "tuple key" and back[7]
    np.testing.assert_array_equal(back["array"], value["array"])
    assert back["array"].dtype == np.float32 and back["empty"].shape == (0, 4) and back["scalar"] == 1.5
    assert back["tensor"].dtype == torch.float16 and torch.equal(back["tensor"], value["tensor"])
    assert back["bf16"].dtype == torch.bfloat16 and torch.equal(back["bf16"], value["bf16"])
    assert back["enum"] is TrackState.CONFIRMED and back["class"] is Tracker
    assert back["frozen_dataclass"] == value["frozen_dataclass"] and back["nested"] == value["nested"]
    assert json.loads((tmp_path / TREE_NAME).read_text())["version"] == 2
    with np.load(tmp_path / ARRAYS_NAME, allow_pickle=False) as npz:
        assert len(npz.files) >= 5


def test_trackers_go_on_exactly_after_a_round_trip(tmp_path):
    """Ours and a ``trackers`` peer, saved mid-run and read back, give the same ids as the ones never saved."""
    from sam3video.detections import Detections

    def frame(t):
        boxes = np.array([[10 + 3 * t, 10, 30 + 3 * t, 40], [80, 20 + 2 * t, 100, 50 + 2 * t]], np.float32)
        return Detections(xyxy=boxes, confidence=np.array([0.9, 0.8], np.float32), class_id=np.zeros(2, np.int64))

    for make in (lambda: Tracker(fps=10), lambda: PeerTracker("bytetrack", fps=10), lambda: PeerTracker("ocsort", 10)):
        kept, saved = make(), make()
        for t in range(4):
            kept.update(frame(t), t)
            saved.update(frame(t), t)
        save_state(tmp_path, saved)
        restored = load_state(tmp_path)
        for t in range(4, 12):  # ours confirms at frame 8 (9 hits), its early rows from before the save
            a, b = kept.update(frame(t), t), restored.update(frame(t), t)
            assert a.tracker_id.tolist() == b.tracker_id.tolist() and len(a) == (2 if t >= 8 else len(a))
            np.testing.assert_array_equal(a.xyxy, b.xyxy)
            assert getattr(kept, "early_rows", None) == getattr(restored, "early_rows", None)
            if t == 8 and isinstance(kept, Tracker):  # frames 0-7 of both tracks, half of them saved and read back
                assert sorted(r.frame_index for r in restored.early_rows) == sorted(list(range(8)) * 2)
        assert len(a) == 2


class Foreign:  # a class of the tests, not of sam3video or trackers
    pass


class ForeignEnum(enum.Enum):
    A = 1


@pytest.mark.parametrize("value", [Foreign(), ForeignEnum.A, Foreign, np.array([object()]), print, (lambda: 1), defaultdict(lambda: 1)])
def test_what_cannot_be_saved_is_refused(tmp_path, value):
    with pytest.raises(StateError):
        save_state(tmp_path, {"x": value})


def _write(tmp_path, state, version=2, fmt="sam3video-run-state"):
    np.savez(tmp_path / ARRAYS_NAME, a0=np.zeros(2))
    (tmp_path / TREE_NAME).write_text(json.dumps({"format": fmt, "version": version, "state": state}))


@pytest.mark.parametrize("state, message", [
    ({"__object__": "os:system", "attrs": {}}, "not one a run state may hold"),
    ({"__class__": "builtins:eval"}, "not one a run state may hold"),
    ({"__object__": "subprocess:Popen", "attrs": {}}, "not one a run state may hold"),
    ({"__class__": "sam3video.trackers.association.tracker:no_such_thing"}, "does not exist"),
    ({"__class__": "sam3video.trackers.association.tracker:np"}, "not a class"),
    ({"__enum__": "sam3video.trackers.association.tracker:Tracker", "value": 1}, "not an enum"),
    ({"__array__": "a9"}, "bad array reference"),
    ({"__tensor__": {"__array__": "a0"}, "dtype": "__class__"}, "bad tensor dtype"),
    ({"__dict__": [[1, 2]], "kind": "defaultdict", "factory": "eval"}, "bad defaultdict factory"),
    ({"__what__": 1}, "unknown entry"),
    ({"__object__": "sam3video.trackers.association.tracker:Track", "attrs": []}, "bad instance"),
])
def test_a_foreign_or_damaged_state_is_refused(tmp_path, state, message):
    _write(tmp_path, state)
    with pytest.raises(StateError, match=message):
        load_state(tmp_path)


def test_other_formats_versions_and_damage_are_refused(tmp_path):
    _write(tmp_path, 1, version=1)
    with pytest.raises(StateError, match="version 1"):
        load_state(tmp_path)
    _write(tmp_path, 1, fmt="other")
    with pytest.raises(StateError, match="not a sam3video run state"):
        load_state(tmp_path)
    _write(tmp_path, 1)
    (tmp_path / ARRAYS_NAME).write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(StateError, match="unreadable"):
        load_state(tmp_path)
    (tmp_path / ARRAYS_NAME).unlink()
    with pytest.raises(StateError, match="unreadable"):
        load_state(tmp_path)
    # arrays of Python objects (a pickle inside the .npz) are never loaded
    np.savez(tmp_path / ARRAYS_NAME, a0=np.array([{"x": 1}], dtype=object))
    (tmp_path / TREE_NAME).write_text(json.dumps({"format": "sam3video-run-state", "version": 2,
                                                  "state": {"__array__": "a0"}}))
    with pytest.raises(StateError, match="unreadable"):
        load_state(tmp_path)


def test_a_track_round_trips_with_its_kalman_state(tmp_path):
    track = Track(id=3, class_id=0, box=np.array([1, 2, 3, 4], np.float32), mask=None, embedding=None,
                  first_frame=0, last_frame=5, mean=np.arange(8.0), cov=np.eye(8))
    save_state(tmp_path, track)
    back = load_state(tmp_path)
    assert back.id == 3 and back.state is TrackState.TENTATIVE
    np.testing.assert_array_equal(back.predicted_box(), track.predicted_box())


def test_a_state_saved_before_the_video_package_split_is_read_with_the_moved_classes(tmp_path):
    tracker = Tracker(fps=10)
    from sam3video.detections import Detections

    tracker = Tracker(fps=10)
    for t in range(3):
        boxes = np.array([[10 + 3 * t, 10, 30 + 3 * t, 40]], np.float32)
        tracker.update(Detections(xyxy=boxes, confidence=np.array([0.9], np.float32), class_id=np.zeros(1, np.int64)), t)
    save_state(tmp_path, {"tracker": tracker, "state": TrackState.LOST})
    tree = tmp_path / TREE_NAME
    old = tree.read_text().replace("sam3video.trackers.association.", "sam3video.video.")
    assert "sam3video.video.tracker:Tracker" in old
    tree.write_text(old)
    state = load_state(tmp_path)
    assert type(state["tracker"]) is Tracker and state["state"] is TrackState.LOST
    assert [t.id for t in state["tracker"].tracks] == [t.id for t in tracker.tracks] != []
    assert np.array_equal(state["tracker"].tracks[0].mean, tracker.tracks[0].mean)

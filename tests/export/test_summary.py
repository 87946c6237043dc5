"""summary.json: the per-track table from the stream, and the JSON writer."""

import json
from fractions import Fraction

import numpy as np

from sam3video.detections import Detections
from sam3video.export.summary import TrackStats, write_summary


def _dets(ids, scores, classes):
    n = len(scores)
    return Detections(np.zeros((n, 4)), scores, classes, tracker_id=ids)


def test_track_table_from_stream():
    stream = [
        (0, _dets([1, 2], [0.9, 0.4], [0, 1])),
        (1, _dets(None, [0.99], [0])),  # untracked frame: ignored
        (2, _dets([1, 0], [0.7, 0.99], [0, 0])),  # id 0 = untracked: ignored
        (5, _dets([2, 3], [0.6, 0.5], [1, 0])),
        (6, _dets([2], [0.8], [0])),  # track 2 seen once as class 0: the majority class (1) wins
    ]
    stats = TrackStats(class_names=["dog", "cat"])
    for frame_index, dets in stream:
        stats.update(frame_index, dets)
    assert len(stats) == 3
    rows = {row["track_id"]: row for row in stats.table()}
    assert list(rows) == [1, 2, 3]
    assert rows[1] == {
        "track_id": 1, "class_id": 0, "class_name": "dog", "first_frame_index": 0, "last_frame_index": 2,
        "num_frames": 2, "mean_score": 0.8,
    }
    assert (rows[2]["class_name"], rows[2]["first_frame_index"], rows[2]["last_frame_index"]) == ("cat", 0, 6)
    assert rows[2]["num_frames"] == 3 and abs(rows[2]["mean_score"] - 0.6) < 1e-6
    assert rows[3]["num_frames"] == 1


def test_unknown_class_name_falls_back_to_id():
    stats = TrackStats()
    stats.update(0, _dets([4], [0.5], [3]))
    assert stats.table()[0]["class_name"] == "3"


def test_write_summary_converts_numpy_fraction_and_nan(tmp_path):
    path = tmp_path / "summary.json"
    stats = TrackStats(["dog"])
    stats.update(0, _dets([1], [0.5], [0]))
    write_summary(path, {
        "video": {"fps": Fraction(30000, 1001), "frames": np.int64(12), "size": (np.int32(640), 480)},
        "latency_ms": np.array([1.5, 2.5]), "bad": float("nan"), "path": tmp_path, "tracks": stats.table(),
    })
    text = path.read_text()
    assert text.startswith('{\n  "video"') and text.endswith("}\n")
    data = json.loads(text)
    assert data["video"] == {"fps": 30000 / 1001, "frames": 12, "size": [640, 480]}
    assert data["latency_ms"] == [1.5, 2.5] and data["bad"] is None and data["path"] == str(tmp_path)
    assert data["tracks"][0]["class_name"] == "dog"

"""MOTChallenge tracks.txt: written rows parse back; malformed lines name file and line."""

import numpy as np
import pytest

from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.export.tables import read_mot as read_mot_table
from sam3video.export.mot import MOTWriter, read_mot


def _stream(seed=0, frames=6):
    """Frames with random boxes; tracker ids 1-based, some untracked rows (id 0, or tracker_id None)."""
    rng = np.random.default_rng(seed)
    for frame_index in range(frames):
        n = int(rng.integers(0, 5))
        xy = rng.uniform(0, 600, (n, 2))
        wh = rng.uniform(1, 200, (n, 2))
        ids = rng.permutation(np.arange(1, 9))[:n]
        if frame_index == 3:
            tracker_id = None
        else:
            tracker_id = np.where(rng.random(n) < 0.2, 0, ids)
        yield frame_index, Detections(
            np.concatenate([xy, xy + wh], 1), rng.random(n), np.zeros(n), tracker_id=tracker_id
        )


def test_mot_roundtrip(tmp_path):
    path = tmp_path / "tracks.txt"
    written = {}
    with MOTWriter(path) as w:
        for frame_index, dets in _stream():
            w.write(frame_index, dets)
            if dets.tracker_id is not None and (dets.tracker_id >= 1).any():
                written[frame_index] = dets[dets.tracker_id >= 1]
    assert written, "the stream must contain tracked rows"
    read = read_mot(path)
    assert sorted(read) == sorted(written)
    for frame_index, expected in written.items():
        got = read[frame_index]
        order = np.argsort(expected.tracker_id)
        np.testing.assert_array_equal(got.tracker_id, expected.tracker_id[order])
        np.testing.assert_allclose(got.xyxy, expected.xyxy[order], atol=0.01)
        np.testing.assert_allclose(got.confidence, expected.confidence[order], atol=1e-4)
        assert (got.data["extra"] == -1).all()
    table = read_mot_table(path)
    assert table.extra.shape == (len(table), 3)
    assert table.frames[0] == min(written) + 1  # 1-based frames in the file


def test_mot_line_format(tmp_path):
    path = tmp_path / "tracks.txt"
    with MOTWriter(path) as w:
        w.write(0, Detections([[10, 20, 40, 70], [1, 2, 3, 4]], [0.87654, 0.5], [0, 0], tracker_id=[7, 2]))
    assert path.read_text().splitlines() == [
        "1,2,1.00,2.00,2.00,2.00,0.5000,-1,-1,-1",
        "1,7,10.00,20.00,30.00,50.00,0.8765,-1,-1,-1",
    ]


def test_frames_must_increase(tmp_path):
    with pytest.raises(ValueError, match="increase"):
        with MOTWriter(tmp_path / "t.txt") as w:
            w.write(2, Detections.empty())
            w.write(2, Detections.empty())
    assert not (tmp_path / "t.txt").exists()


def test_reads_ground_truth_and_minimal_lines(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("1,3,10,20,30,40,1,1,0.5\n\n2, 3, 11, 21, 30, 40\n2 4 0 0 5 5 0.25\n")
    read = read_mot(path)
    assert sorted(read) == [0, 1]
    np.testing.assert_allclose(read[0].data["extra"], [[1, 0.5, -1]])
    np.testing.assert_allclose(read[1].confidence, [1.0, 0.25])  # a missing conf is 1
    np.testing.assert_allclose(read[1].xyxy, [[11, 21, 41, 61], [0, 0, 5, 5]])
    np.testing.assert_array_equal(read[1].tracker_id, [3, 4])


@pytest.mark.parametrize(
    "bad",
    [
        "1,2,3,4,5",  # too few columns
        "1,2,3,4,5,6,7,8,9,10,11",  # too many
        "1,x,3,4,5,6,1,-1,-1,-1",  # not a number
        "0,1,3,4,5,6,1,-1,-1,-1",  # frame 0: MOT frames are 1-based
        "1.5,1,3,4,5,6,1,-1,-1,-1",  # fractional frame
        "1,2.5,3,4,5,6,1,-1,-1,-1",  # fractional id
        "1,1,3,4,-5,6,1,-1,-1,-1",  # negative width
        "1,1,3,4,nan,6,1,-1,-1,-1",  # not finite
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "tracks.txt"
    path.write_text(f"1,1,0,0,1,1,1,-1,-1,-1\n\n{bad}\n")
    with pytest.raises(InputError, match=r"tracks\.txt:3: "):
        read_mot(path)


def test_missing_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.txt: no such file"):
        read_mot(tmp_path / "nope.txt")

"""MOTS tracks.mots.txt: RLE round trip, disjoint masks by confidence, TrackEval's rules and reader."""

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.export.mots import MOTSWriter, encode_rle, make_disjoint, read_mots

H, W = 24, 32
# pycocotools 2.0.11's decode warns under numpy 2 (its own array wrapper); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _disk(cy, cx, r, h=H, w=W):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _frame(f):
    """Three overlapping tracked disks, one untracked; ids deliberately not sorted."""
    masks = np.stack([_disk(10, 8 + f, 6), _disk(12, 14 + f, 7), _disk(5, 25, 4), _disk(18, 26, 4)])
    return Detections(
        xyxy=np.zeros((4, 4)), confidence=[0.5, 0.9, 0.7, 0.99], class_id=[0, 1, 0, 0],
        mask=masks, tracker_id=[5, 2, 9, 0],
    )


def _write(path, frames=4, **kwargs):
    with MOTSWriter(path, **kwargs) as w:
        for f in range(frames):
            w.write(f, _frame(f))


@pytest.mark.parametrize(
    "confidence, winner", [([0.2, 0.8, 0.5], 1), ([0.9, 0.1, 0.5], 0), ([0.3, 0.3, 0.3], 0), ([0.1, 0.2, 0.6], 2)]
)
def test_make_disjoint_gives_shared_pixels_to_most_confident(confidence, winner):
    masks = np.zeros((3, 4, 4), bool)
    masks[0, :2, :2] = masks[1, 1:3, 1:3] = masks[2, 1, 1] = True  # pixel (1, 1) claimed by all three
    out = make_disjoint(masks, confidence)
    assert out.sum(0).max() == 1  # disjoint
    np.testing.assert_array_equal(out.any(0), masks.any(0))  # nothing lost
    assert out[winner, 1, 1] and out[:, 1, 1].sum() == 1
    assert (out <= masks).all()  # nothing gained


def test_rle_matches_pycocotools_and_decodes():
    masks = np.stack([_disk(10, 8, 6), np.zeros((H, W), bool), np.ones((H, W), bool)])
    for m, counts in zip(masks, encode_rle(masks)):
        assert counts == mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()
        np.testing.assert_array_equal(mask_utils.decode({"size": [H, W], "counts": counts.encode()}), m)
    assert encode_rle(np.zeros((0, H, W), bool)) == []


@pytest.mark.parametrize("first_frame", [1, 0])
def test_mots_roundtrip(tmp_path, first_frame):
    path = tmp_path / "tracks.mots.txt"
    _write(path, first_frame=first_frame)
    lines = path.read_text().splitlines()
    assert lines[0].split()[:5] == [str(first_frame), "2", "2", str(H), str(W)]  # frame, id, class = prompt+1
    read = read_mots(path, first_frame=first_frame)
    assert sorted(read) == [0, 1, 2, 3]
    for f, got in read.items():
        dets = _frame(f)[:3]  # the tracked ones
        order = np.argsort(dets.tracker_id)
        np.testing.assert_array_equal(got.tracker_id, dets.tracker_id[order])
        np.testing.assert_array_equal(got.class_id, dets.class_id[order])
        expected = make_disjoint(dets.mask, dets.confidence)[order]
        np.testing.assert_array_equal(got.mask, expected)
        assert not (got.mask.sum(0) > 1).any()
        ys, xs = np.nonzero(expected[0])
        np.testing.assert_array_equal(got.xyxy[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_fully_covered_mask_is_not_written(tmp_path):
    small, big = _disk(10, 10, 3), _disk(10, 10, 8)
    dets = Detections(np.zeros((2, 4)), [0.3, 0.9], [0, 0], mask=np.stack([small, big]), tracker_id=[1, 2])
    with MOTSWriter(tmp_path / "m.txt") as w:
        w.write(0, dets)
    (line,) = (tmp_path / "m.txt").read_text().splitlines()
    assert line.split()[1] == "2"


def test_writer_needs_masks(tmp_path):
    with pytest.raises(ValueError, match="mask"):
        with MOTSWriter(tmp_path / "m.txt") as w:
            w.write(0, Detections([[0, 0, 1, 1]], [1], [0], tracker_id=[1]))
    assert not (tmp_path / "m.txt").exists()


def test_file_follows_trackeval_mots_rules(tmp_path):
    """The checks TrackEval's MOTSChallenge reader makes, done with pycocotools only."""
    path = tmp_path / "tracks.mots.txt"
    _write(path)
    by_frame = {}
    for line in path.read_text().splitlines():
        fields = line.split(" ")
        assert len(fields) == 6
        frame, track_id, class_id, h, w = map(int, fields[:5])
        assert (h, w) == (H, W) and frame >= 1 and track_id >= 1 and class_id >= 1
        by_frame.setdefault(frame, []).append((track_id, {"size": [h, w], "counts": fields[5].encode()}))
    assert list(by_frame) == sorted(by_frame)  # frames in order
    for rows in by_frame.values():
        ids = [t for t, _ in rows]
        assert ids == sorted(set(ids))  # unique per frame, sorted
        merged = rows[0][1]
        for _, rle in rows[1:]:  # TrackEval's overlap test, verbatim in spirit
            assert mask_utils.area(mask_utils.merge([merged, rle], intersect=True)) == 0
            merged = mask_utils.merge([merged, rle], intersect=False)


def _trackeval_layout(root, tracker_lines_writer, frames):
    gt, tracker = root / "gt" / "seq" / "gt" / "gt.txt", root / "trackers" / "mine" / "data" / "seq.txt"
    gt.parent.mkdir(parents=True)
    tracker.parent.mkdir(parents=True)
    _write(gt, frames=frames, class_offset=2)  # prompt 0 -> class 2 = MOTS pedestrian
    tracker_lines_writer(tracker)
    return {
        "GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"), "OUTPUT_FOLDER": str(root / "out"),
        "SKIP_SPLIT_FOL": True, "SEQ_INFO": {"seq": frames}, "TRACKERS_TO_EVAL": ["mine"], "PRINT_CONFIG": False,
    }


def _evaluate(dataset_config):
    import trackeval  # a hard dependency: its absence is a failure, not a skip
    evaluator = trackeval.Evaluator({
        "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
        "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "DISPLAY_LESS_PROGRESS": True,
    })
    metrics = [trackeval.metrics.HOTA({"PRINT_CONFIG": False}), trackeval.metrics.CLEAR({"PRINT_CONFIG": False})]
    results, _ = evaluator.evaluate([trackeval.datasets.MOTSChallenge(dataset_config)], metrics)
    return results["MOTSChallenge"]["mine"]["COMBINED_SEQ"]["pedestrian"]


def test_trackeval_reads_and_scores_our_file(tmp_path):
    frames = 4
    config = _trackeval_layout(tmp_path, lambda p: _write(p, frames=frames, class_offset=2), frames)
    result = _evaluate(config)
    assert result["Count"]["Dets"] == result["Count"]["GT_Dets"] == 2 * frames  # class-2 objects: ids 5 and 9
    assert result["CLEAR"]["MOTA"] == 1.0
    assert np.mean(result["HOTA"]["HOTA"]) == pytest.approx(1.0)


def test_trackeval_rejects_overlapping_masks(tmp_path):
    """Our writer's overlap resolution is what makes the file acceptable: raw masks are refused."""
    import trackeval  # a hard dependency: its absence is a failure, not a skip

    def write_raw(path):
        dets = _frame(0)
        lines = [f"1 {t} 2 {H} {W} {c}\n" for t, c in zip(dets.tracker_id[:3], encode_rle(dets.mask[:3]))]
        path.write_text("".join(lines))

    config = _trackeval_layout(tmp_path, write_raw, 1)
    with pytest.raises(trackeval.utils.TrackEvalException, match="overlapping"):
        _evaluate(config)


@pytest.mark.parametrize(
    "bad",
    [
        "1 2 1 24 32",  # 5 fields
        "1 2 1 24 32 PPP extra",  # 7 fields
        "x 2 1 24 32 PPP",  # not an integer
        "1 2 1 0 32 PPP",  # zero height
        "1 2 1 24 32 52",  # RLE shorter than 24*32 pixels
        "1 2 1 24 32 zzzz",  # outside the RLE alphabet
        "1 2 1 24 32 \u00e9\u00e9",  # not ASCII
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad):
    path = tmp_path / "tracks.mots.txt"
    _write(path, frames=1)
    path.write_text(path.read_text() + "\n" + bad + "\n")
    lineno = len(path.read_text().splitlines())
    with pytest.raises(InputError, match=rf"tracks\.mots\.txt:{lineno}: "):
        read_mots(path)


def test_frame_before_first_frame_is_input_error(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(f"0 1 1 {H} {W} {encode_rle(_disk(5, 5, 3)[None])[0]}\n")
    with pytest.raises(InputError, match=r"t\.txt:1: frame must be >= 1"):
        read_mots(path)
    assert list(read_mots(path, first_frame=0)) == [0]

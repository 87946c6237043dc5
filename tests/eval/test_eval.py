"""Tracking evaluation: hand-computed cases, parity with TrackEval's own pipeline, strict inputs, output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3video.errors import InputError
from sam3video.eval import format_table, pair_sequences, run_eval

# One ground-truth object over 4 frames, boxes x, y, w, h.
BOXES = [(10, 10, 20, 20), (12, 10, 20, 20), (14, 10, 20, 20), (16, 10, 20, 20)]


def write_mot(path: Path, rows: list[tuple]) -> Path:
    """rows: (frame, id, x, y, w, h[, conf]); conf defaults to 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in rows:
        frame, tid, x, y, w, h, *rest = row
        conf = rest[0] if rest else 1
        lines.append(f"{frame},{tid},{x},{y},{w},{h},{conf},1,1")
    path.write_text("".join(line + "\n" for line in lines))
    return path


def rle(mask: np.ndarray) -> str:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def box_mask(y0: int, x0: int, y1: int, x1: int, size=(24, 32)) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_mots(path: Path, rows: list[tuple]) -> Path:
    """rows: (frame, id, class_id, mask (H, W) bool)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{f} {i} {c} {m.shape[0]} {m.shape[1]} {rle(m)}" for f, i, c, m in rows]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def evaluate(tmp_path: Path, gt_rows, pred_rows, **kwargs):
    gt = write_mot(tmp_path / "gt.txt", gt_rows)
    pred = write_mot(tmp_path / "pred.txt", pred_rows)
    return run_eval(gt, pred, names=["seq"], **kwargs).sequences[0].metrics


GT = [(t + 1, 1, *b) for t, b in enumerate(BOXES)]


def test_perfect_tracking_scores_one(tmp_path):
    m = evaluate(tmp_path, GT, [(t + 1, 7, *b, 0.9) for t, b in enumerate(BOXES)])
    for key in ("HOTA", "DetA", "AssA", "LocA", "MOTA", "MOTP", "IDF1", "CLR_Re", "CLR_Pr"):
        assert m[key] == pytest.approx(1.0), key
    assert (m["IDSW"], m["CLR_FP"], m["CLR_FN"], m["CLR_TP"]) == (0, 0, 0, 4)


def test_id_switch_halfway(tmp_path):
    pred = [(t + 1, 1 if t < 2 else 2, *b) for t, b in enumerate(BOXES)]
    m = evaluate(tmp_path, GT, pred)
    assert m["IDSW"] == 1
    assert m["MOTA"] == pytest.approx(1 - 1 / 4)  # 1 - (FN + FP + IDSW) / GT
    # IDF1: the best one-to-one id match covers 2 of 4 frames: IDTP 2, IDFN 2, IDFP 2.
    assert (m["IDTP"], m["IDFN"], m["IDFP"]) == (2, 2, 2)
    assert m["IDF1"] == pytest.approx(2 / (2 + 0.5 * 2 + 0.5 * 2))
    # HOTA by hand: every det matches (DetA 1); each TP's (gt, pred) pair has Ass-IoU 2 / (4 + 2 - 2).
    assert m["DetA"] == pytest.approx(1.0)
    assert m["AssA"] == pytest.approx(0.5)
    assert m["HOTA"] == pytest.approx(math.sqrt(0.5))


def test_missed_detection(tmp_path):
    pred = [(t + 1, 1, *b) for t, b in enumerate(BOXES) if t != 2]
    m = evaluate(tmp_path, GT, pred)
    assert m["CLR_Re"] == pytest.approx(0.75) and m["CLR_Pr"] == pytest.approx(1.0)
    assert m["MOTA"] == pytest.approx(0.75) and m["CLR_FN"] == 1
    assert m["IDF1"] == pytest.approx(3 / (3 + 0.5 * 1))
    # HOTA: DetA 3/4; the single pair has Ass-IoU 3 / (4 + 3 - 3) = 3/4.
    assert m["DetA"] == pytest.approx(0.75) and m["AssA"] == pytest.approx(0.75)
    assert m["HOTA"] == pytest.approx(0.75)


def test_false_positive(tmp_path):
    pred = [(t + 1, 1, *b) for t, b in enumerate(BOXES)] + [(2, 9, 200, 200, 20, 20)]
    m = evaluate(tmp_path, GT, pred)
    assert (m["CLR_TP"], m["CLR_FP"], m["CLR_FN"]) == (4, 1, 0)
    assert m["CLR_Pr"] == pytest.approx(4 / 5) and m["CLR_Re"] == pytest.approx(1.0)
    assert m["MOTA"] == pytest.approx(1 - 1 / 4)
    assert m["IDF1"] == pytest.approx(4 / (4 + 0.5 * 1))
    assert m["DetA"] == pytest.approx(4 / 5) and m["AssA"] == pytest.approx(1.0)
    assert m["HOTA"] == pytest.approx(math.sqrt(4 / 5))


def test_localisation_threshold_sweep(tmp_path):
    """IoU 100/160 = 0.625: HOTA is 1 at the 12 alphas <= 0.6 and 0 at the 7 above, so 12/19."""
    gt = [(t, 1, 0, 0, 10, 10) for t in (1, 2)]
    pred = [(t, 1, 0, 0, 10, 16) for t in (1, 2)]
    result = run_eval(write_mot(tmp_path / "g.txt", gt), write_mot(tmp_path / "p.txt", pred))
    m = result.sequences[0].metrics
    assert m["HOTA"] == pytest.approx(12 / 19)
    assert m["HOTA(0)"] == pytest.approx(1.0) and m["LocA(0)"] == pytest.approx(0.625)
    assert m["MOTA"] == pytest.approx(1.0) and m["MOTP"] == pytest.approx(0.625)
    assert result.sequences[0].hota_by_alpha["HOTA"][:12] == pytest.approx([1.0] * 12)
    assert run_eval(tmp_path / "g.txt", tmp_path / "p.txt", iou_threshold=0.7).combined.metrics["MOTA"] == -1.0


def test_ground_truth_rows_with_conf_zero_are_not_evaluated(tmp_path):
    ignored = [(t, 2, 100, 100, 20, 20, 0) for t in (1, 2, 3, 4)]
    m = evaluate(tmp_path, GT + ignored, [(t + 1, 1, *b) for t, b in enumerate(BOXES)])
    assert m["GT_IDs"] == 1 and m["GT_Dets"] == 4 and m["HOTA"] == pytest.approx(1.0)


def test_empty_prediction_file(tmp_path):
    gt = write_mot(tmp_path / "gt.txt", GT)
    (tmp_path / "pred.txt").write_text("")
    m = run_eval(gt, tmp_path / "pred.txt").combined.metrics
    assert (m["CLR_FN"], m["CLR_Re"], m["HOTA"], m["IDF1"]) == (4, 0.0, 0.0, 0.0)


def test_sequences_combine_by_summing_counts(tmp_path):
    a = evaluate(tmp_path / "a", GT, [(t + 1, 1, *b) for t, b in enumerate(BOXES) if t != 2])
    seqs = {"one": GT, "two": GT}
    for name, rows in seqs.items():
        write_mot(tmp_path / "gt" / name / "gt.txt", rows)
    write_mot(tmp_path / "pred" / "one.txt", [(t + 1, 1, *b) for t, b in enumerate(BOXES) if t != 2])
    write_mot(tmp_path / "pred" / "two" / "tracks.txt", [(t + 1, 5, *b) for t, b in enumerate(BOXES)])
    result = run_eval(tmp_path / "gt", tmp_path / "pred")
    assert [s.name for s in result.sequences] == ["one", "two"]
    assert result.sequences[0].metrics == pytest.approx(a)
    combined = result.combined.metrics
    assert (combined["CLR_FN"], combined["CLR_TP"], combined["GT_IDs"]) == (1, 7, 2)
    assert combined["MOTA"] == pytest.approx(7 / 8) and combined["CLR_Re"] == pytest.approx(7 / 8)
    only_two = run_eval(tmp_path / "gt", tmp_path / "pred", names=["two"])
    assert [s.name for s in only_two.sequences] == ["two"] and only_two.combined.metrics["HOTA"] == 1.0


# --- parity with TrackEval's own dataset pipeline -----------------------------------------------------

def synthetic_mot(seed: int, frames: int = 12) -> tuple[list, list]:
    """Three objects with jittered predictions, a switch, misses, a false track and a conf-0 gt row."""
    rng = np.random.default_rng(seed)
    gt, pred = [], []
    for obj in range(3):
        start = obj * 2 + 1
        x0, y0 = 30.0 * obj + 5, 20.0 * obj + 5
        for t in range(start, frames + 1):
            box = (x0 + 3 * t, y0 + t, 24.0, 40.0)
            gt.append((t, obj + 1, *box, 0 if (obj == 2 and t == frames) else 1))
            if rng.random() < 0.15:
                continue  # missed
            jitter = rng.normal(0, 3.0, 4)
            tid = 10 + obj if not (obj == 1 and t > frames // 2) else 20
            pred.append((t, tid, *(np.round(np.add(box, jitter), 2)), 0.9))
    for t in range(3, 7):
        pred.append((t, 99, 250.0, 10.0 + t, 20.0, 20.0, 0.5))
    return gt, pred


def run_trackeval_pipeline(dataset_cls, gt_root: Path, trk_root: Path, seq_info: dict, cls: str, **extra):
    import trackeval

    eval_config = {"USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False,
                   "TIME_PROGRESS": False, "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False,
                   "PLOT_CURVES": False, "LOG_ON_ERROR": None}
    dataset = dataset_cls({"GT_FOLDER": str(gt_root), "TRACKERS_FOLDER": str(trk_root), "SKIP_SPLIT_FOL": True,
                           "SEQ_INFO": seq_info, "TRACKERS_TO_EVAL": ["mine"], "PRINT_CONFIG": False,
                           "CLASSES_TO_EVAL": [cls], **extra})
    metrics = [trackeval.metrics.HOTA(), trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
               trackeval.metrics.Identity({"PRINT_CONFIG": False})]  # the Evaluator adds Count
    res, _ = trackeval.Evaluator(eval_config).evaluate([dataset], metrics)
    return res[dataset.get_name()]["mine"]


def assert_same_as_library(ours, theirs: dict, cls: str) -> None:
    pairs = [(s.metrics, theirs[s.name][cls]) for s in ours.sequences]
    pairs.append((ours.combined.metrics, theirs["COMBINED_SEQ"][cls]))
    for mine, ref in pairs:
        for key, value in mine.items():
            metric = next(m for m in ("HOTA", "CLEAR", "Identity", "Count") if key in ref[m])
            assert value == pytest.approx(float(np.mean(ref[metric][key])), abs=1e-12), key


def test_mot_figures_equal_trackeval_pipeline(tmp_path):
    seq_info = {}
    for seed, name in enumerate(["seq-a", "seq-b"]):
        gt, pred = synthetic_mot(seed)
        write_mot(tmp_path / "gt" / name / "gt" / "gt.txt", gt)
        write_mot(tmp_path / "trk" / "mine" / "data" / f"{name}.txt", pred)
        seq_info[name] = max(r[0] for r in gt + pred)
    import trackeval

    theirs = run_trackeval_pipeline(trackeval.datasets.MotChallenge2DBox, tmp_path / "gt", tmp_path / "trk",
                                    seq_info, "pedestrian", BENCHMARK="MOT15")
    ours = run_eval(tmp_path / "gt", tmp_path / "trk" / "mine" / "data")
    assert ours.combined.metrics["IDSW"] >= 1 and ours.combined.metrics["CLR_FP"] >= 4
    assert_same_as_library(ours, theirs, "pedestrian")


def synthetic_mots() -> tuple[list, list]:
    """Two objects, a shifted prediction, a switch, and a false mask inside an ignore region."""
    gt, pred = [], []
    for t in range(1, 6):
        gt.append((t, 2001, 2, box_mask(2, 2 + t, 10, 10 + t)))
        gt.append((t, 2002, 2, box_mask(12, 0, 20, 8)))
        gt.append((t, 10000, 10, box_mask(0, 24, 24, 32)))  # ignore region
        pred.append((t, 1, 2, box_mask(2, 2 + t + (t % 3), 10, 10 + t + (t % 3))))
        if t != 3:
            pred.append((t, 2 if t < 4 else 3, 2, box_mask(13, 0, 20, 8)))
        pred.append((t, 4, 2, box_mask(2, 25, 8, 31)))  # inside the ignore region: not a false positive
    pred.append((2, 5, 2, box_mask(20, 20, 24, 24)))  # a real false positive
    return gt, pred


def test_mots_figures_equal_trackeval_pipeline(tmp_path):
    import trackeval

    gt, pred = synthetic_mots()
    write_mots(tmp_path / "gt" / "s1" / "gt" / "gt.txt", gt)
    write_mots(tmp_path / "trk" / "mine" / "data" / "s1.txt", pred)
    theirs = run_trackeval_pipeline(trackeval.datasets.MOTSChallenge, tmp_path / "gt", tmp_path / "trk",
                                    {"s1": 5}, "pedestrian")
    ours = run_eval(tmp_path / "gt", tmp_path / "trk" / "mine" / "data", kind="auto")
    assert ours.kind == "mots"
    assert_same_as_library(ours, theirs, "pedestrian")


def test_mots_hand_case(tmp_path):
    """A perfect in 2 frames; B perfect in frame 1, a quarter of it (IoU 0.25) in frame 2; an ignore region."""
    a, b = box_mask(0, 0, 10, 10), box_mask(0, 20, 10, 30)
    ignore_class = 10
    gt = [(1, 1, 1, a), (1, 2, 1, b), (2, 1, 1, a), (2, 2, 1, b),
          (2, 3, ignore_class, box_mask(14, 0, 24, 32))]
    pred = [(1, 5, 1, a), (1, 6, 1, b), (2, 5, 1, a), (2, 6, 1, box_mask(0, 20, 5, 25)),
            (2, 7, 1, box_mask(15, 0, 20, 10))]  # inside the ignore region: dropped
    m = run_eval(write_mots(tmp_path / "gt.txt", gt), write_mots(tmp_path / "p.txt", pred)).combined.metrics
    assert m["Dets"] == 4 and m["GT_Dets"] == 4
    assert (m["CLR_TP"], m["CLR_FN"], m["CLR_FP"], m["IDSW"]) == (3, 1, 1, 0)
    assert m["MOTA"] == pytest.approx(1 - 2 / 4) and m["CLR_Pr"] == pytest.approx(0.75)
    # At alpha 0.05 all four pairs match and each id pair is consistent: HOTA 1, LocA the mean IoU.
    assert m["HOTA(0)"] == pytest.approx(1.0)
    assert m["LocA(0)"] == pytest.approx((3 * 1.0 + 0.25) / 4)


# --- inputs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line, problem", [
    ("1,1,10,10,20", "expected 6 to 10 fields"),
    ("1,1,10,10,20,20,1,-1,-1,-1,7", "expected 6 to 10 fields"),
    ("1,1,10,ten,20,20,1", "'ten' is not a number"),
    ("1,1,{x},10,20,20,1", "'{x}' is not a number"),
    ("0,1,10,10,20,20,1", "1-based"),
    ("1.5,1,10,10,20,20,1", "integer"),
    ("1,1,10,10,-20,20,1", "width and height"),
    ("1,1,10,10,nan,20,1", "finite"),
])
def test_malformed_mot_line_names_file_and_line(tmp_path, line, problem):
    bad = tmp_path / "pred.txt"
    bad.write_text("1,1,10,10,20,20,1\n\n" + line + "\n")
    with pytest.raises(InputError, match=problem) as err:
        run_eval(write_mot(tmp_path / "gt.txt", GT), bad)
    assert f"{bad}:3:" in str(err.value)


def test_duplicate_id_in_a_frame(tmp_path):
    bad = write_mot(tmp_path / "pred.txt", [(1, 1, 0, 0, 5, 5), (2, 1, 0, 0, 5, 5), (1, 1, 9, 9, 5, 5)])
    with pytest.raises(InputError, match=r"pred.txt:3: id 1 appears twice in frame 1 \(also on line 1\)"):
        run_eval(write_mot(tmp_path / "gt.txt", GT), bad)


@pytest.mark.parametrize("line, problem", [
    ("1 1 2 24 32", "expected 6 fields"),
    ("1 1 2 24 32 ab~c", "compressed RLE"),
    ("1 x 2 24 32 abc", "integers"),
    ("0 1 2 24 32 abc", "1-based"),
    ("1 3 2 12 32 {rle}", "differs from 24x32 above"),
])
def test_malformed_mots_line(tmp_path, line, problem):
    good = f"1 1 2 24 32 {rle(box_mask(0, 0, 4, 4))}\n"
    bad = tmp_path / "p.txt"
    bad.write_text(good + line.format(rle=rle(box_mask(0, 0, 4, 4, size=(12, 32)))) + "\n")
    with pytest.raises(InputError, match=problem) as err:
        run_eval(bad, bad, kind="mots")
    assert f"{bad}:2:" in str(err.value)


def test_overlapping_mots_masks_are_refused_unless_allowed(tmp_path):
    rows = [(1, 1, 2, box_mask(0, 0, 10, 10)), (1, 2, 2, box_mask(5, 5, 15, 15))]
    path = write_mots(tmp_path / "p.txt", rows)
    with pytest.raises(InputError, match="masks overlap in frame 1 \\(lines 1, 2\\)"):
        run_eval(path, path)
    assert run_eval(path, path, allow_mask_overlap=True).combined.metrics["HOTA"] == pytest.approx(1.0)


def test_layout_errors(tmp_path):
    gt = write_mot(tmp_path / "gt" / "a" / "gt.txt", GT)
    write_mot(tmp_path / "pred" / "b.txt", GT)
    with pytest.raises(InputError, match=r"no ground truth .* \['b'\]"):
        pair_sequences(tmp_path / "gt", tmp_path / "pred")
    with pytest.raises(InputError, match=r"no predictions .* \['a'\]"):
        pair_sequences(tmp_path / "gt", tmp_path / "pred", names=["a"])
    with pytest.raises(InputError, match="does not exist"):
        run_eval(gt, tmp_path / "missing.txt")
    with pytest.raises(InputError, match="either files on both sides"):
        run_eval(gt, tmp_path / "pred")
    with pytest.raises(InputError, match="2 ground-truth files but 1"):
        run_eval([gt, gt], [gt])
    mots = write_mots(tmp_path / "m.txt", [(1, 1, 2, box_mask(0, 0, 4, 4))])
    with pytest.raises(InputError, match="mixed formats"):
        run_eval(gt, mots)


def test_table_and_json(tmp_path):
    for name in ("walk", "run"):
        write_mot(tmp_path / "gt" / f"{name}.txt", GT)
        write_mot(tmp_path / "pred" / f"{name}.txt", [(t + 1, 3, *b) for t, b in enumerate(BOXES) if t])
    result = run_eval(tmp_path / "gt", tmp_path / "pred")
    table = format_table(result)
    for word in ("HOTA", "DetA", "AssA", "LocA", "MOTA", "IDF1", "IDSW", "Rcll", "Prcn", "walk", "run",
                 "COMBINED", "trackeval"):
        assert word in table, word
    assert "75.00" in table  # recall in percent
    doc = json.loads(json.dumps(result.to_json()))
    assert doc["library"]["name"] == "trackeval" and doc["library"]["version"]
    assert set(doc["sequences"]) == {"walk", "run"}
    assert doc["sequences"]["walk"]["metrics"]["CLR_Re"] == pytest.approx(0.75)
    assert doc["combined"]["metrics"]["CLR_FN"] == 2 and doc["kind"] == "mot"

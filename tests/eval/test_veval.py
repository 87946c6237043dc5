"""SA-Co/VEval scoring (``eval --veval``): equal to the official evaluator on the fixture cases that
``tools/make_veval_fixture.py`` made with sam3 0.1.4's ``VideoCGF1Evaluator`` and ``VideoPhraseHotaEvaluator``;
the score-threshold semantics; the masklets a run writes; bad input in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from sam3video.cli import main
from sam3video.errors import InputError
from sam3video.eval.veval import score_veval
from sam3video.export.veval import (
    VevalIds,
    official_box,
    read_ground_truth,
    read_predictions,
    run_masklets,
)

DATA = Path(__file__).parent.parent / "data" / "veval"
CASES = sorted(int(p.name.split("_")[1].split(".")[0]) for p in DATA.glob("case_*.gt.json"))


def _close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9


@pytest.mark.parametrize("case", CASES)
def test_scores_equal_the_official_evaluator(case):
    gt = read_ground_truth(DATA / f"case_{case}.gt.json")
    result = score_veval(gt, read_predictions(DATA / f"case_{case}.pred.json", gt))
    expected = json.loads((DATA / f"case_{case}.expected.json").read_text())
    official = expected["dataset_results"]
    assert len(official) >= 56  # cgF1 (3 thresholds), phrase HOTA (9 fields), mAP and phrase AP; boxes and masks
    for key, value in official.items():
        assert key in result.metrics, key
        assert _close(result.metrics[key], value), (key, result.metrics[key], value)
    for entry in expected["video_np_results"]:
        ours = result.pairs[(entry["video_id"], entry["category_id"])]
        for key, value in entry.items():
            if key not in ("video_id", "category_id"):
                assert _close(ours[key], value), (entry["video_id"], entry["category_id"], key)
    assert len(result.pairs) == len(expected["video_np_results"])


def test_the_cases_cover_what_the_metrics_turn_on():
    """Negative pairs, crowd masklets, challenging tags, scores of exactly 0.5, pairs the ground truth does not
    list and masklets with no mask at all are all in the fixture (else the parity above proves less)."""
    seen = {"negative": 0, "crowd": 0, "tags": 0, "half": 0, "unlisted": 0, "empty": 0}
    for case in CASES:
        gt = json.loads((DATA / f"case_{case}.gt.json").read_text())
        preds = json.loads((DATA / f"case_{case}.pred.json").read_text())
        listed = {(p["video_id"], p["category_id"]) for p in gt["video_np_pairs"]}
        seen["negative"] += sum(p["num_masklets"] == 0 for p in gt["video_np_pairs"])
        seen["crowd"] += sum(a["iscrowd"] for a in gt["annotations"])
        seen["tags"] += sum("tags" in a for a in gt["annotations"])
        seen["half"] += sum(p["score"] == 0.5 for p in preds)
        seen["unlisted"] += sum((p["video_id"], p["category_id"]) not in listed for p in preds)
        seen["empty"] += sum(all(s is None for s in p["segmentations"]) for p in preds)
    assert all(count > 0 for count in seen.values()), seen


def test_a_score_of_one_half_counts_for_cgf1_and_not_for_phrase_hota():
    gt = read_ground_truth(DATA / "case_6.gt.json")
    predictions = read_predictions(DATA / "case_6.pred.json", gt)
    for m in predictions:
        m.score = 0.5
    metrics = score_veval(gt, predictions, iou_types=("segm",)).metrics
    assert metrics["video_mask_demo_recall_50"] > 0  # >= 0.5: counted
    assert metrics["video_mask_all_phrase_DetPr"] == 0  # > 0.5: none counted, nothing detected
    for m in predictions:
        m.score = 0.5 + 1e-9
    assert score_veval(gt, predictions, iou_types=("segm",)).metrics["video_mask_all_phrase_DetPr"] > 0


def _write_run_files(folder: Path) -> None:
    """Two tracks of a 4-frame 6x8 run: track 3 (prompt 0) on frames 1-3, track 5 (prompt 1) on frame 2."""
    masks = {}
    for frame, track, rows, cols in ((1, 3, (1, 3), (2, 5)), (2, 3, (1, 4), (2, 6)), (3, 3, (0, 1), (7, 8)),
                                     (2, 5, (4, 6), (0, 1))):
        m = np.zeros((6, 8), np.uint8)
        m[rows[0]:rows[1], cols[0]:cols[1]] = 1
        masks[(frame, track)] = m
    mots, mot = [], []
    confidence = {(1, 3): 0.9, (2, 3): 0.7, (3, 3): 0.8, (2, 5): 0.55}
    for (frame, track), m in sorted(masks.items()):
        counts = mask_utils.encode(np.asfortranarray(m))["counts"].decode()
        mots.append(f"{frame + 1} {track} {1 if track == 3 else 2} 6 8 {counts}")
        mot.append(f"{frame + 1},{track},0,0,1,1,{confidence[(frame, track)]},-1,-1,-1")
    (folder / "tracks.mots.txt").write_text("\n".join(mots) + "\n")
    (folder / "tracks.txt").write_text("\n".join(mot) + "\n")


def test_a_run_becomes_one_masklet_per_track(tmp_path):
    _write_run_files(tmp_path)
    masklets = run_masklets([tmp_path / "tracks.mots.txt"], [tmp_path / "tracks.txt"], 4, ["dog", "cat"],
                            VevalIds("clip", video_id=7, category_ids=(40, 12)))
    assert [(m["category_id"], m["noun_phrase"]) for m in masklets] == [(40, "dog"), (12, "cat")]
    dog, cat = masklets
    assert dog["video_id"] == 7 and dog["video_name"] == "clip"
    assert dog["score"] == pytest.approx((0.9 + 0.7 + 0.8) / 3)  # the mean of its frames' confidence
    assert cat["score"] == pytest.approx(0.55)
    assert dog["segmentations"][0] is None and dog["areas"][0] == 0 and dog["bboxes"][0] == [0, 0, 0, 0]
    assert dog["areas"][1:] == [6, 12, 1]
    # the official writer's boxes: the last pixel is the far corner, so a one-pixel mask is 0 wide
    assert dog["bboxes"][1] == [2.0, 1.0, 2.0, 1.0] and dog["bboxes"][3] == [7.0, 0.0, 0.0, 0.0]
    assert mask_utils.decode(dog["segmentations"][2]).sum() == 12


def test_official_box_matches_the_official_mask_to_box_convention():
    m = np.zeros((10, 12), np.uint8)
    m[2:7, 3:11] = 1  # rows 2..6, columns 3..10
    assert official_box(mask_utils.encode(np.asfortranarray(m))) == [3.0, 2.0, 7.0, 4.0]
    assert official_box(mask_utils.encode(np.zeros((4, 4), np.uint8, order="F"))) == [0.0, 0.0, 0.0, 0.0]


def _gt_for_run(path: Path, names=("clip",)) -> Path:
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((2, 3), np.uint8), ((1, 3), (2, 3)))))
    seg = {"size": [6, 8], "counts": rle["counts"].decode()}
    gt = {"videos": [{"id": 3 + i, "video_name": n, "file_names": [f"{n}/{t}.jpg" for t in range(4)], "height": 6,
                      "width": 8} for i, n in enumerate(names)],
          "annotations": [{"id": 1, "video_id": 3, "category_id": 40, "iscrowd": 0, "segmentations": [None, seg, seg, None],
                           "bboxes": [None, [2, 1, 3, 2], [2, 1, 3, 2], None], "areas": [None, 6, 6, None]}],
          "categories": [{"id": 40, "name": "dog"}, {"id": 12, "name": "cat"}],
          "video_np_pairs": [{"video_id": 3, "category_id": 40, "noun_phrase": "dog", "num_masklets": 1},
                             {"video_id": 3, "category_id": 12, "noun_phrase": "cat", "num_masklets": 0}]}
    path.write_text(json.dumps(gt))
    return path


def test_a_run_folder_is_tied_to_the_ground_truth_by_name(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _write_run_files(run)
    masklets = run_masklets([run / "tracks.mots.txt"], [run / "tracks.txt"], 4, ["dog", "cat"], VevalIds("clip"))
    (run / "predictions.veval.json").write_text(json.dumps(masklets))
    gt = read_ground_truth(_gt_for_run(tmp_path / "gt.json"))
    predictions = read_predictions(run, gt)
    assert [(m.video_id, m.category_id) for m in predictions] == [(3, 40), (3, 12)]  # written as (0, 1), (0, 2)
    out, exported = tmp_path / "res.json", tmp_path / "official.json"
    assert main(["eval", "--veval", str(tmp_path / "gt.json"), str(run), "--json", str(out),
                 "--export", str(exported)]) == 0
    assert "cgF1" in capsys.readouterr().out
    result = json.loads(out.read_text())["dataset_results"]
    # "dog" is found (a video-level TP), "cat" is a negative pair and was predicted (an FP)
    assert (result["video_mask_demo_IL_TP"], result["video_mask_demo_IL_FP"]) == (1, 1)
    official = json.loads(exported.read_text())
    assert [(m["video_id"], m["category_id"]) for m in official] == [(3, 40), (3, 12)]
    assert set(official[0]) == {"video_id", "category_id", "score", "segmentations", "bboxes", "areas"}
    # the exported file is read (by id) to the same numbers
    assert main(["eval", "--veval", str(tmp_path / "gt.json"), str(exported), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["dataset_results"] == result


def _case(tmp_path: Path, edit_gt=None, edit_pred=None) -> tuple[Path, Path]:
    gt = json.loads((DATA / "case_1.gt.json").read_text())
    pred = json.loads((DATA / "case_1.pred.json").read_text())
    if edit_gt:
        edit_gt(gt)
    if edit_pred:
        edit_pred(pred)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    return tmp_path / "gt.json", tmp_path / "pred.json"


def _drop_frame(pred):
    pred[2]["segmentations"].pop()  # one frame short of its video


def _wrong_size(pred):
    masklet = next(m for m in pred if any(m["segmentations"]))
    masklet["segmentations"] = [None if s is None else {**s, "size": [s["size"][0] + 1, s["size"][1]]}
                                for s in masklet["segmentations"]]


def _cut_counts(gt):
    first = next(s for s in gt["annotations"][0]["segmentations"] if s)
    first["counts"] = first["counts"][:-3]


@pytest.mark.parametrize("edit_gt, edit_pred, message", [
    (lambda gt: gt.pop("video_np_pairs"), None, "has no video_np_pairs (cgF1 needs"),
    (None, _drop_frame, "entry 2: segmentations has"),
    (None, _wrong_size, "is not the video's"),
    (None, lambda p: p[1].update(video_id=77), "entry 1: video_id 77 is not a video of the ground truth"),
    (_cut_counts, None, "annotations[0], frame"),
    (lambda gt: gt["annotations"].append(dict(gt["annotations"][0])), None, "is also annotations[0]"),
    (None, lambda p: p[0].update(score="high"), "entry 0: score must be a finite number"),
    (None, lambda p: p[0].update(video_name="nowhere", noun_phrase="x"), "video 'nowhere' is not in the ground truth"),
])
def test_bad_input_is_one_line_naming_the_file_and_entry(tmp_path, capsys, edit_gt, edit_pred, message):
    gt, pred = _case(tmp_path, edit_gt, edit_pred)
    assert main(["eval", "--veval", str(gt), str(pred), "--json", str(tmp_path / "out.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sam3video eval: error:"), captured.err
    assert message in lines[0] and (str(gt) in lines[0] or str(pred) in lines[0]), lines[0]
    assert not (tmp_path / "out.json").exists()


def test_duplicate_ids_message_names_both_entries(tmp_path):
    gt, _ = _case(tmp_path, lambda gt: gt["annotations"].append(dict(gt["annotations"][0])))
    with pytest.raises(InputError, match=r"annotations\[\d+\]: id \d+ is also annotations\[0\] of the same video"):
        read_ground_truth(gt)


@pytest.mark.parametrize("argv, message", [
    (["eval", "--veval", "a", "b", "--gt", "c"], "not both"),
    (["eval", "--gt", "a"], "give --gt and --pred"),
    (["eval", "--gt", "a", "--pred", "b", "--export", "x"], "--export goes with --veval"),
])
def test_eval_modes_are_checked(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err

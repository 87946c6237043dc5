"""``sam3video benchmark veval`` end to end on a miniature VEval set (two synthetic clips, the tiny model) on
the tests' Ray cluster: every (video, noun phrase) pair tracked, negative ones too; the masklets written
with the ground truth's ids; the scores equal to ``eval --veval`` of the runs and of the official file; a
rerun skips what is done; a missing frame is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam3video.cli import main
from sam3video.data.veval_mini import write_mini_veval
from sam3video.export.tables import read_mots
from tests.batch.conftest import LOW


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("veval")
    write_mini_veval(root, seeds=(3, 5), seconds=0.4)
    return root


def _argv(mini: Path, data: Path, out: Path, address: str) -> list[str]:
    return ["benchmark", "veval", str(mini / "gt.json"), str(mini / "frames"), "--out", str(out), "--checkpoint",
            str(data / "tiny.pt"), "--device", "cpu", "--quiet", "--threads", "1", "--address", address, *LOW]


def test_benchmark_veval_runs_every_pair_and_scores_them(mini, batch_data, ray_head, ray_client_env, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(_argv(mini, batch_data, out, ray_head)) == 0
    printed = capsys.readouterr().out
    assert "SAM 3.1 (published" in printed and "cgF1" in printed
    gt = json.loads((mini / "gt.json").read_text())
    pairs = {(p["video_id"], p["category_id"]) for p in gt["video_np_pairs"]}
    assert any(p["num_masklets"] == 0 for p in gt["video_np_pairs"])
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions and {(m["video_id"], m["category_id"]) for m in predictions} <= pairs
    for video in gt["videos"]:
        run = out / "runs" / f"{video['id']}-{video['video_name']}"
        summary = json.loads((run / "summary.json").read_text())
        phrases = [p["noun_phrase"] for p in gt["video_np_pairs"] if p["video_id"] == video["id"]]
        assert summary["prompts"] == phrases  # every pair of the video, the negative ones included
        masklets = json.loads((run / "predictions.veval.json").read_text())
        assert len(masklets) == len(set(read_mots(run / "tracks.mots.txt").ids.tolist()))
        assert all(len(m["segmentations"]) == len(video["file_names"]) for m in masklets)
        assert all(m["video_id"] == video["id"] for m in masklets)
    results = json.loads((out / "results.json").read_text())["dataset_results"]
    assert {"video_mask_demo_cgf1_micro_50_95", "video_mask_all_phrase_HOTA"} <= set(results)
    for pred in (out / "runs", out / "predictions.json"):  # by name (the runs) and by id (the official file)
        assert main(["eval", "--veval", str(mini / "gt.json"), str(pred), "--json", str(tmp_path / "e.json")]) == 0
        assert json.loads((tmp_path / "e.json").read_text())["dataset_results"] == results
    capsys.readouterr()
    # a rerun skips both videos and scores them again the same
    assert main(_argv(mini, batch_data, out, ray_head)) == 0
    assert json.loads((out / "results.json").read_text())["dataset_results"] == results
    manifest = json.loads((out / "runs" / "manifest.json").read_text())["videos"]
    assert all(entry["state"] == "done" and entry["attempts"] == 1 for entry in manifest.values())


def test_a_missing_frame_is_one_line(mini, batch_data, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.symlink_to(mini / "frames")
    gt = json.loads((mini / "gt.json").read_text())
    gt["videos"][1]["file_names"][2] = "clip005/missing.jpg"
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    argv = ["benchmark", "veval", str(tmp_path / "gt.json"), str(frames), "--out", str(tmp_path / "o"),
            "--checkpoint", str(batch_data / "tiny.pt"), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jpg does not exist (frame 2 of video 1" in err[0], err
    assert not (tmp_path / "o").exists()  # checked before anything is written
    assert main(argv + ["--fps", "5"]) == 2
    assert "--fps would change the frames" in capsys.readouterr().err

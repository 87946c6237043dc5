"""Writing a run's outputs: everything atomic, nothing final left behind by an interrupted run."""

import json

import numpy as np
import pytest

from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.video.outputs import per_prompt_names, prepare_out_dir, write_outputs
from sam3video.video.predictor import FrameResult

H, W = 32, 48


def results(n, interrupt_at=None):
    for i in range(n):
        if i == interrupt_at:
            raise KeyboardInterrupt
        mask = np.zeros((1, H, W), bool)
        mask[0, 4:12, 2 + i:10 + i] = True
        dets = Detections(xyxy=[[2 + i, 4, 10 + i, 12]], confidence=[0.8], class_id=[i % 2], mask=mask,
                          tracker_id=[1 + i % 2])
        yield FrameResult(i, i / 10, 0, dets, np.zeros((H, W, 3), np.uint8), dets)


def test_writes_all_outputs(tmp_path):
    summary = write_outputs(results(6), tmp_path, ["a", "b"], fps=10.0, frame_size=(H, W), summary={"x": 1})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["overlay.mp4", "summary.json", "tracks.a.txt", "tracks.b.txt", "tracks.mots.txt", "tracks.txt"]
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == 6 == summary["frames"]
    assert summary["x"] == 1 and len(summary["tracks"]) == 2


def test_interrupted_run_leaves_no_final_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        write_outputs(results(6, interrupt_at=3), tmp_path, ["a", "b"], fps=10.0, frame_size=(H, W))
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rerun_keeps_the_previous_outputs(tmp_path):
    write_outputs(results(4), tmp_path, ["a"], fps=10.0, frame_size=(H, W), render=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(KeyboardInterrupt):
        write_outputs(results(6, interrupt_at=2), tmp_path, ["a"], fps=10.0, frame_size=(H, W), render=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_no_frames_is_bad_input(tmp_path):
    with pytest.raises(InputError, match="no frames"):
        write_outputs(iter(()), tmp_path, ["a"], fps=10.0, frame_size=(H, W))
    assert list(tmp_path.iterdir()) == []


def test_unwritable_out_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot write to output directory"):
        prepare_out_dir(blocker / "run")


def test_per_prompt_names_are_unique():
    assert per_prompt_names(["red circle", "Red Circle", "dog"]) == [
        "tracks.red_circle.txt", "tracks.red_circle_2.txt", "tracks.dog.txt"]

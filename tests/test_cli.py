"""End to end: `sam3video track` on a generated clip with the tiny model, every output, every exit code."""

import json
import subprocess
import sys

import av
import numpy as np
import pytest
import torch

from sam3video.cli import main
from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.export import read_mot, read_mots
from tests.conftest import PARITY
from tests.helpers import write_video

LOW = ["--score-threshold", "0", "--low-score-threshold", "0", "--new-track-threshold", "0", "--min-hits", "1"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, parity_state_dict):
    """A 1 s synthetic clip (mp4) and the tiny model saved as a checkpoint with its config."""
    root = tmp_path_factory.mktemp("cli")
    clip = generate_clip(3, WorldConfig(width=160, height=96, duration_s=1.0, fps=10, radius_px=(8.0, 20.0)))
    write_video(root / "clip.mp4", (clip.image(t) for t in range(clip.num_frames)), fps=10)
    config = json.loads((PARITY / "config.json").read_text())
    torch.save({"model": parity_state_dict, "config": config}, root / "tiny.pt")
    return root


def run(*args) -> int:
    return main([str(a) for a in args])


def test_track_writes_every_output(workdir, capsys):
    out = workdir / "run"
    code = run("track", workdir / "clip.mp4", "--prompt", "red circle", "--prompt", "square",
               "--checkpoint", workdir / "tiny.pt", "--out", out, "--quiet", *LOW)
    assert code == 0
    assert "10 frames" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 10 and summary["prompts"] == ["red circle", "square"]
    assert summary["input"]["width"] == 160 and summary["input"]["fps"] == pytest.approx(10)
    track_ids = {t["track_id"] for t in summary["tracks"]}
    assert track_ids, "threshold 0 keeps every query: there must be tracks"
    mot = read_mot(out / "tracks.txt")
    mots = read_mots(out / "tracks.mots.txt")
    assert set(np.concatenate([d.tracker_id for d in mot.values()])) == track_ids
    assert max(mot) <= 9 and set(mots) <= set(mot)
    per_prompt = [read_mot(out / name) for name in ("tracks.red_circle.txt", "tracks.square.txt")]
    assert sum(len(d) for p in per_prompt for d in p.values()) == sum(len(d) for d in mot.values())
    assert summary["outputs"]["per_prompt_mot"] == {"red circle": "tracks.red_circle.txt",
                                                    "square": "tracks.square.txt"}
    for frame, dets in mots.items():
        assert dets.mask.shape[1:] == (96, 160)
        assert dets.mask.sum(0).max() <= 1  # MOTS masks do not overlap
        assert set(dets.class_id) <= {0, 1}
    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        assert len(frames) == 10 and (stream.width, stream.height) == (160, 96)
        assert float(stream.average_rate) == pytest.approx(10)
    assert not list(out.glob(".*tmp*"))


def test_render_remakes_the_overlay(workdir):
    out = workdir / "run_render"
    assert run("track", workdir / "clip.mp4", "--prompt", "circle", "--checkpoint", workdir / "tiny.pt",
               "--out", out, "--quiet", "--no-render", *LOW) == 0
    assert not (out / "overlay.mp4").exists()
    assert run("render", out) == 0
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10


def test_fps_subsampling_and_exemplars(workdir):
    out = workdir / "run_fps"
    code = run("track", workdir / "clip.mp4", "--prompt", "circle", "--checkpoint", workdir / "tiny.pt",
               "--out", out, "--quiet", "--no-render", "--fps", "5", "--exemplar", "1:10,10,60,50",
               "--exemplar", "2:80,20,120,60:neg", *LOW)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 5 and len(summary["exemplars"]) == 2
    assert summary["config"]["exemplar"]["carry_boxes"] is False
    effect = summary["exemplar_effect"]
    assert [(p["frame"], p["positive"], p["prompt"]) for p in effect["prototypes"]] == [(1, True, "circle"),
                                                                                       (2, False, "circle")]
    assert all(int(k) >= 1 and v >= 1 for k, v in effect["hidden_tracks"].items())
    assert run("track", workdir / "clip.mp4", "--prompt", "circle", "--checkpoint", workdir / "tiny.pt",
               "--out", out, "--quiet", "--no-render", "--end", "0.3", "--exemplar", "1:10,10,60,50",
               "--carry-exemplar-boxes", *LOW) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["exemplar"]["carry_boxes"] is True


def test_exemplars_only_use_the_visual_prompt(workdir):
    out = workdir / "run_visual"
    assert run("track", workdir / "clip.mp4", "--exemplar", "0:10,10,60,50", "--checkpoint",
               workdir / "tiny.pt", "--out", out, "--quiet", "--no-render", *LOW) == 0
    assert json.loads((out / "summary.json").read_text())["prompts"] == ["visual"]


@pytest.fixture()
def bad_inputs(workdir):
    (workdir / "notes.mp4").write_text("not a video")
    write_video(workdir / "empty.mp4", [])
    return workdir


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.mp4", "--prompt", "dog"], "no such file"),
        (["notes.mp4", "--prompt", "dog"], "not a readable video"),
        (["empty.mp4", "--prompt", "dog"], "no video stream with frames"),
        (["clip.mp4", "--prompt", "  "], "empty prompt"),
        (["clip.mp4"], "nothing to track"),
        (["clip.mp4", "--prompt", "dog", "--exemplar", "50:1,1,9,9"], "exemplar frame 50 out of range"),
        (["clip.mp4", "--prompt", "dog", "--exemplar", "1:100,10,170,40"], "off the 160x96 frame"),
        (["clip.mp4", "--prompt", "dog", "--exemplar", "1:1,2,3"], "needs 4 numbers"),
        (["clip.mp4", "--prompt", "dog", "--out", "/proc/nope/run"], "cannot write to output directory"),
        (["clip.mp4", "--prompt", "dog", "--start", "5"], "beyond the end"),
        (["clip.mp4", "--prompt", "dog", "--frame-batch", "0"], "--frame-batch must be >= 1"),
        (["clip.mp4", "--prompt", "dog", "--runtime", "openvino", "--precision", "fp16"], "not fp16"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(bad_inputs, capsys, monkeypatch, args, message):
    monkeypatch.chdir(bad_inputs)
    code = run("track", *args, "--checkpoint", "tiny.pt", "--quiet")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["track", "clip.mp4", "--score-threshold", "2"])
    assert exit_info.value.code == 2


def test_missing_checkpoint_is_bad_input(workdir, capsys):
    code = run("track", workdir / "clip.mp4", "--prompt", "dog", "--checkpoint", workdir / "none.pt", "--quiet")
    assert code == 2 and "checkpoint not found" in capsys.readouterr().err


def test_help_shows_examples():
    result = subprocess.run([sys.executable, "-m", "sam3video.cli", "track", "--help"], capture_output=True,
                            text=True, check=True)
    assert "examples:" in result.stdout and "--exemplar" in result.stdout


def test_official_weights_offline_is_one_clear_line(workdir, capsys, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    code = run("track", workdir / "clip.mp4", "--prompt", "dog", "--checkpoint", "facebook/sam3", "--quiet",
               "--out", tmp_path / "run")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "offline" in err and "huggingface.co/facebook/sam3" in err and "--checkpoint PATH" in err


def test_score_threshold_defaults_to_the_checkpoints_calibrated_one(workdir, parity_state_dict):
    config = {**json.loads((PARITY / "config.json").read_text()), "score_threshold": 0.35}
    torch.save({"model": parity_state_dict, "config": config}, workdir / "calibrated.pt")
    for extra, expected in (([], 0.35), (["--score-threshold", "0.7"], 0.7)):
        out = workdir / f"calibrated_{expected}"
        assert run("track", workdir / "clip.mp4", "--prompt", "dog", "--checkpoint", workdir / "calibrated.pt",
                   "--out", out, "--quiet", "--no-render", "--end", "0.3", *extra) == 0
        used = json.loads((out / "summary.json").read_text())["config"]
        assert used["detection"]["score_threshold"] == used["tracker"]["box_only_low_score"] == expected
        assert used["tracker"]["new_track_threshold"] == used["tracker"]["high_score_threshold"]
        assert used["tracker"]["new_track_threshold"] == pytest.approx(expected + 0.1)


def run_subprocess(*args, env=None, cwd=None, python_prelude: str = ""):
    """``sam3video ...`` in a fresh interpreter: what the user's terminal gets on fd 1 and fd 2 (native
    libraries print below Python, where capsys does not see them). No --quiet: the info line and the
    progress bar must not come before an error either."""
    import os

    code = (f"{python_prelude}\nimport sys\nfrom sam3video.cli import main\n"
            f"sys.exit(main({[str(a) for a in args]!r}))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=cwd, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def unreadable(workdir):
    (workdir / "text.mp4").write_text("not a video at all\n")
    (workdir / "zero.mp4").write_bytes(b"")
    (workdir / "bad.toml").write_text("vit_dim = 'wide'\n")
    (workdir / "broken.toml").write_text("vit_dim = \n")
    return workdir


@pytest.mark.parametrize(
    "args, message",
    [
        (["text.mp4", "--prompt", "x"], "not a readable video: text.mp4"),
        (["zero.mp4", "--prompt", "x"], "not a readable video: zero.mp4"),
        (["clip.mp4", "--prompt", "x", "--exemplar", "9999:10,10,50,50"], "exemplar frame 9999 out of range [0, 10)"),
        (["clip.mp4", "--prompt", "x", "--exemplar", "2:500,500,550,550"], "lies off the 160x96 frame"),
        (["clip.mp4", "--prompt", "x", "--config", "bad.toml"], "config key vit_dim: expected an integer"),
        (["clip.mp4", "--prompt", "x", "--config", "broken.toml"], "cannot read config broken.toml"),
        (["clip.mp4", "--prompt", "x", "--config", "nope.toml"], "config not found: nope.toml"),
    ],
)
def test_bad_input_prints_exactly_one_line_first(unreadable, args, message):
    result = run_subprocess("track", *args, "--checkpoint", "tiny.pt", "--out", "run_bad", cwd=unreadable)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("sam3video track: error:"), lines
    assert not (unreadable / "run_bad" / "tracks.txt").exists()


def test_offline_hub_checkpoint_prints_one_line(workdir, tmp_path):
    """No cached copy, no network (HF_HUB_OFFLINE): the hub library prints nothing before our line."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run_subprocess("track", workdir / "clip.mp4", "--prompt", "x", "--checkpoint", "facebook/sam3",
                            "--out", tmp_path / "run", env=env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "offline and not in the local cache" in lines[0], lines


def test_eval_is_installed_with_the_package(workdir):
    """TrackEval and OpenCV are ordinary dependencies: `sam3video eval` works after `pip install -e .`."""
    from importlib import metadata

    import cv2
    import trackeval

    requires = " ".join(metadata.requires("sam3video") or [])
    assert "trackeval" in requires and "opencv-python" in requires and "headless" not in requires
    assert cv2.__version__ and trackeval.__file__
    gt = workdir / "eval_gt.txt"
    gt.write_text("1,1,10,10,20,20,1,1,1\n2,1,12,10,20,20,1,1,1\n")
    result = run_subprocess("eval", "--gt", gt, "--pred", gt)
    assert result.returncode == 0, result.stderr
    assert "HOTA" in result.stdout


def test_eval_without_trackeval_is_one_line_exit_2(workdir):
    gt = workdir / "eval_gt.txt"
    gt.write_text("1,1,10,10,20,20,1,1,1\n")
    result = run_subprocess("eval", "--gt", gt, "--pred", gt, python_prelude="import sys; sys.modules['trackeval'] = None")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "needs TrackEval" in lines[0] and "pip install" in lines[0], lines
    assert "internal error" not in lines[0]


def test_a_sam31_checkpoint_runs_the_multiplex_loop(workdir, capsys):
    """A full checkpoint in the sam3.1_multiplex.pt layout (tiny, seeded weights, its config saved): `track` runs
    the official SAM 3.1 loop by default (summary names the version and the multiplex loop, with the lowered
    thresholds given on the command line), and `--tracker sam3video` tracks with its detector instead."""
    from sam3video.model.build_video import load_video_config

    sys.path.insert(0, str(PARITY.parents[2] / "tools"))
    from check_sam31_modules import CONFIG, load_model

    model = load_model(seed=0)
    video = load_video_config(CONFIG)
    config = {**video.detector.to_dict(), "multiplex_tracker": video.multiplex.to_dict()}
    torch.save({"model": model.state_dict(), "config": config}, workdir / "tiny31.pt")
    out = workdir / "run31"
    assert run("track", workdir / "clip.mp4", "--prompt", "circle", "--checkpoint", workdir / "tiny31.pt",
               "--out", out, "--quiet", "--score-threshold", "0.1", "--new-track-threshold", "0.1") == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["version"] == "sam3.1" and summary["tracker"]["name"] == "sam3"
    assert "sam31.loop" in summary["tracker"]["implementation"]
    assert summary["tracker"]["settings"]["score_threshold_detection"] == 0.1
    assert summary["tracker"]["settings"]["max_num_objects"] == -1  # no silent cap of 16
    assert summary["frames"] == 10
    assert run("track", workdir / "clip.mp4", "--prompt", "circle", "--checkpoint", workdir / "tiny31.pt",
               "--out", workdir / "run31c", "--quiet", "--max-objects", "16", "--no-render") == 0
    summary = json.loads((workdir / "run31c" / "summary.json").read_text())
    assert summary["tracker"]["settings"]["max_num_objects"] == 16
    capsys.readouterr()
    assert run("track", workdir / "clip.mp4", "--prompt", "circle", "--checkpoint", workdir / "tiny31.pt",
               "--out", workdir / "run31d", "--max-objects", "0") == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "--max-objects must be >= 1" in err[0]
    assert run("track", workdir / "clip.mp4", "--prompt", "circle", "--checkpoint", workdir / "tiny31.pt",
               "--out", workdir / "run31b", "--tracker", "sam3video", "--quiet", *LOW) == 0
    summary = json.loads((workdir / "run31b" / "summary.json").read_text())
    assert summary["model"]["version"] == "sam3.1" and summary["tracker"]["name"] == "sam3video"


def test_a_damaged_sam31_checkpoint_is_one_line_exit_2_and_nothing_is_written(workdir, capsys):
    """A sam3.1_multiplex.pt-layout file that is truncated, has a NaN in a tracker tensor, or lacks a multiplex
    tracker tensor: `track` names the problem in one line, exit 2, and writes no file."""
    from sam3video.model.build_video import load_video_config

    sys.path.insert(0, str(PARITY.parents[2] / "tools"))
    from check_sam31_modules import CONFIG, load_model

    video = load_video_config(CONFIG)
    config = {**video.detector.to_dict(), "multiplex_tracker": video.multiplex.to_dict()}
    state = load_model(seed=0).state_dict()
    name = "tracker.model.output_valid_embed"
    assert name in state
    nan = {**state, name: torch.full_like(state[name], float("nan"))}
    missing = {k: v for k, v in state.items() if k != name}
    torch.save({"model": state, "config": config}, workdir / "whole31.pt")
    data = (workdir / "whole31.pt").read_bytes()
    (workdir / "truncated31.pt").write_bytes(data[: len(data) // 2])
    torch.save({"model": nan, "config": config}, workdir / "nan31.pt")
    torch.save({"model": missing, "config": config}, workdir / "missing31.pt")
    for file, message in (("truncated31.pt", "truncated"), ("nan31.pt", name), ("missing31.pt", name)):
        out = workdir / f"bad_{file}"
        assert run("track", workdir / "clip.mp4", "--prompt", "circle", "--checkpoint", workdir / file,
                   "--out", out) == 2, file
        captured = capsys.readouterr()
        err = captured.err.splitlines()
        assert captured.out == "" and len(err) == 1 and message in err[0], (file, err)
        assert not (out.exists() and list(out.iterdir())), file


def test_an_internal_error_is_exit_1_in_one_line_and_debug_shows_the_traceback(workdir, capsys, monkeypatch):
    """A bug deep in a run (not bad input): exit 1, one line naming it with the hint; ``--debug`` prints the
    traceback too; no final output is left."""
    from sam3video.run import Run

    def broken(self, *args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Run, "execute", broken)
    argv = ["track", workdir / "clip.mp4", "--prompt", "dog", "--checkpoint", workdir / "tiny.pt", "--out",
            workdir / "internal", "--quiet"]
    assert run(*argv) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.splitlines() == [
        "sam3video track: internal error: ZeroDivisionError: a bug (rerun with --debug)"]
    assert run("--debug", *argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.splitlines()[-1] == "sam3video track: internal error: ZeroDivisionError: a bug (rerun with --debug)"
    assert not (workdir / "internal" / "tracks.txt").exists()


@pytest.fixture(scope="module")
def video_checkpoint(workdir):
    """The tiny video model (detector + tracker) saved in the official layout with its config."""
    from sam3video.model.build_video import build_video_model, load_video_config

    torch.manual_seed(5)
    video = load_video_config("tiny")
    config = {**video.detector.to_dict(), "tracker": video.tracker.to_dict()}
    torch.save({"model": build_video_model("tiny").state_dict(), "config": config}, workdir / "tiny_video.pt")
    return workdir / "tiny_video.pt"


def test_track_with_tracker_weights_runs_the_official_loop(workdir, video_checkpoint, capsys):
    out = workdir / "run_sam3"
    code = run("track", workdir / "clip.mp4", "--prompt", "red circle", "--prompt", "square",
               "--checkpoint", video_checkpoint, "--out", out, "--quiet", "--score-threshold", "0.2",
               "--new-track-threshold", "0.25")
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 10
    assert summary["tracker"]["name"] == "sam3"  # the default with tracker weights
    assert summary["tracker"]["settings"]["score_threshold_detection"] == 0.2
    assert summary["tracker"]["settings"]["new_det_thresh"] == 0.25
    assert summary["tracker"]["settings"]["hotstart_delay"] == 15
    mot, mots = read_mot(out / "tracks.txt"), read_mots(out / "tracks.mots.txt")
    assert set(mots) <= set(mot) and max(mot, default=0) <= 9
    for dets in mots.values():
        for prompt in (0, 1):  # the official loop's outputs of one prompt never overlap
            assert dets.mask[dets.class_id == prompt].sum(0).max(initial=0) <= 1
    with av.open(str(out / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10


def test_the_trunk_in_openvino_is_recorded_in_the_summary(workdir, monkeypatch, tmp_path):
    monkeypatch.setenv("SAM3VIDEO_CACHE", str(tmp_path))
    out = workdir / "run_openvino"
    assert run("track", workdir / "clip.mp4", "--prompt", "red circle", "--checkpoint", workdir / "tiny.pt",
               "--runtime", "openvino", "--out", out, "--quiet", "--no-render", *LOW) == 0
    model = json.loads((out / "summary.json").read_text())["model"]
    assert (model["precision"], model["runtime"]) == ("fp32", "openvino")
    assert any((tmp_path / "openvino").iterdir())


def test_sam3_tracker_without_tracker_weights_is_one_line(workdir, capsys):
    code = run("track", workdir / "clip.mp4", "--prompt", "dog", "--checkpoint", workdir / "tiny.pt",
               "--tracker", "sam3", "--out", workdir / "run_no_tracker", "--quiet")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "tracker weights" in err and "--tracker sam3video" in err and len(err.splitlines()) == 1
    assert not (workdir / "run_no_tracker" / "summary.json").exists()


def test_resume_with_the_official_loop_is_one_line(workdir, video_checkpoint, capsys):
    code = run("track", workdir / "clip.mp4", "--prompt", "dog", "--checkpoint", video_checkpoint,
               "--out", workdir / "run_resume_sam3", "--quiet", "--resume")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--resume is not supported" in err and len(err.splitlines()) == 1

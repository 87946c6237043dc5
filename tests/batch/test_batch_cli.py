"""``sam3video batch`` bad usage: exit 2 and one line naming the problem, before Ray starts (no Ray here)."""

from __future__ import annotations

import json

import pytest

from sam3video.cli import main


@pytest.fixture
def clip_dir(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").write_bytes(b"x")
    return tmp_path


@pytest.mark.parametrize("args, message", [
    ([], "nothing to track: give --prompt"),
    (["--prompt", "dog", "--workers", "0"], "--workers must be >= 1, got 0"),
    (["--prompt", "dog", "--threads", "0"], "--threads must be >= 1, got 0"),
    (["--prompt", "dog", "--gpus-per-worker", "0"], "--gpus-per-worker must be > 0"),
    (["--prompt", "dog", "--min-hits", "0"], "--min-hits must be >= 1"),
    (["--prompt", "dog", "--exemplars-dir", "nowhere"], "--exemplars-dir nowhere is not a folder"),
    (["--prompt", "dog", "--checkpoint", "missing.pt"], "checkpoint not found: missing.pt"),
    (["--prompt", "dog", "EXTRA_MISSING"], "no such file or folder: EXTRA_MISSING"),
])
def test_bad_usage(clip_dir, monkeypatch, capsys, args, message):
    monkeypatch.chdir(clip_dir)
    inputs = ["in"] + [a for a in args if a == "EXTRA_MISSING"]
    args = [a for a in args if a != "EXTRA_MISSING"]
    code = main(["batch", *inputs, "--out", "out", *args])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sam3video batch: error: ") and message in lines[0], lines


def test_other_settings_are_refused(clip_dir, monkeypatch, capsys):
    """OUT holds a batch made with other thresholds: exit 2, naming what differs."""
    monkeypatch.chdir(clip_dir)
    (clip_dir / "out").mkdir()
    from sam3video.batch import settings_of
    from sam3video.cli import _settings_job, build_parser

    args = build_parser().parse_args(["batch", "in", "--out", "out", "--prompt", "dog"])
    manifest = {"version": 1, "settings": settings_of(_settings_job(args, source=None, out_dir="out")), "videos": {}}
    (clip_dir / "out" / "manifest.json").write_text(json.dumps(manifest))
    code = main(["batch", "in", "--out", "out", "--prompt", "dog", "--min-hits", "4"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "other settings (thresholds differ)" in err, err

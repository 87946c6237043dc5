"""tools/check_device.py (GPU against CPU) runs, and fails when a difference exceeds its tolerance."""

import importlib.util
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def test_check_device_compares_and_reports_failures(capsys):
    spec = importlib.util.spec_from_file_location("check_device", TOOLS / "check_device.py")
    check_device = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_device)
    check_device.SCORE_TOL = -1.0  # cpu against cpu gives 0: only this check can fail
    assert check_device.main(["--device", "cpu"]) == 1
    printed = capsys.readouterr().out
    assert printed.count("PASS  parity") == 7 and "PASS  video boxes (px)" in printed
    assert "FAIL  video scores" in printed and "1 check(s) failed: video scores" in printed


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_robustness_counts_found_frames(tmp_path):
    """One colour and one gray clip with the shipped demo model: every frame with the concept visible is
    counted, and the colour clip's circles are found in most of them (the gray rate is what it is)."""
    from sam3video.model.checkpoint import load_model

    robustness = _tool("check_robustness")
    model = load_model(None, None, "cpu")
    colour = robustness.found_rate(model, None, "colour", 1, tmp_path)
    gray = robustness.found_rate(model, None, "gray", 1, tmp_path)
    assert colour["clips"] == gray["clips"] == 1
    assert colour["frames_visible"] == gray["frames_visible"] > 0  # the same scene, in colour and in gray
    assert colour["rate"] > 0.5 and 0 <= gray["rate"] <= 1


def test_benchmark_worlds_side_by_side(tmp_path, capsys):
    """``--worlds classic heldout``: a suite per world (classic in OUT, heldout in OUT/heldout), and one
    line each in the side-by-side table and worlds.json."""
    import json

    from sam3video.eval.benchmark import main

    main(["--out", str(tmp_path), "--clips", "1", "--seconds", "0.5", "--exemplar-clips", "0",
          "--worlds", "classic", "heldout"])
    printed = capsys.readouterr().out
    worlds = json.loads((tmp_path / "worlds.json").read_text())
    assert set(worlds) == {"classic", "heldout"} and all(0 <= w["HOTA"] <= 1 for w in worlds.values())
    assert json.loads((tmp_path / "heldout" / "benchmark.json").read_text())["world"] == "heldout"
    assert "[classic]" in printed and "[heldout]" in printed and printed.splitlines()[-3].startswith("world")

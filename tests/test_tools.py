"""tools/check_device.py (GPU against CPU) runs, and fails when a difference exceeds its tolerance."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.helpers import load_tool

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


_tool = load_tool


def test_check_robustness_counts_found_frames(tmp_path):
    """One colour and one gray clip with the shipped demo model: every frame with the concept visible is
    counted, and the circles are found in most of them in colour and in gray."""
    from sam3video.model.checkpoint import load_model

    robustness = _tool("check_robustness")
    model = load_model(None, None, "cpu")
    colour = robustness.found_rate(model, None, "colour", 1, tmp_path)
    gray = robustness.found_rate(model, None, "gray", 1, tmp_path)
    assert colour["clips"] == gray["clips"] == 1
    assert colour["frames_visible"] == gray["frames_visible"] > 0  # the same scene, in colour and in gray
    assert colour["rate"] > 0.5 and gray["rate"] > 0.6  # measured 29 of 30 frames each (AMD EPYC)


def test_benchmark_worlds_side_by_side(tmp_path, capsys):
    """``--worlds classic heldout``: a suite per world (classic in OUT, heldout in OUT/heldout), and one
    line each in the side-by-side table and worlds.json; recall by object size in each benchmark.json."""
    import json

    from sam3video.eval.benchmark import main

    main(["--out", str(tmp_path), "--clips", "1", "--seconds", "0.5", "--exemplar-clips", "0",
          "--worlds", "classic", "heldout"])
    printed = capsys.readouterr().out
    worlds = json.loads((tmp_path / "worlds.json").read_text())
    assert set(worlds) == {"classic", "heldout"}
    # one 0.5 s clip each: HOTA 0.41 (classic) and 0.53 (held-out styles) measured with the shipped weights
    assert worlds["classic"]["HOTA"] > 0.25 and worlds["heldout"]["HOTA"] > 0.3
    heldout = json.loads((tmp_path / "heldout" / "benchmark.json").read_text())
    assert heldout["world"] == "heldout"
    by_size = heldout["recall_by_size"]  # every ground-truth box in one size bucket
    assert list(by_size) == ["< 1 patch", "1-2 patches", ">= 2 patches"] and sum(c["gt"] for c in by_size.values()) > 0
    assert "[classic]" in printed and "[heldout]" in printed and printed.splitlines()[-3].startswith("world")


def test_sam3_tracker_cost_rows_and_a_bounded_bank(capsys):
    """tools/bench_sam3_tracker.py at the tiny size: a row per object count, positive times, and the
    bank per object the same for 1 and 3 objects (bounded by eviction, linear in objects)."""
    tool = _tool("bench_sam3_tracker")
    tool.main(["--size", "tiny", "--objects", "1", "3", "--frames", "9", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    rows = {int(line.split()[0]): [float(v) for v in line.split()[1:]] for line in lines[2:4]}
    assert set(rows) == {1, 3} and all(v > 0 for row in rows.values() for v in row)
    assert abs(rows[1][4] - rows[3][4]) < 0.05  # MiB per object
    assert lines[-1].startswith("peak RSS")


def test_bench_linear_prints_each_variant(capsys):
    tool = _tool("bench_linear")
    tool.TOKENS, tool.WIDTH, tool.HIDDEN = 64, 32, 48  # a small MLP: the table, not the speed
    tool.main(["--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("CPU flags: avx2 ")
    names = [line[:36].strip() for line in lines[2:]]
    assert names == ["fp32", "bf16 (weights cast once)", "int8 torch.ao dynamic"]
    diffs = [float(line.split()[-1]) for line in lines[2:]]  # max |diff| from fp32
    assert diffs[0] == 0 and 0 < diffs[1] < 0.05 and 0 < diffs[2] < 0.2  # fp32 is the reference itself


def test_bench_openvino_rows_agree_with_torch(capsys):
    """tools/bench_openvino.py on the tiny trunk: every mode's row, OpenVINO f32 within float rounding of
    torch, the int8 modes within quantisation error."""
    _tool("bench_openvino").main(["--size", "tiny", "--repeats", "1", "--threads", "1", "--calibration", "1"])
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("mode "))
    rows = {line[:34].strip(): float(line.split()[-1]) for line in lines[header + 1:]}
    assert list(rows) == ["torch fp32", "torch int8 (torch.ao dynamic)", "openvino f32", "openvino bf16 hint",
                          "openvino int8 (NNCF static)", "openvino int8 weights + dynamic"]
    assert rows["torch fp32"] == 0 and rows["openvino f32"] < 1e-5
    assert all(diff < 0.2 for diff in rows.values())


def test_benchmark_scores_the_official_loop_in_both_directions(tmp_path, capsys):
    """``--sam3-checkpoint demo-video --sam3-directions forward both``: rows "sam3" and "sam3 both", each with its
    frames/s; "both" keeps every line forward wrote (it only adds frames before an object's first)."""
    import json

    from sam3video.eval.benchmark import main

    main(["--out", str(tmp_path), "--clips", "1", "--seconds", "0.3", "--exemplar-clips", "0",
          "--sam3-checkpoint", "demo-video", "--sam3-directions", "forward", "both"])
    summary = json.loads((tmp_path / "benchmark.json").read_text())
    assert {"sam3", "sam3 both"} <= set(summary["methods"])
    assert set(summary["sam3_frames_per_s_end_to_end"]) == {"sam3", "sam3 both"}
    rows = {line.split()[0] + (" both" if " both " in line else ""): line for line in capsys.readouterr().out.splitlines()}
    assert "(same)" not in rows["sam3"] and "(same)" not in rows["sam3 both"]
    forward_files = sorted((tmp_path / "sam3").glob("*/tracks.txt"))
    assert forward_files
    for forward in forward_files:
        both = tmp_path / "sam3_both" / forward.parent.name / forward.name
        assert set(forward.read_text().splitlines()) <= set(both.read_text().splitlines())


def test_bench_resolution_times_each_size_and_mode(tmp_path, capsys):
    """tools/bench_resolution.py on the tiny model: a row per size and mode with positive times, the grid that
    follows the size, and the saved run printed back the same."""
    tool = _tool("bench_resolution")
    tool.main(["--config", "tiny", "--sizes", "224", "112", "--precisions", "fp32", "--frames", "1",
               "--json", str(tmp_path / "res.json")])
    table = capsys.readouterr().out
    rows = json.loads((tmp_path / "res.json").read_text())["rows"]
    assert [(r["size"], r["mode"]) for r in rows] == [(224, "fp32"), (112, "fp32")]
    assert all(r["total"] > 0 and r["backbone"] > 0 for r in rows)
    assert "   224    16 " in table and "   112     8 " in table
    tool.main(["--show", str(tmp_path / "res.json")])
    assert capsys.readouterr().out == table


def test_gpu_check_speed_rows_on_the_cpu(tmp_path, capsys):
    """tools/gpu_check.py's speed part at the tiny size on the CPU: a row per version, mode and object cap, with
    the objects it tracked (thresholds at 0: random detections start objects, at most the cap)."""
    tool = _tool("gpu_check")
    assert tool.main(["--device", "cpu", "--size", "tiny", "--skip-parity", "--frames", "2", "--objects", "2",
                      "--modes", "fp32", "--json", str(tmp_path / "gpu.json")]) == 0
    rows = json.loads((tmp_path / "gpu.json").read_text())["speed"]
    assert [(r["version"], r["mode"]) for r in rows] == [("sam3", "fp32"), ("sam3.1", "fp32")]
    assert all(r["frames_per_s"] > 0 and 1 <= r["objects"] <= 2 for r in rows), rows
    assert capsys.readouterr().out.count("speed ") == 2


def test_profile_first_run_reports_each_kind_of_step(tmp_path, capsys):
    """tools/profile_first_run.py on the tiny trunk: the steps its progress bar counts, each as often as the
    trunk has them (2 stages of 2 blocks, 2 block kinds, 1 carry), and a cached second run."""
    pytest.importorskip("openvino")
    tool = _tool("profile_first_run")
    tool.main(["--size", "tiny", "--json", str(tmp_path / "first.json")])
    rows = {r["step"].split()[0]: r for r in json.loads((tmp_path / "first.json").read_text())["rows"]}
    assert {kind: rows[kind]["calls"] for kind in ("template", "block", "save", "quantize", "carry", "compile")} \
        == {"template": 2, "block": 4, "save": 2, "quantize": 2, "carry": 1, "compile": 2}
    assert rows["first"]["seconds"] > rows["later"]["seconds"] > 0
    assert "later run (cached)" in capsys.readouterr().out


def test_check_calibration_compares_a_recipe_and_restores_the_module(tmp_path, capsys):
    """tools/check_calibration.py on the demo trunk: a recipe's time and error against fp32 (quantized, so
    above 0, and small), and the module's own recipe as it was afterwards."""
    pytest.importorskip("openvino")
    from sam3video.model import openvino_trunk

    before = (openvino_trunk.CALIBRATION_FRAMES, openvino_trunk.BIAS_CORRECTION, openvino_trunk.CALIBRATION_CARRY)
    _tool("check_calibration").main(["--recipes", "2,-,fp32", "--held-out", "2", "--json", str(tmp_path / "c.json")])
    (row,) = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert row["recipe"] == "2,-,fp32" and row["seconds"] > 0
    assert 0 < row["rel_error_mean"] <= row["rel_error_max"] < 0.2
    assert (openvino_trunk.CALIBRATION_FRAMES, openvino_trunk.BIAS_CORRECTION,
            openvino_trunk.CALIBRATION_CARRY) == before

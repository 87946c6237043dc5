"""tools/bench_official.py: our side at --size tiny (no oracle venv needed), and the table's ratios."""

import importlib.util
import json
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
OUR_ROWS = ("ours fp32 (image API)", "ours fp32 (video e2e)", "ours bf16 (video e2e)", "ours int8 (video e2e)")


def load_tool():
    spec = importlib.util.spec_from_file_location("bench_official", TOOLS / "bench_official.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ours_only_at_tiny_size_prints_every_row_with_positive_times(tmp_path, capsys):
    out = tmp_path / "bench.json"
    load_tool().main(["--size", "tiny", "--frames", "1", "--threads", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert "CPU flags: avx2 " in printed and "amx_bf16 " in printed, printed
    assert "ours only" in printed  # no weights check without --official
    lines = printed.splitlines()
    speed = lines[next(i for i, line in enumerate(lines) if line.startswith("row ")):]
    speed = speed[: next(i for i, line in enumerate(speed) if line.startswith("seconds per frame"))]
    table = {line[:24].strip(): line[24:].split() for line in speed if line.startswith("ours ")}
    assert set(table) == set(OUR_ROWS), printed
    for cells in table.values():
        assert float(cells[4]) > 0  # total per frame
    data = json.loads(out.read_text())
    assert data["official"] is None and data["weights_check"] is None
    rows = {row["name"]: row for row in data["rows"]}
    assert set(rows) == set(OUR_ROWS)
    for row in rows.values():
        assert row["total"] > 0 and row["peak_rss_gib"] > 0 and row["run_rss_gib"] > 0
        assert row["vs_official_fp32"] is None
    stages = rows["ours fp32 (image API)"]
    assert stages["backbone"] > 0 and stages["text"] > 0 and stages["heads"] > 0
    # the breakdown adds up: no stage counted twice (post and preprocess are what is left, never negative)
    assert stages["post"] >= 0 and stages["preprocess"] >= 0
    assert stages["backbone"] + stages["text"] + stages["heads"] + stages["post"] == pytest.approx(stages["total"])
    assert rows["ours fp32 (video e2e)"]["backbone"] > 0
    assert data["ours"]["torch"]["threads"] == 1
    agreement = data["ours"]["agreement"]
    assert set(agreement) == {"fp32", "bf16", "int8"} and agreement["fp32"]["score_max_abs_diff"] == 0.0
    assert 0.5 < agreement["int8"]["box_iou_min"] <= 1.0 and "agreement with fp32" in printed
    assert set(data["cpu"]["flags"]) >= {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}


def test_table_ratios_and_weights_check_against_official_rows():
    """With (made-up) official results: ratios to official fp32 and to the same precision; the check."""
    tool = load_tool()
    stage = {"backbone": 1.0, "text": 0.5, "heads": 0.4, "post": 0.1, "detections": 0, "run_rss_gib": 1.0}
    check = {"scores": [0.1, 0.2], "boxes": [[0, 0, 10, 10], [1, 1, 5, 5]]}
    official = {"peak_rss_gib": 2.0, "check": check,
                "rows": {"fp32": {**stage, "total": 2.0}, "bf16": {**stage, "total": 1.0}}}
    ours = {"peak_rss_gib": 3.0, "check": {"scores": [0.1, 0.2 + 1e-6], "boxes": [[0, 0, 10, 10], [1, 1, 5, 5.5]]},
            "rows": {"fp32 stages": {**stage, "total": 2.2}, "fp32 video": {**stage, "total": 3.0},
                     "bf16 video": {**stage, "total": 1.5}}}
    rows = {row["name"]: row for row in tool.table_rows(official, ours)}
    assert rows["official bf16 autocast"]["vs_official_fp32"] == 0.5
    assert rows["ours fp32 (video e2e)"]["vs_official_fp32"] == 1.5
    assert rows["ours bf16 (video e2e)"]["vs_official_same_precision"] == 1.5
    assert rows["ours bf16 (video e2e)"]["vs_official_fp32"] == 0.75
    text = tool.format_table(list(rows.values()))
    assert len(text.splitlines()) == 6 and "official bf16 autocast" in text
    result = tool.weights_check(official, ours)
    assert result["same"] and abs(result["scores_max_abs_diff"] - 1e-6) < 1e-9
    assert result["boxes_max_abs_diff_px"] == 0.5
    ours["check"]["scores"][0] += 0.01
    assert not tool.weights_check(official, ours)["same"]


def test_agreement_of_a_mode_with_fp32_on_the_top_queries():
    import torch

    tool = load_tool()
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[0, :2], masks[1, 2:], masks[2, :, :1] = True, True, True
    reference = {"scores": torch.tensor([0.9, 0.2, 0.6]), "boxes": torch.tensor([[0.0, 0, 4, 2], [0, 2, 4, 4], [0, 0, 1, 4]]),
                 "masks": masks}
    other_masks = masks.clone()
    other_masks[0, 1] = False  # query 0 loses half its mask
    other = {"scores": torch.tensor([0.85, 0.2, 0.4]), "boxes": reference["boxes"].clone(), "masks": other_masks}
    result = tool.agreement(reference, other, threshold=0.5, top=2)
    assert result["queries"] == 2  # queries 0 and 2, fp32's best
    assert abs(result["score_max_abs_diff"] - 0.2) < 1e-6
    assert result["box_iou_min"] == 1.0 and result["mask_iou_min"] == 0.5
    assert result["above_threshold"] == [2, 1] and not result["same_above_threshold"]


def test_rounds_merge_into_medians_and_the_profile_table_pairs_ops():
    tool = load_tool()
    rounds = [[{"name": "official fp32", "total": t, "backbone": t - 1, "detections": 0}] for t in (3.0, 5.0, 4.0)]
    (row,) = tool.median_rows(rounds)
    assert row["total"] == 4.0 and row["backbone"] == 3.0 and row["rounds_total"] == [3.0, 5.0, 4.0]
    official = {"profile": {"aten::addmm": [2.0, 10], "aten::gelu": [0.5, 3]}}
    ours = {"profile": {"aten::addmm": [1.9, 10], "aten::bmm": [0.1, 2]}}
    text = tool.format_profile(official, ours)
    lines = text.splitlines()
    assert lines[1].split() == ["aten::addmm", "2.000", "10", "1.900", "10"]
    assert lines[2].split() == ["aten::gelu", "0.500", "3", "-", "-"]
    assert lines[-1].split()[-2:] == ["2.500", "2.000"]

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

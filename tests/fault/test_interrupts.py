"""A run that stops half way: Ctrl-C (SIGINT) to a running ``sam3video track``, and a disk that fills up
(``OSError(ENOSPC)`` injected where files are written). Either way no file is left under a final name
(``tracks.txt``, ``tracks.mots.txt``, ``detections.npz``, ``overlay.mp4``, ``summary.json``) and no temp
file anywhere;
a full disk is exit 2 with one line saying "No space left on device".
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sam3video.cli import main
from sam3video.export import atomic
from sam3video.export.atomic import TEMP_MARKER

REPO = Path(__file__).parent.parent.parent
FINAL_NAMES = ("tracks.txt", "tracks.mots.txt", "detections.npz", "overlay.mp4", "predictions.veval.json", "summary.json")
# Every query reported from the first frame, so files are written from the first frame on.
LOW = ["--score-threshold", "0", "--low-score-threshold", "0", "--new-track-threshold", "0", "--min-hits", "1"]


def _left_behind(out: Path) -> tuple[list[str], list[Path]]:
    """(final names that exist in ``out``, temp files anywhere under it)."""
    finals = [name for name in FINAL_NAMES if (out / name).exists()]
    return finals, [p for p in out.rglob("*") if TEMP_MARKER in p.name]


def _track_argv(fault_dir: Path, video: str, out: Path) -> list[str]:
    return ["track", str(fault_dir / video), "--prompt", "circle", "--checkpoint", str(fault_dir / "tiny.pt"),
            "--out", str(out), "--device", "cpu", *LOW]


def test_sigint_leaves_no_final_file(fault_dir):
    """SIGINT once the run is writing (1 case, ~6 s: a 6 s clip at 10 fps, signalled when its first
    temp file appears): exit 130, "interrupted" on stderr, no traceback, no final file, no temp file."""
    out = fault_dir / "sigint"
    # A shell without job control starts background jobs with SIGINT ignored, and children inherit that
    # (Python then installs no KeyboardInterrupt handler): give the run the default, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "sam3video.cli", *_track_argv(fault_dir, "long.mp4", out)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    stderr = bytearray()

    def read_stderr() -> None:  # progress bars end lines with \r: read what is there, not lines
        for chunk in iter(lambda: os.read(proc.stderr.fileno(), 4096), b""):
            stderr.extend(chunk)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            started = b"frames to track" in stderr
            if started and out.is_dir() and any(TEMP_MARKER in p.name for p in out.rglob("*")):
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"the run ended (exit {proc.poll()}) or never started writing before SIGINT: "
                        f"{bytes(stderr)[-500:]!r}")
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("hung after SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    text = bytes(stderr).decode(errors="replace")
    assert code == 130, f"exit {code}: {text[-500:]!r}"
    assert "Traceback" not in text and "sam3video track: interrupted" in text, text[-500:]
    finals, temps = _left_behind(out)
    assert not finals and not temps, f"left behind: {finals} {temps}"


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class _FullDisk:
    """An open file whose writes fail with ENOSPC (everything else is the real file's)."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data):
        _no_space()

    def __getattr__(self, name):
        return getattr(self._file, name)


def _run_full(fault_dir: Path, out: Path, capsys) -> tuple[int, str]:
    code = main([*_track_argv(fault_dir, "clip.mp4", out), "--quiet"])
    return code, capsys.readouterr().err


def _check_full_disk(code: int, err: str, out: Path) -> None:
    lines = err.splitlines()
    assert code == 2, f"exit {code}: {err!r}"
    assert len(lines) == 1 and lines[0].startswith("sam3video track: error: "), err
    assert "No space left on device" in lines[0], err
    finals, temps = _left_behind(out)
    assert not finals and not temps, f"left behind: {finals} {temps}"


def test_full_disk_at_rename(fault_dir, monkeypatch, capsys):
    """Every ``os.replace`` fails with ENOSPC (1 case, ~2 s): exit 2, one line, nothing left behind."""
    monkeypatch.setattr(os, "replace", _no_space)
    out = fault_dir / "enospc_rename"
    _check_full_disk(*_run_full(fault_dir, out, capsys), out)


def test_full_disk_while_writing(fault_dir, monkeypatch, capsys):
    """Every write to a file opened by the atomic writer fails with ENOSPC (1 case, ~2 s): the first
    frame's tracks already fail; exit 2, one line naming the file, nothing left behind."""
    real_open = open
    monkeypatch.setattr(atomic, "open", lambda *a, **k: _FullDisk(real_open(*a, **k)), raising=False)
    out = fault_dir / "enospc_write"
    code, err = _run_full(fault_dir, out, capsys)
    _check_full_disk(code, err, out)
    assert "cannot write " in err and "tracks.txt" in err


@pytest.mark.parametrize("full_at", ["summary.json", "tracks.mots.txt"])
def test_full_disk_at_the_last_files(fault_dir, monkeypatch, capsys, full_at):
    """The disk fills up only when the final ``summary.json`` (or the final ``tracks.mots.txt``, the
    second file assembled) is written (2 cases, ~2 s each): exit 2, one line, and no final file left —
    not the ones assembled just before."""
    real_open = open

    def fake_open(path, *args, **kwargs):
        file = real_open(path, *args, **kwargs)
        final_name = Path(path).name.split(TEMP_MARKER)[0].lstrip(".")
        is_final = Path(path).parent == out
        return _FullDisk(file) if is_final and final_name == full_at else file

    monkeypatch.setattr(atomic, "open", fake_open, raising=False)
    out = fault_dir / f"enospc_at_{full_at}"
    _check_full_disk(*_run_full(fault_dir, out, capsys), out)


@pytest.mark.parametrize("nth_file", [1, 3])
def test_interrupt_right_after_a_temp_file_is_created(fault_dir, monkeypatch, capsys, nth_file):
    """Ctrl-C the instant the n-th temp file exists, before any ``with`` block owns it (2 cases, ~2 s
    each; the subprocess test above hit this window once in a clean-clone CI run): exit 130 and no
    temp file left, because a failed run sweeps the temp files of its output folder and ``.partial``."""
    real_create = atomic._create_temp
    created = []

    def create_then_interrupt(final):
        temp = real_create(final)
        created.append(temp)
        if len(created) == nth_file:
            raise KeyboardInterrupt  # the file exists; atomic_path's try-block was never entered
        return temp

    monkeypatch.setattr(atomic, "_create_temp", create_then_interrupt)
    out = fault_dir / f"interrupt_at_temp_{nth_file}"
    code = main([*_track_argv(fault_dir, "clip.mp4", out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err, err
    assert len(created) == nth_file and not created[-1].exists()
    finals, temps = _left_behind(out)
    assert not finals and not temps, f"left behind: {finals} {temps}"

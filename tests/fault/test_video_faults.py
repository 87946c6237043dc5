"""Damaged video files through ``sam3video track``: a valid mp4 cut at 12 offsets (in the header, in the
frame data, in the index at the end), with bytes flipped in 2 places, and the same clip with its index
first ("faststart", as streamed files are) cut at 2 offsets — a download cut short — per video backend.

Each run must end in exit 0 (it tracked the frames that decode: ``tracks.txt`` and ``summary.json``
written, nothing on stderr under ``--quiet``) or exit 2 with exactly one stderr line
``sam3video track: error: ...`` and no output file — never a traceback, a hang (60 s) or a death by
signal (PyAV 16 segfaulted on a file cut before the track's codec description; decord and OpenCV
printed FFmpeg's per-macroblock errors on flipped bytes; decord's error on a faststart file cut short
was an internal error, exit 1).

The 40 runs share one subprocess (``track_cases.py``: each run a fork of it, so a crash is one case's
signal, not the test session's); 1 more goes through ``python -m sam3video.cli`` itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sam3video.export.atomic import TEMP_MARKER
from sam3video.sources.backends import available_backends

HERE = Path(__file__).parent
REPO = HERE.parent.parent
TIMEOUT_S = 60  # per run; a run still going after it is a hang
FINAL_NAMES = ("tracks.txt", "tracks.mots.txt", "overlay.mp4", "predictions.veval.json", "summary.json")


def _find(data: bytes, tag: bytes) -> int:
    at = data.find(tag)
    assert at > 0, f"no {tag!r} box in the test clip"
    return at - 4  # the box starts with its 4-byte size


def _top_level_boxes(data: bytes) -> dict[str, int]:
    """Offsets of the top-level MP4 boxes (ftyp, free, mdat, moov)."""
    boxes, at = {}, 0
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        boxes[data[at + 4:at + 8].decode("latin-1")] = at
        if size < 8:
            break
        at += size
    assert {"ftyp", "mdat", "moov"} <= set(boxes), boxes
    return boxes


def _flip(data: bytes, at: int, n: int) -> bytes:
    return data[:at] + bytes(b ^ 0xFF for b in data[at:at + n]) + data[at + n:]


def _mdat_at(d: bytes, fraction: float) -> int:
    b = _top_level_boxes(d)
    return b["mdat"] + int((b["moov"] - b["mdat"]) * fraction) if b["moov"] > b["mdat"] else int(len(d) * fraction)


def _faststart(path: Path) -> bytes:
    """The clip remuxed (no re-encoding) with its index (moov) before the frame data."""
    import av

    out_path = path.with_name("faststart.mp4")
    with av.open(str(path)) as source, av.open(str(out_path), "w", format="mp4",
                                                 options={"movflags": "faststart"}) as out:
        video = source.streams.video[0]
        stream = out.add_stream_from_template(video)
        for packet in source.demux(video):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = out_path.read_bytes()
    boxes = _top_level_boxes(data)
    assert boxes["moov"] < boxes["mdat"], boxes
    return data


# name -> (damaged bytes of the valid clip, expected exit code or None for "0 or 2"); "faststart-*" get
# the faststart copy
DAMAGES = {
    "cut-empty": (lambda d: d[:0], 2),
    "cut-in-ftyp": (lambda d: d[:16], 2),
    "cut-after-ftyp": (lambda d: d[:_top_level_boxes(d)["ftyp"] + 32], 2),
    "cut-in-mdat-header": (lambda d: d[:_top_level_boxes(d)["mdat"] + 4], 2),
    "cut-mdat-third": (lambda d: d[:_mdat_at(d, 1 / 3)], 2),
    "cut-mdat-two-thirds": (lambda d: d[:_mdat_at(d, 2 / 3)], 2),
    "cut-moov-header": (lambda d: d[:_top_level_boxes(d)["moov"] + 8], 2),
    "cut-in-mvhd": (lambda d: d[:_find(d, b"mvhd") + 60], 2),
    "cut-before-stsd": (lambda d: d[:_find(d, b"stsd")], 2),  # a track without its codec: PyAV segfaulted
    "cut-in-avcC": (lambda d: d[:_find(d, b"avcC") + 10], None),
    "cut-in-stsz": (lambda d: d[:_find(d, b"stsz") + 12], None),
    "cut-last-byte": (lambda d: d[:-1], 0),
    "flip-mdat-middle": (lambda d: _flip(d, _mdat_at(d, 1 / 2), 64), 0),
    "flip-stsz": (lambda d: _flip(d, _find(d, b"stsz") + 20, 16), None),
    "faststart-cut-half": (lambda d: d[:len(d) // 2], None),
    "faststart-cut-last-1%": (lambda d: d[:len(d) * 99 // 100], None),  # decord: exit 1 (DECORDError)
}
EVERY_BACKEND = ("cut-before-stsd", "flip-mdat-middle", "flip-stsz", "faststart-cut-last-1%")  # + decord, opencv
CASES = [(name, backend) for name in DAMAGES for backend in ("auto", "pyav")] + [
    (name, backend) for name in EVERY_BACKEND for backend in ("decord", "opencv")]


def _argv(fault_dir: Path, video: Path, out: Path, backend: str) -> list[str]:
    return ["track", str(video), "--prompt", "circle", "--checkpoint", str(fault_dir / "tiny.pt"),
            "--out", str(out), "--quiet", "--device", "cpu", "--backend", backend]


def _damaged_file(fault_dir: Path, name: str) -> Path:
    path = fault_dir / "damaged" / f"{name}.mp4"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        clip = fault_dir / "clip.mp4"
        data = _faststart(clip) if name.startswith("faststart-") else clip.read_bytes()
        path.write_bytes(DAMAGES[name][0](data))
    return path


@pytest.fixture(scope="module")
def results(fault_dir) -> dict[tuple[str, str], dict]:
    """Every case of ``CASES`` run once by ``track_cases.py`` (installed backends only)."""
    installed = available_backends()
    cases = []
    for name, backend in CASES:
        if backend != "auto" and backend not in installed:
            continue
        out = fault_dir / "video_runs" / f"{name}-{backend}"
        cases.append({"name": f"{name}|{backend}", "timeout": TIMEOUT_S,
                      "argv": _argv(fault_dir, _damaged_file(fault_dir, name), out, backend)})
    cases_path, results_path = fault_dir / "video_cases.json", fault_dir / "video_results.json"
    cases_path.write_text(json.dumps(cases))
    subprocess.run([sys.executable, str(HERE / "track_cases.py"), str(cases_path), str(results_path)],
                   cwd=REPO, check=True, timeout=60 + TIMEOUT_S * len(cases))
    return {tuple(r["name"].split("|")): r for r in json.loads(results_path.read_text())}


def check_fails_well(returncode, stdout: str, stderr: str, out: Path, expected=None) -> None:
    """Exit 0 with the outputs, or exit 2 with one error line and no outputs; nothing else."""
    assert returncode is not None, f"hung: still running after {TIMEOUT_S} s"
    assert returncode >= 0, f"killed by signal {-returncode}; stderr: {stderr[-500:]!r}"
    assert "Traceback" not in stderr, stderr
    assert returncode in (0, 2), f"exit {returncode}: {stderr!r}"
    if expected is not None:
        assert returncode == expected, f"exit {returncode}, expected {expected}: {stderr!r}"
    temps = [p for p in out.rglob("*") if TEMP_MARKER in p.name] if out.exists() else []
    assert not temps, f"temp files left: {temps}"
    if returncode == 0:
        assert stderr == "", f"exit 0 with --quiet printed: {stderr[:500]!r}"
        summary = json.loads((out / "summary.json").read_text())
        assert summary["frames"] >= 1 and (out / "tracks.txt").is_file()
        assert f"{summary['frames']} frames" in stdout
    else:
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("sam3video track: error: "), stderr
        left = [name for name in FINAL_NAMES if (out / name).exists()]
        assert not left, f"exit 2 but final files were left: {left}"


@pytest.mark.parametrize("name, backend", CASES, ids=[f"{n}-{b}" for n, b in CASES])
def test_damaged_video(results, fault_dir, name, backend):
    """One damaged file with one backend (40 cases, ~0.2 s for an unreadable file, ~2 s for one that
    tracks; all in one subprocess run by the ``results`` fixture)."""
    if (name, backend) not in results:
        pytest.skip(f"video backend {backend} is not installed")
    r = results[(name, backend)]
    out = fault_dir / "video_runs" / f"{name}-{backend}"
    check_fails_well(r["returncode"], r["stdout"], r["stderr"], out, DAMAGES[name][1])


@pytest.mark.parametrize("name, backend", [("cut-before-stsd", "pyav")])
def test_damaged_video_through_the_entry_point(fault_dir, name, backend):
    """The same through ``python -m sam3video.cli`` itself (1 case, ~5 s: its own interpreter): the file
    PyAV crashed on."""
    out = fault_dir / "entry_point_runs" / f"{name}-{backend}"
    argv = _argv(fault_dir, _damaged_file(fault_dir, name), out, backend)
    try:
        proc = subprocess.run([sys.executable, "-m", "sam3video.cli", *argv], cwd=REPO, capture_output=True,
                              text=True, timeout=TIMEOUT_S, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung: still running after {TIMEOUT_S} s")
    check_fails_well(proc.returncode, proc.stdout, proc.stderr, out, DAMAGES[name][1])

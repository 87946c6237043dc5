"""``sam3video batch`` on a real Ray cluster: three tiny clips and one corrupt file (three done, one
failed with its reason, exit 1), a rerun that skips the done ones, a changed output tracked again,
a killed worker's video retried, and Ctrl-C on a local instance (about 90 s in all on 2 cores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from sam3video.cli import main
from sam3video.export.atomic import TEMP_MARKER
from tests.batch.conftest import LOW, RAY_ENV

REPO = Path(__file__).parent.parent.parent
FINAL_NAMES = ("tracks.txt", "tracks.mots.txt", "detections.npz", "overlay.mp4", "predictions.veval.json", "summary.json")
THREADS = 1  # torch threads of each batch worker, and of the plain `track` runs compared with them


def _batch_argv(data: Path, inputs: list[str], out: Path, *extra: str) -> list[str]:
    return ["batch", *inputs, "--prompt", "circle", "--checkpoint", str(data / "tiny.pt"), "--out", str(out),
            "--device", "cpu", "--quiet", "--threads", str(THREADS), *LOW, *extra]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())["videos"]


def _track(data: Path, video: Path, out: Path, capsys, exemplars: Path | None = None) -> bytes:
    """tracks.txt of a plain ``sam3video track`` of ``video`` with the batch's settings (its other files in
    ``out``), on as many torch threads as a batch worker (another count rounds the model's sums differently:
    candidate scores move by ~1e-7, pooled embeddings more)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        code = main(["track", str(video), "--prompt", "circle", "--checkpoint", str(data / "tiny.pt"), "--out",
                     str(out), "--device", "cpu", "--quiet", *LOW,
                     *(["--exemplars", str(exemplars)] if exemplars else [])])
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    assert code == 0
    return (out / "tracks.txt").read_bytes()


def _comparable_summary(path: Path) -> dict:
    """summary.json less what differs between two runs of the same job: timings and where it was written."""
    summary = json.loads(path.read_text())
    summary.pop("timings")
    summary.get("run", {}).pop("out_dir", None)
    return summary


def assert_same_files(batch_folder: Path, track_folder: Path) -> None:
    """Every output of a batch video equals that of a plain ``track``: byte for byte, but summary.json, equal
    as JSON less its timings and output folder."""
    names = sorted(p.name for p in track_folder.iterdir() if not p.name.startswith("."))
    assert sorted(p.name for p in batch_folder.iterdir() if not p.name.startswith(".")) == names
    for name in names:
        if name == "summary.json":
            assert _comparable_summary(batch_folder / name) == _comparable_summary(track_folder / name)
        else:
            assert (batch_folder / name).read_bytes() == (track_folder / name).read_bytes(), name


@pytest.fixture(scope="module")
def first_batch(batch_data, ray_head, tmp_path_factory):
    """The clips folder batched once, with exemplars for ``b`` (exit code, stdout, stderr, OUT)."""
    out = tmp_path_factory.mktemp("first") / "out"
    exemplars = tmp_path_factory.mktemp("exemplars")
    (exemplars / "b.json").write_text(json.dumps([{"frame": 0, "box": [10, 10, 40, 40]}]))
    env = os.environ | RAY_ENV
    proc = subprocess.run([sys.executable, "-m", "sam3video.cli",
                           *_batch_argv(batch_data, [str(batch_data / "clips")], out, "--address", ray_head,
                                        "--exemplars-dir", str(exemplars))],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr, out


def test_three_done_one_failed_alone(first_batch, batch_data, tmp_path, capsys):
    """Exit 1; one line for the corrupt file naming it and why; the others' files equal ``track``'s."""
    code, _, stderr, out = first_batch
    assert code == 1, stderr
    failures = [line for line in stderr.splitlines() if line.startswith("sam3video batch: failed: ")]
    assert len(failures) == 1 and "broken" in failures[0] and "not a readable video" in failures[0], stderr
    assert "Traceback" not in stderr
    states = {name: entry["state"] for name, entry in _manifest(out).items()}
    assert states == {"a": "done", "b": "done", "c": "done", "broken": "failed"}
    for name in "abc":
        assert all((out / name / f).is_file() for f in FINAL_NAMES)
        assert not (out / name / ".partial").exists()
    _track(batch_data, batch_data / "clips/a.mp4", tmp_path / "a", capsys)
    assert_same_files(out / "a", tmp_path / "a")
    exemplars = tmp_path / "b.json"
    exemplars.write_text(json.dumps([{"frame": 0, "box": [10, 10, 40, 40]}]))
    _track(batch_data, batch_data / "clips/b.mp4", tmp_path / "b", capsys, exemplars)
    assert_same_files(out / "b", tmp_path / "b")
    summary = json.loads((out / "b" / "summary.json").read_text())
    assert summary["exemplars"] == [{"frame": 0, "box": [10.0, 10.0, 40.0, 40.0], "positive": True, "prompt": None}]
    assert summary["input"]["source"] == str(batch_data / "clips/b.mp4")


def test_index_lists_every_video(first_batch):
    _, stdout, _, out = first_batch
    index = json.loads((out / "index.json").read_text())
    rows = {row["name"]: row for row in index["videos"]}
    assert sorted(rows) == ["a", "b", "broken", "c"]
    assert index["totals"]["done"] == 3 and index["totals"]["failed"] == 1
    assert index["totals"]["frames"] == 30 and rows["a"]["frames"] == 10
    assert rows["a"]["tracks"] == len(json.loads((out / "a" / "summary.json").read_text())["tracks"])
    assert "a/tracks.txt" in rows["a"]["outputs"] and rows["broken"]["outputs"] == []
    csv_lines = (out / "index.csv").read_text().splitlines()
    assert csv_lines[0].startswith("name,source,state,frames,tracks") and len(csv_lines) == 5
    assert any(line.startswith("broken,") and "not a readable video" in line for line in csv_lines)
    assert "videos" in stdout and "frames/s" in stdout  # the final table


def test_rerun_skips_done_and_retries_failed(first_batch, batch_data, ray_head, ray_client_env, capsys):
    """The same inputs again, with b's exemplars gone and c's tracks.txt edited since: a is skipped (not
    rewritten), b (another job now) and c (an output changed) run again, broken is tried and fails again."""
    out = first_batch[3]
    before = {name: (out / name / "tracks.txt").stat().st_mtime_ns for name in "abc"}
    original_c = (out / "c" / "tracks.txt").read_bytes()
    (out / "c" / "tracks.txt").write_bytes(original_c + b"1,99,0,0,1,1,1,-1,-1,-1\n")
    assert main(_batch_argv(batch_data, [str(batch_data / "clips")], out, "--address", ray_head)) == 1
    captured = capsys.readouterr()
    failures = [line for line in captured.err.splitlines() if "failed:" in line]
    assert len(failures) == 1 and failures[0].startswith("sam3video batch: failed: broken")
    assert (out / "a" / "tracks.txt").stat().st_mtime_ns == before["a"]
    assert (out / "b" / "tracks.txt").stat().st_mtime_ns != before["b"]
    assert (out / "c" / "tracks.txt").read_bytes() == original_c
    manifest = _manifest(out)
    assert manifest["broken"]["attempts"] == 1 and manifest["b"]["exemplars"] == []
    table = captured.out.splitlines()
    assert table[0].split()[:4] == ["videos", "done", "skipped", "failed"] and table[2].split()[:4] == [
        "4", "2", "1", "1"], captured.out


class _Payload:
    """Unpickling this creates ``path``: proof that a pickle was read."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_planted_state_is_never_read_and_fails_its_video_alone(batch_data, ray_head, ray_client_env, tmp_path,
                                                                  capsys):
    """A manifest marking a video running makes ``batch`` resume it by itself: a ``state.pkl`` planted in its
    ``.partial`` is not unpickled (the payload never runs); that video fails in one line, the other is done."""
    import pickle
    import shutil

    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "c"):
        shutil.copy(batch_data / "clips" / f"{name}.mp4", clips / f"{name}.mp4")
    out, marker = tmp_path / "out", tmp_path / "payload-ran"
    argv = _batch_argv(batch_data, [str(clips)], out, "--address", ray_head)
    assert main(argv) == 0
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["videos"]["c"]["state"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "c" / PARTIAL).mkdir()
    (out / "c" / PARTIAL / "state.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    assert main(argv) == 1
    err = capsys.readouterr().err
    failures = [line for line in err.splitlines() if "failed:" in line]
    assert len(failures) == 1 and failures[0].startswith("sam3video batch: failed: c") and "never read" in failures[0]
    assert not marker.exists()
    assert _manifest(out)["a"]["state"] == "done" and _manifest(out)["c"]["state"] == "failed"


def _worker_pids() -> list[int]:
    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        with_title = " ".join(proc.info["cmdline"] or [])
        if "ray::TrackWorker.track" in with_title:
            pids.append(proc.pid)
    return pids


def test_killed_worker_video_is_retried(batch_data, ray_head, ray_client_env, tmp_path, capsys):
    """SIGKILL to the worker half way through long.mp4: a new worker runs it again (attempts 2), exit 0,
    and its tracks.txt equals that of a plain ``track``."""
    out = tmp_path / "out"
    killed = []

    def kill_worker_once_busy() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = _worker_pids()
            if pids and (out / "long" / PARTIAL).is_dir():  # tracking has begun: 60 frames still to go
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                killed.extend(pids)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_worker_once_busy, daemon=True)
    killer.start()
    code = main(_batch_argv(batch_data, [str(batch_data / "long")], out, "--address", ray_head))
    killer.join(timeout=5)
    err = capsys.readouterr().err
    assert killed, "no busy worker was found to kill"
    assert code == 0, err
    entry = _manifest(out)["long"]
    assert entry["state"] == "done" and entry["attempts"] == 2
    assert int(entry["worker"].rsplit(":", 1)[1]) not in killed
    assert (out / "long" / "tracks.txt").read_bytes() == _track(batch_data, batch_data / "long/long.mp4",
                                                                tmp_path / "plain", capsys)


PARTIAL = ".partial"


def test_ctrl_c_on_a_local_instance(batch_data, ray_head, ray_client_env, tmp_path, capsys):
    """No --address: a local Ray instance. SIGINT to the process group (as a terminal's Ctrl-C) while
    long.mp4 is tracked: exit 130, one "interrupted" line, no final file and no temp file of long, the
    manifest says interrupted; the same command again finishes it."""
    out = tmp_path / "out"
    argv = _batch_argv(batch_data, [str(batch_data / "long")], out)
    proc = subprocess.Popen([sys.executable, "-m", "sam3video.cli", *argv], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, env=os.environ | RAY_ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (out / "long" / PARTIAL).is_dir():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"batch ended (exit {proc.poll()}) or never started long.mp4: "
                            f"{proc.stderr.read().decode()[-1000:] if proc.poll() is not None else ''}")
            time.sleep(0.01)
        time.sleep(0.2)  # well inside the 60 frames of long.mp4 (about 3 s here)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = stderr.decode()
    assert proc.returncode == 130, stderr[-1000:]
    assert "sam3video batch: interrupted" in stderr and "Traceback" not in stderr, stderr[-1000:]
    assert not [name for name in FINAL_NAMES if (out / "long" / name).exists()]
    assert not [p for p in out.rglob("*") if TEMP_MARKER in p.name]
    assert _manifest(out)["long"]["state"] == "interrupted"
    assert main(argv + ["--address", ray_head]) == 0
    capsys.readouterr()
    assert _manifest(out)["long"]["state"] == "done" and (out / "long" / "summary.json").is_file()

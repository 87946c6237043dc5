"""Fixtures of the batch tests: tiny clips, a corrupt file, the tiny model as a checkpoint, and a real
Ray cluster (``ray start --head`` on this machine) that the Ray tests join with ``--address``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from tests.conftest import PARITY
from tests.helpers import write_video

# Every query reported from the first frame, so each clip gets tracks (as tests/fault).
LOW = ["--score-threshold", "0", "--low-score-threshold", "0", "--new-track-threshold", "0", "--min-hits", "1"]
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # the head's and every client's


@pytest.fixture(scope="session")
def batch_data(tmp_path_factory, parity_state_dict) -> Path:
    """``clips/`` (three 1 s clips, 10 fps, 160x96, and ``broken.mp4``, not a video), ``long/long.mp4``
    (6 s) and ``tiny.pt`` (the tiny model's state dict with its config)."""
    root = tmp_path_factory.mktemp("batch")
    world = {"width": 160, "height": 96, "fps": 10, "radius_px": (8.0, 20.0)}
    (root / "clips").mkdir()
    (root / "long").mkdir()
    for path, seed, seconds in ((root / "clips/a.mp4", 1, 1.0), (root / "clips/b.mp4", 2, 1.0),
                                (root / "clips/c.mp4", 3, 1.0), (root / "long/long.mp4", 4, 6.0)):
        clip = generate_clip(seed, WorldConfig(duration_s=seconds, **world))
        write_video(path, (clip.image(t) for t in range(clip.num_frames)), fps=10)
    (root / "clips/broken.mp4").write_bytes(b"this is not a video\n" * 50)
    config = json.loads((PARITY / "config.json").read_text())
    torch.save({"model": parity_state_dict, "config": config}, root / "tiny.pt")
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory) -> str:
    """The address of a Ray head started for these tests (2 CPUs, no dashboard); killed at the end."""
    log_path = tmp_path_factory.mktemp("ray") / "head.log"
    port = _free_port()
    ray_cli = Path(sys.executable).parent / "ray"
    with open(log_path, "w") as log:
        head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                                 "--include-dashboard=false", "--disable-usage-stats"],
                                env=os.environ | RAY_ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in log_path.read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head failed: {log_path.read_text()[-2000:]}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:  # SIGTERM drains for 30 s: kill the whole group (raylet, GCS, workers) at once
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


@pytest.fixture
def ray_client_env(monkeypatch):
    """This process joins the test head as it was started (token authentication off)."""
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)

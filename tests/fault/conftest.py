"""Fixtures of the fault tests: a small valid mp4 and the tiny model as a checkpoint (as tests/test_cli.py)."""

from __future__ import annotations

import json

import pytest
import torch

from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from tests.conftest import PARITY
from tests.helpers import write_video


@pytest.fixture(scope="session")
def fault_dir(tmp_path_factory, parity_state_dict):
    """``clip.mp4`` (1 s, 10 fps, 160x96, shapes), ``long.mp4`` (6 s, 10 fps) and ``tiny.pt`` (the tiny
    model's state dict with its config)."""
    root = tmp_path_factory.mktemp("fault")
    world = dict(width=160, height=96, fps=10, radius_px=(8.0, 20.0))
    for name, seconds in (("clip.mp4", 1.0), ("long.mp4", 6.0)):
        clip = generate_clip(3, WorldConfig(duration_s=seconds, **world))
        write_video(root / name, (clip.image(t) for t in range(clip.num_frames)), fps=10)
    config = json.loads((PARITY / "config.json").read_text())
    torch.save({"model": parity_state_dict, "config": config}, root / "tiny.pt")
    return root

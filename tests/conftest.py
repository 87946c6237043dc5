"""Shared fixtures: the official parity fixture (tiny SAM 3 with random weights) and models built from it."""

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
PARITY = DATA / "parity"


@pytest.fixture(scope="session")
def parity_cases() -> dict:
    """What the official code computed with the tiny model (see tests/data/parity/README)."""
    return torch.load(PARITY / "cases.pt", weights_only=False)


@pytest.fixture(scope="session")
def parity_state_dict() -> dict:
    return torch.load(PARITY / "state_dict.pt", weights_only=True)


@pytest.fixture(scope="session")
def tiny_model(parity_state_dict):
    """The tiny model in fp32 eval mode, loaded strictly with the official weights. Do not mutate."""
    from sam3video import build_model

    model = build_model(PARITY / "config.json")
    state = {k: v.float() if v.is_floating_point() else v for k, v in parity_state_dict.items()}
    model.load_state_dict(state, strict=True)
    return model.eval()

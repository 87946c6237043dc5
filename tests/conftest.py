"""Shared fixtures: the official parity fixture (tiny SAM 3 with random weights) and models built from it."""

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
PARITY = DATA / "parity"
# Every tensor of the released sam3.pt (the official video model, 1465): name, shape ("1x577x1024", or
# "scalar"), dtype. Copied from ../shared/reference/sam3_video_state_dict.tsv.
VIDEO_TSV = DATA / "sam3_video_state_dict.tsv"
SAM2_NECK = "backbone.vision_backbone.sam2_convs."


def official_video_rows() -> list[tuple[str, str, str]]:
    """(name, shape, dtype) of every tensor of the released sam3.pt, in its order."""
    return [tuple(line.split("\t")) for line in VIDEO_TSV.read_text().splitlines()]


def official_image_rows(prefix: str = "") -> list[tuple[str, str, str]]:
    """The official image model's 1134 tensors: the ``detector.*`` of sam3.pt without the second neck,
    names without ``detector.``; only those under ``prefix``, with ``prefix`` stripped."""
    rows = [(name[len("detector."):], shape, dtype) for name, shape, dtype in official_video_rows()
            if name.startswith("detector.") and not name.startswith("detector." + SAM2_NECK)]
    return [(name[len(prefix):], shape, dtype) for name, shape, dtype in rows if name.startswith(prefix)]


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


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Tools' ``main`` set torch's thread count (``--threads``) for the process: restore it after each test, so
    later tests run (and round their sums) as they would alone."""
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)

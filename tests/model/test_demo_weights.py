"""The shipped demo weights: the default checkpoint, loaded strictly like any other."""

import torch

from sam3video import load_model
from sam3video.model.checkpoint import demo_checkpoint


def test_demo_weights_are_the_default_and_load_strictly():
    model = load_model(device="cpu")
    assert model.config.name == "demo" and not model.training
    shipped = torch.load(demo_checkpoint(), map_location="cpu", weights_only=True)
    assert shipped["model"].keys() == model.state_dict().keys()
    assert all(v.dtype == torch.float16 for v in shipped["model"].values() if v.is_floating_point())
    assert demo_checkpoint().stat().st_size < 16 * 2**20  # small enough to ship in the package

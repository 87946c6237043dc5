"""Checkpoint loading: the official sam3.pt layout, plain state dicts, and every failure as one clear error."""

import pytest
import torch

from sam3video import CheckpointError, load_model
from sam3video.model.checkpoint import extract_state_dict, resolve_device
from tests.conftest import PARITY

CONFIG = PARITY / "config.json"


@pytest.fixture()
def official_layout(parity_state_dict):
    """A fake sam3.pt: tiny weights under "model" with detector./tracker. prefixes, as released."""
    state = {f"detector.{k}": v for k, v in parity_state_dict.items()}
    state["tracker.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    state["tracker.sam_mask_decoder.conv_s0.weight"] = torch.zeros(8, 64, 1, 1)
    return {"model": state}


def test_loads_official_layout(tmp_path, official_layout, tiny_model):
    path = tmp_path / "sam3.pt"
    torch.save(official_layout, path)
    model = load_model(path, config=CONFIG, device="cpu")
    assert model.load_report.left_out == {"tracker.": 2}
    assert model.load_report.num_loaded == len(tiny_model.state_dict())
    for (name, got), expected in zip(model.state_dict().items(), tiny_model.state_dict().values()):
        assert torch.equal(got, expected), name
    assert not model.training
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # the non-persistent causal mask of the text encoder is rebuilt: text features are right
    with torch.inference_mode():
        got = model.backbone.forward_text(["a red circle"])["language_features"]
        expected = tiny_model.backbone.forward_text(["a red circle"])["language_features"]
    assert torch.equal(got, expected)


def test_loads_plain_state_dict_with_saved_config(tmp_path, parity_state_dict):
    import json

    path = tmp_path / "plain.pt"
    torch.save({"model": parity_state_dict, "config": json.loads(CONFIG.read_text())}, path)
    model = load_model(path, device="cpu")  # config comes from the file
    assert model.config.vit_dim == 64


def test_truncated_file(tmp_path, official_layout):
    path = tmp_path / "sam3.pt"
    torch.save(official_layout, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a PyTorch checkpoint"):
        load_model(path, config=CONFIG, device="cpu")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model(path, config=CONFIG, device="cpu")


def test_wrong_shape_is_named(tmp_path, official_layout):
    key = "detector.transformer.decoder.query_embed.weight"
    official_layout["model"][key] = torch.zeros(17, 64)
    torch.save(official_layout, tmp_path / "sam3.pt")
    with pytest.raises(CheckpointError, match=r"1 shape mismatch \(transformer.decoder.query_embed.weight"):
        load_model(tmp_path / "sam3.pt", config=CONFIG, device="cpu")


def test_missing_key_is_named(tmp_path, official_layout):
    del official_layout["model"]["detector.dot_prod_scoring.hs_proj.bias"]
    torch.save(official_layout, tmp_path / "sam3.pt")
    with pytest.raises(CheckpointError, match=r"1 missing \(dot_prod_scoring.hs_proj.bias\)"):
        load_model(tmp_path / "sam3.pt", config=CONFIG, device="cpu")


def test_wrong_config_counts_problems(tmp_path, official_layout):
    torch.save(official_layout, tmp_path / "sam3.pt")
    with pytest.raises(CheckpointError, match=r"shape mismatch .*\.\.\."):
        load_model(tmp_path / "sam3.pt", config="sam3", device="cpu")


def test_missing_file():
    with pytest.raises(CheckpointError, match="checkpoint not found: /no/such/sam3.pt"):
        load_model("/no/such/sam3.pt", config=CONFIG, device="cpu")


def test_offline_hub_id_says_how_to_get_weights(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(CheckpointError, match="offline.*--checkpoint PATH"):
        load_model("facebook/sam3", config=CONFIG, device="cpu")


def test_extract_plain_state_dict_keeps_everything(parity_state_dict):
    state, report = extract_state_dict(dict(parity_state_dict))
    assert len(state) == len(parity_state_dict) and report.left_out == {}


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="CUDA is not available"):
            resolve_device("cuda")

"""Checkpoint loading: the official sam3.pt layout, plain state dicts, and every failure as one clear error."""

import pytest
import torch

from sam3video import CheckpointError, build_model, load_model
from sam3video.model.checkpoint import check_state_dict, extract_state_dict, resolve_device
from tests.conftest import PARITY, SAM2_NECK, official_video_rows

CONFIG = PARITY / "config.json"
NECK = "detector." + SAM2_NECK
# what the image model leaves out of the released sam3.pt: the second neck and the tracker
RELEASED_LEFT_OUT = {NECK: 22, "tracker.": 309}


def meta_tensor(shape: str, dtype: str) -> torch.Tensor:
    dims = [] if shape == "scalar" else [int(s) for s in shape.split("x")]
    return torch.empty(dims, dtype=getattr(torch, dtype), device="meta")


def test_full_size_released_layout_fits_on_meta():
    """Every tensor of the released sam3.pt (names, shapes, dtypes; no values): the image model takes
    its 1134, the second neck and the tracker are reported, nothing is missing or unexpected."""
    rows = official_video_rows()
    state = {name: meta_tensor(shape, dtype) for name, shape, dtype in rows}
    assert len(state) == 1465
    assert round(sum(t.numel() for t in state.values()) / 1e6, 1) == 861.2
    kept, report = extract_state_dict({"model": state}, source="sam3.pt")
    assert report.left_out == RELEASED_LEFT_OUT and report.num_loaded == 1134
    assert "22 detector.backbone.vision_backbone.sam2_convs.*" in str(report) and "309 tracker.*" in str(report)
    with torch.device("meta"):
        model = build_model("sam3")
    check_state_dict(model, kept)
    model.load_state_dict(kept, strict=True, assign=True)
    # the same tensors at the top level (no "model" key) are read the same way
    assert extract_state_dict(state)[1].left_out == RELEASED_LEFT_OUT


SAM31_TSV = PARITY.parent / "sam31_multiplex_state_dict.tsv"  # sam3.1_multiplex.pt's 1623 tensors (Meta's builder)
SAM31_LEFT_OUT = {"detector.backbone.vision_backbone.interactive_convs.": 18,
                  "detector.backbone.vision_backbone.propagation_convs.": 18, "tracker.model.": 457}


def test_full_size_sam31_layout_fits_on_meta():
    """Every tensor of SAM 3.1's sam3.1_multiplex.pt: recognised as the 3.1 layout, the image model (the ``sam3.1``
    config: no ``convs.3``) takes its 1130 strictly, the tri-neck's tracker paths and the multiplex tracker are
    reported, nothing is missing or unexpected."""
    rows = [tuple(line.split("\t")) for line in SAM31_TSV.read_text().splitlines()]
    state = {name: meta_tensor(shape, dtype) for name, shape, dtype in rows}
    assert len(state) == 1623 and round(sum(t.numel() for t in state.values()) / 1e6, 1) == 874.4
    kept, report = extract_state_dict({"model": state}, source="sam3.1_multiplex.pt")
    assert report.version == "sam3.1" and report.left_out == SAM31_LEFT_OUT and report.num_loaded == 1130
    assert "(sam3.1 layout)" in str(report) and "457 tracker.model.* (SAM 3.1 multiplex tracker" in str(report)
    with torch.device("meta"):
        model = build_model("sam3.1")
    check_state_dict(model, kept)
    model.load_state_dict(kept, strict=True, assign=True)
    with torch.device("meta"):
        sam3 = build_model("sam3")
    with pytest.raises(CheckpointError, match=r"4 missing \(backbone.vision_backbone.convs.3"):
        check_state_dict(sam3, kept)  # the SAM 3 config wants the 0.5 level the 3.1 file does not have


def test_sam31_image_model_equals_sam3_image_model_on_the_same_weights(parity_state_dict, tiny_model, tmp_path):
    """The 3.1 detector is SAM 3's image model without the unused 0.5 level: on the tiny size, a 3.1-layout file
    (tri-neck and a multiplex tracker tensor beside it) loads with the 3.1 neck and gives SAM 3's outputs."""
    import json

    config = json.loads(CONFIG.read_text())
    assert config["neck_scales"][-1] == 0.5 and config["scalp"] == 1
    config31 = {**config, "neck_scales": config["neck_scales"][:-1], "scalp": 0}
    state = {f"detector.{k}": v for k, v in parity_state_dict.items() if ".convs.3." not in k}
    for key, value in parity_state_dict.items():
        if key.startswith("backbone.vision_backbone.convs.") and ".convs.3." not in key:
            for path in ("interactive_convs", "propagation_convs"):
                state["detector." + key.replace(".convs.", f".{path}.", 1)] = torch.randn_like(value.float())
    state["tracker.model.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 256)
    torch.save({"model": state}, tmp_path / "sam3.1_multiplex.pt")
    model = load_model(tmp_path / "sam3.1_multiplex.pt", config=config31, device="cpu")
    assert model.load_report.version == "sam3.1" and model.load_report.left_out["tracker.model."] == 1
    image = torch.randn(1, 3, config["resolution"], config["resolution"])
    with torch.inference_mode():
        got, expected = model.backbone.forward_image(image), tiny_model.backbone.forward_image(image)
    assert len(got["backbone_fpn"]) == len(expected["backbone_fpn"]) == 3
    for a, b in zip(got["backbone_fpn"] + got["vision_pos_enc"], expected["backbone_fpn"] + expected["vision_pos_enc"]):
        assert torch.equal(a, b)


def test_a_checkpoint_mixing_the_sam3_and_sam31_layouts_is_refused(tmp_path, official_layout):
    official_layout["model"]["tracker.model.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 256)
    torch.save(official_layout, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="mixes the SAM 3 .* and SAM 3.1 .* layouts"):
        load_model(tmp_path / "mixed.pt", config=CONFIG, device="cpu")


def test_full_size_missing_image_tensor_still_fails_on_meta():
    state = {name: meta_tensor(shape, dtype) for name, shape, dtype in official_video_rows()}
    del state["detector.transformer.decoder.query_embed.weight"]
    kept, _ = extract_state_dict(state)
    with torch.device("meta"):
        model = build_model("sam3")
    with pytest.raises(CheckpointError, match=r"1 missing \(transformer.decoder.query_embed.weight\)"):
        check_state_dict(model, kept)


def released_groups(parity_state_dict) -> dict[str, torch.Tensor]:
    """Tiny stand-ins for the groups the released checkpoint has besides the image model: the second
    neck (shaped like the first, as the official builder copies it) and a few tracker tensors."""
    extra = {}
    for key, value in parity_state_dict.items():
        if key.startswith("backbone.vision_backbone.convs."):
            extra["detector." + key.replace(".convs.", ".sam2_convs.", 1)] = torch.randn_like(value.float())
    assert extra
    extra["tracker.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    extra["tracker.sam_mask_decoder.conv_s0.weight"] = torch.zeros(8, 64, 1, 1)
    return extra


@pytest.fixture()
def official_layout(parity_state_dict):
    """A fake sam3.pt: tiny weights under "model" with the released groups, as released."""
    state = {f"detector.{k}": v for k, v in parity_state_dict.items()}
    state.update(released_groups(parity_state_dict))
    return {"model": state}


def left_out_counts(official_layout):
    necks = sum(k.startswith(NECK) for k in official_layout["model"])
    return {NECK: necks, "tracker.": 2}


@pytest.mark.parametrize("layout", ["model", "plain", "safetensors"])
def test_loads_released_layout_at_tiny_size(tmp_path, official_layout, tiny_model, layout):
    """As {"model": ...}, as a plain state dict, and as .safetensors: same weights, same report."""
    state = official_layout["model"]
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "sam3.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "sam3.pt"
        torch.save(official_layout if layout == "model" else state, path)
    model = load_model(path, config=CONFIG, device="cpu")
    assert model.load_report.left_out == left_out_counts(official_layout)
    assert model.load_report.num_loaded == len(tiny_model.state_dict())
    for (name, got), expected in zip(model.state_dict().items(), tiny_model.state_dict().values()):
        assert torch.equal(got, expected), name


def test_loads_official_layout(tmp_path, official_layout, tiny_model):
    path = tmp_path / "sam3.pt"
    torch.save(official_layout, path)
    model = load_model(path, config=CONFIG, device="cpu")
    assert model.load_report.left_out == left_out_counts(official_layout)
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
    with pytest.raises(CheckpointError, match="facebook/sam3.1/sam3.1_multiplex.pt: offline"):
        load_model("facebook/sam3.1", device="cpu")  # the 3.1 repository's file name


def test_extract_plain_state_dict_keeps_everything(parity_state_dict):
    state, report = extract_state_dict(dict(parity_state_dict))
    assert len(state) == len(parity_state_dict) and report.left_out == {}


def test_plain_state_dict_with_the_second_neck(parity_state_dict):
    """An image model saved with its second neck (the official image builder with interactivity on)."""
    neck = {k[len("detector."):]: v for k, v in released_groups(parity_state_dict).items() if k.startswith(NECK)}
    state, report = extract_state_dict({**parity_state_dict, **neck})
    assert len(state) == len(parity_state_dict) and report.left_out == {SAM2_NECK: len(neck)}


def test_unknown_detector_tensor_is_still_unexpected(tmp_path, official_layout):
    official_layout["model"]["detector.backbone.extra_head.weight"] = torch.zeros(3)
    torch.save(official_layout, tmp_path / "sam3.pt")
    with pytest.raises(CheckpointError, match=r"1 unexpected \(backbone.extra_head.weight\)"):
        load_model(tmp_path / "sam3.pt", config=CONFIG, device="cpu")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointError, match="CUDA is not available"):
            resolve_device("cuda")

"""The video model's layout: detector (+ second neck) and tracker, exactly the tensors of sam3.pt."""

import json

import pytest
import torch

from sam3video import load_config
from sam3video.errors import ConfigError
from sam3video.model.build_video import TrackerConfig, VideoConfig, build_video_model, load_video_config
from tests.conftest import PARITY, SAM2_NECK, official_video_rows


def layout(model):
    return {
        name: ("x".join(map(str, t.shape)) or "scalar", str(t.dtype).replace("torch.", ""))
        for name, t in model.state_dict().items()
    }


@pytest.fixture(scope="module")
def full_video_model():
    with torch.device("meta"):
        return build_video_model("sam3")


def test_full_video_model_matches_released_checkpoint(full_video_model):
    """All 1465 tensors of sam3.pt by name, shape and dtype; none extra."""
    expected = {name: (shape, dtype) for name, shape, dtype in official_video_rows()}
    got = layout(full_video_model)
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]} == {}
    assert len(got) == 1465
    groups = {"tracker": 0, "neck": 0, "detector": 0}
    for name in got:
        neck = name.startswith("detector." + SAM2_NECK)
        groups["tracker" if name.startswith("tracker.") else "neck" if neck else "detector"] += 1
    assert groups == {"tracker": 309, "neck": 22, "detector": 1134}
    params = sum(p.numel() for p in full_video_model.parameters()) + sum(
        b.numel() for n, b in full_video_model.named_buffers() if n in got
    )
    assert round(params / 1e6, 1) == 861.2


def test_second_neck_mirrors_the_first(full_video_model):
    neck = full_video_model.detector.backbone.vision_backbone
    first = {k: tuple(v.shape) for k, v in neck.convs.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in neck.sam2_convs.state_dict().items()} == first
    shared = {id(p) for p in neck.convs.parameters()} & {id(p) for p in neck.sam2_convs.parameters()}
    assert not shared  # separate weights


def test_full_tracker_sizes(full_video_model):
    tracker = full_video_model.tracker
    assert (tracker.hidden_dim, tracker.mem_dim, tracker.num_maskmem) == (256, 64, 7)
    assert (tracker.image_size, tracker.backbone_stride, tracker.sam_image_embedding_size) == (1008, 14, 72)
    assert (tracker.low_res_mask_size, tracker.input_mask_size) == (288, 1152)
    assert tracker.maskmem_backbone.mask_downsampler.interpol_size == [1152, 1152]
    assert tracker.sam_prompt_encoder.mask_input_size == (288, 288)
    attn = tracker.transformer.encoder.layers[0].cross_attn_image
    assert (attn.num_heads, attn.kv_in_dim, attn.feat_sizes, attn.rope_k_repeat) == (1, 64, (72, 72), True)
    assert tracker.max_cond_frames_in_attn == 4 and tracker.use_memory_selection
    assert not any("freqs_cis" in k for k in full_video_model.state_dict() if k.startswith("tracker."))


def test_tiny_preset_has_a_tiny_tracker():
    video = load_video_config("tiny")
    assert video.detector == load_config("tiny") == load_config(PARITY / "config.json")
    assert (video.tracker.mem_dim, video.tracker.memory_attention_layers, video.tracker.decoder_heads) == (16, 2, 4)
    assert load_video_config("sam3") == VideoConfig()
    with torch.device("meta"):
        model = build_video_model("tiny")
    tracker_keys = [k for k in model.state_dict() if k.startswith("tracker.")]
    assert len(tracker_keys) == 309 - 2 * 26  # two memory-attention layers instead of four
    assert model.state_dict()["tracker.maskmem_tpos_enc"].shape == (7, 1, 1, 16)


def test_tracker_table_in_files_and_dicts(tmp_path):
    path = tmp_path / "video.json"
    path.write_text(json.dumps({**json.loads((PARITY / "config.json").read_text()), "tracker": {"mem_dim": 32}}))
    assert load_video_config(path).tracker == TrackerConfig(mem_dim=32)
    assert load_config(path) == load_config(PARITY / "config.json")  # the image model ignores the table
    with pytest.raises(ConfigError, match=r"unknown config keys: tracker\.mem_dimm"):
        load_video_config({"tracker": {"mem_dimm": 3}})
    with pytest.raises(ConfigError, match="config key tracker: expected a table"):
        load_config({"tracker": 3})
    with pytest.raises(ConfigError, match=r"tracker\.use_memory_selection: expected true or false"):
        load_video_config({"tracker": {"use_memory_selection": 1}})
    with pytest.raises(ConfigError, match=r"video.json: tracker.mem_dim must divide d_model 64"):
        path.write_text(json.dumps({"d_model": 64, "tracker": {"mem_dim": 48}}))
        load_video_config(path)
    with pytest.raises(ConfigError, match=r"tracker\.max_cond_frames_in_attn: out of range"):
        load_video_config({"tracker": {"max_cond_frames_in_attn": 0}})

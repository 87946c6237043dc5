"""Vision backbone (ViT + dual ViTDet neck + sine position encoding) against the official tiny model."""

import json
from pathlib import Path

import pytest
import torch

from sam3video.model.necks import Sam3DualViTDetNeck
from sam3video.model.position_encoding import PositionEmbeddingSine
from sam3video.model.vitdet import (ViT, apply_rotary_enc, apply_rotary_enc_real, compute_axial_cis, use_real_rope,
                                    window_partition, window_unpartition)
from tests.conftest import official_image_rows

DATA = Path(__file__).resolve().parents[1] / "data"
PARITY = DATA / "parity"
PREFIX = "backbone.vision_backbone."
FULL = dict(resolution=1008, patch_size=14, pretrain_img_size=336, vit_dim=1024, vit_depth=32,
            vit_heads=16, vit_mlp_ratio=4.625, vit_window=24, vit_global_blocks=[7, 15, 23, 31],
            d_model=256, neck_scales=[4.0, 2.0, 1.0, 0.5])


def build_vision(c):
    """The vision backbone exactly as the official builder constructs it."""
    vit = ViT(
        img_size=c["resolution"], pretrain_img_size=c["pretrain_img_size"], patch_size=c["patch_size"],
        embed_dim=c["vit_dim"], depth=c["vit_depth"], num_heads=c["vit_heads"],
        mlp_ratio=c["vit_mlp_ratio"], norm_layer="LayerNorm", drop_path_rate=0.1, qkv_bias=True,
        use_abs_pos=True, tile_abs_pos=True, global_att_blocks=tuple(c["vit_global_blocks"]),
        rel_pos_blocks=(), use_rope=True, use_interp_rope=True, window_size=c["vit_window"],
        pretrain_use_cls_token=True, retain_cls_token=False, ln_pre=True, ln_post=False,
        return_interm_layers=False, bias_patch_embed=False, compile_mode=None,
    )
    pos = PositionEmbeddingSine(num_pos_feats=c["d_model"], normalize=True, scale=None, temperature=10000,
                                precompute_resolution=c["resolution"])
    return Sam3DualViTDetNeck(position_encoding=pos, d_model=c["d_model"], scale_factors=c["neck_scales"],
                              trunk=vit, add_sam2_neck=False)


def reference_rows(path):
    """[(name without prefix, shape string, dtype string)] of the vision rows of a key list."""
    rows = [line.split("\t") for line in path.read_text().splitlines() if line.startswith(PREFIX)]
    return [(name[len(PREFIX):], shape, dtype) for name, shape, dtype in rows]


def rows_of(module):
    return [(k, "x".join(map(str, v.shape)) or "scalar", str(v.dtype).replace("torch.", ""))
            for k, v in module.state_dict().items()]


@pytest.fixture(scope="module")
def tiny():
    c = json.loads((PARITY / "config.json").read_text())
    model = build_vision(c).eval()
    sd = torch.load(PARITY / "state_dict.pt", weights_only=True)
    sub = {k[len(PREFIX):]: v.float() if v.dtype == torch.float16 else v
           for k, v in sd.items() if k.startswith(PREFIX)}
    return model, sub


def test_tiny_keys_match_official(tiny):
    model, sub = tiny
    assert rows_of(model) == reference_rows(PARITY / "state_dict_keys.tsv")
    # RoPE buffers computed by our code equal the official ones stored in the checkpoint.
    own = model.state_dict()
    for k in (k for k in sub if k.endswith("freqs_cis")):
        assert own[k].dtype == torch.complex64
        torch.testing.assert_close(own[k], sub[k], rtol=0, atol=1e-6)
    model.load_state_dict(sub, strict=True)


def test_tiny_parity(tiny):
    model, sub = tiny
    model.load_state_dict(sub, strict=True)
    case = torch.load(PARITY / "cases.pt", weights_only=False)["image"]
    with torch.no_grad():
        out, pos, sam2_out, sam2_pos = model(case["input"])
    assert sam2_out is None and sam2_pos is None
    assert len(out) == len(pos) == 4
    # The official SAM3VLBackbone drops the lowest-resolution level (scalp=1).
    assert len(case["backbone_fpn"]) == 3
    for ours, ref in zip(out[:-1], case["backbone_fpn"]):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() <= 1e-4
    for ours, ref in zip(pos[:-1], case["vision_pos_enc"]):
        assert ours.shape == ref.shape
        assert (ours - ref).abs().max() <= 1e-5
    assert (out[-2] - case["vision_features"]).abs().max() <= 1e-4


def test_full_size_keys_on_meta():
    with torch.device("meta"):
        model = build_vision(FULL)
    assert rows_of(model) == official_image_rows(PREFIX)
    with torch.no_grad():
        out, pos, _, _ = model(torch.zeros(1, 3, 1008, 1008, device="meta"))
    assert [tuple(t.shape[-2:]) for t in out] == [(288, 288), (144, 144), (72, 72), (36, 36)]
    assert all(p.shape == o.shape for p, o in zip(pos, out))


def test_full_size_rope_values():
    """Global blocks interpolate RoPE positions of the 72x72 grid to the 24x24 pre-training range."""
    glob = compute_axial_cis(64, 72, 72, scale_pos=24 / 72)
    win = compute_axial_cis(64, 24, 24)
    assert glob.shape == (72 * 72, 32) and win.shape == (24 * 24, 32)
    # Token (row 3, col 3) of the global grid sits where token (1, 1) of a window does.
    torch.testing.assert_close(glob[3 * 72 + 3], win[1 * 24 + 1])
    torch.testing.assert_close(glob.abs(), torch.ones_like(glob.abs()))


def test_real_valued_rope_equals_the_complex_one(tiny):
    """``use_real_rope`` (the exporters' RoPE, no complex tensors) gives the complex path's outputs, and the
    official fixture's, on the tiny backbone; a rotation by hand checks the convention."""
    model, sub = tiny
    model.load_state_dict(sub, strict=True)
    image = torch.load(PARITY / "cases.pt", weights_only=False)["image"]["input"]
    with torch.no_grad():
        complex_out = model(image)[0]
        real_out = use_real_rope(model)(image)[0]
    use_real_rope(model, False)
    for a, b in zip(complex_out, real_out):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    q = torch.tensor([[[[1.0, 2.0]]]])
    turn = torch.polar(torch.ones(1, 1), torch.tensor([[torch.pi / 2]]))  # 90 degrees
    rotated, _ = apply_rotary_enc_real(q, q, turn)
    torch.testing.assert_close(rotated, torch.tensor([[[[-2.0, 1.0]]]]))
    torch.testing.assert_close(rotated, apply_rotary_enc(q, q, turn)[0])


def test_window_partition_roundtrip_with_padding():
    x = torch.randn(2, 13, 10, 5)
    windows, pad_hw = window_partition(x, 4)
    assert windows.shape == (2 * 4 * 3, 4, 4, 5) and pad_hw == (16, 12)
    assert torch.equal(window_unpartition(windows, 4, pad_hw, (13, 10)), x)


def test_position_encoding_boxes_points_and_device_cache():
    pe = PositionEmbeddingSine(num_pos_feats=64)
    x, y, w, h = torch.rand(4, 5).unbind(0)
    boxes = pe.encode_boxes(x, y, w, h)
    assert boxes.shape == (5, 66)
    torch.testing.assert_close(boxes[:, -2:], torch.stack([h, w], dim=1))
    points = pe.encode_points(torch.rand(2, 3), torch.rand(2, 3), torch.ones(2, 3))
    assert points.shape == (2, 3, 65)
    grid = pe(torch.zeros(3, 8, 5, 7))
    assert grid.shape == (3, 64, 5, 7) and grid.dtype == torch.float32
    # Grid encoding at the last row/column equals the encoding of normalised coordinate ~1.
    pos_x, pos_y = pe._encode_xy(torch.ones(1) * 7 / (7 + 1e-6), torch.ones(1) * 5 / (5 + 1e-6))
    torch.testing.assert_close(grid[0, :, -1, -1], torch.cat([pos_y[0], pos_x[0]]))


def test_tiny_trains(tiny):
    model, sub = tiny
    model.load_state_dict(sub, strict=True)
    model.train()
    torch.manual_seed(0)
    out, _, _, _ = model(torch.randn(2, 3, 224, 224))
    sum(o.square().mean() for o in out).backward()
    assert model.trunk.patch_embed.proj.weight.grad is not None
    assert model.trunk.blocks[0].attn.freqs_cis.grad is None
    model.eval()

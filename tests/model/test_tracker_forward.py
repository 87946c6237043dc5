"""The SAM 3 tracker at the tiny size with random weights: track_step over frames with the memory bank,
the SAM heads' gating, the memory prompt, RoPE attention, and the pure memory-selection helpers."""

import copy
import math

import pytest
import torch

from sam3video.model.build_video import build_video_model
from sam3video.model.sam.transformer import RoPEAttention
from sam3video.model.sam3_tracker_base import NO_OBJ_SCORE
from sam3video.model.sam3_tracker_utils import (
    MemoryBank,
    PointInputs,
    TrackStepOutput,
    frame_filter,
    get_1d_sine_pe,
    memory_frame_indices,
    obj_ptr_frame_indices,
    select_closest_cond_frames,
)

NUM_FRAMES = 3


@pytest.fixture(scope="module")
def video_model():
    torch.manual_seed(0)
    return build_video_model("tiny").eval()


@pytest.fixture(scope="module")
def features(video_model):
    """Three random frames through the detector's ViT and both necks -> the tracker's flattened features."""
    torch.manual_seed(1)
    with torch.inference_mode():
        backbone_out = video_model.forward_image(torch.randn(NUM_FRAMES, 3, 224, 224))
    _, feats, pos, sizes = video_model.tracker._prepare_backbone_features(backbone_out["tracker_backbone_out"])
    return backbone_out, feats, pos, sizes


def first_mask():
    mask = torch.zeros(1, 1, 256, 256)  # input_mask_size = 224 // 14 * 16
    mask[..., 64:160, 80:200] = 1
    return mask


def frame(features, f):
    _, feats, pos, sizes = features
    return {"current_vision_feats": [x[:, f : f + 1] for x in feats],
            "current_vision_pos_embeds": [x[:, f : f + 1] for x in pos], "feat_sizes": sizes}


def run_video(tracker, features):
    """Mask prompt on frame 0 (conditioning), then propagation; every output goes into the bank."""
    bank, outputs = MemoryBank(), []
    with torch.inference_mode():
        for f in range(NUM_FRAMES):
            out = tracker.track_step(frame_idx=f, is_init_cond_frame=f == 0, point_inputs=None,
                                     mask_inputs=first_mask() if f == 0 else None, output_dict=bank,
                                     num_frames=NUM_FRAMES, **frame(features, f))
            bank.add(f, out, is_cond=f == 0)
            outputs.append(out)
    return bank, outputs


@pytest.fixture(scope="module")
def video_run(video_model, features):
    return run_video(video_model.tracker, features)


def test_tracker_features(features):
    backbone_out, feats, _, sizes = features
    tracker_out = backbone_out["tracker_backbone_out"]
    assert [tuple(x.shape) for x in tracker_out["backbone_fpn"]] == [(3, 8, 64, 64), (3, 16, 32, 32), (3, 64, 16, 16)]
    pos_shapes = [tuple(x.shape) for x in tracker_out["vision_pos_enc"]]
    assert pos_shapes == [(3, 64, 64, 64), (3, 64, 32, 32), (3, 64, 16, 16)]
    assert sizes == [(64, 64), (32, 32), (16, 16)]
    assert [tuple(x.shape) for x in feats] == [(4096, 3, 8), (1024, 3, 16), (256, 3, 64)]
    # one ViT pass, two necks: the second starts as a copy of the first (as officially) but has its own tensors
    assert torch.equal(backbone_out["sam2_backbone_out"]["vision_features"], backbone_out["vision_features"])


def test_track_step_over_three_frames(video_run):
    bank, outputs = video_run
    first, *tracked = outputs
    # frame 0: the mask prompt is the output (logits +-10 at the prompt's size, low-res 256 // 14 * 4)
    assert first.pred_masks_high_res.shape == (1, 1, 256, 256) and first.pred_masks.shape == (1, 1, 72, 72)
    assert torch.equal(first.pred_masks_high_res, first_mask() * 20 - 10)
    assert first.object_score_logits.item() == 10.0 and first.ious.tolist() == [[1.0]]
    for out in outputs:
        assert out.obj_ptr.shape == (1, 64) and out.object_score_logits.shape == (1, 1)
        assert out.maskmem_features.shape == (1, 16, 16, 16)
        assert [tuple(p.shape) for p in out.maskmem_pos_enc] == [(1, 16, 16, 16)]
        assert out.iou_score.shape == (1,) and out.eff_iou_score.shape == ()
        assert all(torch.isfinite(t).all() for t in (out.pred_masks, out.obj_ptr, out.maskmem_features))
    for out in tracked:  # propagation: 3 candidates (no points), the best by predicted IoU kept
        assert out.pred_masks.shape == (1, 1, 64, 64) and out.pred_masks_high_res.shape == (1, 1, 224, 224)
        assert out.ious.shape == (1, 3) and ((out.ious >= 0) & (out.ious <= 1)).all()
    assert sorted(bank.cond_frame_outputs) == [0] and sorted(bank.non_cond_frame_outputs) == [1, 2]
    assert set(first.to_dict()) == {"point_inputs", "mask_inputs", "pred_masks", "pred_masks_high_res", "obj_ptr",
                                    "object_score_logits", "ious", "iou_score", "eff_iou_score", "maskmem_features",
                                    "maskmem_pos_enc"}


def test_track_step_is_deterministic(video_model, features, video_run):
    a = video_run[1]
    _, b = run_video(video_model.tracker, features)
    for x, y in zip(a, b, strict=True):
        for key, value in x.to_dict().items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, getattr(y, key)), key


def test_memory_prompt_tokens(video_model, features, video_run):
    """Frame 2 sees the conditioning frame and frame 1 (16 x 16 tokens each); pointers are split into
    64 / 16 = 4 tokens each: the conditioning frame's, plus frame 1's without memory selection."""
    tracker, bank = video_model.tracker, video_run[0]
    like = features[1][-1][:, 2:3]
    with torch.inference_mode():
        prompt, pos, n_ptr = tracker._memory_prompt(2, bank, NUM_FRAMES, False, 1, like)
        assert prompt.shape == pos.shape == (2 * 256 + 4, 1, 16) and n_ptr == 4  # selection: 1 pointer frame
        tracker.use_memory_selection = False
        try:
            prompt, pos, n_ptr = tracker._memory_prompt(2, bank, NUM_FRAMES, False, 1, like)
        finally:
            tracker.use_memory_selection = True
        assert prompt.shape == (2 * 256 + 8, 1, 16) and n_ptr == 8
        # the conditioning frame's spatial memory carries the temporal encoding of slot num_maskmem - 1
        cond_pos = bank.cond_frame_outputs[0].maskmem_pos_enc[-1].flatten(2).permute(2, 0, 1)
        assert torch.equal(pos[:256], cond_pos + tracker.maskmem_tpos_enc[6])
        with pytest.raises(ValueError, match="no conditioning frame"):
            tracker._memory_prompt(2, MemoryBank(), NUM_FRAMES, False, 1, like)


def test_points_and_absent_object(video_model, features):
    """One click on a first frame gives 3 candidates; a negative object score gives -1024 masks,
    ``no_obj_ptr`` and ``no_obj_embed_spatial`` in the memory."""
    tracker = copy.deepcopy(video_model.tracker)
    points = PointInputs(torch.tensor([[[100.0, 120.0]]]), torch.tensor([[1]], dtype=torch.int32))
    kwargs = dict(frame_idx=0, is_init_cond_frame=True, point_inputs=points, mask_inputs=None,
                  output_dict=MemoryBank(), num_frames=1, **frame(features, 0))
    with torch.inference_mode():
        out = tracker.track_step(**kwargs)
        assert out.pred_masks.shape == (1, 1, 64, 64) and out.ious.shape == (1, 3)
        head = tracker.sam_mask_decoder.pred_obj_score_head.layers[-1]
        head.weight.zero_()
        head.bias.fill_(-5.0)
        out = tracker.track_step(**kwargs)
    assert out.object_score_logits.item() == -5.0
    assert (out.pred_masks == NO_OBJ_SCORE).all() and (out.pred_masks_high_res == NO_OBJ_SCORE).all()
    assert torch.equal(out.obj_ptr, tracker.no_obj_ptr)
    assert out.eff_iou_score.item() == 0.0


def test_rope_attention_matches_real_valued_rotation():
    """Queries on a 3 x 3 grid, keys = two such maps plus 2 unrotated pointer tokens."""
    torch.manual_seed(0)
    attn = RoPEAttention(16, 1, kv_in_dim=8, rope_k_repeat=True, feat_sizes=(3, 3)).eval()
    x, mem = torch.randn(2, 9, 16), torch.randn(2, 20, 8)
    out = attn(x, mem, mem, num_k_exclude_rope=2)

    def rotate(t, n):  # t (B, L, 16); position of token i: x = i % 3, y = i // 3 (tiled every 9 tokens)
        idx = torch.arange(n) % 9
        freqs = 1.0 / (10000 ** (torch.arange(0, 16, 4)[:4].float() / 16))
        angles = torch.cat([(idx % 3)[:, None] * freqs, (idx // 3)[:, None] * freqs], dim=1)  # (n, 8)
        a, b = t[..., 0::2], t[..., 1::2]
        return torch.stack([a * angles.cos() - b * angles.sin(), a * angles.sin() + b * angles.cos()], -1).flatten(-2)

    q, k, v = attn.q_proj(x), attn.k_proj(mem), attn.v_proj(mem)
    k = torch.cat([rotate(k[:, :18], 18), k[:, 18:]], dim=1)
    weights = torch.softmax(rotate(q, 9) @ k.transpose(1, 2) / math.sqrt(16), dim=-1)
    torch.testing.assert_close(out, attn.out_proj(weights @ v), atol=1e-5, rtol=1e-5)


def _out(score=None):
    t = torch.zeros(1, 1)
    return TrackStepOutput(None, None, t, t, t, t, t, eff_iou_score=None if score is None else torch.tensor(score))


def test_select_closest_cond_frames():
    cond = {t: _out() for t in (0, 10, 20, 30, 40)}
    selected, unselected = select_closest_cond_frames(22, cond, 3)
    assert list(selected) == [20, 30, 10] and sorted(unselected) == [0, 40]
    assert list(select_closest_cond_frames(22, cond, -1)[0]) == [0, 10, 20, 30, 40]
    assert list(select_closest_cond_frames(22, cond, 3, keep_first_cond_frame=True)[0]) == [0, 20, 30]


@pytest.mark.parametrize("frame_idx, r, reverse, expected", [
    (10, 1, False, [(1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9)]),
    (10, 2, False, [(1, 0), (2, 2), (3, 4), (4, 6), (5, 8), (6, 9)]),
    (10, 1, True, [(1, 16), (2, 15), (3, 14), (4, 13), (5, 12), (6, 11)]),
])
def test_memory_frame_indices(frame_idx, r, reverse, expected):
    assert memory_frame_indices(frame_idx, 7, r, reverse) == expected


def test_memory_selection_helpers():
    non_cond = {1: _out(0.5), 2: _out(0.001), 3: _out(0.2), 4: _out(0.0)}
    valid = frame_filter(non_cond, False, 5, 100, 1, 16, 0.01)
    assert valid == [1, 3, 4]  # 2 and 4 score too low; the adjacent frame 4 is always kept
    assert memory_frame_indices(5, 7, 1, False, valid) == [(4, 1), (5, 3), (6, 4)]
    assert obj_ptr_frame_indices(5, 100, 16, False, valid) == [(1, 4), (2, 3)]  # the oldest is not used
    assert obj_ptr_frame_indices(2, 100, 16, False) == [(1, 1), (2, 0)]
    assert frame_filter(non_cond, False, 0, 100, 1, 16, 0.01) == []
    pe = get_1d_sine_pe(torch.tensor([0.0, 1.0]), dim=8)
    assert pe.shape == (2, 8) and torch.equal(pe[0], torch.tensor([0.0] * 4 + [1.0] * 4))

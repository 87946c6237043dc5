"""Bounded tracker memory (MemoryBank.evict) and MaskPropagator, on the tiny video model with random
weights and random frames: eviction never changes a result, and keeps the bank's size constant once
the memory windows are full (without it, the bank grows by a full frame output per frame)."""

import copy

import pytest
import torch
import torch.nn.functional as F

from sam3video.errors import InputError
from sam3video.model.build_video import build_video_model
from sam3video.model.sam3_tracker_utils import MemoryBank, TrackStepOutput
from sam3video.trackers.sam3.propagation import MaskPropagator, frame_features

NUM_FRAMES = 20
B = 2


@pytest.fixture(scope="module")
def video_model():
    torch.manual_seed(0)
    return build_video_model("tiny").eval()


@pytest.fixture(scope="module")
def backbone_out(video_model):
    torch.manual_seed(1)
    with torch.inference_mode():
        return video_model.forward_image(torch.randn(NUM_FRAMES, 3, 224, 224))["tracker_backbone_out"]


@pytest.fixture(scope="module")
def features(video_model, backbone_out):
    return video_model.tracker._prepare_backbone_features(backbone_out)[1:]


def first_masks():
    masks = torch.zeros(B, 256, 256, dtype=torch.bool)  # input_mask_size = 224 // 14 * 16
    masks[0, 64:160, 80:200] = True
    masks[1, 10:60, 10:90] = True
    return masks


def frame(features, f):
    """Frame f's flattened features, expanded to the B objects (as test_tracker_parity drives them)."""
    feats, pos, sizes = features
    return {"current_vision_feats": [x[:, f : f + 1].expand(-1, B, -1) for x in feats],
            "current_vision_pos_embeds": [x[:, f : f + 1].expand(-1, B, -1) for x in pos], "feat_sizes": sizes}


def variant(tracker, selection=True, r=1, num_maskmem=7, max_obj_ptrs=16, mixed_scores=False):
    """A copy of the tracker with other memory settings; ``mixed_scores``: object scores scaled so
    that some frames score below 0 (not selectable as memory), as in the parity fixture."""
    tracker = copy.deepcopy(tracker)
    tracker.use_memory_selection, tracker.memory_temporal_stride_for_eval = selection, r
    tracker.num_maskmem, tracker.max_obj_ptrs_in_encoder = num_maskmem, max_obj_ptrs
    if mixed_scores:
        head = tracker.sam_mask_decoder.pred_obj_score_head.layers[-1]
        with torch.no_grad():
            head.weight.mul_(300.0)
            head.bias.mul_(300.0).sub_(0.2575 * 300.0)
    return tracker


def evict(bank, tracker, f, num_frames=NUM_FRAMES, **overrides):
    kwargs = {"num_maskmem": tracker.num_maskmem, "max_obj_ptrs": min(num_frames, tracker.max_obj_ptrs_in_encoder),
              "r": tracker.memory_temporal_stride_for_eval,
              "mf_threshold": tracker.mf_threshold if tracker.use_memory_selection else None}
    bank.evict(f, **{**kwargs, **overrides})


def run(tracker, features, evicting, **overrides):
    """Mask prompt on frame 0, then track_step on frames 1..19; evict after each stored frame or not.
    -> (outputs, bank sizes in bytes after each frame, bank)."""
    bank, outputs, sizes = MemoryBank(), [], []
    with torch.inference_mode():
        for f in range(NUM_FRAMES):
            out = tracker.track_step(frame_idx=f, is_init_cond_frame=f == 0, point_inputs=None,
                                     mask_inputs=first_masks()[:, None] if f == 0 else None, output_dict=bank,
                                     num_frames=NUM_FRAMES, **frame(features, f))
            bank.add(f, out, is_cond=f == 0)
            if evicting:
                evict(bank, tracker, f, **overrides)
            outputs.append(out)
            sizes.append(bank.nbytes())
    return outputs, sizes, bank


def assert_same(a: TrackStepOutput, b: TrackStepOutput, f):
    for key, value in a.to_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, getattr(b, key)), (f, key)
    assert all(torch.equal(x, y) for x, y in zip(a.maskmem_pos_enc, b.maskmem_pos_enc, strict=True))


CASES = {  # name -> tracker settings
    "official": {},  # memory selection, stride 1, 6 memory frames, 16 pointers; every frame selectable
    "no selection": {"selection": False},
    "selection, stride 2, small windows, mixed scores": {"r": 2, "num_maskmem": 3, "max_obj_ptrs": 4,
                                                          "mixed_scores": True},
    # memory (every 3rd frame, 4 back) reaches past the pointer window (3 frames)
    "no selection, stride 3, small windows": {"selection": False, "r": 3, "num_maskmem": 5, "max_obj_ptrs": 4},
}


@pytest.mark.parametrize("name", list(CASES))
def test_eviction_changes_no_result_and_bounds_the_bank(video_model, features, name):
    tracker = variant(video_model.tracker, **CASES[name])
    kept, kept_sizes, bank = run(tracker, features, evicting=True)
    full, full_sizes, full_bank = run(tracker, features, evicting=False)
    for f, (a, b) in enumerate(zip(kept, full, strict=True)):
        assert_same(a, b, f)
    # without eviction: every tracked frame adds one full output (same shapes on every frame)
    steps = {full_sizes[f + 1] - full_sizes[f] for f in range(NUM_FRAMES - 1)}
    assert len(steps) == 1 and full_sizes[-1] == full_sizes[0] + (NUM_FRAMES - 1) * steps.pop()
    assert len(full_bank.non_cond_frame_outputs) == NUM_FRAMES - 1
    # with eviction: only the newest frame keeps its high-res masks, few frames their memory (the newest,
    # the adjacent one, num_maskmem - 1 per stride class); the size stops growing (periodic with the
    # stride, constant at stride 1)
    entries = bank.non_cond_frame_outputs
    assert [t for t, out in entries.items() if out.pred_masks_high_res is not None] == [NUM_FRAMES - 1]
    period = CASES[name].get("r", 1)
    with_memory = sum(out.maskmem_features is not None for out in entries.values())
    assert with_memory <= period * (tracker.num_maskmem - 1) + 2
    assert kept_sizes[-1] < full_sizes[-1] / 4
    if not CASES[name].get("mixed_scores"):
        assert kept_sizes[-2 * period:] == kept_sizes[-3 * period:-period]


def test_eviction_under_memory_selection_drops_unselectable_and_old_frames(video_model, features):
    """Mixed scores: frames scoring <= mf_threshold are dropped (unless adjacent), and selectable ones
    beyond the max_obj_ptrs - 1 most recent of their stride class."""
    name = "selection, stride 2, small windows, mixed scores"
    tracker = variant(video_model.tracker, **CASES[name])
    outputs, _, bank = run(tracker, features, evicting=True)
    selectable = [f for f in range(1, NUM_FRAMES) if outputs[f].eff_iou_score > tracker.mf_threshold]
    assert 4 <= len(selectable) <= NUM_FRAMES - 5  # the case is mixed
    expected = {NUM_FRAMES - 1, NUM_FRAMES - 2}  # the last frame, its neighbour
    for residue in (0, 1):
        expected |= set([f for f in selectable if f % 2 == residue and f < NUM_FRAMES - 1][-3:])
    assert set(bank.non_cond_frame_outputs) == expected


def test_too_much_eviction_is_detected(video_model, features):
    """A memory window 2 frames short of the tracker's drops memory that is read: the test above can
    fail. (One short is not: evicting at the frame just stored keeps one more frame than needed to
    go on, for re-prompting.)"""
    tracker = video_model.tracker
    with pytest.raises(ValueError, match="has no memory"):
        run(tracker, features, evicting=True, num_maskmem=tracker.num_maskmem - 2)


def _out(score=None):
    t = torch.zeros(1, 1)
    return TrackStepOutput(None, None, t, t, t, t, t, eff_iou_score=None if score is None else torch.tensor(score),
                           maskmem_features=t, maskmem_pos_enc=[t])


def kept(bank):
    with_mem = sorted(t for t, out in bank.non_cond_frame_outputs.items() if out.maskmem_features is not None)
    return sorted(bank.non_cond_frame_outputs), with_mem


def test_evict_keeps_exactly_the_windows():
    def bank_of(frames, score=None):
        return MemoryBank({0: _out()}, {t: _out(score) for t in frames})

    bank = bank_of(range(1, 40))
    bank.evict(30, num_maskmem=7, max_obj_ptrs=16)
    assert kept(bank) == ([*range(15, 40)], [*range(24, 40)])  # frames >= 30 untouched
    assert list(bank.cond_frame_outputs) == [0]  # conditioning frames stay
    assert bank.non_cond_frame_outputs[20].pred_masks_high_res is None
    assert bank.non_cond_frame_outputs[30].pred_masks_high_res is not None
    bank = bank_of(range(1, 30))
    bank.evict(30, num_maskmem=7, max_obj_ptrs=4, r=2)  # every 2nd frame, and the adjacent one
    assert kept(bank) == ([20, 22, 24, 26, 27, 28, 29], [20, 22, 24, 26, 28, 29])
    bank = bank_of(range(11, 40))
    bank.evict(10, num_maskmem=7, max_obj_ptrs=16, track_in_reverse=True)
    assert kept(bank) == ([*range(11, 26)], [*range(11, 17)])
    # memory selection: the adjacent frame, and the most recent selectable frames, however old
    scores = {t: 0.5 if t in (2, 3, 5, 8, 13) else 0.0 for t in range(30)}
    bank = MemoryBank({}, {t: _out(s) for t, s in scores.items()})
    bank.evict(30, num_maskmem=3, max_obj_ptrs=4, mf_threshold=0.01)
    assert kept(bank) == ([5, 8, 13, 29], [8, 13, 29])


# ------------------------------------------------------------------------------------------------
# MaskPropagator
# ------------------------------------------------------------------------------------------------
def by_hand(tracker, features, reprompt):
    """The loop of the parity test: masks on frame 0 (and again on ``reprompt``), track_step on 1..8."""
    bank, outputs = MemoryBank(), {}
    with torch.inference_mode():
        for f in range(9):
            masks = first_masks()[:, None] if f == 0 else None
            out = tracker.track_step(frame_idx=f, is_init_cond_frame=f == 0, point_inputs=None, mask_inputs=masks,
                                     output_dict=bank, num_frames=NUM_FRAMES, **frame(features, f))
            bank.add(f, out, is_cond=f == 0)
            outputs[f] = out
            if f == reprompt:
                out = tracker.track_step(frame_idx=f, is_init_cond_frame=False, point_inputs=None,
                                         mask_inputs=first_masks().flip(-1)[:, None], output_dict=bank,
                                         num_frames=NUM_FRAMES, **frame(features, f))
                del bank.non_cond_frame_outputs[f]
                bank.add(f, out, is_cond=True)
                outputs[(f, "prompt")] = out
    return outputs


PROPAGATOR_CASES = {
    "official": {},
    # re-prompting frame 7 here needs what evicting at the frame just stored keeps (frame 4's pointer)
    "selection, small windows": {"num_maskmem": 3, "max_obj_ptrs": 4},
    "selection, stride 2, small windows, mixed scores": CASES["selection, stride 2, small windows, mixed scores"],
}


@pytest.mark.parametrize("name", list(PROPAGATOR_CASES))
def test_propagator_matches_track_step(video_model, backbone_out, features, name):
    tracker = variant(video_model.tracker, **PROPAGATOR_CASES[name])
    expected = by_hand(tracker, features, reprompt=7)
    prop = MaskPropagator(tracker, NUM_FRAMES)
    got = {0: prop.add_masks(0, first_masks(), frame_features(tracker, backbone_out, 0))}
    for f in range(1, 9):
        got[f] = prop.propagate(f, frame_features(tracker, backbone_out, f))
        if f == 7:  # re-prompting the frame just tracked (the official reconditioning)
            got[(f, "prompt")] = prop.add_masks(f, first_masks().flip(-1), frame_features(tracker, backbone_out, f))
    assert got.keys() == expected.keys()
    for key, masks in got.items():
        out = expected[key]
        assert torch.equal(masks.low_res_masks, out.pred_masks[:, 0]), key
        assert torch.equal(masks.high_res_masks, out.pred_masks_high_res[:, 0]), key
        assert torch.equal(masks.object_score_logits, out.object_score_logits[:, 0]), key
        assert torch.equal(masks.ious, out.ious), key
        assert all(torch.isfinite(t).all() for t in masks), key
        prompted = key == 0 or isinstance(key, tuple)
        assert masks.low_res_masks.shape == ((B, 72, 72) if prompted else (B, 64, 64))
        assert masks.high_res_masks.shape == ((B, 256, 256) if prompted else (B, 224, 224))
        assert masks.object_score_logits.shape == (B,) and masks.ious.shape == ((B, 1) if prompted else (B, 3))
    bank = prop.bank
    assert sorted(bank.cond_frame_outputs) == [0, 7] and 7 not in bank.non_cond_frame_outputs
    assert [t for t, out in bank.non_cond_frame_outputs.items() if out.pred_masks_high_res is not None] == [8]
    assert sum(out.maskmem_features is not None for out in bank.non_cond_frame_outputs.values()) <= tracker.num_maskmem
    assert len(bank.non_cond_frame_outputs) <= tracker.max_obj_ptrs_in_encoder
    if name != "official":
        assert len(bank.non_cond_frame_outputs) < 7  # small windows: old frames are gone


def test_propagator_resizes_mask_prompts(video_model, backbone_out):
    tracker = video_model.tracker
    feats = frame_features(tracker, backbone_out, 0)
    logits = torch.randn(B, 100, 120)
    prop = MaskPropagator(tracker, NUM_FRAMES)
    prop.add_masks(0, logits, feats)  # logits: bilinear to 256², then > 0 (the official video loop)
    expected = (F.interpolate(logits[:, None], size=(256, 256), mode="bilinear", align_corners=False) > 0).float()
    assert torch.equal(prop.bank.cond_frame_outputs[0].mask_inputs, expected)
    masks = logits > 0
    prop = MaskPropagator(tracker, NUM_FRAMES)
    out = prop.add_masks(0, masks, feats)  # bool: bilinear with antialiasing, soft (official add_new_mask)
    expected = F.interpolate(masks[:, None].float(), size=(256, 256), mode="bilinear", align_corners=False,
                             antialias=True)
    assert torch.equal(prop.bank.cond_frame_outputs[0].mask_inputs, expected)
    assert torch.equal(out.high_res_masks, expected[:, 0] * 20 - 10)


def test_propagator_errors(video_model, backbone_out):
    tracker = video_model.tracker
    feats = frame_features(tracker, backbone_out, 0)
    prop = MaskPropagator(tracker, NUM_FRAMES)
    with pytest.raises(InputError, match="no masks were added"):
        prop.propagate(1, feats)
    with pytest.raises(InputError, match=r"masks must be a \(B, H, W\) bool or float tensor, got shape \(2, 1, 8, 8\)"):
        prop.add_masks(0, torch.zeros(2, 1, 8, 8, dtype=torch.bool), feats)
    with pytest.raises(InputError, match=r"frame index must be an integer in \[0, 20\), got 20"):
        prop.add_masks(20, first_masks(), feats)
    prop.add_masks(0, first_masks(), feats)
    with pytest.raises(InputError, match="this group tracks 2 objects, got masks for 1"):
        prop.add_masks(0, first_masks()[:1], feats)
    prop.propagate(2, frame_features(tracker, backbone_out, 2))
    for f in (1, 2):
        with pytest.raises(InputError, match="frames go forward"):
            prop.propagate(f, feats)
    with pytest.raises(InputError, match="frames go forward"):
        prop.add_masks(1, first_masks(), feats)
    with pytest.raises(InputError, match="have batch 3, expected 1 or 2"):
        prop.propagate(3, frame_features(tracker, backbone_out, 3)._replace(
            vision_feats=[x.expand(-1, 3, -1) for x in frame_features(tracker, backbone_out, 3).vision_feats]))

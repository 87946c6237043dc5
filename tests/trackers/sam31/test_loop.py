"""SAM 3.1 loop behaviour beyond parity: memory stays flat on long clips without changing results; the object cap
is ours to set (no silent 16)."""

import contextlib
from unittest.mock import patch

import pytest
import torch

from sam3video.thresholds import Sam31LoopConfig
from sam3video.trackers.sam31.loop import MultiplexTrackerState, Sam31Loop
from tests.helpers import load_tool

check = load_tool("check_sam31_loop_parity")
LOW = Sam31LoopConfig(score_threshold_detection=0.14, new_det_thresh=0.15, det_nms_thresh=0.0,
                      masklet_confirmation_enable=False)


@pytest.fixture(scope="module")
def clip():
    """26 frames of the tiny SAM 3.1 model's detections and tracker features (seeded weights, smooth images)."""
    model = check.load_model(seed=0)
    g = torch.Generator().manual_seed(5)
    base = torch.nn.functional.interpolate(torch.randn(1, 3, 14, 14, generator=g), size=(224, 224), mode="bilinear")
    images = torch.cat([torch.roll(base, shifts=t, dims=-1) for t in range(26)]).clamp(-1, 1)
    return model, check.run_detector(model, {"images": images, "prompt": "shape"})


def run(model, frames, config, evict=True):
    """The loop over ``frames`` -> (loop, each frame's masks, bytes kept after each frame); ``evict`` False keeps
    every frame, as the official bank does."""
    loop = Sam31Loop(model.tracker.model, config, len(frames), (48, 64), memory_dtype=torch.float32)
    sizes, outputs = [], []
    keep_all = patch.object(MultiplexTrackerState, "evict", lambda self, *args, **kwargs: None)
    with keep_all if not evict else contextlib.nullcontext():
        for t, (probs, masks, boxes, features) in enumerate(frames):
            frame = loop.step(t, probs, masks, boxes, features)
            outputs.append({i: m.clone() for i, m in frame.masks.items()})
            sizes.append(sum(state.nbytes() for state in loop.states))
    return loop, outputs, sizes


def test_memory_stays_flat_and_results_do_not_change(clip):
    model, frames = clip
    loop, outputs, sizes = run(model, frames, LOW)
    assert len(loop.obj_ids) > 0
    assert max(sizes[20:]) <= 1.05 * max(sizes[16:20])  # flat once the windows (6 memories, 15 pointers) are full
    _, unbounded, grown = run(model, frames, LOW, evict=False)
    assert grown[-1] > 2 * sizes[-1]  # what the official bank would hold
    for ours, full in zip(outputs, unbounded, strict=True):
        assert ours.keys() == full.keys()
        assert all(torch.equal(ours[i], full[i]) for i in ours)


def test_the_object_cap_is_a_setting():
    """No cap by default (objects beyond 16 open new buckets and states); the official 16 when asked, keeping the
    highest-scoring new detections."""
    from sam3video.trackers.sam31.planning import PlanningState31, plan_frame, select_detections

    q = 20
    masks = torch.full((q, 64, 64), -5.0)
    for d in range(q):  # disjoint squares
        y, x = divmod(d, 5)
        masks[d, y * 12:y * 12 + 8, x * 12:x * 12 + 8] = 5.0
    probs = torch.linspace(0.7, 0.9, q)
    boxes = torch.tensor([[0.3, 0.3, 0.6, 0.6]]).repeat(q, 1)
    for limit, expected in ((-1, q), (16, 16)):
        config = Sam31LoopConfig(max_num_objects=limit)
        det = select_detections(probs, masks, boxes, config)
        plan, state = plan_frame(PlanningState31(), 0, det, torch.zeros(0, 64, 64), torch.zeros(0), config)
        assert len(state.obj_ids) == expected and plan.num_obj_dropped == q - expected
        kept = sorted(int(det.query[d]) for d in plan.new_det_fa_inds)
        assert kept == list(range(q - expected, q))  # the highest scores

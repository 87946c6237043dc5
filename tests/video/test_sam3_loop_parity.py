"""The official SAM 3 loop, end to end against the official code (sam3 0.1.4 ``Sam3VideoInference``:
``add_prompt`` on frame 0, then ``propagate_in_video``) on the tiny video model with random weights and
lowered thresholds, CPU fp32: tests/data/video_loop_parity (made by tools/make_video_loop_fixture.py,
see its README). Step by step: the detections kept, the propagated tracker masks, the planning
decisions (births, removals), the buckets, then the yielded outputs (same ids, masks IoU >= 0.99)."""

import dataclasses

import numpy as np
import pytest
import torch

from sam3video.model.build_video import build_video_model
from sam3video.model.geometry_encoders import prompt_from_boxes
from sam3video.thresholds import Sam3LoopConfig
from sam3video.video.detect import encode_prompts, run_frames, split_frames
from sam3video.video.sam3_loop import HotstartBuffer, LoopFrame, Sam3Loop
from sam3video.video.sam3_planning import select_detections
from sam3video.video.sam3_tracking import Sam3Tracking, frame_detections, tracker_features
from sam3video.video.session import Sam3Options
from tests.conftest import DATA

FIXTURE = DATA / "video_loop_parity" / "video_loop_parity.pt"


@pytest.fixture(scope="module")
def fixture():
    return torch.load(FIXTURE, weights_only=True)


@pytest.fixture(scope="module")
def model(fixture, parity_state_dict):
    model = build_video_model("tiny")
    state = {f"detector.{k}": v.float() if v.is_floating_point() else v for k, v in parity_state_dict.items()}
    tracker = torch.load(DATA / "tracker_parity" / "tracker_parity.pt", weights_only=True)["state_dict"]
    state.update({k: v.float() for k, v in tracker.items()})
    state.update({k: v.float() for k, v in fixture["sam2_convs"].items()})
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def loop_config(fixture) -> Sam3LoopConfig:
    names = {f.name for f in dataclasses.fields(Sam3LoopConfig)}
    return Sam3LoopConfig(**{k: v for k, v in fixture["config"].items() if k in names})


@pytest.fixture(scope="module")
def frames(fixture, model):
    """Per frame: (the prompt's ``FrameDetections``, the tracker features)."""
    images = fixture["images"].float()
    det = model.detector
    text = encode_prompts(det, [fixture["prompt"]])
    out = []
    for f in range(len(images)):
        outputs = run_frames(det, [f], {"img_batch_all_stages": images}, text, prompt_from_boxes([[]], det.device))
        backbone = outputs["prev_encoder_out"]["backbone_out"]
        features = tracker_features(model.tracker, backbone["sam2_backbone_out"], int(backbone["id_mapping"][f]))
        out.append((frame_detections(split_frames(outputs, 1)[0])[0], features))
    return out


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def test_every_tracker_setting_is_the_fixtures(fixture, model):
    t = model.tracker
    for key, value in fixture["config"].items():
        if key.startswith("tracker.") and hasattr(t, key.removeprefix("tracker.")):
            assert getattr(t, key.removeprefix("tracker.")) == value, key


def test_steps_match_the_official_loop(fixture, model, loop_config, frames):
    """Each official step (frame 0 twice, as add_prompt then propagate_in_video run it) reproduced."""
    video_size = (fixture["orig_height"], fixture["orig_width"])
    loop = Sam3Loop(model.tracker, loop_config, fixture["num_frames"], video_size, memory_dtype=torch.float32)
    for k, step in enumerate(fixture["steps"]):
        f = step["frame_idx"]
        dets, features = frames[f]
        prev_ids = list(loop.obj_ids)
        assert prev_ids == step["trk"]["obj_ids"], f"step {k}: tracked objects"
        # detections kept, in query order
        keep = select_detections(dets.probs, dets.masks, loop_config)
        torch.testing.assert_close(dets.probs[keep], step["det"]["scores"], atol=1e-5, rtol=0)
        assert torch.equal(dets.masks[keep] > 0, step["det"]["masks"].float() > 0), f"step {k}: detector masks"
        out = loop.step(f, dets, features)
        official = step["plan"]
        assert list(out.masks) == [*prev_ids, *official["new_det_obj_ids"]], f"step {k}: frame's objects"
        assert sorted(out.removed) == step["removed_obj_ids_so_far"], f"step {k}: hot-start removals"
        assert [b.obj_ids for b in loop.buckets] == step["buckets_after"], f"step {k}: buckets"
        assert loop.state.max_obj_id == step["max_obj_id_after"]
        for obj_id, score in step["obj_id_to_score"].items():
            assert loop.state.obj_id_to_score[int(obj_id)] == pytest.approx(float(score), abs=1e-5)
        assert dict(loop.state.obj_id_to_last_occluded) == {int(i): int(v) for i, v in
                                                           step["obj_id_to_last_occluded"].items()}
    assert len(fixture["steps"]) == fixture["num_frames"] + 1


def test_tracker_masks_match_step_by_step(fixture, model, loop_config, frames):
    """The propagated (hole-filled) tracker masks of every step: logits within 1e-3 where the official
    ones are stored, and the binary masks at IoU >= 0.99."""
    video_size = (fixture["orig_height"], fixture["orig_width"])
    loop = Sam3Loop(model.tracker, loop_config, fixture["num_frames"], video_size, memory_dtype=torch.float32)
    checked = 0
    for k, step in enumerate(fixture["steps"]):
        dets, features = frames[step["frame_idx"]]
        loop.step(step["frame_idx"], dets, features)
        ids, ours, scores = loop.last_propagation
        expected = step["trk"]["masks"].float()
        assert ids == step["trk"]["obj_ids"] and ours.shape == expected.shape
        for row in range(len(expected)):
            assert iou(ours[row] > 0, expected[row] > 0) >= 0.99, f"step {k} object {ids[row]}"
        close = expected.abs() > 1e-2  # the stored values are fp16 and may sit near 0
        torch.testing.assert_close(ours[close], expected[close], atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(scores, step["trk"]["obj_score_logits"], atol=1e-3, rtol=1e-4)
        checked += len(expected) > 0
    assert checked >= 8


def test_outputs_match_the_official_stream(fixture, model, loop_config, frames):
    """Sam3Tracking (the predictor's loop) yields the official frames: same objects (official id order,
    run-wide ids), detection scores, masks at IoU >= 0.99 and boxes."""
    height, width = fixture["orig_height"], fixture["orig_width"]
    tracking = Sam3Tracking(model.tracker, loop_config, 1, fixture["num_frames"], (height, width),
                            Sam3Options(memory_dtype="fp32"))
    ours = []
    for f, (dets, features) in enumerate(frames):
        ours += tracking.step(f, [dets], features)
        assert len(ours) == max(0, f + 2 - loop_config.hotstart_delay)
    ours += tracking.flush()
    assert [f for f, _ in ours] == fixture["yield_frame_order"]
    official_to_ours = {}
    for (f, got), expected in zip(ours, fixture["outputs"]):
        ids = expected["out_obj_ids"].tolist()
        ours_ids = [official_to_ours.setdefault(i, len(official_to_ours) + 1) for i in ids]
        assert got.tracker_id.tolist() == ours_ids, f"frame {f}"
        np.testing.assert_allclose(got.confidence, expected["out_probs"].numpy(), atol=1e-5)
        masks = np.unpackbits(expected["out_binary_masks_packed"].numpy(), axis=-1, count=width).astype(bool)
        for ours_mask, mask in zip(got.mask, masks):
            assert iou(torch.from_numpy(ours_mask), torch.from_numpy(mask)) >= 0.99, f"frame {f}"
        # official boxes: normalised xywh with inclusive maxima; ours: pixels, x1 / y1 exclusive
        boxes = expected["out_boxes_xywh"].numpy() * [width, height, width, height]
        official_xyxy = np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] + 1], axis=1)
        np.testing.assert_allclose(got.xyxy, official_xyxy, atol=1e-3)
    assert official_to_ours, "the official run shows objects"


def test_hotstart_buffer_matches_the_official_yield_schedule(fixture):
    buffer = HotstartBuffer(fixture["config"]["hotstart_delay"], (4, 4))
    after = []
    for k in range(1, len(fixture["steps"])):  # step 0 (add_prompt) is not streamed
        got = buffer.push(LoopFrame(k - 1, {}, {}, {}, frozenset(), frozenset()))
        after += [k] * len(got)
    after += [len(fixture["steps"]) - 1] * len(buffer.flush())
    assert after == fixture["yield_after_step"]

"""The official SAM 3 loop (trackers.sam3: loop, tracking) on the tiny video model with random weights:
hole filling, the hot-start output delay, bucket removal, bounded memory, several prompts, and
``--tracker sam3`` through ``VideoPredictor`` (streamed outputs, window ends after their frames)."""

import numpy as np
import pytest
import torch

from sam3video.errors import InputError
from sam3video.model.build_video import build_video_model
from sam3video.model.geometry_encoders import prompt_from_boxes
from sam3video.thresholds import Sam3LoopConfig
from sam3video.trackers.sam3.loop import (
    HotstartBuffer,
    LoopFrame,
    Sam3Loop,
    TrackerBucket,
    detector_probs,
    fill_holes_in_mask_scores,
    postprocess_frame,
)
from sam3video.trackers.sam3.tracking import Sam3Tracking, frame_detections, tracker_features
from sam3video.video.detect import encode_prompts, run_frames, split_frames
from sam3video.video.session import Sam3Options, TrackingConfig

# low enough that random weights give objects (the official defaults give none)
LOW = Sam3LoopConfig(score_threshold_detection=0.2, new_det_thresh=0.25, hotstart_delay=3, hotstart_unmatch_thresh=2,
                     hotstart_dup_thresh=2, recondition_every_nth_frame=3)
VIDEO_SIZE = (120, 160)


@pytest.fixture(scope="module")
def video_model():
    torch.manual_seed(0)
    return build_video_model("tiny").eval()


@pytest.fixture(scope="module")
def clip(video_model):
    """(detections per frame for 2 prompts, tracker features per frame) of 12 random frames."""
    torch.manual_seed(1)
    frames = torch.randn(12, 3, 224, 224) * 0.5
    det = video_model.detector
    text = encode_prompts(det, ["red circle", "dog"])
    out = []
    for f in range(len(frames)):
        outputs = run_frames(det, [f], {"img_batch_all_stages": frames}, text, prompt_from_boxes([[], []], det.device))
        backbone = outputs["prev_encoder_out"]["backbone_out"]
        features = tracker_features(video_model.tracker, backbone["sam2_backbone_out"], int(backbone["id_mapping"][f]))
        out.append((frame_detections(split_frames(outputs, 1)[0]), features))
    return out


def test_fill_holes_fills_small_holes_and_removes_small_specks():
    mask = torch.full((1, 1, 20, 20), -5.0)
    mask[0, 0, 2:12, 2:12] = 5.0
    mask[0, 0, 5:7, 5:7] = -5.0  # a 4-pixel hole: filled (logit 0.1)
    mask[0, 0, 16, 16] = 5.0  # a 1-pixel speck: removed (-0.1)
    mask[0, 0, 15:17, 2:12] = 5.0  # 20 pixels: more than max_area, kept
    out = fill_holes_in_mask_scores(mask, max_area=16)
    assert torch.all(out[0, 0, 5:7, 5:7] == 0.1)
    assert out[0, 0, 16, 16] == -0.1
    assert torch.all(out[0, 0, 15:17, 2:12] == 5.0)
    assert torch.equal(fill_holes_in_mask_scores(mask, max_area=0), mask)
    # 8-connectivity: a diagonal pair is one 2-pixel component, removed only if <= half the mask area
    tiny = torch.full((1, 1, 8, 8), -1.0)
    tiny[0, 0, 1, 1] = tiny[0, 0, 2, 2] = 1.0
    assert torch.all(fill_holes_in_mask_scores(tiny, max_area=16)[0, 0, 1:3, 1:3].diagonal() == 1.0)


def test_detector_probs_follow_the_official_clamps():
    logits = torch.tensor([-20.0, 0.0, 20.0])
    probs = detector_probs(logits, torch.tensor([20.0]))
    assert probs[1] == pytest.approx(0.5, abs=1e-6)
    assert probs[0] == pytest.approx(1e-3, rel=1e-3) and probs[2] == pytest.approx(0.999, rel=1e-4)


def frame(idx, ids, removed=(), suppressed=()):
    masks = {i: torch.ones(4, 4, dtype=torch.bool) for i in ids}
    return LoopFrame(idx, masks, {i: 0.9 for i in ids}, {i: 0.9 for i in ids}, frozenset(removed), frozenset(suppressed))


def test_hotstart_buffer_delays_and_hides_later_removals():
    buffer = HotstartBuffer(hotstart_delay=3, video_size=(4, 4))
    assert buffer.push(frame(0, [0, 1])) == []
    assert buffer.push(frame(1, [0, 1])) == []
    first = buffer.push(frame(2, [0, 1], removed={1}))  # removed on frame 2: hidden on frame 0 too
    assert [o.frame_idx for o in first] == [0] and first[0].obj_ids.tolist() == [0]
    rest = buffer.push(frame(3, [0], suppressed={0})) + buffer.flush()
    assert [o.frame_idx for o in rest] == [1, 2, 3]
    assert rest[-1].obj_ids.tolist() == []  # suppressed on its own frame
    no_delay = HotstartBuffer(hotstart_delay=0, video_size=(4, 4))
    assert no_delay.push(frame(0, [0], removed={0}))[0].obj_ids.tolist() == [0]  # officially not gathered


def test_output_ties_go_to_the_smallest_id_whatever_the_insertion_order():
    """The official output stage sorts ids, then an overlapped pixel goes to the highest tracker probability, the
    first (smallest id) on equal ones (probabilities of 1.0 are common: sigmoid of logits above ~17)."""
    a = torch.zeros(6, 8, dtype=torch.bool)
    a[1:5, 1:5] = True
    b = torch.zeros(6, 8, dtype=torch.bool)
    b[2:6, 3:8] = True
    frame = LoopFrame(0, {7: b, 3: a}, {7: 0.5, 3: 0.4}, {7: 1.0, 3: 1.0}, frozenset(), frozenset())
    out = postprocess_frame(frame, (), (6, 8))
    assert out.obj_ids.tolist() == [3, 7]
    shared = int((a & b).sum())
    assert shared == 6 and out.masks[0].sum() == 16 and out.masks[1].sum() == 20 - shared  # id 3 keeps them
    frame.tracker_scores[3] = 0.999  # a lower probability gives them away
    assert postprocess_frame(frame, (), (6, 8)).masks[1].sum() == 20


def test_loop_runs_and_its_memory_stays_bounded(video_model, clip):
    loop = Sam3Loop(video_model.tracker, LOW, num_frames=len(clip), video_size=VIDEO_SIZE, memory_dtype=torch.float32)
    num_maskmem = video_model.tracker.num_maskmem
    for f, (dets, features) in enumerate(clip):
        out = loop.step(f, dets[0], features)
        assert set(loop.state.obj_ids) <= set(out.masks)
        assert set(out.masks) - set(loop.state.obj_ids) <= set(out.removed)
        for mask in out.masks.values():
            assert mask.shape == VIDEO_SIZE and mask.dtype == torch.bool
        assert tuple(loop.obj_ids) == loop.state.obj_ids
        for bucket in loop.buckets:  # bounded: the memories a later frame can read, no high-res masks
            tracked = bucket.bank.non_cond_frame_outputs.values()
            assert sum(o.maskmem_features is not None for o in tracked) <= num_maskmem
            assert all(o.pred_masks_high_res is None for o in tracked)
            assert all(o.maskmem_features is None or o.maskmem_features.dtype == torch.float32 for o in tracked)
    assert loop.state.max_obj_id >= 1, "the low thresholds should give objects"


def test_bucket_remove_slices_every_frame(video_model, clip):
    _, features = clip[0]
    bucket = TrackerBucket(video_model.tracker, 10, VIDEO_SIZE)
    masks = torch.zeros(3, 256, 256, dtype=torch.bool)
    masks[0, 10:100, 10:100] = masks[1, 120:200, 30:90] = masks[2, 50:60, 150:250] = True
    bucket.add_masks(0, [4, 5, 6], masks, features)
    for f in (1, 2):
        low, scores = bucket.propagate(f, clip[f][1])
        assert low.shape == (3, 64, 64) and scores.shape == (3,)
        high = torch.nn.functional.interpolate(low[:, None], size=(256, 256), mode="bilinear")
        bucket.encode_memory(f, high, torch.full((3, 1), 10.0), clip[f][1])
    cond = bucket.bank.cond_frame_outputs[0]
    assert cond.maskmem_features.dtype == torch.bfloat16  # stored as officially
    bucket.remove(5)
    assert bucket.obj_ids == [4, 6]
    for out in [*bucket.bank.cond_frame_outputs.values(), *bucket.bank.non_cond_frame_outputs.values()]:
        assert out.pred_masks.shape[0] == 2 and out.obj_ptr.shape[0] == 2
        assert out.maskmem_features.shape[0] == 2 and out.eff_iou_score is not None
    assert 0 in bucket.bank.cond_frame_outputs  # objects 4 and 6 still have their prompt there
    bucket.remove(4)
    bucket.remove(6)
    assert len(bucket) == 0 and not bucket.bank.cond_frame_outputs


def test_several_prompts_get_run_wide_ids(video_model, clip):
    tracking = Sam3Tracking(video_model.tracker, LOW, 2, len(clip), VIDEO_SIZE, Sam3Options(memory_dtype="fp32"))
    outputs = []
    for f, (dets, features) in enumerate(clip):
        outputs += tracking.step(f, dets, features)
        assert len(outputs) == max(0, f - LOW.hotstart_delay + 2)
    outputs += tracking.flush()
    assert [f for f, _ in outputs] == list(range(len(clip)))
    seen = {}
    for _, dets in outputs:
        assert dets.mask.shape[1:] == VIDEO_SIZE
        for prompt in (0, 1):
            assert not (dets.mask[dets.class_id == prompt].sum(0) > 1).any(), "a prompt's objects never overlap"
        for tid, cid in zip(dets.tracker_id, dets.class_id):
            assert seen.setdefault(int(tid), int(cid)) == cid, "an id never changes prompt"
    assert seen and sorted(seen) == list(range(1, len(seen) + 1))


def test_predictor_streams_the_official_loop(video_model):
    from sam3video.video.predictor import VideoPredictor

    config = TrackingConfig(tracker_name="sam3", sam3=LOW)
    predictor = VideoPredictor(video_model, config)
    video = (np.random.default_rng(0).random((10, *VIDEO_SIZE, 3)) * 255).astype(np.uint8)
    events = []
    for result in predictor.track(video, prompts=["red circle"], source_fps=5, window_seconds=1.0,
                                  on_window_end=lambda w: events.append(("end", w))):
        events.append(("frame", result.frame_index))
        assert result.detections.tracker_id is not None and result.candidates is not None
        assert result.image.shape == (*VIDEO_SIZE, 3)
    frames = [e[1] for e in events if e[0] == "frame"]
    assert frames == list(range(10))
    # window 0 (frames 0-4) ends only after frame 4 was given out, window 1 at the end
    assert events.index(("end", 0)) == events.index(("frame", 4)) + 1 and events[-1] == ("end", 1)


def test_sam3_tracker_needs_tracker_weights(video_model):
    from sam3video.video.predictor import VideoPredictor

    with pytest.raises(InputError, match="tracker weights"):
        VideoPredictor(video_model.detector, TrackingConfig(tracker_name="sam3"))
    with pytest.raises(InputError, match="memory_dtype"):
        Sam3Options(memory_dtype="fp8")


def test_exemplar_box_starts_an_object_whatever_its_score(video_model, clip):
    """Official thresholds: random weights detect nothing; the query under a positive exemplar box on
    frame 3 still starts an object there (not official: exemplar conditioning)."""
    loop = Sam3Loop(video_model.tracker, Sam3LoopConfig(), num_frames=len(clip), video_size=VIDEO_SIZE)
    for f in range(3):
        loop.step(f, clip[f][0][0], clip[f][1])
    assert loop.state.max_obj_id == -1
    dets, features = clip[3][0][0], clip[3][1]
    query = int(dets.probs.argmax())
    out = loop.step(3, dets, features, exemplar_queries=(query,))
    assert loop.state.obj_ids == (0,) and loop.state.obj_first_frame_idx[0] == 3
    assert out.scores[0] == pytest.approx(float(dets.probs[query]), abs=1e-6) and out.scores[0] < 0.5
    assert loop.state.exemplar_obj_ids == {0}


def test_hotstart_never_removes_an_exemplar_object(video_model, clip):
    """With a short hot-start, objects born from detections are removed once unmatched (the low
    thresholds of LOW); the one a positive exemplar started stays."""
    loop = Sam3Loop(video_model.tracker, LOW, num_frames=len(clip), video_size=VIDEO_SIZE)
    dets, features = clip[0][0][0], clip[0][1]
    exemplar_query = int(dets.probs.argmin())  # the weakest query: below every threshold
    loop.step(0, dets, features, exemplar_queries=(exemplar_query,))
    protected = set(loop.state.exemplar_obj_ids)
    assert len(protected) == 1
    for f in range(1, len(clip)):
        loop.step(f, clip[f][0][0], clip[f][1])
    assert loop.state.removed_obj_ids, "others are removed by hot-start"
    assert not protected & loop.state.removed_obj_ids and protected <= set(loop.state.obj_ids)


def test_predictor_conditions_the_tracker_on_exemplars(video_model):
    from dataclasses import replace

    from sam3video.trackers.association.exemplars import Exemplar
    from sam3video.video.predictor import VideoPredictor

    video = (np.random.default_rng(0).random((6, *VIDEO_SIZE, 3)) * 255).astype(np.uint8)
    exemplar = Exemplar(frame=2, box=(20.0, 20.0, 90.0, 80.0))
    config = TrackingConfig(tracker_name="sam3", sam3=Sam3LoopConfig(hotstart_delay=2, hotstart_unmatch_thresh=2,
                                                                       hotstart_dup_thresh=2))
    born = {}
    for result in VideoPredictor(video_model, config).track(video, prompts=["dog"], exemplars=[exemplar],
                                                             source_fps=5):
        for tid in result.detections.tracker_id:
            born.setdefault(int(tid), result.frame_index)
    assert born and min(born.values()) == 2
    official = replace(config, sam3_options=Sam3Options(exemplar_conditioning=False))
    results = list(VideoPredictor(video_model, official).track(video, prompts=["dog"], exemplars=[exemplar],
                                                                source_fps=5))
    assert all(len(r.detections) == 0 for r in results)  # random scores never reach the official 0.5


@pytest.mark.parametrize("seed", range(6))
def test_exclusive_masks_equal_the_official_non_overlap_step(seed):
    """``exclusive_masks`` (one boolean pass per object) against the official float formula
    (``apply_object_wise_non_overlapping_constraints`` with background 0) on random overlapping masks, with tied
    scores and a zero score among them."""
    from sam3video.trackers.sam3.loop import exclusive_masks
    from sam3video.trackers.sam3.planning import apply_object_wise_non_overlapping_constraints

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    masks = rng.random((n, 37, 53)) < rng.uniform(0.2, 0.8)
    scores = rng.choice(np.array([0.0, 0.3, 0.3, 0.55, 0.9, 0.91], np.float32), size=n)
    official = apply_object_wise_non_overlapping_constraints(torch.from_numpy(masks)[:, None].float(),
                                                             torch.from_numpy(scores)[:, None], background_value=0)
    assert np.array_equal(exclusive_masks(masks, scores), official[:, 0].numpy() > 0)

"""The frame loop: one backbone pass per frame for all prompts, text once per run, windows that keep ids."""

import copy

import numpy as np
import pytest
import torch

from sam3video.detections import Detections
from sam3video.sources.cache import LazyFrames
from sam3video.trackers.association.exemplars import Exemplar
from sam3video.trackers.association.tracker import TrackerConfig
from sam3video.video import predictor as predictor_module
from sam3video.video.predictor import TrackingConfig, VideoPredictor

FRAMES = np.random.default_rng(0).integers(0, 255, size=(20, 48, 64, 3), dtype=np.uint8)
SHORT = TrackingConfig(tracker=TrackerConfig(min_hits=3))  # clips of 6-8 frames: 3 hits confirm a track


class CallCounter:
    def __init__(self, fn):
        self.fn, self.calls, self.batch_sizes = fn, 0, []

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if args and torch.is_tensor(args[0]):
            self.batch_sizes.append(len(args[0]))
        return self.fn(*args, **kwargs)


def test_backbone_once_per_frame_and_text_once_per_run(tiny_model, monkeypatch):
    image_calls = CallCounter(tiny_model.backbone.forward_image)
    text_calls = CallCounter(tiny_model.backbone.forward_text)
    monkeypatch.setattr(tiny_model.backbone, "forward_image", image_calls)
    monkeypatch.setattr(tiny_model.backbone, "forward_text", text_calls)
    results = list(VideoPredictor(tiny_model).track(FRAMES[:6], prompts=["dog", "cat", "red circle"]))
    assert [r.frame_index for r in results] == list(range(6))
    assert image_calls.batch_sizes == [4, 2]  # frames in batches of 4, each frame once
    assert text_calls.calls == 1


def moving_box_detections(frame_index: int, frame_size) -> Detections:
    """One object moving right 2 px a frame, confidently detected."""
    height, width = frame_size
    x0 = 4 + 2 * frame_index
    mask = np.zeros((1, height, width), bool)
    mask[0, 10:30, x0:x0 + 16] = True
    return Detections(xyxy=[[x0, 10, x0 + 16, 30]], confidence=[0.9], class_id=[0], mask=mask,
                      data={"embedding": np.ones((1, 8), np.float32) / np.sqrt(8)})


def test_ids_carry_across_window_boundaries(tiny_model, monkeypatch):
    seen = []

    def scripted(outputs, frame_size, config, features=None):
        seen.append(len(seen))
        return moving_box_detections(seen[-1], frame_size)

    monkeypatch.setattr(predictor_module, "postprocess", scripted)
    predictor = VideoPredictor(tiny_model)
    session = predictor.start_session(["dog"], fps=10)
    results = list(predictor.track(FRAMES, window_seconds=0.5, source_fps=10, session=session))
    assert sorted({r.window for r in results}) == [0, 1, 2, 3]  # 20 frames at 10 fps, 0.5 s windows
    assert [r.frame_index for r in results] == list(range(20))
    ids = [r.detections.tracker_id.tolist() for r in results]
    # confirmed on frame 8 (9 hits), back-filled within its window (frames 5-9): window 0 was written before
    assert ids[:5] == [[]] * 5
    assert all(i == [1] for i in ids[5:])


def test_negative_exemplar_suppresses_what_it_marks(tiny_model, monkeypatch):
    """A negative exemplar on frame 4 leaves a prototype that removes look-alikes on later frames."""
    calls = []

    def scripted(outputs, frame_size, config, features=None):
        calls.append(1)
        return moving_box_detections(0, frame_size)  # a still object

    monkeypatch.setattr(predictor_module, "postprocess", scripted)
    predictor = VideoPredictor(tiny_model, SHORT)
    exemplar = Exemplar(frame=4, box=(4, 10, 20, 30), positive=False)
    session = predictor.start_session(["dog"], [exemplar], fps=10)
    results = list(predictor.track(FRAMES[:8], session=session))
    counts = [len(r.detections) for r in results]
    assert counts == [1, 1, 1, 1, 0, 0, 0, 0]  # confirmed at frame 2 (back-filled), suppressed from frame 4 on
    assert [p.positive for p in session.exemplars.prototypes] == [False]


@pytest.mark.parametrize("carry", [False, True])
def test_positive_exemplar_box_goes_to_the_model_on_its_frame_and_follows_its_track_if_carried(
        tiny_model, monkeypatch, carry):
    from sam3video.trackers.association.exemplars import ExemplarConfig

    boxes_seen, postprocessed = [], []
    real = predictor_module.prompt_from_boxes

    def spy(boxes, device=None):
        boxes_seen.extend(len(b) for b in boxes)  # one entry per (frame, prompt) of the model call
        return real(boxes, device)

    def scripted(outputs, size, config, features=None):
        postprocessed.append(1)
        return moving_box_detections(len(postprocessed), size)

    monkeypatch.setattr(predictor_module, "prompt_from_boxes", spy)
    monkeypatch.setattr(predictor_module, "postprocess", scripted)
    predictor = VideoPredictor(tiny_model, TrackingConfig(tracker=SHORT.tracker, exemplar=ExemplarConfig(carry_boxes=carry)))
    exemplar = Exemplar(frame=3, box=(10, 10, 26, 30), positive=True)
    list(predictor.track(FRAMES[:8], prompts=["dog"], exemplars=[exemplar]))
    # frames 0-2: no box; frame 3: the exemplar (then a text-only pass); later frames: the carried box or
    # none. Carrying makes frames go one at a time; without, 4 at a time.
    assert boxes_seen[:4] == [0, 0, 0, 1] and boxes_seen[-4:] == [int(carry)] * 4 and len(boxes_seen) == 9


def test_exemplars_give_the_same_results_batched_as_frame_by_frame(tiny_model):
    """Without carried boxes exemplar runs use frame batches and overlap; that changes no result."""
    exemplars = [Exemplar(2, (4, 4, 30, 30), True), Exemplar(2, (30, 10, 60, 40), False),
                 Exemplar(5, (10, 20, 40, 46), True)]
    runs = []
    for batch, overlap in ((1, False), (4, True)):
        config = TrackingConfig.at_score_threshold(0.0, 0.0, frame_batch=batch, overlap=overlap)
        runs.append(list(VideoPredictor(tiny_model, config).track(FRAMES[:9], ["dog", "cat"], exemplars)))
    assert len(runs[0]) == len(runs[1]) == 9
    assert sum(len(r.candidates) for r in runs[0]) > 100 and sum(len(r.detections) for r in runs[0]) > 10
    for one, batched in zip(*runs):
        assert one.frame_index == batched.frame_index
        np.testing.assert_allclose(one.candidates.confidence, batched.candidates.confidence, atol=1e-4)
        np.testing.assert_allclose(one.candidates.xyxy, batched.candidates.xyxy, atol=1e-2)
        assert one.detections.tracker_id.tolist() == batched.detections.tracker_id.tolist()


def test_lazy_frames_keep_a_bounded_window():
    produced = []

    def frames():
        for i in range(100):
            produced.append(i)
            yield i

    lazy = LazyFrames(frames(), lambda i: torch.full((1,), float(i)), capacity=3, lookahead=2)
    assert lazy[0].item() == 0 and lazy[5].item() == 5
    assert len(produced) <= 5 + 1 + 2 + 1  # decoded up to 5 plus the look-ahead
    with pytest.raises(IndexError, match="evicted"):
        lazy[1]
    assert lazy[99].item() == 99
    with pytest.raises(IndexError, match="ended"):
        lazy[100]
    lazy.close()


def test_lazy_frames_reraise_decoder_errors():
    def broken():
        yield 0
        raise ValueError("corrupt frame")

    lazy = LazyFrames(broken(), lambda i: torch.zeros(1))
    lazy[0]
    with pytest.raises(ValueError, match="corrupt frame"):
        lazy[1]


def test_tracking_config_defaults_are_consistent():
    from sam3video.thresholds import new_track_threshold

    config = TrackingConfig()
    assert config.detection.score_threshold == config.tracker.box_only_low_score  # box-only second-pass floor
    assert config.detection.low_score_threshold == config.tracker.low_score_threshold
    assert config.tracker.high_score_threshold == config.tracker.new_track_threshold == new_track_threshold(
        config.detection.score_threshold)


@pytest.mark.parametrize("precision", ["bf16"])
def test_reduced_precision_runs_and_stays_close(tiny_model, precision):
    """bf16 on the CPU: same number of frames, scores close to fp32 (random weights)."""
    from sam3video.video.detect import DetectionConfig

    detection = DetectionConfig(score_threshold=0.0, low_score_threshold=0.0)
    runs = {}
    for p in ("fp32", precision):  # the predictor converts its model in place: a copy each
        predictor = VideoPredictor(copy.deepcopy(tiny_model), TrackingConfig(precision=p, detection=detection))
        runs[p] = [r.candidates for r in predictor.track(FRAMES[:2], prompts=["dog"])]
    assert len(runs["fp32"]) == len(runs[precision]) == 2
    for full, reduced in zip(runs["fp32"], runs[precision], strict=True):
        assert len(full) == len(reduced) >= 3  # every query is a candidate at threshold 0
        top_full, top_reduced = np.sort(full.confidence)[-3:], np.sort(reduced.confidence)[-3:]
        assert np.abs(top_full - top_reduced).max() < 0.05


def test_unknown_precision_is_bad_input():
    from sam3video.errors import InputError

    with pytest.raises(InputError, match="precision"):
        TrackingConfig(precision="fp8")


def test_positive_exemplar_on_a_tentative_object_attaches_once_reported(tiny_model, monkeypatch):
    frames_seen = []

    def scripted(outputs, size, config, features=None):
        frames_seen.append(1)
        return moving_box_detections(len(frames_seen) - 1, size)

    monkeypatch.setattr(predictor_module, "postprocess", scripted)
    predictor = VideoPredictor(tiny_model, SHORT)
    exemplar = Exemplar(frame=0, box=(4, 10, 20, 30), positive=True)  # frame 0: the track is tentative
    session = predictor.start_session(["dog"], [exemplar], fps=10)
    list(predictor.track(FRAMES[:6], session=session))
    assert [p.track_id for p in session.exemplars.prototypes] == [1]


def test_clean_mask_removes_specks_and_fills_small_holes_only():
    from sam3video.video.detect import _clean_mask

    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True
    mask[10:12, 10:12] = False  # small hole: filled
    mask[14:22, 14:22] = False  # large hole: kept
    mask[30, 30] = True  # speck: removed
    mask[0:3, 35:40] = True  # small component on the border: removed too (area 15 < 20)
    out = _clean_mask(mask, min_area=20, max_hole=10)
    assert out[10:12, 10:12].all() and not out[14:22, 14:22].any()
    assert not out[30, 30] and not out[0:3, 35:40].any()
    assert out[5:10, 5:25].all()
    background_touching_border = np.zeros((10, 10), bool)
    background_touching_border[2:8, 0:8] = True
    background_touching_border[4:6, 0:3] = False  # a notch open to the border is not a hole
    assert not _clean_mask(background_touching_border, 0, 50)[4:6, 0:3].any()


def test_batched_overlapped_detection_gives_the_same_results_as_one_frame_at_a_time(tiny_model):
    """Without exemplars the model runs on 4 frames at once in a worker thread while earlier frames are
    post-processed; the stream must equal one frame at a time, one step after the other (frames,
    candidates, ids), across a window boundary and a last, partial batch."""
    from sam3video.video.detect import DetectionConfig

    detection = DetectionConfig(score_threshold=0.0, low_score_threshold=0.0)
    configs = {"batched": TrackingConfig(detection=detection),
               "one by one": TrackingConfig(frame_batch=1, overlap=False, detection=detection)}
    runs = {}
    for name, config in configs.items():
        predictor = VideoPredictor(tiny_model, config)
        runs[name] = list(predictor.track(FRAMES[:11], prompts=["dog", "cat"], window_seconds=0.6, source_fps=10))
    assert VideoPredictor(tiny_model, configs["batched"]).frame_batch == 4
    batched, single = runs["batched"], runs["one by one"]
    assert [r.frame_index for r in batched] == [r.frame_index for r in single] == list(range(11))
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.candidates.confidence, b.candidates.confidence, atol=1e-5)
        assert (a.candidates.mask != b.candidates.mask).mean() < 1e-3  # pixels at logit ~0 may flip
        np.testing.assert_array_equal(a.detections.tracker_id, b.detections.tracker_id)


def test_a_frame_batch_larger_than_the_frame_cache_works(tiny_model):
    config = TrackingConfig(frame_batch=6, frame_cache=2)
    results = list(VideoPredictor(tiny_model, config).track(FRAMES[:8], prompts=["dog"]))
    assert [r.frame_index for r in results] == list(range(8))


def test_errors_in_the_detection_thread_reach_the_caller(tiny_model, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("model failed")

    monkeypatch.setattr(predictor_module, "run_frames", broken)
    with pytest.raises(RuntimeError, match="model failed"):
        list(VideoPredictor(tiny_model).track(FRAMES[:3], prompts=["dog"]))

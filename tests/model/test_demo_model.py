"""The shipped demo model finds the prompted shapes on fixed generated frames and nothing for other words.

Frames come from clips with seeds no training run draws (training samples clip seeds from its own
generator; these are fixed here). Prompts: every colour + shape prompt with an instance on the frame.
A detection (score at or above the model's calibrated threshold, 0.5) is a true positive when it
matches a ground-truth box at IoU >= 0.5 (one-to-one, Hungarian). The bars sit below what the shipped
weights measure (``MEASURED``: step 79000), so a regression in the model code or the weights fails them.
"""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from sam3video import load_model
from sam3video.data.concepts import PROMPTS
from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.processor import Sam3Processor
from sam3video.trackers.association.matching import box_iou

SEEDS = range(3_000_000_000, 3_000_000_012)
FRAME = 15
# 36 of 41 detections right, 50 instances (step 56998: 0.800 / 0.720; step 37000: 0.763 / 0.580;
# step 20200: 0.846 / 0.660, 33 of 39)
MEASURED = {"precision": 0.878, "recall": 0.720}
PRECISION_BAR = 0.7
RECALL_BAR = 0.6
UNKNOWN = ["dog", "person", "car"]
# recall of shape prompts on the same frames turned gray (15 of 60 instances; in colour 0.667), and of
# colour + shape prompts on portrait 360x640 frames (29 of 50); step 56998: gray 0.267 (colour 0.633),
# portrait 0.460; step 37000: gray 0.167 (colour 0.450), portrait 0.400; step 20200: gray 0.0 (colour 0.567)
MEASURED_ROBUST = {"gray_recall": 0.250, "portrait_recall": 0.580}
GRAY_RECALL_BAR = 0.2
PORTRAIT_RECALL_BAR = 0.45


@pytest.fixture(scope="module")
def frames():
    return [generate_clip(seed, WorldConfig(duration_s=1.0)).frame(FRAME) for seed in SEEDS]


@pytest.fixture(scope="module")
def processor():
    return Sam3Processor(load_model(device="cpu"))  # at the calibrated threshold


def matches(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> int:
    if len(pred) == 0 or len(gt) == 0:
        return 0
    iou = box_iou(pred, gt)
    rows, cols = linear_sum_assignment(-iou)
    return int((iou[rows, cols] >= threshold).sum())


def test_demo_model_detects_the_prompted_colour_and_shape(frames, processor):
    tp = detections = instances = 0
    for image, truth in frames:
        state = processor.set_image(image)
        for prompt in (p for p in PROMPTS if " " in p and truth.matching(p)):
            found = processor.set_text_prompt(prompt, state)["boxes"].numpy()
            gt = np.array([o.box for o in truth.matching(prompt)], np.float32)
            tp += matches(found, gt)
            detections += len(found)
            instances += len(gt)
    precision, recall = tp / max(detections, 1), tp / instances
    print(f"precision {precision:.3f} recall {recall:.3f} ({tp} of {detections} detections, {instances} instances)")
    assert instances >= 30
    assert precision >= PRECISION_BAR and recall >= RECALL_BAR


def test_demo_model_finds_nothing_for_words_outside_its_world(frames, processor):
    for image, _ in frames[:4]:
        state = processor.set_image(image)
        for word in UNKNOWN:
            assert len(processor.set_text_prompt(word, state)["boxes"]) == 0, word


def recall(processor, frames, coloured: bool) -> tuple[float, int]:
    """Recall over every colour + shape (``coloured``) or shape-only prompt with an instance on each
    frame, and the instance count."""
    tp = instances = 0
    for image, truth in frames:
        state = processor.set_image(image)
        for prompt in (p for p in PROMPTS if (" " in p) == coloured and truth.matching(p)):
            gt = np.array([o.box for o in truth.matching(prompt)], np.float32)
            tp += matches(processor.set_text_prompt(prompt, state)["boxes"].numpy(), gt)
            instances += len(gt)
    return tp / max(instances, 1), instances


def test_demo_model_finds_shapes_on_gray_frames(frames, processor):
    """The same frames as a gray camera sees them (R = G = B): shape prompts still find the shapes."""
    from sam3video.data.effects import gray_frame

    gray, instances = recall(processor, [(gray_frame(image), truth) for image, truth in frames], coloured=False)
    colour, _ = recall(processor, frames, coloured=False)
    print(f"shape-prompt recall: gray {gray:.3f}, colour {colour:.3f} ({instances} instances)")
    assert instances >= 30 and gray >= GRAY_RECALL_BAR


def test_demo_model_finds_objects_in_portrait_frames(processor):
    """Portrait 360x640 frames (squeezed to the model's square input): colour + shape prompts still find
    their objects."""
    config = WorldConfig(width=360, height=640, duration_s=1.0, radius_px=(18.0, 45.0))
    portrait, instances = recall(processor, [generate_clip(seed, config).frame(FRAME) for seed in SEEDS], coloured=True)
    print(f"portrait recall {portrait:.3f} ({instances} instances)")
    assert instances >= 30 and portrait >= PORTRAIT_RECALL_BAR

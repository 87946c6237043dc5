"""With the shipped demo model, exemplars narrow an ambiguous prompt to the intended objects.

Clips where a shape prompt ("circle") matches objects of two colours; the intended concept is one colour
(``ambiguous_case``: one positive box on an object of that colour, one negative on another, same frame).
Seeds no training run draws. A reported box is right when it matches an intended object (IoU >= 0.5,
one-to-one per frame). Bars below what the shipped weights measure (``MEASURED``).
"""

import numpy as np
import pytest

from sam3video import load_model
from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.eval.benchmark import ambiguous_case
from sam3video.video.predictor import VideoPredictor
from tests.model.test_demo_model import matches

FIRST_SEED = 3_100_000_000
CLIPS = 3
# shipped weights (step 79000), defaults: text only 0.314 / 0.804, with exemplars 0.721 / 0.804 (step 56998:
# 0.270 / 0.778 and 0.562 / 0.737; step 37000: 0.290 / 0.730 and 0.618 / 0.670; step 20200: 0.343 / 0.815 and
# 0.901 / 0.778; on the benchmark's 20-clip exemplar line the four give +14.6, +13.0, +13.2 and +10.6 HOTA)
MEASURED = {"text": {"precision": 0.314, "recall": 0.804}, "exemplars": {"precision": 0.721, "recall": 0.804}}
PRECISION_BAR, RECALL_BAR = 0.6, 0.6  # with exemplars
PRECISION_RISE = 0.3  # precision with exemplars over the text alone


@pytest.fixture(scope="module")
def cases():
    found, seed = [], FIRST_SEED
    while len(found) < CLIPS:
        clip = generate_clip(seed, WorldConfig(duration_s=3.0))
        case = ambiguous_case(clip)
        if case is not None:
            found.append((clip, case))
        seed += 1
    return found


def precision_recall(predictor, cases, with_exemplars: bool) -> tuple[float, float]:
    right = reported = instances = 0
    for clip, (shape, intended, positive, negative) in cases:
        frames = np.stack([clip.image(t) for t in range(clip.num_frames)])
        exemplars = [positive, negative] if with_exemplars else []
        for result in predictor.track(frames, [shape], exemplars, source_fps=clip.fps):
            truth = clip.frame(result.frame_index)[1]
            gt = np.array([o.box for o in truth.matching(intended)], np.float32).reshape(-1, 4)
            right += matches(result.detections.xyxy, gt)
            reported += len(result.detections)
            instances += len(gt)
    return right / max(reported, 1), right / max(instances, 1)


def test_exemplars_keep_the_intended_colour_and_drop_the_other(cases):
    predictor = VideoPredictor(load_model(device="cpu"))
    text = precision_recall(predictor, cases, with_exemplars=False)
    exemplars = precision_recall(predictor, cases, with_exemplars=True)
    print(f"text only: precision {text[0]:.3f} recall {text[1]:.3f}; "
          f"with exemplars: precision {exemplars[0]:.3f} recall {exemplars[1]:.3f}")
    assert exemplars[0] >= PRECISION_BAR and exemplars[0] >= text[0] + PRECISION_RISE
    assert exemplars[1] >= RECALL_BAR

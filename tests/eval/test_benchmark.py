"""The benchmark's baselines: no tracker (a new id per detection) and greedy frame-to-frame IoU."""

import numpy as np

from sam3video.detections import Detections
from sam3video.eval.benchmark import clip_prompts, greedy_iou_tracker, no_tracker


def frame(boxes, scores, classes=None):
    classes = classes if classes is not None else [0] * len(boxes)
    return Detections(xyxy=np.array(boxes, np.float32).reshape(-1, 4), confidence=scores, class_id=classes)


FRAMES = [
    frame([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.9]),
    frame([[2, 0, 12, 10], [50, 52, 60, 62], [80, 80, 90, 90]], [0.9, 0.9, 0.2]),
    frame([[4, 0, 14, 10]], [0.9]),
]


def test_no_tracker_gives_every_detection_a_new_id():
    out = no_tracker(FRAMES, score_threshold=0.5)
    assert [d.tracker_id.tolist() for d in out] == [[1, 2], [3, 4], [5]]


def test_greedy_iou_follows_overlapping_boxes():
    out = greedy_iou_tracker(FRAMES, score_threshold=0.5)
    assert [d.tracker_id.tolist() for d in out] == [[1, 2], [1, 2], [1]]


def test_greedy_iou_never_matches_across_classes():
    frames = [frame([[0, 0, 10, 10]], [0.9], [0]), frame([[0, 0, 10, 10]], [0.9], [1])]
    assert [d.tracker_id.tolist() for d in greedy_iou_tracker(frames, 0.5)] == [[1], [2]]


def test_clip_prompts_are_colour_and_shape_concepts_present():
    from sam3video.data.synthetic import generate_clip

    clip = generate_clip(0)
    prompts = clip_prompts(clip)
    assert prompts and all(" " in p for p in prompts)
    assert all(clip.objects_matching(p) for p in prompts)


def test_ambiguous_case_marks_two_colours_of_one_shape():
    from sam3video.data.synthetic import WorldConfig, generate_clip
    from sam3video.eval.benchmark import ambiguous_case

    for seed in range(30):
        clip = generate_clip(seed, WorldConfig(duration_s=1.0))
        case = ambiguous_case(clip)
        if case is not None:
            break
    shape, intended, positive, negative = case
    assert intended.endswith(shape) and positive.frame == negative.frame
    truth = clip.frame(positive.frame)[1]
    by_box = {tuple(map(float, o.box)): o for o in truth.objects}
    assert by_box[positive.box].colour == intended.split()[0] and by_box[positive.box].shape == shape
    assert by_box[negative.box].colour != intended.split()[0] and by_box[negative.box].shape == shape

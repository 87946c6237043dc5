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
    from sam3video.data.clips import generate_clip

    clip = generate_clip(0)
    prompts = clip_prompts(clip)
    assert prompts and all(" " in p for p in prompts)
    assert all(clip.objects_matching(p) for p in prompts)


def test_ambiguous_case_marks_two_colours_of_one_shape():
    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip
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


def test_recall_by_size_buckets_boxes_by_their_size_at_the_model_input(tmp_path):
    """A 200x100 frame resized to 224x224: x scales by 1.12, y by 2.24. A 10x5 box is 11.2 x 11.2 px at
    the input (under one 14 px patch), 20x10 is 22.4 px (1-2 patches), 40x20 is 44.8 px (>= 2). The
    first and last are reported (IoU >= 0.5), the middle one is not."""
    from sam3video.eval.benchmark import recall_by_size

    gt, pred = tmp_path / "gt.txt", tmp_path / "pred.txt"
    gt.write_text("1,1,0,0,10,5,1,1,1\n1,2,50,50,20,10,1,1,1\n2,3,100,0,40,20,1,1,1\n")
    pred.write_text("1,7,0,0,10,5,0.9,-1,-1,-1\n1,8,150,80,20,10,0.9,-1,-1,-1\n2,9,102,1,40,20,0.9,-1,-1,-1\n")
    result = recall_by_size([(gt, pred, (200, 100))], resolution=224, patch_size=14)
    counts = {label: cell["gt"] for label, cell in result.items()}
    assert counts == {"< 1 patch": 1, "1-2 patches": 1, ">= 2 patches": 1}
    assert [cell["recall"] for cell in result.values()] == [1.0, 0.0, 1.0]
    # The same boxes in a square 100x100 frame: 10x5 is 15.8 px at the input, no longer under one patch.
    assert recall_by_size([(gt, pred, (100, 100))], 224, 14)["< 1 patch"] == {"gt": 0, "recall": None}

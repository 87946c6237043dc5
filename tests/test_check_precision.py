"""tools/check_precision.py: the per-frame comparison of a precision mode's detections with fp32's."""

import importlib.util
from pathlib import Path

import numpy as np

from sam3video.detections import Detections

TOOL = Path(__file__).resolve().parents[1] / "tools" / "check_precision.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("check_precision", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def detections(boxes, scores, classes) -> Detections:
    masks = np.zeros((len(boxes), 20, 20), dtype=bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = True
    return Detections(xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4), confidence=np.array(scores),
                      class_id=np.array(classes), mask=masks)


def test_confident_detections_are_matched_by_mask_iou_within_a_class():
    tool = load_tool()
    fp32 = detections([(0, 0, 10, 10), (10, 10, 20, 20), (0, 10, 5, 20)], [0.9, 0.8, 0.3], [0, 0, 0])
    # the first moved by one column (IoU 0.82), the second is now class 1 (no match), the weak one ignored
    mode = detections([(1, 0, 11, 10), (10, 10, 20, 20), (0, 10, 5, 20)], [0.7, 0.8, 0.9], [0, 1, 0])
    frame = tool.compare_frame(fp32, mode, threshold=0.5)
    assert frame["reference"] == 2 and frame["other"] == 3
    assert len(frame["ious"]) == 1 and abs(frame["ious"][0] - 90 / 110) < 1e-6
    assert abs(frame["score_diffs"][0] - 0.2) < 1e-6
    summary = tool.summarise([frame, tool.compare_frame(fp32, fp32, threshold=0.5)])
    assert summary["fp32_detections"] == 4 and summary["same"] == 0.75
    assert summary["mask_iou_min"] == frame["ious"][0] and summary["detections"] == 5

"""Per-frame post-processing of the model outputs into Detections."""

import numpy as np
import torch

from sam3video.video.detect import DetectionConfig, postprocess


def test_boxes_come_from_the_box_head_or_optionally_from_the_mask_extent():
    """Query 0 has a mask in the top-left quarter and a predicted box elsewhere; query 1 has an empty mask."""
    masks = torch.full((1, 2, 16, 16), -10.0)
    masks[0, 0, :8, :8] = 10.0
    outputs = {
        "pred_logits": torch.full((1, 2, 1), 5.0), "presence_logit_dec": torch.full((1, 1), 5.0),
        "pred_masks": masks, "queries": torch.randn(1, 2, 8),
        "pred_boxes": torch.tensor([[[0.75, 0.75, 0.2, 0.2], [0.5, 0.5, 0.5, 0.5]]]),  # cx, cy, w, h
    }
    head = postprocess(outputs, (32, 64), DetectionConfig(min_component_area=0.0, max_hole_area=0.0))
    extent = postprocess(outputs, (32, 64), DetectionConfig(min_component_area=0.0, max_hole_area=0.0,
                                                            box_from_mask=True))
    np.testing.assert_allclose(head.xyxy, [[41.6, 20.8, 54.4, 27.2], [16, 8, 48, 24]], atol=1e-4)
    np.testing.assert_allclose(extent.xyxy, [[0, 0, 32, 16], [16, 8, 48, 24]], atol=1e-4)  # empty mask: head
    assert (head.mask == extent.mask).all() and head.mask[0].any() and not head.mask[1].any()  # masks as they were

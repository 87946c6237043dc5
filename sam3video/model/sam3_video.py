"""``Sam3VideoModel``: the modules of the official SAM 3 video model (``sam3.pt``) — the ``detector``
(the image model, whose vision neck also has the tracker's second neck ``sam2_convs``) and the
``tracker``. Its state-dict keys are exactly the checkpoint's: ``detector.*`` and ``tracker.*``.

The model is stateless: the per-video loop (detection, association, memory banks) lives outside it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .sam3_image import Sam3Image
from .sam3_tracker_base import Sam3TrackerBase


class Sam3VideoModel(nn.Module):
    """``detector`` (``Sam3Image`` with ``sam2_convs``) and ``tracker`` (``Sam3TrackerBase``).
    ``config`` is the ``VideoConfig`` it was built from."""

    def __init__(self, detector: Sam3Image, tracker: Sam3TrackerBase):
        super().__init__()
        if detector.backbone.vision_backbone.sam2_convs is None:
            raise ValueError("the video model's detector needs the second neck (add_sam2_neck)")
        self.detector = detector
        self.tracker = tracker

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward_image(self, images: torch.Tensor) -> dict:
        """(B, 3, H, W) normalised frames -> the detector's ``backbone_out`` (one ViT pass, both necks)
        plus ``tracker_backbone_out`` (``Sam3TrackerBase.tracker_backbone_out`` of ``sam2_backbone_out``)."""
        backbone_out = self.detector.backbone.forward_image(images)
        backbone_out["tracker_backbone_out"] = self.tracker.tracker_backbone_out(backbone_out["sam2_backbone_out"])
        return backbone_out

"""``Sam31VideoModel``: the modules of the official SAM 3.1 multiplex video model (``sam3.1_multiplex.pt``) —
the ``detector`` (the image model on the tri-neck: ``convs`` for detection, ``interactive_convs`` and
``propagation_convs`` for the tracker) and ``tracker.model`` (``VideoTrackingMultiplex``). Its state-dict
keys are exactly the checkpoint's: ``detector.*`` (1166) and ``tracker.model.*`` (457).

The model is stateless: the per-video loop (detection, association, buckets, memory banks) lives outside it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .necks import Sam3TriViTDetNeck
from .sam31_tracker import Sam3MultiplexTrackerWrapper, TrackerFeatures
from .sam3_image import Sam3Image


class Sam31VideoModel(nn.Module):
    """``detector`` (``Sam3Image`` on a ``Sam3TriViTDetNeck``) and ``tracker`` (whose ``model`` is the
    ``VideoTrackingMultiplex``). ``config`` is the ``VideoConfig`` it was built from."""

    version = "sam3.1"

    def __init__(self, detector: Sam3Image, tracker: Sam3MultiplexTrackerWrapper):
        super().__init__()
        if not isinstance(detector.backbone.vision_backbone, Sam3TriViTDetNeck):
            raise ValueError("the SAM 3.1 video model's detector needs the tri-neck")
        self.detector = detector
        self.tracker = tracker

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward_image(self, images: torch.Tensor, need_sam3_out: bool = True, need_interactive_out: bool = True,
                      need_propagation_out: bool = True) -> dict:
        """(1, 3, H, W) normalised frame -> the detector's ``backbone_out`` (one ViT pass, the needed
        tri-neck paths) plus ``interactive_features`` / ``propagation_features`` (``TrackerFeatures``,
        None for a path not needed)."""
        backbone_out = self.detector.backbone.forward_image(
            images, need_sam3_out=need_sam3_out, need_interactive_out=need_interactive_out,
            need_propagation_out=need_propagation_out)
        tracker = self.tracker.model
        for key, name, interactive in (("interactive", "interactive_features", True),
                                       ("sam2_backbone_out", "propagation_features", False)):
            neck_out = backbone_out.get(key)
            backbone_out[name] = None if neck_out is None else tracker.tracker_features(neck_out, interactive)
        return backbone_out


__all__ = ["Sam31VideoModel", "TrackerFeatures"]

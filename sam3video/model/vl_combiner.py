"""``SAM3VLBackbone``: the vision backbone (ViT + neck) and the text encoder side by side."""

from __future__ import annotations

import torch
import torch.nn as nn


class SAM3VLBackbone(nn.Module):
    """Holds ``vision_backbone`` (a ``Sam3DualViTDetNeck``) and ``language_backbone`` (``VETextEncoder``).

    ``scalp`` drops that many of the lowest-resolution neck levels (the official model keeps three).
    """

    def __init__(self, visual: nn.Module, text: nn.Module, scalp: int = 0, **unused):
        super().__init__()
        self.vision_backbone = visual
        self.language_backbone = text
        self.scalp = scalp

    def forward_image(self, samples: torch.Tensor) -> dict:
        """(B, 3, H, W) normalised images -> ``backbone_fpn`` and ``vision_pos_enc`` (lists of
        (B, d, h, w), finest first) and ``vision_features`` (the coarsest kept level)."""
        features, pos, sam2_features, sam2_pos = self.vision_backbone(samples)
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        sam2_output = None
        if sam2_features is not None and sam2_pos is not None:
            if self.scalp > 0:
                sam2_features, sam2_pos = sam2_features[: -self.scalp], sam2_pos[: -self.scalp]
            sam2_output = {
                "vision_features": sam2_features[-1],
                "vision_pos_enc": sam2_pos,
                "backbone_fpn": sam2_features,
            }
        return {
            "vision_features": features[-1],
            "vision_pos_enc": pos,
            "backbone_fpn": features,
            "sam2_backbone_out": sam2_output,
        }

    def forward_text(self, captions: list[str], input_boxes=None, additional_text=None, device=None) -> dict:
        """Captions -> ``language_features`` (L, N, d) seq-first, ``language_mask`` (N, L) True = padding,
        ``language_embeds`` (L, N, width) token embeddings before the text transformer."""
        texts = list(captions) + list(additional_text or [])
        if device is None:
            device = next(self.language_backbone.parameters()).device
        text_mask, text_memory, text_embeds = self.language_backbone(texts, input_boxes, device=device)
        n = len(captions)
        output = {}
        if additional_text:
            output["additional_text_features"] = text_memory[:, n:]
            output["additional_text_mask"] = text_mask[n:]
        output["language_features"] = text_memory[:, :n]
        output["language_mask"] = text_mask[:n]
        output["language_embeds"] = text_embeds[:, :n]
        return output

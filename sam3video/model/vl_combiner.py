"""``SAM3VLBackbone``: the vision backbone (ViT + neck) and the text encoder side by side."""

from __future__ import annotations

import torch
import torch.nn as nn

from .necks import Sam3TriViTDetNeck


class SAM3VLBackbone(nn.Module):
    """Holds ``vision_backbone`` (a ``Sam3DualViTDetNeck`` or SAM 3.1's ``Sam3TriViTDetNeck``) and ``language_backbone`` (``VETextEncoder``).

    ``scalp`` drops that many of the lowest-resolution neck levels (the official model keeps three).
    """

    def __init__(self, visual: nn.Module, text: nn.Module, scalp: int = 0, **unused):
        super().__init__()
        self.vision_backbone = visual
        self.language_backbone = text
        self.scalp = scalp

    def forward_image(self, samples: torch.Tensor, *, need_sam3_out: bool = True, need_interactive_out: bool = True,
                      need_propagation_out: bool = True) -> dict:
        """(B, 3, H, W) normalised images -> ``backbone_fpn`` and ``vision_pos_enc`` (lists of
        (B, d, h, w), finest first) and ``vision_features`` (the coarsest kept level); the tracker's
        levels alike under ``sam2_backbone_out`` (SAM 3's second neck, SAM 3.1's propagation path; None
        without one) and, for SAM 3.1, ``interactive`` (the click path). The ``need_*`` flags skip the
        tri-neck's paths (SAM 3.1 only)."""
        if isinstance(self.vision_backbone, Sam3TriViTDetNeck):
            return self._forward_image_tri(samples, need_sam3_out, need_interactive_out, need_propagation_out)
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

    def _forward_image_tri(self, samples: torch.Tensor, need_sam3_out: bool, need_interactive_out: bool,
                           need_propagation_out: bool) -> dict:
        outputs = self.vision_backbone(samples, need_sam3_out=need_sam3_out, need_interactive_out=need_interactive_out,
                                       need_propagation_out=need_propagation_out)
        paths = []
        for features, pos in zip(outputs[0::2], outputs[1::2]):
            if features is not None and self.scalp > 0:
                features, pos = features[: -self.scalp], pos[: -self.scalp]
            paths.append(None if features is None else
                         {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features})
        sam3, interactive, propagation = paths
        return {**(sam3 or {}), "interactive": interactive, "sam2_backbone_out": propagation}

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

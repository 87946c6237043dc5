"""Mask heads (official names: ``PixelDecoder``, ``MaskPredictor``, ``SegmentationHead``,
``UniversalSegmentationHead``, ``LinearPresenceHead``).

The pixel decoder fuses the FPN levels top-down into a stride-4 feature map; masks are dot products
between per-query embeddings and per-pixel embeddings. Sequences are seq-first ``(L, B, C)``, feature
maps ``(B, C, H, W)``, padding masks ``(B, L)`` with True = pad.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model_misc import MLP


class LinearPresenceHead(nn.Sequential):
    """Presence logit from pooled features: (..., d) -> (..., 1). The two Identity layers keep the
    official state-dict key ``2.weight``."""

    def __init__(self, d_model: int):
        super().__init__(nn.Identity(), nn.Identity(), nn.Linear(d_model, 1))

    def forward(self, hs, prompt=None, prompt_mask=None):
        return super().forward(hs)


class MaskPredictor(nn.Module):
    """Mask logits as the dot product of MLP-embedded queries and pixel embeddings.

    obj_queries (B, Q, C) or (L, B, Q, C) with pixel_embed (B, C, H, W), or (C, H, W) when the batch is
    implicit -> (B, Q, H, W) or (L, B, Q, H, W).
    """

    def __init__(self, hidden_dim: int, mask_dim: int):
        super().__init__()
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, obj_queries: torch.Tensor, pixel_embed: torch.Tensor) -> torch.Tensor:
        queries = "bqc" if obj_queries.ndim == 3 else "lbqc"
        pixels = "chw" if pixel_embed.ndim == 3 else "bchw"
        return torch.einsum(f"{queries},{pixels}->{queries[:-1]}hw", self.mask_embed(obj_queries), pixel_embed)


class PixelDecoder(nn.Module):
    """Top-down FPN fusion: starting from the coarsest level, upsample to the next finer level, add it,
    then conv 3x3 + GroupNorm(8) + ReLU. backbone_feats: list of (B, hidden_dim, H_i, W_i), finest
    first -> (B, hidden_dim, H_0, W_0). ``compile_mode`` is accepted and ignored."""

    def __init__(
        self,
        hidden_dim: int,
        num_upsampling_stages: int,
        interpolation_mode: str = "nearest",
        shared_conv: bool = False,
        compile_mode: Optional[str] = None,
    ):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_upsampling_stages = num_upsampling_stages
        self.interpolation_mode = interpolation_mode
        self.shared_conv = shared_conv
        num_convs = 1 if shared_conv else num_upsampling_stages
        self.conv_layers = nn.ModuleList(nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1) for _ in range(num_convs))
        self.norms = nn.ModuleList(nn.GroupNorm(8, hidden_dim) for _ in range(num_convs))
        self.out_dim = self.conv_layers[-1].out_channels

    def forward(self, backbone_feats: List[torch.Tensor]) -> torch.Tensor:
        prev = backbone_feats[-1]
        for idx, feat in enumerate(backbone_feats[:-1][::-1]):
            prev = feat + F.interpolate(prev, size=feat.shape[-2:], mode=self.interpolation_mode)
            idx = 0 if self.shared_conv else idx
            prev = F.relu(self.norms[idx](self.conv_layers[idx](prev)))
        return prev


class SegmentationHead(nn.Module):
    """Pixel decoder + mask predictor. With ``use_encoder_inputs`` the coarsest FPN level is replaced
    by the (first H*W tokens of the) encoder output before pixel decoding.

    ``act_ckpt`` and ``compile_mode_pixel_decoder`` are accepted and ignored.
    """

    def __init__(
        self,
        hidden_dim: int,
        upsampling_stages: int,
        use_encoder_inputs: bool = False,
        aux_masks: bool = False,
        no_dec: bool = False,
        pixel_decoder: Optional[nn.Module] = None,
        act_ckpt: bool = False,
        shared_conv: bool = False,
        compile_mode_pixel_decoder: Optional[str] = None,
    ):
        super().__init__()
        self.use_encoder_inputs = use_encoder_inputs
        self.aux_masks = aux_masks
        self.pixel_decoder = (
            pixel_decoder if pixel_decoder is not None
            else PixelDecoder(hidden_dim, upsampling_stages, shared_conv=shared_conv)
        )
        self.no_dec = no_dec
        if no_dec:
            self.mask_predictor = nn.Conv2d(hidden_dim, 1, kernel_size=3, stride=1, padding=1)
        else:
            self.mask_predictor = MaskPredictor(hidden_dim, mask_dim=hidden_dim)
        self.act_ckpt = act_ckpt
        # Output keys that hold one value per query (the caller splits them into o2o / o2m parts).
        self.instance_keys = ["pred_masks"]

    def _embed_pixels(self, backbone_feats, image_ids, encoder_hidden_states) -> torch.Tensor:
        """Pixel embeddings (B, C, H0, W0); (C, H0, W0) when the batch is implicit (see forward).

        backbone_feats: list of (B_img, C, H_i, W_i); image_ids (B,): image of each prompt;
        encoder_hidden_states (L, B, C) with the coarsest level's H*W tokens first.
        """
        if self.use_encoder_inputs:
            device = encoder_hidden_states.device
            if backbone_feats[0].shape[0] > 1:
                # One copy of the image features per prompt.
                ids = image_ids.to(backbone_feats[0].device)
                feats = [feat[ids].to(device) for feat in backbone_feats]
            else:
                # One image: rely on broadcasting over the prompts.
                feats = [feat.to(device) for feat in backbone_feats]
            coarsest = backbone_feats[-1]
            spatial = math.prod(coarsest.shape[-2:])
            enc = encoder_hidden_states.permute(1, 2, 0)[..., :spatial]
            feats[-1] = enc.reshape(-1, *coarsest.shape[1:])
            return self.pixel_decoder(feats)
        pixel_embed = self.pixel_decoder(backbone_feats)
        if pixel_embed.shape[0] == 1:
            return pixel_embed.squeeze(0)
        return pixel_embed[image_ids]

    def _predict_masks(self, obj_queries: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
        if self.no_dec:
            return self.mask_predictor(embed)
        return self.mask_predictor(obj_queries if self.aux_masks else obj_queries[-1], embed)

    def forward(
        self,
        backbone_feats: List[torch.Tensor],
        obj_queries: torch.Tensor,
        image_ids: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> Dict[str, torch.Tensor]:
        """obj_queries (num_layers, B, Q, C) -> {"pred_masks": (B, Q, H0, W0)} (all layers with aux_masks)."""
        if self.use_encoder_inputs:
            assert encoder_hidden_states is not None
        pixel_embed = self._embed_pixels(backbone_feats, image_ids, encoder_hidden_states)
        return {"pred_masks": self._predict_masks(obj_queries, pixel_embed)}


class UniversalSegmentationHead(SegmentationHead):
    """Instance + semantic segmentation head of SAM 3.

    The encoder output first cross-attends to the prompt (pre-norm, residual), optionally gives a
    presence logit (mean over tokens), then replaces the coarsest FPN level for the pixel decoder.
    ``instance_seg_head`` (1x1 conv) gives the pixel embeddings for the mask dot products,
    ``semantic_seg_head`` (1x1 conv) a one-channel semantic logit map.
    """

    def __init__(
        self,
        hidden_dim: int,
        upsampling_stages: int,
        pixel_decoder: Optional[nn.Module],
        aux_masks: bool = False,
        no_dec: bool = False,
        act_ckpt: bool = False,
        presence_head: bool = False,
        dot_product_scorer: Optional[nn.Module] = None,
        cross_attend_prompt: Optional[nn.Module] = None,
    ):
        super().__init__(
            hidden_dim=hidden_dim, upsampling_stages=upsampling_stages, use_encoder_inputs=True,
            aux_masks=aux_masks, no_dec=no_dec, pixel_decoder=pixel_decoder, act_ckpt=act_ckpt,
        )
        self.d_model = hidden_dim
        if dot_product_scorer is not None:
            assert presence_head, "a dot product scorer without a presence head is likely a mistake"
        self.presence_head = None
        if presence_head:
            self.presence_head = (
                dot_product_scorer if dot_product_scorer is not None else LinearPresenceHead(hidden_dim)
            )
        self.cross_attend_prompt = cross_attend_prompt
        if cross_attend_prompt is not None:
            self.cross_attn_norm = nn.LayerNorm(hidden_dim)
        self.semantic_seg_head = nn.Conv2d(self.pixel_decoder.out_dim, 1, kernel_size=1)
        self.instance_seg_head = nn.Conv2d(self.pixel_decoder.out_dim, hidden_dim, kernel_size=1)

    def forward(
        self,
        backbone_feats: List[torch.Tensor],
        obj_queries: torch.Tensor,
        image_ids: torch.Tensor,
        encoder_hidden_states: Optional[torch.Tensor] = None,
        prompt: Optional[torch.Tensor] = None,
        prompt_mask: Optional[torch.Tensor] = None,
        **kwargs,
    ) -> Dict[str, Optional[torch.Tensor]]:
        """backbone_feats: FPN levels (B_img, C, H_i, W_i), finest first; obj_queries (layers, B, Q, C);
        image_ids (B,); encoder_hidden_states (L, B, C); prompt (P, B, C) with prompt_mask (B, P).

        Returns pred_masks (B, Q, H0, W0) (or (layers, B, Q, H0, W0) with aux_masks), semantic_seg
        (B, 1, H0, W0) and presence_logit ((B, 1), or None without a presence head).
        """
        assert encoder_hidden_states is not None
        bs = encoder_hidden_states.shape[1]
        if self.cross_attend_prompt is not None:
            attended = self.cross_attend_prompt(
                query=self.cross_attn_norm(encoder_hidden_states), key=prompt, value=prompt,
                key_padding_mask=prompt_mask,
            )[0]
            encoder_hidden_states = attended + encoder_hidden_states

        presence_logit = None
        if self.presence_head is not None:
            # Mean over all tokens, including any that are not image tokens (as officially).
            pooled = encoder_hidden_states.mean(0).view(1, bs, 1, self.d_model)
            presence_logit = self.presence_head(pooled, prompt=prompt, prompt_mask=prompt_mask)
            presence_logit = presence_logit.squeeze(0).squeeze(1)

        pixel_embed = self._embed_pixels(backbone_feats, image_ids, encoder_hidden_states)
        instance_embeds = self.instance_seg_head(pixel_embed)
        return {
            "pred_masks": self._predict_masks(obj_queries, instance_embeds),
            "semantic_seg": self.semantic_seg_head(pixel_embed),
            "presence_logit": presence_logit,
        }

"""SAM 3.1's multiplex mask decoder (official name: ``MultiplexMaskDecoder``; state-dict prefix
``tracker.model.sam_mask_decoder.``).

One two-way transformer pass decodes a whole bucket: 16 object-score tokens, 16 IoU tokens and
16 x 3 mask tokens (``multimask_outputs_only``: no single-mask token) attend to the bucket's
memory-conditioned image embedding. ``extra_per_object_embeddings`` (the tracker's valid / invalid
slot embeddings, (B, 16, C)) are added to each slot's mask tokens. Masks are logits at 4x the image
embedding size; IoU predictions are raw (no sigmoid in SAM 3.1).
"""

from __future__ import annotations

from typing import List, Optional, Type

import torch
import torch.nn as nn

from .sam.common import MLP, LayerNorm2d


class MultiplexMaskDecoder(nn.Module):
    """forward(image_embeddings (B, C, h, w), image_pe (1, C, h, w), multimask_output, high_res_features
    [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)], extra_per_object_embeddings (B, M, C)) -> {"masks" (B, M, K, 4h,
    4w), "iou_pred" (B, M, K), "sam_tokens_out" (B, M, K, C), "object_score_logits" (B, M, 1)}; B buckets,
    M = ``multiplex_count`` slots, K = 3 multimask outputs (1 without ``multimask_output`` when the
    single-mask token exists)."""

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        multiplex_count: int,
        num_multimask_outputs: int = 3,
        activation: Type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
        multimask_outputs_only: bool = False,
    ):
        super().__init__()
        if num_multimask_outputs < 1:
            raise NotImplementedError("the multiplex decoder needs multimask outputs")
        if dynamic_multimask_via_stability:
            raise NotImplementedError("SAM 3.1 turns the stability fallback off in the multiplex decoder")
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.multiplex_count = multiplex_count
        self.num_multimask_outputs = num_multimask_outputs
        self.multimask_outputs_only = multimask_outputs_only
        self.num_mask_output_per_object = num_multimask_outputs + (0 if multimask_outputs_only else 1)
        self.num_mask_tokens = multiplex_count * self.num_mask_output_per_object
        self.pred_obj_scores = pred_obj_scores
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.iou_token = nn.Embedding(multiplex_count, transformer_dim)
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(multiplex_count, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1, stride=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_output_per_object)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_output_per_object,
                                       iou_head_depth, sigmoid_output=iou_prediction_use_sigmoid)
        if pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(transformer_dim, transformer_dim, 1, 3) if pred_obj_scores_mlp else nn.Linear(transformer_dim, 1)
            )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        multimask_output: bool,
        high_res_features: Optional[List[torch.Tensor]] = None,
        extra_per_object_embeddings: Optional[torch.Tensor] = None,
    ) -> dict:
        if self.multimask_outputs_only:
            assert multimask_output, "this decoder only has multimask outputs"
        out = self.predict_masks(image_embeddings, image_pe, high_res_features, extra_per_object_embeddings)
        masks, iou_pred, tokens = out.pop("masks"), out.pop("iou_pred"), out.pop("mask_tokens_out")
        first = 0 if self.multimask_outputs_only else 1
        if multimask_output:
            masks, iou_pred = masks[:, :, first:], iou_pred[:, :, first:]
        else:
            masks, iou_pred = masks[:, :, 0:1], iou_pred[:, :, 0:1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = tokens[:, :, first:]
        else:
            sam_tokens_out = tokens[:, :, 0:1]
        return {"masks": masks, "iou_pred": iou_pred, "sam_tokens_out": sam_tokens_out, **out}

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        high_res_features: Optional[List[torch.Tensor]],
        extra_per_object_embeddings: Optional[torch.Tensor],
    ) -> dict:
        B, M, K = image_embeddings.shape[0], self.multiplex_count, self.num_mask_output_per_object
        token_list = [self.obj_score_token.weight] if self.pred_obj_scores else []
        token_list.append(self.iou_token.weight)
        tokens = torch.cat(token_list, dim=0).unsqueeze(0).expand(B, -1, -1)
        if extra_per_object_embeddings is not None:
            mask_tokens = self.mask_tokens.weight.view(1, M, K, -1).expand(B, -1, -1, -1)
            mask_tokens = (mask_tokens + extra_per_object_embeddings.unsqueeze(2)).flatten(1, 2)
        else:
            mask_tokens = self.mask_tokens.weight.unsqueeze(0).expand(B, -1, -1)
        tokens = torch.cat([tokens, mask_tokens], dim=1)
        assert image_pe.size(0) == 1, "image_pe has batch 1 (get_dense_pe)"
        pos_src = torch.repeat_interleave(image_pe, B, dim=0)
        b, c, h, w = image_embeddings.shape
        hs, src = self.transformer(image_embeddings, pos_src, tokens)
        s = 0
        if self.pred_obj_scores:
            obj_score_token_out = hs[:, :M]
            s = M
        iou_token_out = hs[:, s:s + M]
        mask_tokens_out = hs[:, s + M:s + M + self.num_mask_tokens]
        src = src.transpose(1, 2).view(b, c, h, w)
        if self.use_high_res_features:
            dc1, ln1, act1, dc2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            upscaled = act1(ln1(dc1(src) + feat_s1))
            upscaled = act2(dc2(upscaled) + feat_s0)
        else:
            upscaled = self.output_upscaling(src)
        mask_tokens_out = mask_tokens_out.view(B, M, K, -1)
        hyper_in = torch.stack([mlp(mask_tokens_out[:, :, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
                               dim=2)
        b, c, h, w = upscaled.shape
        masks = torch.bmm(hyper_in.flatten(1, 2), upscaled.view(b, c, h * w)).view(b, M, K, h, w)
        iou_pred = self.iou_prediction_head(iou_token_out).view(b, M, K)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(obj_score_token_out)
        else:
            object_score_logits = 10.0 * iou_pred.new_ones(b, M, 1)
        return {"masks": masks, "iou_pred": iou_pred, "mask_tokens_out": mask_tokens_out,
                "object_score_logits": object_score_logits}

"""``Sam3TrackerBase``: the SAM 2-style memory tracker of SAM 3 (state-dict prefix ``tracker.``).

It has no backbone: the detector's ViT runs once per frame and its second neck (``sam2_convs``) gives
the three tracker levels (4h, 2h, h; h = image_size / backbone_stride, 72 at full size);
``tracker_backbone_out`` projects the two finer ones with the mask decoder's ``conv_s0`` / ``conv_s1``.

Conventions (official): image features are flattened seq-first, ``vision_feats`` [(HW_i, B, C_i)],
coarsest last; B is the number of objects; masks are logits; the model is stateless — the memory
bank (``MemoryBank``) is owned by the caller and passed to ``track_step``. Inference only: training
paths (teacher forcing, memory dropout, correction clicks) are not implemented.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .sam.common import MLP
from .sam.mask_decoder import MaskDecoder
from .sam.prompt_encoder import PromptEncoder
from .sam.transformer import TwoWayTransformer
from .sam3_tracker_memory import NO_OBJ_SCORE, TrackerMemoryMixin
from .sam3_tracker_utils import (MemoryBank, PointInputs, SamHeadsOutput, TrackStepOutput, best_masks, encode_prompts,
                                 get_1d_sine_pe)


class Sam3TrackerBase(TrackerMemoryMixin, nn.Module):
    """Memory encoder, memory attention, SAM prompt encoder and mask decoder, object pointers.

    ``transformer`` holds the memory attention as ``transformer.encoder`` (no decoder);
    ``maskmem_backbone`` is the memory encoder; the memory bank methods come from
    ``TrackerMemoryMixin``. Defaults are the official class's; ``build_video.build_tracker`` passes
    the video model's settings and sizes (``TrackerConfig``).
    """

    def __init__(
        self,
        transformer: nn.Module,
        maskmem_backbone: nn.Module,
        num_maskmem: int = 7,
        image_size: int = 1008,
        backbone_stride: int = 14,
        max_cond_frames_in_attn: int = -1,
        keep_first_cond_frame: bool = False,
        multimask_output_in_sam: bool = False,
        multimask_min_pt_num: int = 1,
        multimask_max_pt_num: int = 1,
        multimask_output_for_tracking: bool = False,
        memory_temporal_stride_for_eval: int = 1,
        non_overlap_masks_for_mem_enc: bool = False,
        max_obj_ptrs_in_encoder: int = 16,
        sam_mask_decoder_extra_args: Optional[dict] = None,
        use_memory_selection: bool = False,
        mf_threshold: float = 0.01,
        sigmoid_scale_for_mem_enc: float = 20.0,
        sigmoid_bias_for_mem_enc: float = -10.0,
        mask_in_chans: int = 16,
        decoder_depth: int = 2,
        decoder_heads: int = 8,
        decoder_mlp_dim: int = 2048,
        iou_head_hidden_dim: int = 256,
    ):
        super().__init__()
        self.num_feature_levels = 3
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        # Turns a (B, 1, 4 * low-res) mask prompt into a (B, 1, low-res) SAM mask input.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        assert transformer.decoder is None, "transformer should be encoder-only"
        self.transformer = transformer
        self.hidden_dim = transformer.d_model
        self.maskmem_backbone = maskmem_backbone
        out_proj = getattr(maskmem_backbone, "out_proj", None)
        self.mem_dim = out_proj.weight.shape[0] if hasattr(out_proj, "weight") else self.hidden_dim
        self.num_maskmem = num_maskmem
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.non_overlap_masks_for_mem_enc = non_overlap_masks_for_mem_enc
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.low_res_mask_size = image_size // backbone_stride * 4
        self.input_mask_size = self.low_res_mask_size * 4  # mask prompts are resized to this (1152)
        self.sam_mask_decoder_extra_args = sam_mask_decoder_extra_args
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc, self.no_obj_ptr,
                  self.no_obj_embed_spatial):
            nn.init.trunc_normal_(p, std=0.02)
        self._build_sam_heads(mask_in_chans, decoder_depth, decoder_heads, decoder_mlp_dim, iou_head_hidden_dim)
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.keep_first_cond_frame = keep_first_cond_frame
        self.use_memory_selection = use_memory_selection
        self.mf_threshold = mf_threshold

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _build_sam_heads(self, mask_in_chans: int, depth: int, heads: int, mlp_dim: int, iou_hidden: int) -> None:
        """``sam_prompt_encoder``, ``sam_mask_decoder`` (3 multimask outputs, high-res features, sigmoid
        IoU head, object-score MLP), ``obj_ptr_proj`` (3-layer MLP) and ``obj_ptr_tpos_proj`` (C -> mem_dim)."""
        self.sam_prompt_embed_dim = self.hidden_dim
        self.sam_image_embedding_size = self.image_size // self.backbone_stride
        self.sam_prompt_encoder = PromptEncoder(
            embed_dim=self.sam_prompt_embed_dim,
            image_embedding_size=(self.sam_image_embedding_size, self.sam_image_embedding_size),
            input_image_size=(self.image_size, self.image_size), mask_in_chans=mask_in_chans,
        )
        self.sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=depth, embedding_dim=self.sam_prompt_embed_dim, mlp_dim=mlp_dim,
                                          num_heads=heads),
            transformer_dim=self.sam_prompt_embed_dim, iou_head_depth=3, iou_head_hidden_dim=iou_hidden,
            use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
            pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
            **(self.sam_mask_decoder_extra_args or {}),
        )
        self.obj_ptr_proj = MLP(self.hidden_dim, self.hidden_dim, self.hidden_dim, 3)
        self.obj_ptr_tpos_proj = nn.Linear(self.hidden_dim, self.mem_dim)

    def _get_tpos_enc(self, rel_pos_list, device: torch.device, max_abs_pos: Optional[int] = None,
                      dummy: bool = False) -> Tensor:
        """Temporal encoding of object pointers: (N,) frame distances -> (N, mem_dim) =
        obj_ptr_tpos_proj(sine(t / (max_abs_pos - 1)))."""
        if dummy:
            return torch.zeros(len(rel_pos_list), self.mem_dim, device=device)
        t_diff_max = max_abs_pos - 1 if max_abs_pos is not None else 1
        pos_enc = torch.tensor(rel_pos_list, device=device) / t_diff_max
        return self.obj_ptr_tpos_proj(get_1d_sine_pe(pos_enc, dim=self.hidden_dim))

    # ------------------------------------------------------------------------------------------------
    # Features
    # ------------------------------------------------------------------------------------------------
    def tracker_backbone_out(self, sam2_backbone_out: dict) -> dict:
        """The second neck's output (``sam2_backbone_out``: ``backbone_fpn`` [(B, C, 4h, 4w), (B, C, 2h, 2w),
        (B, C, h, w)], ``vision_pos_enc`` alike) -> the tracker's features, official
        ``tracker_backbone_out``: levels 0 / 1 projected by ``conv_s0`` (C/8) / ``conv_s1`` (C/4)."""
        fpn = sam2_backbone_out["backbone_fpn"]
        decoder = self.sam_mask_decoder
        backbone_fpn = [decoder.conv_s0(fpn[0]), decoder.conv_s1(fpn[1]), *fpn[2:]]
        return {"vision_features": backbone_fpn[-1], "vision_pos_enc": list(sam2_backbone_out["vision_pos_enc"]),
                "backbone_fpn": backbone_fpn}

    def _prepare_backbone_features(self, backbone_out: dict) -> Tuple[dict, List[Tensor], List[Tensor], list]:
        """-> (backbone_out, vision_feats [(HW_i, B, C_i)], vision_pos_embeds [(HW_i, B, C)], feat_sizes
        [(H_i, W_i)]) of the last ``num_feature_levels`` levels."""
        backbone_out = backbone_out.copy()
        assert len(backbone_out["backbone_fpn"]) == len(backbone_out["vision_pos_enc"])
        assert len(backbone_out["backbone_fpn"]) >= self.num_feature_levels
        feature_maps = backbone_out["backbone_fpn"][-self.num_feature_levels:]
        vision_pos_embeds = backbone_out["vision_pos_enc"][-self.num_feature_levels:]
        feat_sizes = [(x.shape[-2], x.shape[-1]) for x in vision_pos_embeds]
        vision_feats = [x.flatten(2).permute(2, 0, 1) for x in feature_maps]
        vision_pos_embeds = [x.flatten(2).permute(2, 0, 1) for x in vision_pos_embeds]
        return backbone_out, vision_feats, vision_pos_embeds, feat_sizes

    # ------------------------------------------------------------------------------------------------
    # SAM heads
    # ------------------------------------------------------------------------------------------------
    def _forward_sam_heads(
        self,
        backbone_features: Tensor,
        point_inputs: Optional[PointInputs] = None,
        mask_inputs: Optional[Tensor] = None,
        high_res_features: Optional[List[Tensor]] = None,
        multimask_output: bool = False,
    ) -> SamHeadsOutput:
        """backbone_features (B, C, h, w) (memory-conditioned), points, a (B, 1, *, *) mask prompt
        (resized to 4h x 4w), high_res_features [(B, C/8, 4h, 4w), (B, C/4, 2h, 2w)] -> ``SamHeadsOutput``.
        Without points a single padding point (label -1) is used."""
        B, device = backbone_features.size(0), backbone_features.device
        assert backbone_features.size(1) == self.sam_prompt_embed_dim
        assert backbone_features.size(2) == backbone_features.size(3) == self.sam_image_embedding_size
        sparse_embeddings, dense_embeddings = encode_prompts(self.sam_prompt_encoder, B, device, point_inputs,
                                                             mask_inputs)
        low_res_multimasks, ious, sam_output_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=backbone_features, image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse_embeddings, dense_prompt_embeddings=dense_embeddings,
            multimask_output=multimask_output, repeat_image=False, high_res_features=high_res_features,
        )
        # The mask kept for memory is a hard choice between object and no object.
        low_res_multimasks, high_res_multimasks, low_res_masks, high_res_masks, sam_output_token, is_obj_appearing = \
            best_masks(low_res_multimasks, ious, sam_output_tokens, object_score_logits, multimask_output,
                       self.image_size, NO_OBJ_SCORE)
        obj_ptr = self._gate_obj_ptr(self.obj_ptr_proj(sam_output_token), is_obj_appearing)
        return SamHeadsOutput(low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks,
                              obj_ptr, object_score_logits)

    def _gate_obj_ptr(self, obj_ptr: Tensor, is_obj_appearing: Tensor) -> Tensor:
        """(B, C) pointers, (B, 1) bool -> the pointer where the object appears, ``no_obj_ptr`` elsewhere."""
        lambda_is_obj_appearing = is_obj_appearing.float()
        return lambda_is_obj_appearing * obj_ptr + (1 - lambda_is_obj_appearing) * self.no_obj_ptr

    def _use_mask_as_output(self, backbone_features: Tensor, high_res_features: Optional[List[Tensor]],
                            mask_inputs: Tensor) -> SamHeadsOutput:
        """A (B, 1, Hm, Wm) binary mask prompt taken as the output: logits +-10, low-res masks of
        Hm // stride * 4 (antialiased), IoU 1, object score +-10 (any pixel on); the pointer comes from
        the SAM heads on the (memory-free) features with ``mask_downsample(mask)`` as mask prompt."""
        out_scale, out_bias = 20.0, -10.0  # sigmoid(-10) = 4.54e-05
        mask_inputs_float = mask_inputs.float()
        high_res_masks = mask_inputs_float * out_scale + out_bias
        low_res_size = (high_res_masks.size(-2) // self.backbone_stride * 4,
                        high_res_masks.size(-1) // self.backbone_stride * 4)
        low_res_masks = F.interpolate(high_res_masks, size=low_res_size, align_corners=False, mode="bilinear",
                                      antialias=True)
        ious = mask_inputs.new_ones(mask_inputs.size(0), 1).float()
        obj_ptr = self._forward_sam_heads(backbone_features=backbone_features,
                                          mask_inputs=self.mask_downsample(mask_inputs_float),
                                          high_res_features=high_res_features).obj_ptr
        is_obj_appearing = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None]
        object_score_logits = out_scale * is_obj_appearing.float() + out_bias
        obj_ptr = self._gate_obj_ptr(obj_ptr, is_obj_appearing)
        return SamHeadsOutput(low_res_masks, high_res_masks, ious, low_res_masks, high_res_masks, obj_ptr,
                              object_score_logits)

    def _use_multimask(self, is_init_cond_frame: bool, point_inputs: Optional[PointInputs]) -> bool:
        """3 candidate masks for 0..1 points (a box counts as 2) on any frame, with the official settings."""
        num_pts = 0 if point_inputs is None else point_inputs.point_labels.size(1)
        return (self.multimask_output_in_sam and (is_init_cond_frame or self.multimask_output_for_tracking)
                and self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num)


    # ------------------------------------------------------------------------------------------------
    # One frame
    # ------------------------------------------------------------------------------------------------
    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: List[Tensor],
        current_vision_pos_embeds: List[Tensor],
        feat_sizes: list,
        point_inputs: Optional[PointInputs],
        mask_inputs: Optional[Tensor],
        output_dict: MemoryBank,
        num_frames: int,
        track_in_reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: Optional[Tensor] = None,
        use_prev_mem_frame: bool = True,
        image: Optional[Tensor] = None,
    ) -> TrackStepOutput:
        """Segment B objects on frame ``frame_idx`` of ``num_frames`` and encode the result as memory.

        current_vision_feats / _pos_embeds: the three tracker levels flattened, [(16hw, B, C/8),
        (4hw, B, C/4), (hw, B, C)] and [(HW_i, B, C)] (``_prepare_backbone_features`` of
        ``tracker_backbone_out``); feat_sizes [(4h, 4w), (2h, 2w), (h, w)].
        A mask prompt (B, 1, Hm, Wm) (the official predictor resizes it to ``input_mask_size``²) is taken
        as the output (``_use_mask_as_output``). Otherwise the coarsest features are fused with the
        memory bank ``output_dict`` (not on a prompted first frame), and the SAM heads decode them with
        the points (and ``prev_sam_mask_logits`` as mask prompt, for refinement clicks). The caller
        stores the returned output in ``output_dict`` (``MemoryBank.add``).
        """
        if len(current_vision_feats) > 1:
            high_res_features = [
                x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1], strict=True)
            ]
        else:
            high_res_features = None
        if mask_inputs is not None:
            pix_feat = current_vision_feats[-1].permute(1, 2, 0).view(-1, self.hidden_dim, *feat_sizes[-1])
            sam_outputs = self._use_mask_as_output(pix_feat, high_res_features, mask_inputs)
        else:
            pix_feat_with_mem = self._prepare_memory_conditioned_features(
                frame_idx=frame_idx, is_init_cond_frame=is_init_cond_frame,
                current_vision_feats=current_vision_feats[-1:],
                current_vision_pos_embeds=current_vision_pos_embeds[-1:], feat_sizes=feat_sizes[-1:],
                output_dict=output_dict, num_frames=num_frames, track_in_reverse=track_in_reverse,
                use_prev_mem_frame=use_prev_mem_frame,
            )
            sam_mask_inputs = None
            if prev_sam_mask_logits is not None:
                assert point_inputs is not None, "previous mask logits refine a point prompt"
                sam_mask_inputs = prev_sam_mask_logits
            sam_outputs = self._forward_sam_heads(
                backbone_features=pix_feat_with_mem, point_inputs=point_inputs, mask_inputs=sam_mask_inputs,
                high_res_features=high_res_features,
                multimask_output=self._use_multimask(is_init_cond_frame, point_inputs),
            )
        current_out = TrackStepOutput(
            point_inputs=point_inputs, mask_inputs=mask_inputs, pred_masks=sam_outputs.low_res_masks,
            pred_masks_high_res=sam_outputs.high_res_masks, obj_ptr=sam_outputs.obj_ptr,
            object_score_logits=sam_outputs.object_score_logits, ious=sam_outputs.ious,
        )
        if self.use_memory_selection:
            current_out.iou_score = sam_outputs.ious.max(-1)[0]
            current_out.eff_iou_score = self.cal_mem_score(sam_outputs.object_score_logits, current_out.iou_score)
        if run_mem_encoder and self.num_maskmem > 0:
            current_out.maskmem_features, current_out.maskmem_pos_enc = self._encode_new_memory(
                current_vision_feats=current_vision_feats, feat_sizes=feat_sizes,
                pred_masks_high_res=sam_outputs.high_res_masks,
                object_score_logits=sam_outputs.object_score_logits, is_mask_from_pts=point_inputs is not None,
                image=image,
            )
        return current_out

    def forward(self, *args, **kwargs) -> TrackStepOutput:
        """``track_step`` (the official module's ``forward`` is a training entry point)."""
        return self.track_step(*args, **kwargs)

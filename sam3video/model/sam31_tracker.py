"""``VideoTrackingMultiplex``: SAM 3.1's multiplex memory tracker (state-dict prefix ``tracker.model.``).

It has no backbone: the detector's ViT runs once per frame and the tri-neck gives two sets of tracker
levels (4h, 2h, h; h = 72 at full size): ``interactive`` (clicks and mask prompts, one object at a
time, no memory) and ``sam2_backbone_out`` (propagation, all objects). ``tracker_backbone_out``
projects the two finer levels with the path's own decoder's ``conv_s0`` / ``conv_s1``.

Objects are multiplexed into buckets of 16 (``MultiplexState``): memory encoding, memory attention
and mask decoding run once per bucket. Per object (N rows, object-index order): masks, scores,
IoUs; per bucket (B rows): memories (B, C, h, w) and pointers (B, 16, C). The model is stateless —
the caller owns the ``MultiplexState`` and the memory bank (``MultiplexMemoryBank``). Inference only.

Conventions are the official ones: features seq-first (HW, 1, C) for the single image of a frame,
masks are logits, ``-1024`` where no object is predicted, high-res masks at image_size².
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .multiplex_mask_decoder import MultiplexMaskDecoder
from .multiplex_utils import MultiplexState
from .sam.common import MLP
from .sam.mask_decoder import MaskDecoder
from .sam.prompt_encoder import PositionEmbeddingRandom, PromptEncoder
from .sam.transformer import TwoWayTransformer
from .sam3_tracker_memory import NO_OBJ_SCORE
from .sam3_tracker_utils import (PointInputs, best_masks, encode_prompts, get_1d_sine_pe, memory_frame_indices,
                                 select_closest_cond_frames)


@dataclass
class TrackerFeatures:
    """One frame's features of one tri-neck path, flattened as the tracker reads them.

    vision_feats [(16hw, 1, C/8), (4hw, 1, C/4), (hw, 1, C)] (the two finer levels already projected by
    conv_s0 / conv_s1), vision_pos_embeds [(HW_i, 1, C)], feat_sizes [(4h, 4w), (2h, 2w), (h, w)].
    """

    vision_feats: List[Tensor]
    vision_pos_embeds: List[Tensor]
    feat_sizes: List[Tuple[int, int]]

    def high_res_features(self) -> List[Tensor]:
        """[(1, C/8, 4h, 4w), (1, C/4, 2h, 2w)]."""
        return [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                for x, s in zip(self.vision_feats[:-1], self.feat_sizes[:-1], strict=True)]


@dataclass
class MultiplexStepOutput:
    """One frame's output of ``track_step`` for one multiplex state (official ``current_out``).

    pred_masks (N, 1, 4h, 4w) and pred_masks_high_res (N, 1, H, W) mask logits, object_score_logits
    (N, 1), ious (N, K); obj_ptr (B, 16, C) muxed; maskmem_features (B, C, h, w) and maskmem_pos_enc
    [(B, C, h, w)] per bucket; image_features / image_pos_enc (hw, 1, C) the frame's propagation
    features (SAM 3.1 attends to past frames' images too); conditioning_objects: the object indices
    conditioned on this frame (mask or click inputs).
    """

    pred_masks: Tensor
    pred_masks_high_res: Optional[Tensor]
    object_score_logits: Tensor
    obj_ptr: Tensor
    ious: Optional[Tensor] = None
    conditioning_objects: set = field(default_factory=set)
    point_inputs: Optional[PointInputs] = None
    mask_inputs: Optional[Tensor] = None
    maskmem_features: Optional[Tensor] = None
    maskmem_pos_enc: Optional[List[Tensor]] = None
    image_features: Optional[Tensor] = None
    image_pos_enc: Optional[Tensor] = None


@dataclass
class MultiplexMemoryBank:
    """Conditioning and tracked frames of one multiplex state (official ``output_dict``)."""

    cond_frame_outputs: Dict[int, MultiplexStepOutput] = field(default_factory=dict)
    non_cond_frame_outputs: Dict[int, MultiplexStepOutput] = field(default_factory=dict)

    def add(self, frame_idx: int, output: MultiplexStepOutput, is_cond: bool) -> None:
        (self.cond_frame_outputs if is_cond else self.non_cond_frame_outputs)[frame_idx] = output


@dataclass
class SamOutput:
    """What a SAM head gives (official ``SAMOutput``): per object, K candidate masks."""

    low_res_multimasks: Tensor  # (N, K, 4h, 4w)
    high_res_multimasks: Tensor  # (N, K, H, W)
    ious: Tensor  # (N, K)
    low_res_masks: Tensor  # (N, 1, 4h, 4w) the candidate of highest predicted IoU
    high_res_masks: Tensor  # (N, 1, H, W)
    object_score_logits: Tensor  # (N, 1)
    obj_ptr: Tensor  # (N, C)


class VideoTrackingMultiplex(nn.Module):
    """Memory encoder, decoupled memory attention, multiplex mask decoder (propagation), interactive
    SAM heads (clicks, mask prompts), object pointers. Defaults: the official SAM 3.1 builder."""

    def __init__(
        self,
        transformer: nn.Module,
        maskmem_backbone: nn.Module,
        multiplex_count: int = 16,
        num_maskmem: int = 7,
        image_size: int = 1008,
        backbone_stride: int = 14,
        max_cond_frames_in_attn: int = 4,
        keep_first_cond_frame: bool = False,
        max_obj_ptrs_in_encoder: int = 16,
        multimask_output_in_sam: bool = True,
        multimask_min_pt_num: int = 0,
        multimask_max_pt_num: int = 1,
        multimask_output_for_tracking: bool = True,
        memory_temporal_stride_for_eval: int = 1,
        sigmoid_scale_for_mem_enc: float = 2.0,
        sigmoid_bias_for_mem_enc: float = -1.0,
        condition_as_mask_input_fg: float = 1.0,
        condition_as_mask_input_bg: float = 0.0,
        object_score_logit_threshold: float = 0.0,
        interactive_sam_mask_decoder_extra_args: Optional[dict] = None,
        mask_in_chans: int = 16,
        decoder_depth: int = 2,
        decoder_heads: int = 8,
        decoder_mlp_dim: int = 2048,
        iou_head_hidden_dim: int = 256,
    ):
        super().__init__()
        self.multiplex_count = multiplex_count
        self.num_feature_levels = 3
        self.transformer = transformer
        self.hidden_dim = transformer.d_model
        self.mem_dim = self.hidden_dim  # no out_proj: memories are hidden_dim wide
        self.maskmem_backbone = maskmem_backbone
        self.num_maskmem = num_maskmem
        self.image_size = image_size
        self.backbone_stride = backbone_stride
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.keep_first_cond_frame = keep_first_cond_frame
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.condition_as_mask_input_fg = condition_as_mask_input_fg
        self.condition_as_mask_input_bg = condition_as_mask_input_bg
        self.object_score_logit_threshold = object_score_logit_threshold
        C, M = self.hidden_dim, multiplex_count
        # Turns a (N, 1, H, W) mask prompt into a (N, 1, H/4, W/4) SAM mask input for the pointer.
        self.interactive_mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, self.mem_dim))
        self.interactivity_no_mem_embed = nn.Parameter(torch.zeros(1, 1, C))
        self.no_obj_ptr_linear = nn.Linear(C, C)
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(M, C))
        self.output_valid_embed = nn.Parameter(torch.zeros(M, C))
        self.output_invalid_embed = nn.Parameter(torch.zeros(M, C))
        for p in (self.maskmem_tpos_enc, self.interactivity_no_mem_embed, self.no_obj_embed_spatial,
                  self.output_valid_embed, self.output_invalid_embed):
            nn.init.trunc_normal_(p, std=0.02)
        self.sam_image_embedding_size = image_size // backbone_stride
        side = self.sam_image_embedding_size
        self.image_pe_layer = PositionEmbeddingRandom(C // 2)
        self.interactive_sam_prompt_encoder = PromptEncoder(
            embed_dim=C, image_embedding_size=(side, side), input_image_size=(image_size, image_size),
            mask_in_chans=mask_in_chans,
        )

        def two_way() -> TwoWayTransformer:
            return TwoWayTransformer(depth=decoder_depth, embedding_dim=C, mlp_dim=decoder_mlp_dim,
                                     num_heads=decoder_heads)

        self.interactive_sam_mask_decoder = MaskDecoder(
            num_multimask_outputs=3, transformer=two_way(), transformer_dim=C, iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim, use_high_res_features=True, iou_prediction_use_sigmoid=False,
            pred_obj_scores=True, pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
            **(interactive_sam_mask_decoder_extra_args or {}),
        )
        self.sam_mask_decoder = MultiplexMaskDecoder(
            multiplex_count=M, num_multimask_outputs=3, transformer=two_way(), transformer_dim=C, iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim, use_high_res_features=True, iou_prediction_use_sigmoid=False,
            pred_obj_scores=True, pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
            multimask_outputs_only=multimask_output_in_sam,
        )
        self.obj_ptr_proj = MLP(C, C, C, 3)
        self.interactive_obj_ptr_proj = MLP(C, C, C, 3)
        self.obj_ptr_tpos_proj = nn.Linear(C, self.mem_dim)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------------------------------------
    # Features
    # ------------------------------------------------------------------------------------------------
    def tracker_features(self, neck_out: dict, interactive: bool) -> TrackerFeatures:
        """A tri-neck path's output (``backbone_fpn`` [(1, C, 4h, 4w), (1, C, 2h, 2w), (1, C, h, w)],
        ``vision_pos_enc`` alike) -> its flattened ``TrackerFeatures``, the two finer levels projected by
        the path's decoder (``interactive_sam_mask_decoder`` or ``sam_mask_decoder``)."""
        decoder = self.interactive_sam_mask_decoder if interactive else self.sam_mask_decoder
        fpn = neck_out["backbone_fpn"][-self.num_feature_levels:]
        pos = neck_out["vision_pos_enc"][-self.num_feature_levels:]
        fpn = [decoder.conv_s0(fpn[0]), decoder.conv_s1(fpn[1]), *fpn[2:]]
        return TrackerFeatures(vision_feats=[x.flatten(2).permute(2, 0, 1) for x in fpn],
                               vision_pos_embeds=[x.flatten(2).permute(2, 0, 1) for x in pos],
                               feat_sizes=[(x.shape[-2], x.shape[-1]) for x in pos])

    def _get_interactive_pix_mem(self, features: TrackerFeatures) -> Tensor:
        """The interactive path has no memory: coarsest features + ``interactivity_no_mem_embed`` -> (1, C, h, w)."""
        x = features.vision_feats[-1] + self.interactivity_no_mem_embed
        H, W = features.feat_sizes[-1]
        return x.permute(1, 2, 0).view(x.size(1), self.hidden_dim, H, W)

    def get_propagation_dense_pe(self) -> Tensor:
        """(1, C, h, w) Fourier encoding of the image-embedding grid for the multiplex decoder."""
        side = self.sam_image_embedding_size
        return self.image_pe_layer((side, side)).unsqueeze(0)

    def _get_tpos_enc(self, rel_pos_list, device: torch.device, max_abs_pos: int) -> Tensor:
        """(N,) frame distances -> (N, mem_dim) = obj_ptr_tpos_proj(sine(t / (max_abs_pos - 1), C))."""
        pos = torch.tensor(rel_pos_list, device=device) / (max_abs_pos - 1)
        return self.obj_ptr_tpos_proj(get_1d_sine_pe(pos, dim=self.hidden_dim))

    def _use_multimask(self, is_init_cond_frame: bool, point_inputs: Optional[PointInputs]) -> bool:
        num_pts = 0 if point_inputs is None else point_inputs.point_labels.size(1)
        return (self.multimask_output_in_sam and (is_init_cond_frame or self.multimask_output_for_tracking)
                and self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num)

    # ------------------------------------------------------------------------------------------------
    # SAM heads
    # ------------------------------------------------------------------------------------------------
    def _forward_sam_heads(
        self,
        backbone_features: Tensor,
        *,
        multiplex_state: MultiplexState,
        point_inputs: Optional[PointInputs] = None,
        mask_inputs: Optional[Tensor] = None,
        interactive_high_res_features: Optional[List[Tensor]] = None,
        propagation_high_res_features: Optional[List[Tensor]] = None,
        multimask_output: bool = False,
    ) -> SamOutput:
        """Interactive path (points or a mask prompt given; one row per prompted object; backbone_features
        (1 or N, C, h, w) without memory) or multiplex propagation path (backbone_features (B, C, h, w)
        memory-conditioned per bucket, all N objects, demuxed)."""
        is_interactive = point_inputs is not None or mask_inputs is not None
        if is_interactive:
            batch = (point_inputs.point_coords if point_inputs is not None else mask_inputs).shape[0]
            sparse, dense = encode_prompts(self.interactive_sam_prompt_encoder, batch, backbone_features.device,
                                           point_inputs, mask_inputs)
            low_res_multimasks, ious, sam_output_tokens, object_score_logits = self.interactive_sam_mask_decoder(
                image_embeddings=backbone_features, image_pe=self.interactive_sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask_output,
                repeat_image=True, high_res_features=interactive_high_res_features,
            )
        else:
            valid = multiplex_state.get_valid_object_mask().unsqueeze(-1).to(self.output_valid_embed.dtype)
            slot_embed = valid * self.output_valid_embed.unsqueeze(0) + (1 - valid) * self.output_invalid_embed.unsqueeze(0)
            out = self.sam_mask_decoder(
                image_embeddings=backbone_features, image_pe=self.get_propagation_dense_pe(),
                high_res_features=propagation_high_res_features, multimask_output=multimask_output,
                extra_per_object_embeddings=slot_embed,
            )
            low_res_multimasks = multiplex_state.demux(out["masks"])
            ious = multiplex_state.demux(out["iou_pred"])
            object_score_logits = multiplex_state.demux(out["object_score_logits"])
            sam_output_tokens = multiplex_state.demux(out["sam_tokens_out"])
        low_res_multimasks, high_res_multimasks, low_res_masks, high_res_masks, sam_output_token, is_obj_appearing = \
            best_masks(low_res_multimasks, ious, sam_output_tokens, object_score_logits, multimask_output,
                       self.image_size, NO_OBJ_SCORE, self.object_score_logit_threshold)
        proj = self.interactive_obj_ptr_proj if is_interactive else self.obj_ptr_proj
        obj_ptr = self._gate_obj_ptr(proj(sam_output_token), is_obj_appearing)
        return SamOutput(low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks,
                         object_score_logits, obj_ptr)

    def _gate_obj_ptr(self, obj_ptr: Tensor, is_obj_appearing: Tensor) -> Tensor:
        """(N, C) pointers, (N, 1) bool -> the pointer where the object appears, ``no_obj_ptr_linear`` of
        it elsewhere (SAM 3.1's learned no-object pointer)."""
        lam = is_obj_appearing.float()
        return lam * obj_ptr + (1 - lam) * self.no_obj_ptr_linear(obj_ptr)

    def _use_mask_as_output(self, backbone_features: Tensor, high_res_features: List[Tensor], mask_inputs: Tensor,
                            multiplex_state: MultiplexState) -> SamOutput:
        """(N, 1, Hm, Wm) binary masks taken as the output: logits +-10, low-res masks Hm/4 (antialiased),
        IoU 1, object score +-10 (any pixel on); the pointer from the interactive heads with
        ``interactive_mask_downsample(mask)`` as mask prompt."""
        out_scale, out_bias = 20.0, -10.0
        mask_inputs_float = mask_inputs.to(backbone_features.dtype)
        high_res_masks = mask_inputs_float * out_scale + out_bias
        low_res_masks = F.interpolate(high_res_masks, size=(high_res_masks.size(-2) // 4, high_res_masks.size(-1) // 4),
                                      align_corners=False, mode="bilinear", antialias=True)
        ious = mask_inputs.new_ones(mask_inputs.size(0), 1, dtype=backbone_features.dtype)
        obj_ptr = self._forward_sam_heads(
            backbone_features, multiplex_state=multiplex_state,
            mask_inputs=self.interactive_mask_downsample(mask_inputs_float),
            interactive_high_res_features=high_res_features,
        ).obj_ptr
        is_obj_appearing = torch.any(mask_inputs.flatten(1).float() > 0.0, dim=1)[..., None]
        object_score_logits = out_scale * is_obj_appearing.float() + out_bias
        obj_ptr = self._gate_obj_ptr(obj_ptr, is_obj_appearing)
        return SamOutput(low_res_masks, high_res_masks, ious, low_res_masks, high_res_masks, object_score_logits,
                         obj_ptr)

    # ------------------------------------------------------------------------------------------------
    # Memory
    # ------------------------------------------------------------------------------------------------
    def _prepare_memory_conditioned_features(
        self, frame_idx: int, features: TrackerFeatures, output_dict: MultiplexMemoryBank, num_frames: int,
        multiplex_state: MultiplexState, track_in_reverse: bool = False,
    ) -> Tensor:
        """The frame's propagation features fused, per bucket, with the memory bank -> (B, C, h, w).

        Memories: the ``max_cond_frames_in_attn`` closest conditioning frames, then up to num_maskmem - 1
        tracked frames; each frame's memory keys carry its image features (``image_cross_attn_k_proj``)
        and its image position + ``maskmem_tpos_enc`` (v2: conditioning frames by their real distance,
        index num_maskmem - 1 when out of range). Pointers: every selected conditioning frame's and up to
        min(num_frames, max_obj_ptrs_in_encoder) - 1 tracked frames', 16 tokens per frame.
        """
        B, C = multiplex_state.num_buckets, self.hidden_dim
        H, W = features.feat_sizes[-1]
        image, image_pos = features.vision_feats[-1], features.vision_pos_embeds[-1]  # (HW, 1, C)
        device, dtype = image.device, image.dtype
        vision_feat, vision_pos = image.expand(-1, B, -1), image_pos.expand(-1, B, -1)
        cond_outputs = output_dict.cond_frame_outputs
        if not cond_outputs:
            raise ValueError(f"frame {frame_idx} is tracked but the memory bank has no conditioning frame")
        selected, unselected = select_closest_cond_frames(frame_idx, cond_outputs, self.max_cond_frames_in_attn,
                                                          keep_first_cond_frame=self.keep_first_cond_frame)
        sign = -1 if track_in_reverse else 1
        t_pos_and_prevs = [((frame_idx - t) * sign, out) for t, out in selected.items()]
        r = self.memory_temporal_stride_for_eval
        for t_pos, prev_frame_idx in memory_frame_indices(frame_idx, self.num_maskmem, r, track_in_reverse):
            out = output_dict.non_cond_frame_outputs.get(prev_frame_idx)
            if out is None:
                out = unselected.get(prev_frame_idx)
            t_pos_and_prevs.append((t_pos, out))
        prompt, prompt_pos, images, images_pos = [], [], [], []
        for t_pos, prev in t_pos_and_prevs:
            if prev is None or prev.maskmem_features is None or prev.maskmem_features.shape[0] == 0:
                continue
            prompt.append(prev.maskmem_features.to(device=device, dtype=dtype).flatten(2).permute(2, 0, 1))
            tpos = self.maskmem_tpos_enc[self.num_maskmem - 1 if not 0 < t_pos < self.num_maskmem
                                         else self.num_maskmem - t_pos - 1]
            maskmem_enc = prev.maskmem_pos_enc[-1].to(device=device, dtype=dtype).flatten(2).permute(2, 0, 1)
            prompt_pos.append(maskmem_enc + tpos)
            images.append(prev.image_features.to(device=device, dtype=dtype))
            images_pos.append(prev.image_pos_enc.to(device=device, dtype=dtype) + tpos)
        max_obj_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        pos_and_ptrs = [(abs(frame_idx - t), out.obj_ptr) for t, out in selected.items()]
        for t_diff in range(1, max_obj_ptrs):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or t >= num_frames:
                break
            out = output_dict.non_cond_frame_outputs.get(t, unselected.get(t))
            if out is not None:
                pos_and_ptrs.append((t_diff, out.obj_ptr))
        num_obj_ptr_tokens = 0
        if pos_and_ptrs:
            pos_list, ptrs = zip(*pos_and_ptrs)
            obj_ptrs = torch.cat([p.to(device=device, dtype=dtype) for p in ptrs], dim=1).transpose(0, 1)
            obj_pos = self._get_tpos_enc(pos_list, device=device, max_abs_pos=max_obj_ptrs).to(dtype)
            obj_pos = obj_pos.unsqueeze(1).expand(-1, B, -1).repeat_interleave(multiplex_state.multiplex_count, dim=0)
            prompt.append(obj_ptrs)
            prompt_pos.append(obj_pos)
            num_obj_ptr_tokens = obj_ptrs.shape[0]
        if not prompt or not images:
            return vision_feat.permute(1, 2, 0).view(B, C, H, W)
        encoder_out = self.transformer.encoder(
            image=image, src=vision_feat, memory_image=torch.cat(images, dim=0), memory=torch.cat(prompt, dim=0),
            image_pos=image_pos, src_pos=vision_pos, memory_image_pos=torch.cat(images_pos, dim=0),
            memory_pos=torch.cat(prompt_pos, dim=0), num_obj_ptr_tokens=num_obj_ptr_tokens,
        )
        return encoder_out["memory"].permute(1, 2, 0).view(B, C, H, W)

    def _encode_new_memory(self, features: TrackerFeatures, pred_masks_high_res: Tensor, object_score_logits: Tensor,
                           conditioning_objects: Optional[Iterable[int]], multiplex_state: MultiplexState
                           ) -> Tuple[Tensor, List[Tensor]]:
        """Per bucket: the 16 slots' sigmoid(logits) * 2 - 1 and 16 conditioning flags (1 for the objects
        conditioned on this frame) -> the memory encoder -> (B, C, h, w), plus Σ over slots whose object
        is absent (or empty) of ``no_obj_embed_spatial[slot]``. Returns (features, [pos_enc])."""
        C = self.hidden_dim
        H, W = features.feat_sizes[-1]
        x = features.vision_feats[-1]
        pix_feat = x.permute(1, 2, 0).view(x.size(1), C, H, W)
        mask_for_mem = torch.sigmoid(pred_masks_high_res)
        if self.sigmoid_scale_for_mem_enc != 1.0:
            mask_for_mem = mask_for_mem * self.sigmoid_scale_for_mem_enc
        if self.sigmoid_bias_for_mem_enc != 0.0:
            mask_for_mem = mask_for_mem + self.sigmoid_bias_for_mem_enc
        mux_masks = multiplex_state.mux(mask_for_mem).squeeze(2)
        cond_values = torch.full((mask_for_mem.shape[0],), self.condition_as_mask_input_bg, device=mask_for_mem.device,
                                 dtype=mask_for_mem.dtype)
        conditioning = sorted(conditioning_objects or [])
        if conditioning:
            cond_values[conditioning] = self.condition_as_mask_input_fg
        flags = multiplex_state.mux(cond_values.view(-1, 1, 1, 1).expand_as(mask_for_mem)).squeeze(2)
        maskmem_out = self.maskmem_backbone(pix_feat, torch.cat([mux_masks, flags], dim=1), skip_mask_sigmoid=True)
        maskmem_features = maskmem_out["vision_features"]
        scores = object_score_logits
        expected = multiplex_state.total_valid_entries
        if scores.shape[0] < expected:
            scores = torch.cat([scores, scores.new_zeros((expected - scores.shape[0],) + tuple(scores.shape[1:]))])
        scores = multiplex_state.mux(scores[:expected])
        is_obj_appearing = (scores > self.object_score_logit_threshold).float()
        no_obj_embed = ((1 - is_obj_appearing) * self.no_obj_embed_spatial.unsqueeze(0)).sum(dim=1)
        maskmem_features = maskmem_features + no_obj_embed[..., None, None].expand_as(maskmem_features)
        return maskmem_features, maskmem_out["vision_pos_enc"]

    # ------------------------------------------------------------------------------------------------
    # One frame
    # ------------------------------------------------------------------------------------------------
    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        interactive: Optional[TrackerFeatures],
        propagation: Optional[TrackerFeatures],
        point_inputs: Optional[PointInputs],
        mask_inputs: Optional[Tensor],
        output_dict: MultiplexMemoryBank,
        num_frames: int,
        multiplex_state: MultiplexState,
        track_in_reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: Optional[Tensor] = None,
        objects_to_interact: Optional[List[int]] = None,
    ) -> MultiplexStepOutput:
        """Segment the N objects of ``multiplex_state`` on ``frame_idx`` and encode the result as memory.

        Modes (official ``_track_step_aux``): ``mask_inputs`` (N, 1, Hm, Wm) -> taken as the output;
        no prompt -> propagation from memory; points with ``prev_sam_mask_logits`` (refinement) or on a
        first frame -> the interactive heads for ``objects_to_interact``; points on a later frame with
        ``objects_to_interact`` -> propagation, then those objects replaced by the interactive result.
        """
        out = MultiplexStepOutput(pred_masks=None, pred_masks_high_res=None, object_score_logits=None, obj_ptr=None,
                                  point_inputs=point_inputs, mask_inputs=mask_inputs)
        if mask_inputs is not None:
            sam = self._use_mask_as_output(self._get_interactive_pix_mem(interactive), interactive.high_res_features(),
                                           mask_inputs, multiplex_state)
            out.conditioning_objects.update(range(mask_inputs.shape[0]))
        else:
            if point_inputs is None:
                mode = "propagation_only"
            elif prev_sam_mask_logits is not None or is_init_cond_frame:
                mode = "interaction_only"
            elif objects_to_interact is not None:
                mode = "propagation_and_interaction"
            else:
                raise ValueError("points on a tracked frame need objects_to_interact")
            sam = None
            if mode != "interaction_only":
                pix_feat_with_mem = self._prepare_memory_conditioned_features(
                    frame_idx, propagation, output_dict, num_frames, multiplex_state, track_in_reverse)
                sam = self._forward_sam_heads(
                    pix_feat_with_mem, multiplex_state=multiplex_state,
                    propagation_high_res_features=propagation.high_res_features(),
                    multimask_output=self._use_multimask(is_init_cond_frame, None),
                )
            if mode != "propagation_only":
                targets = objects_to_interact if objects_to_interact is not None else \
                    list(range(multiplex_state.total_valid_entries))
                prompt_masks = None
                if prev_sam_mask_logits is not None:
                    prompt_masks = prev_sam_mask_logits[targets]
                elif mode == "propagation_and_interaction":
                    prompt_masks = sam.low_res_masks[targets]
                interaction = self._forward_sam_heads(
                    self._get_interactive_pix_mem(interactive), multiplex_state=multiplex_state,
                    point_inputs=point_inputs, mask_inputs=prompt_masks,
                    interactive_high_res_features=interactive.high_res_features(),
                    multimask_output=self._use_multimask(is_init_cond_frame, point_inputs),
                )
                out.conditioning_objects.update(targets)
                if sam is None:
                    sam = interaction
                else:
                    merged = {}
                    for name in ("low_res_multimasks", "high_res_multimasks", "ious", "low_res_masks",
                                 "high_res_masks", "object_score_logits", "obj_ptr"):
                        value = getattr(sam, name).clone()
                        value[targets] = getattr(interaction, name).to(value.dtype)
                        merged[name] = value
                    sam = SamOutput(**merged)
        out.pred_masks, out.pred_masks_high_res = sam.low_res_masks, sam.high_res_masks
        out.object_score_logits, out.ious = sam.object_score_logits, sam.ious
        out.obj_ptr = multiplex_state.mux(sam.obj_ptr)
        if run_mem_encoder and self.num_maskmem > 0:
            out.maskmem_features, out.maskmem_pos_enc = self._encode_new_memory(
                propagation, out.pred_masks_high_res, out.object_score_logits, out.conditioning_objects,
                multiplex_state)
        if propagation is not None:
            out.image_features, out.image_pos_enc = propagation.vision_feats[-1], propagation.vision_pos_embeds[-1]
        return out

    def add_new_masks_to_existing_state(
        self, out: MultiplexStepOutput, interactive: TrackerFeatures, propagation: Optional[TrackerFeatures],
        new_masks: Tensor, new_ids: Optional[List[int]], multiplex_state: MultiplexState,
        add_mask_to_memory: bool = True, allow_new_buckets: bool = False, prefer_new_buckets: bool = False,
    ) -> List[int]:
        """K new objects with (K, 1, Hm, Wm) masks (in [0, 1], taken as output) added to a frame already
        tracked (official ``add_new_masks_to_existing_state``): they get the next object indices and
        free slots (or new buckets), are appended to ``out`` (modified in place) as conditioning
        objects, and the frame's memory is re-encoded. Returns their object indices."""
        pointers = multiplex_state.demux(out.obj_ptr)
        new_idx = multiplex_state.find_next_batch_of_available_indices(
            new_masks.shape[0], allow_new_buckets=allow_new_buckets, prefer_new_buckets=prefer_new_buckets)
        multiplex_state.add_objects(new_idx, object_ids=new_ids, allow_new_buckets=allow_new_buckets,
                                    prefer_new_buckets=prefer_new_buckets)
        sam = self._use_mask_as_output(self._get_interactive_pix_mem(interactive), interactive.high_res_features(),
                                       new_masks, multiplex_state)
        side = sam.high_res_masks.shape[-1]
        if out.pred_masks_high_res is not None:
            if out.pred_masks_high_res.shape[-1] != side:
                out.pred_masks_high_res = F.interpolate(out.pred_masks_high_res, size=(side, side), mode="bilinear",
                                                        align_corners=False)
            out.pred_masks_high_res = torch.cat([out.pred_masks_high_res, sam.high_res_masks])
        low_res = F.interpolate(sam.low_res_masks, size=out.pred_masks.shape[-2:], align_corners=False, mode="bilinear",
                                antialias=True)
        out.pred_masks = torch.cat([out.pred_masks, low_res])
        out.object_score_logits = torch.cat([out.object_score_logits, sam.object_score_logits])
        out.obj_ptr = multiplex_state.mux(torch.cat([pointers, sam.obj_ptr.to(pointers.dtype)]))
        out.conditioning_objects.update(new_idx)
        if add_mask_to_memory:
            out.maskmem_features, out.maskmem_pos_enc = self._encode_new_memory(
                propagation, out.pred_masks_high_res, out.object_score_logits, out.conditioning_objects,
                multiplex_state)
        return new_idx

    def recondition_masks_in_existing_state(
        self, out: MultiplexStepOutput, interactive: TrackerFeatures, propagation: Optional[TrackerFeatures],
        masks: Tensor, object_indices: List[int], multiplex_state: MultiplexState, add_mask_to_memory: bool = True,
    ) -> None:
        """Official ``recondition_masks_in_existing_state``: the outputs of ``object_indices`` on a tracked
        frame replaced by (K, 1, Hm, Wm) masks taken as output, marked conditioning, the memory
        re-encoded. ``out`` is modified in place."""
        pointers = multiplex_state.demux(out.obj_ptr)
        sam = self._use_mask_as_output(self._get_interactive_pix_mem(interactive), interactive.high_res_features(),
                                       masks, multiplex_state)
        low_res = F.interpolate(sam.low_res_masks, size=out.pred_masks.shape[-2:], align_corners=False, mode="bilinear",
                                antialias=True)
        out.pred_masks = out.pred_masks.clone()
        out.pred_masks[object_indices] = low_res.to(out.pred_masks.dtype)
        if out.pred_masks_high_res is not None:
            out.pred_masks_high_res = out.pred_masks_high_res.clone()
            out.pred_masks_high_res[object_indices] = sam.high_res_masks.to(out.pred_masks_high_res.dtype)
        out.object_score_logits = out.object_score_logits.clone()
        out.object_score_logits[object_indices] = sam.object_score_logits.to(out.object_score_logits.dtype)
        pointers = pointers.clone()
        pointers[object_indices] = sam.obj_ptr.to(pointers.dtype)
        out.obj_ptr = multiplex_state.mux(pointers)
        out.conditioning_objects.update(object_indices)
        if add_mask_to_memory:
            out.maskmem_features, out.maskmem_pos_enc = self._encode_new_memory(
                propagation, out.pred_masks_high_res, out.object_score_logits, out.conditioning_objects,
                multiplex_state)


class Sam3MultiplexTrackerWrapper(nn.Module):
    """Holds the tracker as ``model`` (so its state-dict prefix is ``tracker.model.``, as officially)."""

    def __init__(self, model: VideoTrackingMultiplex):
        super().__init__()
        self.model = model

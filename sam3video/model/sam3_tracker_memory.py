"""The memory side of ``Sam3TrackerBase``: reading the memory bank into a prompt for the memory
attention, and encoding a frame's prediction into a new memory (official methods of
``Sam3TrackerBase``, same names).

Spatial memories are (B, mem_dim, h, w) maps; object pointers (B, C) vectors, split into
C / mem_dim tokens of width mem_dim. The prompt is seq-first (M, B, mem_dim).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .sam3_tracker_utils import (
    MemoryBank,
    apply_non_overlapping_constraints,
    frame_filter,
    memory_frame_indices,
    obj_ptr_frame_indices,
    select_closest_cond_frames,
)

# Mask logit standing for "no object" (official NO_OBJ_SCORE).
NO_OBJ_SCORE = -1024.0


class TrackerMemoryMixin:
    """Methods of ``Sam3TrackerBase`` that read and write memories (they use its parameters
    ``maskmem_tpos_enc``, ``no_mem_embed``, ``no_obj_embed_spatial``, ``obj_ptr_tpos_proj`` and its
    modules ``transformer`` and ``maskmem_backbone``)."""

    def _prepare_memory_conditioned_features(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: List[Tensor],
        current_vision_pos_embeds: List[Tensor],
        feat_sizes: list,
        output_dict: MemoryBank,
        num_frames: int,
        track_in_reverse: bool = False,
        use_prev_mem_frame: bool = True,
    ) -> Tensor:
        """The current frame's coarsest features [(HW, B, C)] fused with the memory bank -> (B, C, h, w).

        A prompted first frame (or ``use_prev_mem_frame=False``) gets ``no_mem_embed`` added instead;
        other frames need at least one conditioning frame in ``output_dict``.
        """
        B, C = current_vision_feats[-1].size(1), self.hidden_dim
        H, W = feat_sizes[-1]
        if self.num_maskmem == 0:  # no memory at all (SAM on images)
            return current_vision_feats[-1].permute(1, 2, 0).view(B, C, H, W)
        if is_init_cond_frame or not use_prev_mem_frame:
            pix_feat_with_mem = current_vision_feats[-1] + self.no_mem_embed
            return pix_feat_with_mem.permute(1, 2, 0).view(B, C, H, W)
        prompt, prompt_pos, num_obj_ptr_tokens = self._memory_prompt(
            frame_idx, output_dict, num_frames, track_in_reverse, B, current_vision_feats[-1]
        )
        encoder_out = self.transformer.encoder(
            src=current_vision_feats, src_pos=current_vision_pos_embeds, prompt=prompt, prompt_pos=prompt_pos,
            feat_sizes=feat_sizes, num_obj_ptr_tokens=num_obj_ptr_tokens,
        )
        return encoder_out["memory"].permute(1, 2, 0).view(B, C, H, W)

    def _memory_prompt(
        self, frame_idx: int, output_dict: MemoryBank, num_frames: int, track_in_reverse: bool, B: int,
        like: Tensor,
    ) -> Tuple[Tensor, Tensor, int]:
        """-> (prompt (M, B, mem_dim), prompt_pos (M, B, mem_dim), number of object-pointer tokens at
        the end of the prompt). Memories are cast to ``like``'s device and dtype (they may be stored
        in bf16 or on the CPU).

        Spatial memories: the ``max_cond_frames_in_attn`` closest conditioning frames (temporal index
        0), then up to num_maskmem - 1 tracked frames (``memory_frame_indices``); each gets the sine
        position encoding of its map plus ``maskmem_tpos_enc[num_maskmem - t - 1]``. Object pointers:
        those of the selected conditioning frames not in the future, then up to
        min(num_frames, max_obj_ptrs_in_encoder) - 1 tracked frames, with ``_get_tpos_enc``.
        """
        device, dtype = like.device, like.dtype
        cond_outputs, non_cond_outputs = output_dict.cond_frame_outputs, output_dict.non_cond_frame_outputs
        if not cond_outputs:
            raise ValueError(f"frame {frame_idx} is tracked but the memory bank has no conditioning frame")
        selected_cond_outputs, unselected_cond_outputs = select_closest_cond_frames(
            frame_idx, cond_outputs, self.max_cond_frames_in_attn, keep_first_cond_frame=self.keep_first_cond_frame
        )
        tpos_sign_mul = -1 if track_in_reverse else 1
        t_pos_and_prevs = [((frame_idx - t) * tpos_sign_mul, out, True) for t, out in selected_cond_outputs.items()]
        r = 1 if self.training else self.memory_temporal_stride_for_eval
        valid_indices = None
        if self.use_memory_selection:
            valid_indices = frame_filter(non_cond_outputs, track_in_reverse, frame_idx, num_frames, r,
                                         self.max_obj_ptrs_in_encoder, self.mf_threshold)
        for t_pos, prev_frame_idx in memory_frame_indices(frame_idx, self.num_maskmem, r, track_in_reverse,
                                                          valid_indices):
            out = non_cond_outputs.get(prev_frame_idx)
            if out is None:  # an unselected conditioning frame among the recent ones counts as tracked
                out = unselected_cond_outputs.get(prev_frame_idx)
            t_pos_and_prevs.append((t_pos, out, False))

        to_cat_prompt, to_cat_prompt_pos_embed = [], []
        for t_pos, prev, is_selected_cond_frame in t_pos_and_prevs:
            if prev is None:
                continue  # padding frames
            if prev.maskmem_features is None:
                raise ValueError("a frame in the memory bank has no memory (track_step ran without run_mem_encoder)")
            feats = prev.maskmem_features.to(device=device, dtype=dtype)
            to_cat_prompt.append(feats.flatten(2).permute(2, 0, 1))
            maskmem_enc = prev.maskmem_pos_enc[-1].to(device=device, dtype=dtype).flatten(2).permute(2, 0, 1)
            t = 0 if is_selected_cond_frame else t_pos
            to_cat_prompt_pos_embed.append(maskmem_enc + self.maskmem_tpos_enc[self.num_maskmem - t - 1])

        max_obj_ptrs_in_encoder = min(num_frames, self.max_obj_ptrs_in_encoder)
        if not self.training:  # only pointers of conditioning frames not in the future
            ptr_cond_outputs = {t: out for t, out in selected_cond_outputs.items()
                                if (t >= frame_idx if track_in_reverse else t <= frame_idx)}
        else:
            ptr_cond_outputs = selected_cond_outputs
        pos_and_ptrs = [((frame_idx - t) * tpos_sign_mul, out.obj_ptr) for t, out in ptr_cond_outputs.items()]
        for t_diff, t in obj_ptr_frame_indices(frame_idx, num_frames, max_obj_ptrs_in_encoder, track_in_reverse,
                                               valid_indices):
            out = non_cond_outputs.get(t, unselected_cond_outputs.get(t))
            if out is not None:
                pos_and_ptrs.append((t_diff, out.obj_ptr))
        num_obj_ptr_tokens = 0
        if pos_and_ptrs:
            obj_ptrs, obj_pos = self._obj_ptr_tokens(pos_and_ptrs, max_obj_ptrs_in_encoder, B, device, dtype)
            to_cat_prompt.append(obj_ptrs)
            to_cat_prompt_pos_embed.append(obj_pos)
            num_obj_ptr_tokens = obj_ptrs.shape[0]
        return torch.cat(to_cat_prompt, dim=0), torch.cat(to_cat_prompt_pos_embed, dim=0), num_obj_ptr_tokens

    def _obj_ptr_tokens(self, pos_and_ptrs: list, max_abs_pos: int, B: int, device: torch.device,
                        dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """[(temporal distance, (B, C) pointer)] -> tokens (N * C / mem_dim, B, mem_dim) and their
        temporal encodings alike (each pointer's encoding repeated for its C / mem_dim tokens)."""
        C = self.hidden_dim
        pos_list, ptrs_list = zip(*pos_and_ptrs, strict=True)
        obj_ptrs = torch.stack([p.to(device=device, dtype=dtype) for p in ptrs_list], dim=0)  # (N, B, C)
        obj_pos = self._get_tpos_enc(pos_list, max_abs_pos=max_abs_pos, device=device)
        obj_pos = obj_pos.unsqueeze(1).expand(-1, B, -1)
        if self.mem_dim < C:
            obj_ptrs = obj_ptrs.reshape(-1, B, C // self.mem_dim, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(C // self.mem_dim, dim=0)
        return obj_ptrs, obj_pos

    def _encode_new_memory(
        self,
        current_vision_feats: List[Tensor],
        feat_sizes: list,
        pred_masks_high_res: Tensor,
        object_score_logits: Tensor,
        is_mask_from_pts: bool,
        image: Optional[Tensor] = None,
    ) -> Tuple[Tensor, List[Tensor]]:
        """The coarsest features (HW, B, C) and the predicted (B, 1, H, W) mask logits ->
        (maskmem_features (B, mem_dim, h, w), maskmem_pos_enc [(B, mem_dim, h, w)]).

        The memory encoder sees sigmoid(logits) (binarised for point prompts in eval) * 20 - 10;
        ``no_obj_embed_spatial`` is added where the object score is <= 0. ``image`` is unused (the
        official signature keeps it for other memory encoders).
        """
        B, C = current_vision_feats[-1].size(1), self.hidden_dim
        H, W = feat_sizes[-1]
        pix_feat = current_vision_feats[-1].permute(1, 2, 0).view(B, C, H, W)
        if self.non_overlap_masks_for_mem_enc and not self.training:
            pred_masks_high_res = self._apply_non_overlapping_constraints(pred_masks_high_res)
        if is_mask_from_pts and not self.training:
            mask_for_mem = (pred_masks_high_res > 0).float()
        else:
            mask_for_mem = torch.sigmoid(pred_masks_high_res)
        if self.sigmoid_scale_for_mem_enc != 1.0:
            mask_for_mem = mask_for_mem * self.sigmoid_scale_for_mem_enc
        if self.sigmoid_bias_for_mem_enc != 0.0:
            mask_for_mem = mask_for_mem + self.sigmoid_bias_for_mem_enc
        maskmem_out = self.maskmem_backbone(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        maskmem_features = maskmem_out["vision_features"]
        maskmem_pos_enc = maskmem_out["vision_pos_enc"]
        is_obj_appearing = (object_score_logits > 0).float()
        maskmem_features = maskmem_features + (1 - is_obj_appearing[..., None, None]) * self.no_obj_embed_spatial[
            ..., None, None
        ].expand(*maskmem_features.shape)
        return maskmem_features, maskmem_pos_enc

    def cal_mem_score(self, object_score_logits: Tensor, iou_score: Tensor) -> Tensor:
        """Memory-selection score of a frame, a 0-dim tensor: mean of (2 sigmoid(score) - 1, 0 where
        score <= 0) (B, 1) times iou_score (B,) — broadcast to (B, B) for B > 1, as officially."""
        object_score_norm = torch.where(
            object_score_logits > 0, object_score_logits.sigmoid() * 2 - 1, torch.zeros_like(object_score_logits)
        )
        return (object_score_norm * iou_score).mean()

    def _apply_non_overlapping_constraints(self, pred_masks: Tensor) -> Tensor:
        """(B, 1, H, W) logits: where an object is not the highest scoring, clamp its logits to <= -10."""
        return apply_non_overlapping_constraints(pred_masks)

"""Mask propagation of one group of objects with the SAM 3 tracker (the official "bucket": objects
born on the same frame, tracked together as a batch of B rows, with one memory bank).

Forward only, inference only. The bank is bounded: after each tracked frame it is evicted to what
``track_step`` can still read (``MemoryBank.evict``), which leaves the results unchanged.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.errors import InputError
from sam3video.model.sam3_tracker_base import Sam3TrackerBase
from sam3video.model.sam3_tracker_utils import MemoryBank, TrackStepOutput


class FrameFeatures(NamedTuple):
    """One frame's tracker features, flattened seq-first (``_prepare_backbone_features``):
    vision_feats [(16hw, 1, C/8), (4hw, 1, C/4), (hw, 1, C)], vision_pos_embeds [(HW_i, 1, C)],
    feat_sizes [(4h, 4w), (2h, 2w), (h, w)]. The batch may be 1 (expanded to B) or B."""

    vision_feats: List[Tensor]
    vision_pos_embeds: List[Tensor]
    feat_sizes: List[Tuple[int, int]]


class FrameMasks(NamedTuple):
    """What the tracker gives for B objects on one frame."""

    low_res_masks: Tensor  # (B, 4h, 4w) mask logits (a prompted frame: (B, S // stride * 4, ...))
    high_res_masks: Tensor  # (B, H, W) mask logits, H = W = image_size (a prompted frame: (B, S, S))
    object_score_logits: Tensor  # (B,) > 0: the object is present
    ious: Tensor  # (B, M) predicted IoUs of the M candidate masks (1 on a prompted frame)


def frame_features(tracker: Sam3TrackerBase, tracker_backbone_out: dict, index: int = 0) -> FrameFeatures:
    """Image ``index`` of ``Sam3VideoModel.forward_image(images)["tracker_backbone_out"]`` (batch N)
    -> its ``FrameFeatures`` (batch 1)."""
    one = {key: [x[index : index + 1] for x in tracker_backbone_out[key]] for key in ("backbone_fpn", "vision_pos_enc")}
    _, feats, pos, sizes = tracker._prepare_backbone_features(one)
    return FrameFeatures(feats, pos, sizes)


class MaskPropagator:
    """The memory bank of B objects and the tracker steps that read and fill it.

    ``add_masks`` makes a conditioning frame from mask prompts (official ``add_new_mask``, the
    memory encoded at once); ``propagate`` tracks a later frame. Frames go forward: ``propagate``
    takes frames after every frame seen, ``add_masks`` the last tracked frame (to re-prompt it) or
    a later one. The device is that of the tracker and the features.
    """

    def __init__(self, tracker: Sam3TrackerBase, num_frames: int):
        if num_frames < 1:
            raise InputError(f"a video needs at least one frame, got num_frames={num_frames}")
        self.tracker = tracker
        self.num_frames = num_frames
        self.bank = MemoryBank()
        self.num_objects: Optional[int] = None  # B, set by the first add_masks
        self.last_tracked: Optional[int] = None  # the last frame given to propagate
        self.last_frame = -1  # the last frame given to either

    @torch.inference_mode()
    def add_masks(self, frame_idx: int, masks: Tensor, features: FrameFeatures) -> FrameMasks:
        """masks (B, H, W): bool (resized bilinearly with antialiasing, as official ``add_new_mask``)
        or logits (resized bilinearly, then > 0, as the official video loop does for detections), to
        the tracker's ``input_mask_size``² -> the conditioning frame's output (the prompt itself)."""
        self._check_frame(frame_idx)
        if not (isinstance(masks, Tensor) and masks.ndim == 3
                and (masks.dtype == torch.bool or masks.is_floating_point())):
            raise InputError(f"masks must be a (B, H, W) bool or float tensor, got {_described(masks)}")
        if self.num_objects is not None and masks.shape[0] != self.num_objects:
            raise InputError(f"this group tracks {self.num_objects} objects, got masks for {masks.shape[0]}")
        if self.last_tracked is not None and frame_idx < self.last_tracked:
            raise InputError(f"masks on frame {frame_idx}: frames go forward, frame {self.last_tracked} is tracked")
        size = (self.tracker.input_mask_size,) * 2
        device = features.vision_feats[-1].device
        mask_inputs = masks[:, None].to(device=device, dtype=torch.float32)
        if masks.dtype == torch.bool and masks.shape[-2:] != size:
            mask_inputs = F.interpolate(mask_inputs, size=size, mode="bilinear", align_corners=False, antialias=True)
        elif masks.dtype != torch.bool:
            if masks.shape[-2:] != size:
                mask_inputs = F.interpolate(mask_inputs, size=size, mode="bilinear", align_corners=False)
            mask_inputs = (mask_inputs > 0).float()
        out = self._step(frame_idx, features, mask_inputs, is_init_cond_frame=frame_idx != self.last_tracked)
        self.num_objects = masks.shape[0]
        self.bank.non_cond_frame_outputs.pop(frame_idx, None)  # a re-prompted frame is conditioning only
        self.bank.add(frame_idx, out, is_cond=True)
        self.last_frame = max(self.last_frame, frame_idx)
        return _frame_masks(out)

    @torch.inference_mode()
    def propagate(self, frame_idx: int, features: FrameFeatures) -> FrameMasks:
        """Track the objects to frame ``frame_idx`` (after every frame seen) -> their masks; the
        output is stored as a tracked frame and the bank evicted."""
        self._check_frame(frame_idx)
        if not self.bank.cond_frame_outputs:
            raise InputError(f"cannot propagate to frame {frame_idx}: no masks were added (add_masks first)")
        if frame_idx <= self.last_frame:
            raise InputError(f"cannot propagate to frame {frame_idx}: frames go forward, frame {self.last_frame} "
                             "was seen")
        out = self._step(frame_idx, features, None, is_init_cond_frame=False)
        self.bank.add(frame_idx, out, is_cond=False)
        self.last_tracked = self.last_frame = frame_idx
        t = self.tracker
        self.bank.evict(frame_idx, num_maskmem=t.num_maskmem,
                        max_obj_ptrs=min(self.num_frames, t.max_obj_ptrs_in_encoder),
                        r=t.memory_temporal_stride_for_eval,
                        mf_threshold=t.mf_threshold if t.use_memory_selection else None)
        return _frame_masks(out)

    def _step(self, frame_idx: int, features: FrameFeatures, mask_inputs: Optional[Tensor],
              is_init_cond_frame: bool) -> TrackStepOutput:
        B = self.num_objects if mask_inputs is None else mask_inputs.shape[0]
        batch = features.vision_feats[-1].shape[1]
        if batch not in (1, B):
            raise InputError(f"features of frame {frame_idx} have batch {batch}, expected 1 or {B}")
        return self.tracker.track_step(
            frame_idx=frame_idx, is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=[x.expand(-1, B, -1) for x in features.vision_feats],
            current_vision_pos_embeds=[x.expand(-1, B, -1) for x in features.vision_pos_embeds],
            feat_sizes=features.feat_sizes, point_inputs=None, mask_inputs=mask_inputs, output_dict=self.bank,
            num_frames=self.num_frames,
        )

    def _check_frame(self, frame_idx: int) -> None:
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, int) or not 0 <= frame_idx < self.num_frames:
            raise InputError(f"frame index must be an integer in [0, {self.num_frames}), got {frame_idx!r}")


def _frame_masks(out: TrackStepOutput) -> FrameMasks:
    return FrameMasks(out.pred_masks[:, 0], out.pred_masks_high_res[:, 0], out.object_score_logits[:, 0], out.ious)


def _described(value) -> str:
    if isinstance(value, Tensor):
        return f"shape {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return type(value).__name__

"""Typed state and pure helpers of the SAM 3 tracker (official: the ``output_dict`` / ``current_out``
dicts of ``Sam3TrackerBase`` and ``sam3_tracker_utils``).

Frame indices are 0-based. ``B`` is the number of objects tracked together (one row each).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class PointInputs:
    """Point prompts (official dict keys ``point_coords``, ``point_labels``).

    point_coords: (B, P, 2) float32, absolute pixel (x, y) in the model input frame (image_size²);
    point_labels: (B, P) int32, 1 positive, 0 negative, 2 / 3 box corners, -1 padding.
    """

    point_coords: Tensor
    point_labels: Tensor


class SamHeadsOutput(NamedTuple):
    """What the SAM heads give for B objects (the official 7-tuple, in its order). M = 3 with
    multimask output, else 1; (h, w) is the image-embedding size, H = W = image_size."""

    low_res_multimasks: Tensor  # (B, M, 4h, 4w) mask logits, -1024 where no object is predicted
    high_res_multimasks: Tensor  # (B, M, H, W)
    ious: Tensor  # (B, M) predicted IoU
    low_res_masks: Tensor  # (B, 1, 4h, 4w) the mask of highest predicted IoU
    high_res_masks: Tensor  # (B, 1, H, W)
    obj_ptr: Tensor  # (B, C) object pointer (``no_obj_ptr`` where no object is predicted)
    object_score_logits: Tensor  # (B, 1) > 0: the object is present


@dataclass
class TrackStepOutput:
    """One frame's output of ``track_step`` for B objects (official ``current_out``; same key names).

    pred_masks (B, 1, 4h, 4w) and pred_masks_high_res (B, 1, H, W) are mask logits; on a frame with a
    (B, 1, Hm, Wm) mask prompt they are (B, 1, Hm // stride * 4, Wm // stride * 4) and (B, 1, Hm, Wm),
    as officially (72² and 256² for a 256² prompt at the tiny size, 328² and 1152² at full size);
    obj_ptr (B, C); object_score_logits (B, 1); ious (B, M) (ours: the official code keeps only
    their max, ``iou_score`` (B,), and ``eff_iou_score`` (), under memory selection);
    maskmem_features (B, mem_dim, h, w) and maskmem_pos_enc [(B, mem_dim, h, w)] (None without the
    memory encoder, or once evicted by ``MemoryBank.evict``).
    """

    point_inputs: Optional[PointInputs]
    mask_inputs: Optional[Tensor]
    pred_masks: Tensor
    pred_masks_high_res: Optional[Tensor]  # None once evicted from a MemoryBank
    obj_ptr: Tensor
    object_score_logits: Tensor
    ious: Tensor
    iou_score: Optional[Tensor] = None
    eff_iou_score: Optional[Tensor] = None
    maskmem_features: Optional[Tensor] = None
    maskmem_pos_enc: Optional[List[Tensor]] = None

    def to_dict(self) -> dict:
        """The official ``current_out`` dict (``point_inputs`` as a dict; unset optional keys left out)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.point_inputs is not None:
            out["point_inputs"] = dataclasses.asdict(self.point_inputs)
        return {k: v for k, v in out.items() if v is not None or k in ("point_inputs", "mask_inputs")}


def selection_score(out: TrackStepOutput) -> Optional[float]:
    """``out.eff_iou_score`` as a float, read off the device once per output (comparing the tensor is a host sync,
    and ``frame_filter`` and ``MemoryBank.evict`` compare up to max_obj_ptrs stored scores on every frame). The same
    comparisons: a float32 above a threshold as a float32 is above it as a float64."""
    score = out.eff_iou_score
    if score is None:
        return None
    cached = out.__dict__.get("_selection_score")
    if cached is None or cached[0] is not score:
        cached = out.__dict__["_selection_score"] = (score, float(score.detach()))
    return cached[1]


@dataclass
class MemoryBank:
    """The frames a tracker conditions on (official ``output_dict``): prompted frames
    (``cond_frame_outputs``) and tracked frames (``non_cond_frame_outputs``), frame index -> output.

    The official bank keeps every frame (about 1 MB per object and frame at full size); ``evict``
    bounds it to what ``track_step`` can still read."""

    cond_frame_outputs: Dict[int, TrackStepOutput] = field(default_factory=dict)
    non_cond_frame_outputs: Dict[int, TrackStepOutput] = field(default_factory=dict)

    def add(self, frame_idx: int, output: TrackStepOutput, is_cond: bool) -> None:
        """Store ``output`` as a conditioning (prompted) or a tracked frame."""
        (self.cond_frame_outputs if is_cond else self.non_cond_frame_outputs)[frame_idx] = output

    def evict(
        self, frame_idx: int, num_maskmem: int, max_obj_ptrs: int, r: int = 1,
        mf_threshold: Optional[float] = None, track_in_reverse: bool = False,
        keep: Optional[set] = None, keep_entries: bool = False,
    ) -> None:
        """Drop from the tracked frames before ``frame_idx`` (after it, in reverse) what ``track_step``
        can never read on ``frame_idx`` or any later (earlier) frame, so that results are unchanged:

        - ``pred_masks_high_res`` of all of them (never read; the official bank does not store them);
        - ``maskmem_features`` / ``maskmem_pos_enc`` of those no future frame can take as spatial
          memory (``memory_frame_indices``): without memory selection, older than the num_maskmem - 1
          frame window (every r-th frame); with it (``mf_threshold`` given), all but the adjacent frame
          and, per residue mod r, the num_maskmem - 1 most recent with ``eff_iou_score > mf_threshold``;
        - whole entries no future frame can read a pointer of (or select, ``frame_filter``): without
          selection, older than max_obj_ptrs - 1 frames; with it, all but the adjacent frame and, per
          residue mod r, the max_obj_ptrs - 1 most recent selectable ones (low scorers may be very old).

        Pass the tracker's settings: ``num_maskmem``, ``max_obj_ptrs = min(num_frames,
        max_obj_ptrs_in_encoder)``, ``r = memory_temporal_stride_for_eval``, ``mf_threshold`` under
        ``use_memory_selection`` (else None). Calling it with the frame just stored also keeps what is
        needed if that frame is then re-prompted. Conditioning frames are never evicted (prompts bound
        them), nor frames at or after ``frame_idx``. Stored outputs are replaced, not modified.
        Frames in ``keep`` stay whole; ``keep_entries``: every entry stays (mask logits and pointer; an
        interactive session's clicks read them), only memory maps go.
        """
        sign = -1 if track_in_reverse else 1
        past = sorted((t for t in self.non_cond_frame_outputs if (frame_idx - t) * sign > 0), key=lambda t: -t * sign)
        if mf_threshold is None:
            keep_mem = {t for nxt in range(frame_idx, frame_idx + sign * (num_maskmem * r + 2), sign)
                        for _, t in memory_frame_indices(nxt, num_maskmem, r, track_in_reverse)}
            keep_entry = keep_mem | {t for t in past if abs(frame_idx - t) < max_obj_ptrs}
        else:
            keep_mem, keep_entry, counts = {frame_idx - sign}, {frame_idx - sign}, {}
            for t in past:  # most recent first; frame 0 is never scanned forward (frame_filter)
                score = selection_score(self.non_cond_frame_outputs[t])
                if score is None or (t == 0 and not track_in_reverse) or not score > mf_threshold:
                    continue
                n = counts[t % r] = counts.get(t % r, 0) + 1
                if n <= max(1, max_obj_ptrs - 1):
                    keep_entry.add(t)
                if n <= num_maskmem - 1:
                    keep_mem.add(t)
        for t in past:
            if keep is not None and t in keep:
                continue
            out = self.non_cond_frame_outputs[t]
            if t not in keep_entry and not keep_entries:
                del self.non_cond_frame_outputs[t]
            elif out.pred_masks_high_res is not None or (t not in keep_mem and out.maskmem_features is not None):
                slim = {} if t in keep_mem else {"maskmem_features": None, "maskmem_pos_enc": None}
                self.non_cond_frame_outputs[t] = dataclasses.replace(out, pred_masks_high_res=None, **slim)

    def tensors(self) -> List[Tensor]:
        """Every tensor stored, conditioning and tracked frames."""
        found = []
        for out in (*self.cond_frame_outputs.values(), *self.non_cond_frame_outputs.values()):
            for f in dataclasses.fields(out):
                value = getattr(out, f.name)
                if isinstance(value, PointInputs):
                    value = [value.point_coords, value.point_labels]
                found.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, Tensor))
        return found

    def nbytes(self) -> int:
        """Bytes held by the stored tensors (each counted whole, views included)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())


def apply_non_overlapping_constraints(pred_masks: Tensor) -> Tensor:
    """(N, 1, H, W) logits: at each pixel only the argmax object (first on ties) keeps its logit, the
    others are clamped to <= -10 (official ``_apply_non_overlapping_constraints``)."""
    batch_size = pred_masks.size(0)
    if batch_size == 1:
        return pred_masks
    max_obj_inds = torch.argmax(pred_masks, dim=0, keepdim=True)
    batch_obj_inds = torch.arange(batch_size, device=pred_masks.device)[:, None, None, None]
    keep = max_obj_inds == batch_obj_inds
    return torch.where(keep, pred_masks, torch.clamp(pred_masks, max=-10.0))


def get_1d_sine_pe(pos_inds: Tensor, dim: int, temperature: float = 10000) -> Tensor:
    """(N,) positions -> (N, dim): [sin | cos] (not interleaved) of pos / temperature^(2 (i // 2) / (dim / 2))."""
    pe_dim = dim // 2
    dim_t = torch.arange(pe_dim, dtype=torch.float32, device=pos_inds.device)
    dim_t = temperature ** (2 * (dim_t // 2) / pe_dim)
    pos_embed = pos_inds.unsqueeze(-1) / dim_t
    return torch.cat([pos_embed.sin(), pos_embed.cos()], dim=-1)


def select_closest_cond_frames(
    frame_idx: int, cond_frame_outputs: Mapping[int, TrackStepOutput], max_cond_frame_num: int,
    keep_first_cond_frame: bool = False,
) -> Tuple[dict, dict]:
    """At most ``max_cond_frame_num`` (-1: all) conditioning frames for ``frame_idx`` -> (selected,
    unselected), both frame index -> output. In order: optionally the first one before, the closest
    before, the closest at or after, then the temporally closest others (ties: insertion order)."""
    if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
        return dict(cond_frame_outputs), {}
    assert max_cond_frame_num >= 2, "we should allow using 2+ conditioning frames"
    selected = {}
    if keep_first_cond_frame:
        idx_first = min((t for t in cond_frame_outputs if t < frame_idx), default=None)
        if idx_first is None:  # tracking in reverse
            idx_first = max((t for t in cond_frame_outputs if t > frame_idx), default=None)
        if idx_first is not None:
            selected[idx_first] = cond_frame_outputs[idx_first]
    idx_before = max((t for t in cond_frame_outputs if t < frame_idx), default=None)
    if idx_before is not None:
        selected[idx_before] = cond_frame_outputs[idx_before]
    idx_after = min((t for t in cond_frame_outputs if t >= frame_idx), default=None)
    if idx_after is not None:
        selected[idx_after] = cond_frame_outputs[idx_after]
    num_remain = max_cond_frame_num - len(selected)
    inds_remain = sorted((t for t in cond_frame_outputs if t not in selected), key=lambda x: abs(x - frame_idx))
    selected.update((t, cond_frame_outputs[t]) for t in inds_remain[:num_remain])
    unselected = {t: v for t, v in cond_frame_outputs.items() if t not in selected}
    return selected, unselected


def frame_filter(
    non_cond_frame_outputs: Mapping[int, TrackStepOutput], track_in_reverse: bool, frame_idx: int,
    num_frames: int, r: int, max_obj_ptrs_in_encoder: int, mf_threshold: float,
) -> List[int]:
    """Memory selection (SAM2Long): tracked frames before ``frame_idx`` (after, in reverse) whose
    ``eff_iou_score`` exceeds ``mf_threshold``, every ``r``-th, at most min(num_frames, max_obj_ptrs) - 1,
    oldest first, plus always the adjacent frame last. Frame 0 (forward) or the last frame (reverse)
    is never scanned, as officially; the first frame of the direction gets []."""
    if (frame_idx == 0 and not track_in_reverse) or (frame_idx == num_frames - 1 and track_in_reverse):
        return []
    max_num = min(num_frames, max_obj_ptrs_in_encoder)
    if not track_in_reverse:
        start, end, step, must_include = frame_idx - 1, 0, -r, frame_idx - 1
    else:
        start, end, step, must_include = frame_idx + 1, num_frames, r, frame_idx + 1
    valid_indices: List[int] = []
    for i in range(start, end, step):
        out = non_cond_frame_outputs.get(i)
        score = None if out is None else selection_score(out)
        if score is None:
            continue
        if score > mf_threshold:
            valid_indices.insert(0, i)
        if len(valid_indices) >= max_num - 1:
            break
    if must_include not in valid_indices:
        valid_indices.append(must_include)
    return valid_indices


def memory_frame_indices(
    frame_idx: int, num_maskmem: int, r: int, track_in_reverse: bool, valid_indices: Optional[List[int]] = None,
) -> List[Tuple[int, int]]:
    """(t_pos, frame index) of the up to num_maskmem - 1 tracked frames whose spatial memory
    ``frame_idx`` attends to; t_pos 1 is the oldest, num_maskmem - 1 the adjacent frame.

    Without memory selection (``valid_indices`` None): the adjacent frame, then every r-th frame
    further away; with it: the last entries of ``valid_indices``. Indices may be out of the video.
    """
    pairs = []
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos  # how many frames before (after, in reverse) the current one
        if valid_indices is not None:
            if t_rel > len(valid_indices):
                continue
            prev = valid_indices[-t_rel]
        elif t_rel == 1:
            prev = frame_idx + 1 if track_in_reverse else frame_idx - 1
        elif not track_in_reverse:
            prev = ((frame_idx - 2) // r) * r - (t_rel - 2) * r
        else:
            prev = -(-(frame_idx + 2) // r) * r + (t_rel - 2) * r
        pairs.append((t_pos, prev))
    return pairs


def obj_ptr_frame_indices(
    frame_idx: int, num_frames: int, max_obj_ptrs: int, track_in_reverse: bool,
    valid_indices: Optional[List[int]] = None,
) -> List[Tuple[int, int]]:
    """(t_diff, frame index) of the tracked frames whose object pointers ``frame_idx`` attends to,
    t_diff = 1 .. max_obj_ptrs - 1. With memory selection, t_diff counts selected frames (not frames),
    and the oldest selected frame is not used, as officially."""
    pairs = []
    for t_diff in range(1, max_obj_ptrs):
        if valid_indices is None:
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or t >= num_frames:
                break
        else:
            if -t_diff <= -len(valid_indices):
                break
            t = valid_indices[-t_diff]
        pairs.append((t_diff, t))
    return pairs


def encode_prompts(prompt_encoder, batch: int, device: torch.device, point_inputs: Optional[PointInputs],
                   mask_inputs: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """A SAM prompt encoder on ``batch`` objects' points (a single padding point, label -1, when None) and
    (batch, 1, *, *) mask prompt (resized to the encoder's mask size, bilinear antialiased) -> (sparse, dense)."""
    if point_inputs is not None:
        coords, labels = point_inputs.point_coords, point_inputs.point_labels
        assert coords.size(0) == batch and labels.size(0) == batch
    else:
        coords = torch.zeros(batch, 1, 2, device=device)
        labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
    mask_prompt = None
    if mask_inputs is not None:
        assert mask_inputs.ndim == 4 and mask_inputs.shape[:2] == (batch, 1)
        mask_prompt = mask_inputs
        if mask_inputs.shape[-2:] != prompt_encoder.mask_input_size:
            mask_prompt = F.interpolate(mask_inputs.float(), size=prompt_encoder.mask_input_size, align_corners=False,
                                        mode="bilinear", antialias=True)
    return prompt_encoder(points=(coords, labels), boxes=None, masks=mask_prompt)


def best_masks(low_res_multimasks: Tensor, ious: Tensor, sam_output_tokens: Tensor, object_score_logits: Tensor,
               multimask_output: bool, image_size: int, no_obj_score: float, threshold: float = 0.0):
    """A SAM head's K candidates per object -> (low_res_multimasks, high_res_multimasks, low_res_masks,
    high_res_masks, pointer token (N, C), is_obj_appearing (N, 1)): masks set to ``no_obj_score`` where the
    object score is <= ``threshold``, upsampled to image_size, the candidate of highest predicted IoU kept."""
    is_obj_appearing = object_score_logits > threshold
    low_res_multimasks = torch.where(is_obj_appearing[:, None, None], low_res_multimasks, no_obj_score).float()
    high_res_multimasks = F.interpolate(low_res_multimasks, size=(image_size, image_size), mode="bilinear",
                                        align_corners=False)
    token = sam_output_tokens[:, 0]
    if not multimask_output:
        return low_res_multimasks, high_res_multimasks, low_res_multimasks, high_res_multimasks, token, is_obj_appearing
    best = torch.argmax(ious, dim=-1)
    rows = torch.arange(ious.shape[0], device=ious.device)
    low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
    high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
    if sam_output_tokens.size(1) > 1:
        token = sam_output_tokens[rows, best]
    return low_res_multimasks, high_res_multimasks, low_res_masks, high_res_masks, token, is_obj_appearing

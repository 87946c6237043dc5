"""The official SAM 3.1 detection + tracking loop (``Sam3MultiplexBase._det_track_one_frame_impl`` and
``Sam3MultiplexTracking.propagate_in_video``, GitHub main @96914d2), one text prompt, forward in time.

Per frame: the detections the loop keeps (``planning.select_detections``: IoM NMS, boundary rule),
every tracker state propagated one frame without memory (``MultiplexTrackerState.propagate``), the planning
rules (``planning.plan_frame``: IoM association, hot-start, recondition with the in-place logit blend,
occlusion suppression, cap, confirmation), re-prompted objects merged into their stored outputs, the memories
encoded from the planned masks under the area-shrinkage rule, new objects put into the fullest state that fits
(or a new state), removed ones deleted, then the frame's outputs. ``Sam31Loop.step`` returns one frame's raw
outputs; ``ConfirmationBuffer`` delays them by ``hotstart_delay`` frames and hides the objects not confirmed by
two frames later, as the official ``propagate_in_video`` does (SAM 3.1 hides nothing else).

A state is the official tracker ``inference_state``: objects in buckets of 16 (``MultiplexState``), one memory
bank. Shapes: detector masks (Q, h, w) logits (4x the feature grid); tracker masks (N, 1, h, w) logits at
``low_res_mask_size``; mask prompts (K, S, S) bool at ``input_mask_size`` (16x the grid); ``video_size`` (H, W).
Memories are stored in ``memory_dtype`` (bf16 officially, on every device). Unlike the official bank, each
state keeps only what later frames can read (``MultiplexTrackerState.evict``; results unchanged), so memory stays
flat however long the clip. The reading this follows: ``notes/sam31_loop_reading.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.model.multiplex_utils import MultiplexState, new_multiplex_state
from sam3video.model.sam3_tracker_utils import apply_non_overlapping_constraints, memory_frame_indices
from sam3video.model.sam31_tracker import (
    MultiplexMemoryBank,
    MultiplexStepOutput,
    TrackerFeatures,
    VideoTrackingMultiplex,
)
from sam3video.thresholds import Sam31LoopConfig

from ..sam3.loop import LoopFrame, LoopOutput, postprocess_frame, prompt_mask
from ..sam3.planning import memory_object_score_logits, suppress_object_pw_area_shrinkage
from .planning import FrameDetections31, PlanningState31, plan_frame, select_detections, unconfirmed_obj_ids

NO_OBJ_SCORE = -1024.0


class Sam31Features(NamedTuple):
    """One frame's tracker features: the tri-neck's click path and propagation path."""

    interactive: TrackerFeatures
    propagation: TrackerFeatures


def _resize(masks: Tensor, size, antialias: bool = False) -> Tensor:
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks, size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)


class MultiplexTrackerState:
    """The official tracker ``inference_state`` of one group of objects: ``obj_ids`` (object-index order), their
    buckets (``mplex``), the memory bank, which frames hold each object's mask input, and which frames are
    consolidated (their stored output is reused when the frame is reached again)."""

    def __init__(self, tracker: VideoTrackingMultiplex, num_frames: int, video_size: tuple[int, int],
                 memory_dtype: torch.dtype = torch.bfloat16):
        self.tracker = tracker
        self.num_frames = num_frames
        self.video_size = video_size
        self.memory_dtype = memory_dtype
        self.obj_ids: list[int] = []
        self.mplex: Optional[MultiplexState] = None
        self.bank = MultiplexMemoryBank()
        self.input_frames: dict[int, set[int]] = {}  # obj id -> frames with a mask input
        self.consolidated: dict[int, bool] = {}  # frame -> stored as conditioning frame
        self.tracked_frames: set[int] = set()
        self.rows: dict[int, list[int]] = {}  # frame -> obj ids of its stored rows (local_obj_id_to_idx)

    def __len__(self) -> int:
        return len(self.obj_ids)

    @property
    def available_slots(self) -> int:
        return self.mplex.available_slots if self.mplex is not None else 0

    def _stored(self, frame_idx: int) -> Optional[MultiplexStepOutput]:
        return self.bank.cond_frame_outputs.get(frame_idx) or self.bank.non_cond_frame_outputs.get(frame_idx)

    # -- propagation and memory ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def propagate(self, frame_idx: int, features: Sam31Features, reverse: bool = False, encode_memory: bool = False
                  ) -> tuple[Tensor, Tensor]:
        """Track the state to ``frame_idx`` (from later frames when ``reverse``) -> ((N, h, w) mask logits, (N,)
        object score logits). Its memory is encoded later (``encode_memory``, from the loop's planned masks), or
        with ``encode_memory`` at once from the tracked masks (a session's partial propagation). A consolidated
        frame gives its stored output."""
        if frame_idx in self.consolidated:
            out = self._stored(frame_idx)
        else:
            out = self.tracker.track_step(frame_idx, False, None, features.propagation, None, None, self.bank,
                                          self.num_frames, self.mplex, track_in_reverse=reverse,
                                          run_mem_encoder=encode_memory)
            out.pred_masks_high_res = None
            if encode_memory:
                out.maskmem_features = out.maskmem_features.to(self.memory_dtype)
            self.bank.add(frame_idx, out, is_cond=False)
            self.rows[frame_idx] = list(self.obj_ids)
        self.tracked_frames.add(frame_idx)
        return out.pred_masks[:, 0], out.object_score_logits[:, 0]

    def _encode(self, out: MultiplexStepOutput, high_res: Tensor, scores: Tensor, features: Sam31Features) -> None:
        feats, pos = self.tracker._encode_new_memory(features.propagation, high_res, scores, out.conditioning_objects,
                                                     self.mplex)
        out.maskmem_features, out.maskmem_pos_enc = feats.to(self.memory_dtype), pos
        out.image_features = features.propagation.vision_feats[-1]
        out.image_pos_enc = features.propagation.vision_pos_embeds[-1]

    @torch.inference_mode()
    def encode_memory(self, frame_idx: int, high_res_masks: Tensor, object_score_logits: Tensor,
                      features: Sam31Features) -> None:
        """MB ``_tracker_update_memories`` for this state: (N, 1, S, S) masks encoded as the memory of
        ``frame_idx`` (conditioning flags from the stored output), written into its stored output(s)."""
        stored = [o for o in (self.bank.cond_frame_outputs.get(frame_idx),
                              self.bank.non_cond_frame_outputs.get(frame_idx)) if o is not None]
        if not stored:
            return
        self._encode(stored[0], high_res_masks, object_score_logits, features)  # flags of cond[t], else non_cond[t]
        for out in stored[1:]:
            out.maskmem_features, out.maskmem_pos_enc = stored[0].maskmem_features, stored[0].maskmem_pos_enc
            out.image_features, out.image_pos_enc = stored[0].image_features, stored[0].image_pos_enc

    # -- mask inputs (official add_new_masks + propagate_in_video_preflight) -------------------------------------
    @torch.inference_mode()
    def add_masks(self, frame_idx: int, obj_ids: list[int], masks: Tensor, features: Sam31Features,
                  reconditioning: bool = False) -> None:
        """Mask inputs (K, S, S) bool for ``obj_ids`` on ``frame_idx``: new objects (a new state: the frame
        becomes its conditioning frame; an existing state: free slots, the frame stays a tracked frame) or, with
        ``reconditioning``, existing objects re-prompted. Then the frame is consolidated and its memory encoded
        (official ``add_new_masks`` then ``propagate_in_video_preflight``)."""
        t = self.tracker
        mask_float = masks[:, None].float()
        video_inputs = _resize(mask_float, self.video_size, antialias=True) > 0.5
        is_new_state = self.mplex is None
        if is_new_state:
            self.mplex = new_multiplex_state(len(obj_ids), t.multiplex_count, mask_float.device, object_ids=list(obj_ids))
        for obj_id in obj_ids:
            self.input_frames.setdefault(obj_id, set()).add(frame_idx)
        is_cond = frame_idx not in self.tracked_frames
        if is_new_state:
            self.obj_ids = list(obj_ids)
            idxs = list(range(len(obj_ids)))
            out = t.track_step(frame_idx, True, features.interactive, features.propagation, None, mask_float,
                               MultiplexMemoryBank(), self.num_frames, self.mplex, run_mem_encoder=False)
            out.pred_masks_high_res = None
        else:
            existing = self._stored(frame_idx)
            if reconditioning:
                idxs = [self.obj_ids.index(i) for i in obj_ids]
                t.recondition_masks_in_existing_state(existing, features.interactive, None, mask_float, idxs,
                                                      self.mplex, add_mask_to_memory=False)
            else:
                existing.pred_masks_high_res = None
                idxs = t.add_new_masks_to_existing_state(existing, features.interactive, None, mask_float,
                                                         list(obj_ids), self.mplex, add_mask_to_memory=False)
                self.obj_ids += list(obj_ids)
            out = existing
        # the stored output seen at video resolution: non-overlapping, the inputs' rows +-1024
        video = _resize(out.pred_masks, self.video_size)
        video = apply_non_overlapping_constraints(video)
        video[idxs] = torch.where(video_inputs, -NO_OBJ_SCORE, NO_OBJ_SCORE)
        # each input row loses the pixels of the other inputs (a symmetric cut)
        temp = {}
        for k, idx in enumerate(idxs):
            row = video[idx:idx + 1]
            if len(idxs) > 1:
                others = torch.cat([video_inputs[:k], video_inputs[k + 1:]]).any(dim=0, keepdim=True)
                row = torch.where(others, NO_OBJ_SCORE, row)
            temp[idx] = row
        if not is_new_state and frame_idx in self.bank.cond_frame_outputs:
            # official: the consolidation reads cond[t] first, edited in place, without video-resolution masks
            source = out.pred_masks
        else:  # the output this call stored, with its video-resolution masks
            source = video
        consolidated = self._consolidate(frame_idx, out, source, temp, features)
        if is_new_state or is_cond:
            self.bank.cond_frame_outputs[frame_idx] = consolidated
            self.bank.non_cond_frame_outputs.pop(frame_idx, None)
            self.consolidated[frame_idx] = True
        elif frame_idx in self.bank.cond_frame_outputs:
            pass  # official: the consolidated copy of a conditioning frame is dropped; the in-place edit stays
        else:
            self.bank.non_cond_frame_outputs[frame_idx] = consolidated
            self.consolidated[frame_idx] = False
        self.tracked_frames.add(frame_idx)
        self.rows[frame_idx] = list(self.obj_ids)

    def _consolidate(self, frame_idx: int, out: MultiplexStepOutput, masks: Tensor, temp: dict,
                     features: Sam31Features) -> MultiplexStepOutput:
        """Official ``_consolidate_temp_output_across_obj(run_mem_encoder=True)``: ``masks`` (N, 1, *, *) at
        low resolution (antialiased when shrinking), the input rows from ``temp`` (video resolution), then
        upsampled to image_size, pixel-argmax non-overlap, memory encoded."""
        t = self.tracker
        size = (t.sam_image_embedding_size * 4,) * 2
        low = _resize(masks, size, antialias=masks.shape[-1] > size[1]).clone()
        for idx, row in temp.items():
            low[idx:idx + 1] = _resize(row, size, antialias=True)
        consolidated = MultiplexStepOutput(
            pred_masks=low, pred_masks_high_res=None, object_score_logits=out.object_score_logits, obj_ptr=out.obj_ptr,
            conditioning_objects=out.conditioning_objects,
        )
        high_res = apply_non_overlapping_constraints(_resize(low, (t.image_size, t.image_size)))
        self._encode(consolidated, high_res, out.object_score_logits, features)
        return consolidated

    # -- bounded memory (not official: its bank keeps every frame) --------------------------------------------------
    def evict(self, frame_idx: int, reverse: bool = False, keep: frozenset[int] | set[int] = frozenset()) -> None:
        """After ``frame_idx``, drop from the frames behind it (before it; after it in reverse) what no later frame
        of this direction can read: memory maps and image features outside the num_maskmem - 1 frame window,
        whole entries beyond the pointer window, and the mask logits of frames that are not reused; frames in
        ``keep`` stay whole (a session's other direction starts there). Results are unchanged."""
        t = self.tracker
        r = t.memory_temporal_stride_for_eval
        max_ptrs = min(self.num_frames, t.max_obj_ptrs_in_encoder)
        sign = -1 if reverse else 1
        keep_mem = {f for step in range(t.num_maskmem * r + 2)
                    for _, f in memory_frame_indices(frame_idx + sign * step, t.num_maskmem, r, reverse)}
        outputs = self.bank.non_cond_frame_outputs
        for f in [f for f in outputs if sign * (frame_idx - f) > 0 and f not in keep]:
            if f not in keep_mem and abs(frame_idx - f) >= max_ptrs:
                del outputs[f]
                self.rows.pop(f, None)
                continue
            out = outputs[f]
            if f not in self.consolidated:
                out.pred_masks = out.pred_masks[:, :, :0, :0]  # never read again (kept for its row count)
            if f not in keep_mem:
                out.maskmem_features = out.maskmem_pos_enc = out.image_features = out.image_pos_enc = None

    def nbytes(self) -> int:
        """Bytes of every tensor the state stores."""
        seen, total = set(), 0
        for out in (*self.bank.cond_frame_outputs.values(), *self.bank.non_cond_frame_outputs.values()):
            for x in (out.pred_masks, out.obj_ptr, out.object_score_logits, out.maskmem_features, out.image_features,
                      out.image_pos_enc, *(out.maskmem_pos_enc or [])):
                if x is not None and x.data_ptr() not in seen:
                    seen.add(x.data_ptr())
                    total += x.numel() * x.element_size()
        return total

    # -- removal (official remove_objects) ------------------------------------------------------------------------
    def remove(self, obj_ids: set[int]) -> None:
        """Delete ``obj_ids`` from the state: their input frames first (a frame left without inputs stops being
        a conditioning frame; a state left without one is reset, as officially), their slots marked removed,
        buckets left empty dropped from every stored frame, their rows sliced out of every stored frame."""
        gone = [i for i in self.obj_ids if i in obj_ids]
        if not gone:
            return
        for obj_id in gone:
            for frame_idx in sorted(self.input_frames.pop(obj_id, set())):
                if any(frame_idx in frames for frames in self.input_frames.values()):
                    continue
                self.consolidated.pop(frame_idx, None)
                out = self.bank.cond_frame_outputs.pop(frame_idx, None)
                if out is not None:
                    self.bank.non_cond_frame_outputs[frame_idx] = out
                    self.tracked_frames.discard(frame_idx)
                if not self.bank.cond_frame_outputs and self.bank.non_cond_frame_outputs:
                    # the official code wipes the state here and its next propagation fails ("No points are
                    # provided"); we keep the history and let its earliest frame condition the rest
                    first = min(self.bank.non_cond_frame_outputs)
                    self.bank.cond_frame_outputs[first] = self.bank.non_cond_frame_outputs.pop(first)
        old_idx = {obj_id: i for i, obj_id in enumerate(self.obj_ids)}
        self.obj_ids = [i for i in self.obj_ids if i not in obj_ids]
        if not self.obj_ids:
            return
        keep = self.mplex.remove_objects([old_idx[i] for i in gone])
        for outputs in (self.bank.cond_frame_outputs, self.bank.non_cond_frame_outputs):
            for frame_idx, out in outputs.items():
                rows = self.rows.get(frame_idx, [])
                kept_rows = [r for r, obj_id in enumerate(rows) if obj_id not in obj_ids
                             and r < out.pred_masks.shape[0] and r < out.object_score_logits.shape[0]]
                old_to_new = {r: n for n, r in enumerate(kept_rows)}
                out.pred_masks = out.pred_masks[kept_rows]
                out.object_score_logits = out.object_score_logits[kept_rows]
                out.conditioning_objects = {old_to_new[r] for r in out.conditioning_objects if r in old_to_new}
                if out.maskmem_features is not None:
                    out.maskmem_features = out.maskmem_features[keep]
                    out.maskmem_pos_enc = [p[keep] for p in out.maskmem_pos_enc]
                out.obj_ptr = out.obj_ptr[keep]
                self.rows[frame_idx] = [rows[r] for r in kept_rows]


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


@dataclass
class Sam31Loop:
    """The official SAM 3.1 loop for one prompt over one video of ``num_frames`` frames at ``video_size``."""

    tracker: VideoTrackingMultiplex
    config: Sam31LoopConfig
    num_frames: int
    video_size: tuple[int, int]
    memory_dtype: torch.dtype = torch.bfloat16
    states: list[MultiplexTrackerState] = field(default_factory=list)
    planning: PlanningState31 = field(default_factory=PlanningState31)
    last_propagation: Optional[tuple[list[int], Tensor, Tensor]] = None  # ids, (M, h, w) masks, (M,) score logits
    last_detections: Optional[FrameDetections31] = None
    last_output_logits: dict = field(default_factory=dict)  # id -> (H, W) logits behind the frame's masks
    keep_frames: set[int] = field(default_factory=set)  # never evicted (a session propagates both ways from them)

    @property
    def obj_ids(self) -> list[int]:
        return sorted(i for state in self.states for i in state.obj_ids)

    @torch.inference_mode()
    def step(self, frame_idx: int, probs: Tensor, masks: Tensor, boxes: Tensor, features: Sam31Features,
             allow_new_detections: bool = True, reverse: bool = False) -> LoopFrame:
        """One ``_det_track_one_frame``: the prompt's detector outputs for every query (``probs`` (Q,) joint
        scores, ``masks`` (Q, h, w) logits, ``boxes`` (Q, 4) normalised xyxy) in, the frame's raw outputs out.
        ``reverse``: the frames go backward (memory from later frames; the hot-start and occlusion rules turned
        round)."""
        c, t = self.config, self.tracker
        det = select_detections(probs, masks, boxes, c, allow_new_detections)
        self.last_detections = det
        # propagation of every state (no memory yet), rows in ascending id order
        prev_ids = list(self.planning.obj_ids)
        ids, masks_list, scores_list = [], [], []
        for state in self.states:
            if len(state):
                m, s = state.propagate(frame_idx, features, reverse)
                ids += state.obj_ids
                masks_list.append(m)
                scores_list.append(s)
        size = (t.sam_image_embedding_size * 4,) * 2
        device = probs.device
        if ids:
            order = np.argsort(np.asarray(ids), kind="stable")
            trk_masks = torch.cat(masks_list)[torch.as_tensor(order)]
            trk_scores = torch.cat(scores_list)[torch.as_tensor(order)]
            ids = [ids[i] for i in order]
        else:
            trk_masks, trk_scores = torch.zeros(0, *size, device=device), torch.zeros(0, device=device)
        assert ids == prev_ids, (ids, prev_ids)
        self.last_propagation = (prev_ids, trk_masks, trk_scores)

        plan, new_state = plan_frame(self.planning, frame_idx, det, trk_masks, trk_scores, c, reverse)
        # re-prompted objects: the detection's mask merged into the stored output, per state
        if plan.recondition:
            by_state: dict[int, list[int]] = {}
            for obj_id in plan.recondition:
                for s, state in enumerate(self.states):
                    if obj_id in state.obj_ids:
                        by_state.setdefault(s, []).append(obj_id)
                        break
            for s, obj_ids in by_state.items():
                prompts = torch.stack([self._prompt_mask(det.masks[plan.recondition[i]]) for i in obj_ids])
                self.states[s].add_masks(frame_idx, obj_ids, prompts, features, reconditioning=True)
        # memories of the tracked objects, from the planned masks (area-shrinkage rule over all objects)
        if len(plan.masks):
            high_res = _resize(plan.masks[:, None], t.maskmem_backbone.mask_downsampler.interpol_size)
            high_res = suppress_object_pw_area_shrinkage(high_res)
            scores = memory_object_score_logits(high_res)
            position = {obj_id: r for r, obj_id in enumerate(prev_ids)}
            for state in self.states:
                rows = [position[i] for i in state.obj_ids]
                state.encode_memory(frame_idx, high_res[rows], scores[rows], features)
        # new objects: into the fullest state that fits, else a new state; then removals
        new_ids = [int(i) for i in plan.new_det_obj_ids]
        if new_ids:
            prompts = torch.stack([self._prompt_mask(det.masks[int(d)]) for d in plan.new_det_fa_inds])
            target = None
            for state in self.states:
                slots = state.available_slots
                if slots >= len(new_ids) and (target is None or slots < target.available_slots):
                    target = state
            if target is None:
                target = MultiplexTrackerState(t, self.num_frames, self.video_size, self.memory_dtype)
                self.states.append(target)
            target.add_masks(frame_idx, new_ids, prompts, features)
        if plan.obj_ids_newly_removed:
            for state in self.states:
                state.remove(set(plan.obj_ids_newly_removed))
            self.states = [state for state in self.states if len(state)]
        for state in self.states:
            state.evict(frame_idx, reverse, self.keep_frames)
        self.planning = new_state

        # the frame's outputs (official build_outputs): every previous id (also those removed now), new ids
        logits: dict[int, Tensor] = {}
        if prev_ids:
            logits.update(zip(prev_ids, _resize(plan.masks[:, None], self.video_size)[:, 0]))
        new_rows = torch.as_tensor(plan.new_det_fa_inds, dtype=torch.long, device=det.masks.device)
        tracker_scores = {i: float(s) for i, s in zip(new_ids, det.probs[new_rows].tolist())}
        if new_ids:
            logits.update(zip(new_ids, _resize(det.masks[new_rows][:, None].float(), self.video_size)[:, 0]))
        self.last_output_logits = logits
        out_masks = {obj_id: x > 0 for obj_id, x in logits.items()}
        tracker_scores.update(zip(prev_ids, trk_scores.sigmoid().tolist()))
        unconfirmed = unconfirmed_obj_ids(new_state) if c.masklet_confirmation_enable else set()
        return LoopFrame(frame_idx=frame_idx, masks=out_masks, scores=dict(new_state.obj_id_to_score),
                         tracker_scores=tracker_scores, removed=frozenset(), suppressed=frozenset(unconfirmed),
                         reconditioned=tuple(plan.recondition))

    def _prompt_mask(self, det_mask: Tensor) -> Tensor:
        return prompt_mask(det_mask, self.tracker.sam_image_embedding_size * 16)  # input_mask_size


class ConfirmationBuffer:
    """Official SAM 3.1 ``propagate_in_video`` output stage: frames delayed by ``hotstart_delay`` (the rest at the
    end, ``flush``); a frame hides the objects still unconfirmed after frame t + 2 (t - 2 in reverse; clamped to
    the video) — SAM 3.1 hides nothing else. ``LoopFrame.suppressed`` carries each frame's unconfirmed ids."""

    def __init__(self, hotstart_delay: int, video_size: tuple[int, int], num_frames: int, look_ahead: int = 2,
                 reverse: bool = False):
        self.hotstart_delay = hotstart_delay
        self.video_size = video_size
        self.num_frames = num_frames
        self.look_ahead = -look_ahead if reverse else look_ahead
        self.buffer: list[LoopFrame] = []
        self.unconfirmed: dict[int, frozenset[int]] = {}

    def push(self, frame: LoopFrame) -> list[LoopOutput]:
        self.unconfirmed[frame.frame_idx] = frame.suppressed
        self.buffer.append(frame)
        if self.hotstart_delay > 0 and len(self.buffer) < self.hotstart_delay:
            return []
        return [self._output(self.buffer.pop(0))]

    def flush(self) -> list[LoopOutput]:
        ready, self.buffer = self.buffer, []
        return [self._output(frame) for frame in ready]

    def hidden(self, frame: LoopFrame) -> frozenset[int]:
        """The ids hidden on ``frame`` once it is given out: unconfirmed two frames on."""
        later = max(0, min(frame.frame_idx + self.look_ahead, self.num_frames - 1))
        return self.unconfirmed.get(later, frozenset())

    def _output(self, frame: LoopFrame) -> LoopOutput:
        return postprocess_frame(frame, self.hidden(frame), self.video_size)

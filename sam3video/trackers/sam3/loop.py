"""The official SAM 3 detection + tracking loop (``Sam3VideoBase._det_track_one_frame`` and
``Sam3VideoInference.propagate_in_video``, sam3 0.1.4), one text prompt, forward in time.

Per frame: the detections the loop keeps (``select_detections``), every bucket of objects propagated by
the tracker (``TrackerBucket.propagate``, no memory yet), small holes and specks filled, the planning
rules (``planning.plan_frame``: association, new objects, hot-start, recondition, occlusion
suppression), reconditioned objects re-prompted with their detection, the memories encoded from the
planned masks under the area-shrinkage rule, new objects added as a new bucket, removed ones deleted,
then the frame's outputs. ``Sam3Loop.step`` returns one frame's raw outputs; ``Sam3Loop.outputs``
delays them by ``hotstart_delay`` frames (so that hot-start removals also hide the frames already
buffered) and post-processes them as the official ``_postprocess_output`` does.

Shapes: detector masks (N, h, w) logits at the detector's mask size (4x the feature grid, 288 at full
size); tracker masks (B, 1, h, w) logits at ``low_res_mask_size`` (also 288); ``video_size`` (H, W) of
the output frames. Object ids are the official 0-based ids (``max_obj_id + 1``).

Where the official code differs between its CUDA and CPU paths we follow its CPU numerics (fp32), except
that memories are stored in ``memory_dtype`` (bf16 officially, on every device). Unlike the official
bank, each bucket's bank is evicted to what the tracker can still read (``MemoryBank.evict``, results
unchanged), so memory stays flat however long the clip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from sam3video.geometry import masks_to_boxes
from sam3video.model.sam3_tracker_base import Sam3TrackerBase
from sam3video.model.sam3_tracker_utils import MemoryBank, TrackStepOutput, apply_non_overlapping_constraints

from .planning import (
    PlanningState,
    Sam3LoopConfig,
    memory_object_score_logits,
    plan_frame,
    select_detections,
    suppress_object_pw_area_shrinkage,
)
from .propagation import FrameFeatures

NO_OBJ_SCORE = -1024.0  # the tracker's "no object" logit (sam3_tracker_base NO_OBJ_SCORE)
MAX_SCORE_LOGIT = 10.0  # the detector's joint score logit is clamped to +-10 (sam3_image.py:354)


# --------------------------------------------------------------------------------------------
# hole filling (sam3_tracker_utils.fill_holes_in_mask_scores, CPU path: skimage 8-connectivity)
# --------------------------------------------------------------------------------------------

_EIGHT = np.ones((3, 3), dtype=bool)


def _component_areas(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) int: the area of each pixel's 8-connected component (0 off the mask)."""
    labels, count = ndimage.label(mask, structure=_EIGHT)
    if count == 0:
        return np.zeros(mask.shape, np.int64)
    return np.bincount(labels.ravel(), minlength=count + 1)[labels] * (labels > 0)


def fill_holes_in_mask_scores(mask: Tensor, max_area: int, fill_holes: bool = True,
                              remove_sprinkles: bool = True) -> Tensor:
    """(N, 1, H, W) logits: background components of at most ``max_area`` pixels get logit 0.1, then
    foreground components of at most min(max_area, area // 2) pixels get -0.1 (the official post-processor
    of tracker and new-detection masks)."""
    if max_area <= 0 or mask.numel() == 0:
        return mask
    if fill_holes:
        background = (mask <= 0).cpu().numpy()
        areas = np.stack([_component_areas(m[0])[None] for m in background])
        small = torch.from_numpy(background & (areas <= max_area)).to(mask.device)
        mask = torch.where(small, 0.1, mask)
    if remove_sprinkles:
        foreground = (mask > 0).cpu().numpy()
        limit = np.minimum(foreground.sum(axis=(2, 3), keepdims=True) // 2, max_area)
        areas = np.stack([_component_areas(m[0])[None] for m in foreground])
        small = torch.from_numpy(foreground & (areas <= limit)).to(mask.device)
        mask = torch.where(small, -0.1, mask)
    return mask


# --------------------------------------------------------------------------------------------
# one bucket: objects born on the same frame, tracked as one batch (official tracker inference state)
# --------------------------------------------------------------------------------------------


class TrackerBucket:
    """The official tracker inference state of B objects: ``obj_ids`` (rows), their memory bank and which
    frames hold each object's mask prompt. Frames go forward; the device is the features'."""

    def __init__(self, tracker: Sam3TrackerBase, num_frames: int, video_size: tuple[int, int],
                 memory_dtype: torch.dtype = torch.bfloat16):
        self.tracker = tracker
        self.num_frames = num_frames
        self.video_size = video_size
        self.memory_dtype = memory_dtype
        self.obj_ids: list[int] = []
        self.bank = MemoryBank()
        self.input_frames: dict[int, set[int]] = {}  # frame -> ids with a mask prompt there
        self.tracked_frames: set[int] = set()
        self.keep_frames: set[int] = set()  # never evicted (a session propagates both ways from them)
        self.keep_entries = False  # evict memory maps only (a session's clicks read any frame's mask logits)
        # frames whose per-object tracked output the official state has dropped (``_clear_non_cond_mem_around_
        # input``: a one-object state, around its conditioning frames); a click there finds no earlier mask
        self.per_object_cleared: set[int] = set()

    def __len__(self) -> int:
        return len(self.obj_ids)

    @torch.inference_mode()
    def add_masks(self, frame_idx: int, obj_ids: list[int], masks: Tensor, features: FrameFeatures) -> None:
        """Mask prompts (K, S, S) bool at ``input_mask_size`` for ``obj_ids`` (new ones are appended)
        on ``frame_idx``, then consolidated into a conditioning frame with its memory (official
        ``add_new_mask`` per object + ``propagate_in_video_preflight``). On a tracked frame the other
        objects keep their tracked output there."""
        t = self.tracker
        for obj_id in obj_ids:
            if obj_id not in self.obj_ids:
                self.obj_ids.append(obj_id)
            self.input_frames.setdefault(frame_idx, set()).add(obj_id)
        K = len(obj_ids)
        mask_inputs = masks[:, None].float()
        prompted = t.track_step(
            frame_idx=frame_idx, is_init_cond_frame=frame_idx not in self.tracked_frames,
            current_vision_feats=[x.expand(-1, K, -1) for x in features.vision_feats],
            current_vision_pos_embeds=[x.expand(-1, K, -1) for x in features.vision_pos_embeds],
            feat_sizes=features.feat_sizes, point_inputs=None, mask_inputs=mask_inputs, output_dict=MemoryBank(),
            num_frames=self.num_frames, run_mem_encoder=False,
        )
        # the prompt at video resolution (+-1024); a later object takes the pixels it shares with earlier ones
        video = F.interpolate(mask_inputs, size=self.video_size, mode="bilinear", align_corners=False,
                              antialias=True) > 0.5
        video_logits = torch.where(video, -NO_OBJ_SCORE, NO_OBJ_SCORE)
        for k in range(K):
            video_logits[:k] = torch.where(video[k : k + 1], NO_OBJ_SCORE, video_logits[:k])

        B, size = len(self.obj_ids), t.low_res_mask_size
        device = features.vision_feats[-1].device
        old = self.bank.cond_frame_outputs.get(frame_idx) or self.bank.non_cond_frame_outputs.get(frame_idx)
        pred_masks = torch.full((B, 1, size, size), NO_OBJ_SCORE, device=device)
        obj_ptr = torch.full((B, t.hidden_dim), NO_OBJ_SCORE, device=device)
        object_score_logits = torch.full((B, 1), 10.0, device=device)
        iou_score = torch.zeros((B, 1), device=device) if t.use_memory_selection else None
        prompted_rows = {obj_id: k for k, obj_id in enumerate(obj_ids)}
        for row, obj_id in enumerate(self.obj_ids):
            if obj_id in prompted_rows:
                k = prompted_rows[obj_id]
                pred_masks[row] = F.interpolate(video_logits[k : k + 1], size=(size, size), mode="bilinear",
                                                align_corners=False, antialias=True)[0]
                obj_ptr[row] = prompted.obj_ptr[k]
                object_score_logits[row] = prompted.object_score_logits[k]
                if iou_score is not None:
                    iou_score[row] = prompted.iou_score[k]
            elif old is not None:  # tracked on this frame: its tracked output stays
                pred_masks[row] = old.pred_masks[row]
                obj_ptr[row] = old.obj_ptr[row]
                object_score_logits[row] = old.object_score_logits[row]
                if iou_score is not None:
                    iou_score[row] = old.iou_score.reshape(-1)[row]
            else:
                raise ValueError(f"object {obj_id} has no output on frame {frame_idx} to consolidate")
        high_res = F.interpolate(pred_masks, size=(t.image_size, t.image_size), mode="bilinear", align_corners=False)
        high_res = apply_non_overlapping_constraints(high_res)
        maskmem_features, maskmem_pos_enc = t._encode_new_memory(
            current_vision_feats=[x.expand(-1, B, -1) for x in features.vision_feats],
            feat_sizes=features.feat_sizes, pred_masks_high_res=high_res,
            object_score_logits=object_score_logits, is_mask_from_pts=True,
        )
        self.bank.non_cond_frame_outputs.pop(frame_idx, None)
        self.bank.cond_frame_outputs[frame_idx] = TrackStepOutput(
            point_inputs=None, mask_inputs=None, pred_masks=pred_masks, pred_masks_high_res=None, obj_ptr=obj_ptr,
            object_score_logits=object_score_logits, ious=torch.ones_like(object_score_logits), iou_score=iou_score,
            maskmem_features=maskmem_features.to(self.memory_dtype), maskmem_pos_enc=maskmem_pos_enc,
        )

    @torch.inference_mode()
    def propagate(self, frame_idx: int, features: FrameFeatures, reverse: bool = False, encode_memory: bool = False
                  ) -> tuple[Tensor, Tensor]:
        """Track the bucket to ``frame_idx`` (from later frames when ``reverse``) -> (low-res mask logits (B, h, w),
        object score logits (B,)). Its memory is encoded later (``encode_memory``, from the loop's planned masks),
        or with ``encode_memory`` at once from the tracked masks, then evicted (a session's partial propagation).
        A frame that is already a conditioning frame gives its stored output (the official loop runs the prompted
        frame twice)."""
        stored = self.bank.cond_frame_outputs.get(frame_idx)
        if stored is not None:
            self.clear_around(frame_idx)
        else:
            B = len(self.obj_ids)
            t = self.tracker
            stored = t.track_step(
                frame_idx=frame_idx, is_init_cond_frame=False,
                current_vision_feats=[x.expand(-1, B, -1) for x in features.vision_feats],
                current_vision_pos_embeds=[x.expand(-1, B, -1) for x in features.vision_pos_embeds],
                feat_sizes=features.feat_sizes, point_inputs=None, mask_inputs=None, output_dict=self.bank,
                num_frames=self.num_frames, track_in_reverse=reverse, run_mem_encoder=encode_memory,
            )
            stored = dataclasses.replace(stored, pred_masks_high_res=None)
            if encode_memory:
                stored.maskmem_features = stored.maskmem_features.to(self.memory_dtype)
            self.bank.add(frame_idx, stored, is_cond=False)
            self.per_object_cleared.discard(frame_idx)
            if encode_memory:
                self.evict(frame_idx, reverse)
        self.tracked_frames.add(frame_idx)
        return stored.pred_masks[:, 0], stored.object_score_logits[:, 0]

    @torch.inference_mode()
    def encode_memory(self, frame_idx: int, high_res_masks: Tensor, object_score_logits: Tensor,
                      features: FrameFeatures, reverse: bool = False) -> None:
        """Encode (B, 1, S, S) masks as the memory of ``frame_idx`` (official ``_run_memory_encoder``
        with ``is_mask_from_pts=False``), then evict what no later frame can read."""
        t, B = self.tracker, len(self.obj_ids)
        maskmem_features, maskmem_pos_enc = t._encode_new_memory(
            current_vision_feats=[x.expand(-1, B, -1) for x in features.vision_feats],
            feat_sizes=features.feat_sizes, pred_masks_high_res=high_res_masks,
            object_score_logits=object_score_logits, is_mask_from_pts=False,
        )
        for outputs in (self.bank.cond_frame_outputs, self.bank.non_cond_frame_outputs):
            if frame_idx in outputs:
                outputs[frame_idx] = dataclasses.replace(
                    outputs[frame_idx], maskmem_features=maskmem_features.to(self.memory_dtype),
                    maskmem_pos_enc=maskmem_pos_enc)
        self.evict(frame_idx, reverse)

    def clear_around(self, frame_idx: int) -> None:
        """Official ``_clear_non_cond_mem_around_input`` (on with the official builder) for a one-object state: the
        per-object tracked outputs within r * num_maskmem frames of a conditioning frame are dropped."""
        if len(self.obj_ids) <= 1:
            reach = self.tracker.memory_temporal_stride_for_eval * self.tracker.num_maskmem
            self.per_object_cleared |= set(range(frame_idx - reach, frame_idx + reach + 1))

    def evict(self, frame_idx: int, reverse: bool = False) -> None:
        """``MemoryBank.evict`` with the tracker's settings, this bucket's kept frames and entries."""
        t = self.tracker
        self.bank.evict(frame_idx, num_maskmem=t.num_maskmem,
                        max_obj_ptrs=min(self.num_frames, t.max_obj_ptrs_in_encoder),
                        r=t.memory_temporal_stride_for_eval,
                        mf_threshold=t.mf_threshold if t.use_memory_selection else None,
                        track_in_reverse=reverse, keep=self.keep_frames, keep_entries=self.keep_entries)

    def remove(self, obj_id: int) -> None:
        """Delete ``obj_id`` from every stored frame (official ``remove_object``): its prompts go first,
        and a conditioning frame left without any prompt becomes a tracked frame again."""
        if obj_id not in self.obj_ids:
            return
        if len(self.obj_ids) == 1:
            self.obj_ids, self.bank, self.input_frames, self.tracked_frames = [], MemoryBank(), {}, set()
            return
        for frame_idx in [f for f, ids in self.input_frames.items() if obj_id in ids]:
            self.input_frames[frame_idx].discard(obj_id)
            if not self.input_frames[frame_idx]:
                del self.input_frames[frame_idx]
                out = self.bank.cond_frame_outputs.pop(frame_idx, None)
                if out is not None:
                    self.bank.non_cond_frame_outputs[frame_idx] = out
                    self.tracked_frames.discard(frame_idx)
        keep = [row for row, i in enumerate(self.obj_ids) if i != obj_id]
        self.obj_ids = [self.obj_ids[row] for row in keep]
        for outputs in (self.bank.cond_frame_outputs, self.bank.non_cond_frame_outputs):
            for frame_idx, out in outputs.items():
                outputs[frame_idx] = _sliced(out, keep, self.tracker)


def _sliced(out: TrackStepOutput, rows: list[int], tracker: Sam3TrackerBase) -> TrackStepOutput:
    """``out`` for the objects at ``rows`` (official ``_slice_state``: the memory-selection score is
    computed again from the remaining rows)."""
    def take(x):
        return None if x is None else x[rows]

    sliced = dataclasses.replace(
        out, pred_masks=take(out.pred_masks), pred_masks_high_res=take(out.pred_masks_high_res),
        obj_ptr=take(out.obj_ptr), object_score_logits=take(out.object_score_logits), ious=take(out.ious),
        iou_score=take(out.iou_score), maskmem_features=take(out.maskmem_features),
        maskmem_pos_enc=None if out.maskmem_pos_enc is None else [p[rows] for p in out.maskmem_pos_enc],
    )
    if tracker.use_memory_selection and sliced.iou_score is not None:
        sliced.eff_iou_score = tracker.cal_mem_score(sliced.object_score_logits, sliced.iou_score)
    return sliced


# --------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------


class FrameDetections(NamedTuple):
    """One prompt's detector outputs on one frame, every query: ``probs`` (Q,) joint scores,
    ``masks`` (Q, h, w) logits, ``boxes`` (Q, 4) normalised xyxy."""

    probs: Tensor
    masks: Tensor
    boxes: Tensor


def detector_probs(pred_logits: Tensor, presence_logits: Optional[Tensor]) -> Tensor:
    """(Q,) class logits and the (1,) presence logit -> the loop's (Q,) scores: the joint probability
    through the official ``inverse_sigmoid`` (eps 1e-3, so within [0.001, 0.999]), clamped to +-10 and
    back (sam3_image.py:352-354)."""
    probs = pred_logits.float().sigmoid()
    if presence_logits is not None:
        probs = probs * presence_logits.float().sigmoid()
    probs = probs.clamp(min=0, max=1)
    joint = torch.log(probs.clamp(min=1e-3) / (1 - probs).clamp(min=1e-3))
    return joint.clamp(-MAX_SCORE_LOGIT, MAX_SCORE_LOGIT).sigmoid()


@dataclass
class LoopFrame:
    """One processed frame before the hot-start delay: ``masks`` id -> (H, W) bool at video size,
    ``scores`` id -> detection score at birth, ``tracker_scores`` id -> this frame's tracker probability,
    ``removed`` every id hot-start removed so far, ``suppressed`` the ids hidden on this frame."""

    frame_idx: int
    masks: dict[int, Tensor]
    scores: dict[int, float]
    tracker_scores: dict[int, float]
    removed: frozenset[int]
    suppressed: frozenset[int]
    reconditioned: tuple[int, ...] = ()  # ids re-prompted with their detection on this frame


@dataclass
class LoopOutput:
    """One output frame (official ``_postprocess_output``), sorted by id: ``obj_ids`` (K,) int64,
    ``probs`` (K,) detection score at birth, ``masks`` (K, H, W) bool (no two overlap), ``boxes_xyxy``
    (K, 4) float32 pixels of the masks' extent (x1, y1 exclusive)."""

    frame_idx: int
    obj_ids: np.ndarray
    probs: np.ndarray
    tracker_probs: np.ndarray
    masks: np.ndarray
    boxes_xyxy: np.ndarray


@dataclass
class Sam3Loop:
    """The official loop for one prompt over one video of ``num_frames`` frames at ``video_size``."""

    tracker: Sam3TrackerBase
    config: Sam3LoopConfig
    num_frames: int
    video_size: tuple[int, int]
    memory_dtype: torch.dtype = torch.bfloat16
    buckets: list[TrackerBucket] = field(default_factory=list)
    state: PlanningState = field(default_factory=PlanningState)
    last_propagation: Optional[tuple[list[int], Tensor, Tensor]] = None  # ids, (M, h, w) masks, (M,) score logits
    keep_frames: set[int] = field(default_factory=set)  # never evicted (a session propagates both ways from them)
    keep_entries: bool = False  # evict memory maps only (a session's clicks read any frame's mask logits)

    @property
    def obj_ids(self) -> list[int]:
        return [i for bucket in self.buckets for i in bucket.obj_ids]

    @torch.inference_mode()
    def step(self, frame_idx: int, detections: FrameDetections, features: FrameFeatures,
             allow_new_detections: bool = True, exemplar_queries: tuple[int, ...] = (), reverse: bool = False
             ) -> LoopFrame:
        """One ``_det_track_one_frame``: detections of one frame in, that frame's raw outputs out.
        ``exemplar_queries``: queries that positive exemplar boxes mark (not official): kept whatever
        their score, each starts an object or re-prompts the track it overlaps (``plan_frame``).
        ``reverse``: the frames go backward (memory from later frames; the rules turned round)."""
        c, t = self.config, self.tracker
        keep = select_detections(detections.probs, detections.masks, c, allow_new_detections)
        if exemplar_queries:
            keep = torch.unique(torch.cat([keep, torch.as_tensor(exemplar_queries, dtype=keep.dtype,
                                                                 device=keep.device)]))
        det_masks, det_scores = detections.masks[keep].float(), detections.probs[keep]
        det_boxes = detections.boxes[keep]

        # propagation (no memory yet); bucket order is the planning order of the ids
        prev_ids = self.obj_ids
        assert tuple(prev_ids) == self.state.obj_ids, (prev_ids, self.state.obj_ids)
        masks, scores = [], []
        for bucket in self.buckets:
            bucket.keep_frames, bucket.keep_entries = self.keep_frames, self.keep_entries
            m, s = bucket.propagate(frame_idx, features, reverse)
            masks.append(m)
            scores.append(s)
        size = t.low_res_mask_size
        device = features.vision_feats[-1].device
        trk_masks = torch.cat(masks) if masks else torch.zeros(0, size, size, device=device)
        trk_scores = torch.cat(scores) if scores else torch.zeros(0, device=device)
        if len(trk_masks):
            trk_masks = fill_holes_in_mask_scores(trk_masks[:, None], c.fill_hole_area)[:, 0]
        self.last_propagation = (prev_ids, trk_masks, trk_scores)  # for inspection (the official run_tracker_propagation)

        exemplar_dets = tuple(torch.nonzero(torch.isin(keep, torch.as_tensor(
            exemplar_queries, dtype=keep.dtype, device=keep.device)))[:, 0].tolist()) if exemplar_queries else ()
        plan, new_state = plan_frame(self.state, frame_idx, det_masks, det_scores, trk_masks, trk_scores, c,
                                     reverse=reverse, det_boxes_xyxy=det_boxes, exemplar_dets=exemplar_dets)
        # recondition: the matched detection's mask as a new prompt of its object, before memory encoding
        reconditioned: dict[int, list[int]] = {}
        for obj_id, det_idx in plan.recondition.items():
            for b, bucket in enumerate(self.buckets):
                if obj_id in bucket.obj_ids:
                    reconditioned.setdefault(b, []).append(obj_id)
        for b, ids in reconditioned.items():
            prompts = torch.stack([self._prompt_mask(det_masks[plan.recondition[i]]) for i in ids])
            self.buckets[b].add_masks(frame_idx, ids, prompts, features)

        # memories of the tracked objects, from the planned masks
        if len(trk_masks):
            high_res = F.interpolate(plan.memory_masks[:, None], size=t.maskmem_backbone.mask_downsampler.interpol_size,
                                     mode="bilinear", align_corners=False)
            high_res = suppress_object_pw_area_shrinkage(high_res)
            object_scores = memory_object_score_logits(high_res)
            start = 0
            for bucket in self.buckets:
                rows = slice(start, start + len(bucket))
                bucket.encode_memory(frame_idx, high_res[rows], object_scores[rows], features, reverse)
                start += len(bucket)

        # new objects: one new bucket; removed objects deleted
        new_ids = [int(i) for i in plan.new_det_obj_ids]
        if new_ids:
            bucket = TrackerBucket(t, self.num_frames, self.video_size, self.memory_dtype)
            bucket.keep_frames, bucket.keep_entries = self.keep_frames, self.keep_entries
            prompts = torch.stack([self._prompt_mask(det_masks[int(d)]) for d in plan.new_det_fa_inds])
            bucket.add_masks(frame_idx, new_ids, prompts, features)
            self.buckets.append(bucket)
        for obj_id in plan.obj_ids_newly_removed:
            for bucket in self.buckets:
                bucket.remove(obj_id)
        self.buckets = [bucket for bucket in self.buckets if len(bucket)]
        self.state = new_state

        # the frame's outputs (official build_outputs)
        out_masks: dict[int, Tensor] = {}
        if len(trk_masks):
            video = F.interpolate(plan.memory_masks[:, None], size=self.video_size, mode="bilinear",
                                  align_corners=False)[:, 0] > 0
            out_masks.update(zip(prev_ids, video))
        new_rows = torch.as_tensor(plan.new_det_fa_inds, dtype=torch.long, device=det_masks.device)
        tracker_scores = {i: float(s) for i, s in zip(new_ids, det_scores[new_rows].tolist())}
        if new_ids:
            new_masks = fill_holes_in_mask_scores(det_masks[new_rows][:, None], c.fill_hole_area)
            video = F.interpolate(new_masks, size=self.video_size, mode="bilinear", align_corners=False)[:, 0] > 0
            out_masks.update(zip(new_ids, video))
        for obj_id in plan.reconditioned_obj_ids:  # bbox heuristic only (off by default)
            det_idx = plan.trk_id_to_max_iou_high_conf_det.get(obj_id)
            if det_idx is not None:
                out_masks[obj_id] = F.interpolate(det_masks[det_idx][None, None], size=self.video_size,
                                                  mode="bilinear", align_corners=False)[0, 0] > 0
        tracker_scores.update(zip(prev_ids, trk_scores.sigmoid().tolist()))
        return LoopFrame(
            frame_idx=frame_idx, masks=out_masks, scores=dict(new_state.obj_id_to_score),
            tracker_scores=tracker_scores, removed=frozenset(new_state.removed_obj_ids),
            suppressed=frozenset(new_state.suppressed_obj_ids.get(frame_idx, frozenset())),
            reconditioned=tuple(i for ids in reconditioned.values() for i in ids),
        )

    def _prompt_mask(self, det_mask: Tensor) -> Tensor:
        return prompt_mask(det_mask, self.tracker.input_mask_size)


def prompt_mask(det_mask: Tensor, size: int) -> Tensor:
    """(h, w) detector logits -> (size, size) bool mask prompt (bilinear, then > 0), as both official loops
    prompt the tracker with a detection."""
    return F.interpolate(det_mask[None, None].float(), size=(size, size), mode="bilinear", align_corners=False)[0, 0] > 0


def postprocess_frame(frame: LoopFrame, hidden: Iterable[int], video_size: tuple[int, int]) -> LoopOutput:
    """Official ``_postprocess_output``: ids sorted; empty masks and ``hidden`` ids dropped; boxes from
    the masks; then each overlapped pixel goes to the object of highest tracker probability."""
    height, width = video_size
    hidden = set(hidden)
    ids = [i for i in sorted(frame.masks) if i not in hidden]
    masks = torch.stack([frame.masks[i] for i in ids]).cpu() if ids else torch.zeros(0, height, width, dtype=torch.bool)
    nonempty = masks.flatten(1).any(dim=1).tolist()  # one copy off the device for all objects
    kept = [i for i, keep in zip(ids, nonempty) if keep]
    if not kept:
        return LoopOutput(frame.frame_idx, np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32),
                          np.zeros((0, height, width), bool), np.zeros((0, 4), np.float32))
    masks = masks[torch.tensor(nonempty)].numpy()
    probs = np.array([frame.scores[i] for i in kept], np.float32)
    tracker_probs = np.array([frame.tracker_scores.get(i, 0.0) for i in kept], np.float32)
    boxes = masks_to_boxes(masks)  # before the non-overlap step, as officially
    return LoopOutput(frame.frame_idx, np.asarray(kept, np.int64), probs, tracker_probs,
                      exclusive_masks(masks, tracker_probs), boxes)


def exclusive_masks(masks: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(N, H, W) bool masks, (N,) scores -> each pixel kept only by the highest-scoring object whose mask holds it
    (the lowest index on ties), none by an object scoring <= 0; a single object keeps its mask. The same masks as the
    official output stage's ``apply_object_wise_non_overlapping_constraints`` on 0/1 masks with background 0, by one
    boolean pass per object (the float argmax over the stack took 0.15 s a 640x480 frame at 3 objects, 0.3 s at 16)."""
    if len(masks) == 1:
        return masks.copy()
    out = np.zeros_like(masks)
    claimed = np.zeros(masks.shape[1:], bool)
    for i in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if not scores[i] > 0:
            break  # sorted: the rest score <= 0 too
        np.logical_and(masks[i], ~claimed, out=out[i])
        claimed |= masks[i]
    return out


class HotstartBuffer:
    """Official ``propagate_in_video`` output stage: with a hot-start delay D > 0, frame t is given out
    once frame t + D - 1 is processed (the rest at the end, ``flush``), hiding every id hot-start removed
    by then and those suppressed on frame t."""

    def __init__(self, hotstart_delay: int, video_size: tuple[int, int]):
        self.hotstart_delay = hotstart_delay
        self.video_size = video_size
        self.buffer: list[LoopFrame] = []
        self.removed: set[int] = set()  # officially gathered only with a delay

    def push(self, frame: LoopFrame) -> list[LoopOutput]:
        """Add a processed frame -> the frames now ready (none or one)."""
        if self.hotstart_delay > 0:
            self.removed |= frame.removed
        self.buffer.append(frame)
        if self.hotstart_delay > 0 and len(self.buffer) < self.hotstart_delay:
            return []
        return [self._output(self.buffer.pop(0))]

    def flush(self) -> list[LoopOutput]:
        """The frames still held, at the end of the video."""
        ready, self.buffer = self.buffer, []
        return [self._output(frame) for frame in ready]

    def hidden(self, frame: LoopFrame) -> set[int]:
        """The ids hidden on ``frame`` once it is given out: hot-start removed by then, or suppressed there."""
        return self.removed | frame.suppressed

    def _output(self, frame: LoopFrame) -> LoopOutput:
        return postprocess_frame(frame, self.hidden(frame), self.video_size)

"""The official SAM 3.1 loop's per-frame planning rules, as pure functions (GitHub main @96914d2).

Mirrors ``sam3_multiplex_base.py`` ("MB") and the ``sam3_video_base.py`` helpers it calls ("VB"), single GPU:
which detections the loop keeps (IoM NMS, the boundary rule), association by IoM (with the ambiguity
zeroing), hot-start removal (total unmatched count, duplicate pairs against strictly earlier births),
recondition pairs and their in-place logit blend, occlusion suppression, the object cap, and masklet
confirmation. Where SAM 3 does the same, the SAM 3 function is called (``trackers.sam3.planning``). The reading this
follows is ``notes/sam31_loop_reading.md``.

Shapes: detector masks (Q, h, w) logits for every query (3.1 keeps all rows and a ``det_keep`` mask), tracker
masks (M, h, w) logits in ascending object-id order (``obj_ids``); per-object counters are arrays in that order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np
import torch
from torch import Tensor

from sam3video.thresholds import Sam31LoopConfig

from ..sam3.planning import (
    ALWAYS_OCCLUDED,
    NEVER_OCCLUDED,
    NO_OBJ_LOGIT,
    REMOVED_OBJ_SCORE,
    drop_new_det_with_obj_limit,
    objects_to_suppress_based_on_most_recently_occluded,
    resize_to_smaller,
    suppress_detections_close_to_boundary,
)

UNCONFIRMED, CONFIRMED = 1, 2  # MaskletConfirmationStatus


# --------------------------------------------------------------------------------------------
# detections
# --------------------------------------------------------------------------------------------


def mask_iom(masks1: Tensor, masks2: Tensor) -> Tensor:
    """(N, M) intersection over the smaller area of bool masks (N, H, W) and (M, H, W); 0 when one is empty
    (official ``mask_iom``: inter / (min area + 1e-8))."""
    a = masks1.flatten(1).float()
    b = masks2.flatten(1).float()
    intersection = a @ b.t()
    min_area = torch.minimum(a.sum(-1)[:, None], b.sum(-1)[None, :])
    return intersection / (min_area + 1e-8)


def nms_keep(probs: Tensor, masks: Tensor, prob_threshold: float, threshold: float) -> Tensor:
    """(Q,) bool: greedy mask NMS by IoM over the detections with prob > ``prob_threshold``, visiting by
    descending prob (ties: lower query first, a stable sort), dropping later ones with IoM > ``threshold``
    with a kept one (MDU ``_batched_generic_nms_mask``)."""
    keep = probs > prob_threshold
    if threshold <= 0 or probs.numel() == 0:
        return keep
    overlaps = mask_iom(masks > 0, masks > 0)
    order = torch.sort(probs, descending=True, stable=True).indices
    kept = keep[order].cpu().numpy()  # the greedy visit on the host: one copy, not a device sync per query
    over = (overlaps[order][:, order] > threshold).cpu().numpy()
    for i in range(len(kept)):
        if kept[i]:
            kept[i + 1:] &= ~over[i, i + 1:]
    out = torch.zeros_like(keep)
    out[order] = torch.from_numpy(kept).to(keep.device)
    return out


@dataclass(frozen=True)
class FrameDetections31:
    """One frame's detector rows in the loop's order (kept first, each part in query order): ``probs`` (Q,)
    (0 for NMS-dropped rows), ``masks`` (Q, h, w) logits, ``boxes`` (Q, 4) normalised xyxy, ``keep`` (Q,)
    bool, ``query`` (Q,) the original query index of each row."""

    probs: Tensor
    masks: Tensor
    boxes: Tensor
    keep: Tensor
    query: Tensor


def select_detections(probs: Tensor, masks: Tensor, boxes: Tensor, config: Sam31LoopConfig,
                      allow_new_detections: bool = True) -> FrameDetections31:
    """MB ``run_backbone_and_detection`` + the reorder of ``_det_track_one_frame_impl``: IoM NMS (dropped rows
    get probability 0), keep = prob > score_threshold_detection and (boundary rule) the box centre inside the
    margin; rows sorted kept-first (``det_keep.argsort(descending=True)``, stably)."""
    if config.det_nms_thresh > 0:
        nms = nms_keep(probs, masks, config.score_threshold_detection, config.det_nms_thresh)
        probs = torch.where(nms, probs, torch.zeros_like(probs))
    keep = probs > config.score_threshold_detection
    if not allow_new_detections:
        keep = torch.zeros_like(keep)
    if config.suppress_det_close_to_boundary:
        keep = keep & suppress_detections_close_to_boundary(boxes, config.boundary_margin)
    order = torch.sort(keep.to(torch.uint8), descending=True, stable=True).indices
    return FrameDetections31(probs[order], masks[order], boxes[order], keep[order], order)


# --------------------------------------------------------------------------------------------
# association
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Association31:
    """VB ``_associate_det_trk_compilable`` realised (``RealizedAssociateDetTrkresult``)."""

    trk_is_unmatched: np.ndarray  # (M,) bool: non-empty and no detection at IoM >= trk_assoc_iou_thresh
    trk_is_nonempty: np.ndarray  # (M,) bool
    im_mask: np.ndarray  # (Q, M) bool: IoM >= assoc_iou_thresh after the ambiguity zeroing
    new_det_fa_inds: np.ndarray  # rows that start objects
    unmatched_trk_obj_ids: np.ndarray
    empty_trk_obj_ids: np.ndarray
    det_to_matched_trk_obj_ids: Mapping[int, np.ndarray]  # kept row -> ids it matches (im_mask)
    trk_id_to_max_iou_high_conf_det: Mapping[int, int]  # recondition candidates: id -> row


def associate_det_trk(det: FrameDetections31, trk_masks: Tensor, trk_obj_ids: np.ndarray,
                      config: Sam31LoopConfig) -> Association31:
    """IoM association (MB:1899 / VB:163). With no tracks every row scoring >= new_det_thresh is new (the keep
    mask is not consulted, as officially). Otherwise: non-kept rows count as empty; a track is matched at
    IoM >= trk_assoc_iou_thresh; a kept row >= new_det_thresh matching no track at IoM >= assoc_iou_thresh is
    new; then every row matching more than one track and every track matched by more than one row at
    IoM >= iom_thresh_recondition is zeroed before the matched lists and the recondition pairs (det score
    >= 0.8 and IoM >= iom_thresh_recondition, argmax track, a later row overwriting an earlier one)."""
    trk_obj_ids = np.asarray(trk_obj_ids, np.int64)
    q, m = det.probs.shape[0], trk_masks.shape[0]
    scores = det.probs.float()
    keep = det.keep
    if m == 0:
        is_new = (scores >= config.new_det_thresh).cpu().numpy()
        return Association31(np.zeros(0, bool), np.zeros(0, bool), np.zeros((q, 0), bool), np.nonzero(is_new)[0],
                             trk_obj_ids[:0], trk_obj_ids[:0],
                             {d: trk_obj_ids[:0] for d in np.nonzero(keep.cpu().numpy())[0].tolist()},
                             {})
    det_masks, trk_masks = resize_to_smaller(det.masks.float(), trk_masks.float())
    det_binary = (det_masks > 0) & keep[:, None, None]
    trk_binary = trk_masks > 0
    iom = mask_iom(det_binary, trk_binary)
    trk_is_matched = (iom >= config.trk_assoc_iou_thresh).any(dim=0)
    trk_is_nonempty = trk_binary.any(dim=(1, 2))
    trk_is_unmatched = trk_is_nonempty & ~trk_is_matched
    is_new = (scores >= config.new_det_thresh) & keep & ~(iom >= config.assoc_iou_thresh).any(dim=1)
    strong = iom >= config.iom_thresh_recondition
    iom = torch.where(strong.sum(dim=0, keepdim=True) > 1, torch.zeros_like(iom), iom)
    iom = torch.where(strong.sum(dim=1, keepdim=True) > 1, torch.zeros_like(iom), iom)
    best_trk = torch.argmax(iom, dim=1)
    high_conf = (scores >= config.recondition_det_score_thresh) & keep & ~is_new
    high_iom = torch.amax(iom, dim=1) >= config.iom_thresh_recondition
    im_mask = (iom >= config.assoc_iou_thresh).cpu().numpy()
    keep_np, best_np = keep.cpu().numpy(), best_trk.cpu().numpy()
    pairs = set(np.nonzero((high_conf & high_iom).cpu().numpy())[0].tolist())
    matched, recondition = {}, {}
    for d in range(q):
        if keep_np[d]:
            matched[d] = trk_obj_ids[im_mask[d]]
            if d in pairs:
                recondition[int(trk_obj_ids[best_np[d]])] = d
    unmatched_np, nonempty_np = trk_is_unmatched.cpu().numpy(), trk_is_nonempty.cpu().numpy()
    return Association31(unmatched_np, nonempty_np, im_mask, np.nonzero(is_new.cpu().numpy())[0],
                         trk_obj_ids[unmatched_np], trk_obj_ids[~nonempty_np], matched, recondition)


# --------------------------------------------------------------------------------------------
# per-object state
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanningState31:
    """What the loop carries between frames (``tracker_metadata``, its ``gpu_metadata`` and the confirmation
    record), per object in ascending id order (``obj_ids``). Treat as immutable."""

    obj_ids: tuple[int, ...] = ()
    max_obj_id: int = -1
    obj_id_to_score: Mapping[int, float] = field(default_factory=dict)  # det score at birth (-1e4 once removed)
    first_frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unmatch_count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # total, never reset
    keep_alive: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # recorded, hides nothing
    overlap_counts: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.int64))  # (N, N) upper triangle
    last_occluded: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    status: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # UNCONFIRMED / CONFIRMED
    consecutive_det: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def process_hotstart(state: PlanningState31, frame_idx: int, reverse: bool, assoc: Association31,
                     config: Sam31LoopConfig) -> tuple[np.ndarray, PlanningState31]:
    """MB ``_process_hotstart_gpu``: keep-alive +-1 (clamped; it hides nothing in 3.1), the total unmatched
    count, and per frame +1 for every pair of tracks one kept row matches (upper triangle by position); an
    object within its hot-start window is removed at ``hotstart_unmatch_thresh`` unmatched frames, or once a
    strictly earlier-born object shares ``hotstart_dup_thresh`` rows with it. -> ((N,) bool to remove, state)."""
    im_mask = assoc.im_mask
    n = len(state.obj_ids)
    matched = im_mask.any(axis=0) if n else np.zeros(0, bool)
    keep_alive = np.clip(np.where(matched, state.keep_alive + 1, state.keep_alive - 1),
                         config.min_trk_keep_alive, config.max_trk_keep_alive)
    unmatch = state.unmatch_count + assoc.trk_is_unmatched.astype(np.int64)
    multi = im_mask[im_mask.sum(axis=1) > 1].astype(np.int64)
    increment = np.triu(multi.T @ multi, k=1) if n else np.zeros((0, 0), np.int64)
    overlap = state.overlap_counts + increment
    first = state.first_frame
    window = first < frame_idx + config.hotstart_delay if reverse else first > frame_idx - config.hotstart_delay
    remove = window & (unmatch >= config.hotstart_unmatch_thresh)
    if n:
        earlier = first[:, None] > first[None, :] if reverse else first[:, None] < first[None, :]
        max_with_earlier = np.where(earlier, overlap, 0).max(axis=0)
        remove |= window & (max_with_earlier >= config.hotstart_dup_thresh)
    return remove, replace(state, keep_alive=keep_alive, unmatch_count=unmatch, overlap_counts=overlap)


def recondition_pairs(frame_idx: int, assoc: Association31, trk_scores: Tensor, obj_ids: tuple[int, ...],
                      config: Sam31LoopConfig) -> dict[int, int]:
    """Object id -> detection row to re-prompt it with, on every ``recondition_every_nth_frame``-th frame
    (MB:1130 + ``_recondition_masklets``): the association's candidates whose tracker probability
    sigmoid(logit) > 0.8, in the candidates' order."""
    n = config.recondition_every_nth_frame
    if n <= 0 or frame_idx % n != 0 or not assoc.trk_id_to_max_iou_high_conf_det:
        return {}
    position = {obj_id: i for i, obj_id in enumerate(obj_ids)}
    return {obj_id: det_idx for obj_id, det_idx in assoc.trk_id_to_max_iou_high_conf_det.items()
            if float(trk_scores[position[obj_id]].sigmoid()) > config.recondition_obj_score_thresh}


def blend_reconditioned(trk_masks: Tensor, det_masks: Tensor, pairs: Mapping[int, int],
                        obj_ids: tuple[int, ...]) -> Tensor:
    """The tracker logits of re-prompted objects take the detector's logits wherever the two binary masks
    disagree (MB:940-962; hole filling is off in 3.1). Returns a new tensor."""
    if not pairs:
        return trk_masks
    out = trk_masks.clone()
    position = {obj_id: i for i, obj_id in enumerate(obj_ids)}
    rows = [position[i] for i in pairs]
    new = det_masks[list(pairs.values())].to(out.dtype)
    old = out[rows]
    out[rows] = torch.where((new > 0) == (old > 0), old, new)
    return out


def suppress_recently_occluded(frame_idx: int, trk_masks: Tensor, last_occluded: np.ndarray, to_remove: np.ndarray,
                               config: Sam31LoopConfig, reverse: bool = False) -> tuple[Tensor, np.ndarray]:
    """MB ``_suppress_overlapping_based_on_recent_occlusion``: SAM 3's rule on the per-position record (objects
    hot-start removed on this frame count as always occluded). -> (masks with suppressed rows at -10, the new
    last-occluded record)."""
    if trk_masks.shape[0] == 0 or config.suppress_overlapping_based_on_recent_occlusion_threshold <= 0:
        return trk_masks, last_occluded
    binary = trk_masks > 0
    prev = torch.from_numpy(np.where(to_remove, ALWAYS_OCCLUDED, last_occluded)).to(trk_masks.device)
    to_suppress = objects_to_suppress_based_on_most_recently_occluded(
        binary, prev, config.suppress_overlapping_based_on_recent_occlusion_threshold, reverse)
    occluded = ~binary.any(dim=(-1, -2)) | to_suppress
    new = prev.clone()
    new[occluded] = frame_idx
    out = trk_masks.clone()
    out[to_suppress] = NO_OBJ_LOGIT
    return out, new.cpu().numpy()


# --------------------------------------------------------------------------------------------
# one frame
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePlan31:
    """What one frame's planning decides (MB ``sam2_update_plan``)."""

    association: Association31
    recondition: Mapping[int, int]  # object id -> detection row (masks re-prompted from the detection)
    masks: Tensor  # (M, h, w) tracker logits after the recondition blend and occlusion suppression
    new_det_fa_inds: np.ndarray  # rows that start objects, in id order (after the cap)
    new_det_obj_ids: np.ndarray
    obj_ids_newly_removed: frozenset[int]
    num_obj_dropped: int


def plan_frame(state: PlanningState31, frame_idx: int, det: FrameDetections31, trk_masks: Tensor, trk_scores: Tensor,
               config: Sam31LoopConfig, reverse: bool = False) -> tuple[FramePlan31, PlanningState31]:
    """MB ``run_tracker_update_planning_phase`` for the tracks ``state.obj_ids`` (masks ``trk_masks`` (M, h, w),
    object-score logits ``trk_scores`` (M,)) and the frame's detections -> (plan, state after the frame)."""
    obj_ids = state.obj_ids
    assoc = associate_det_trk(det, trk_masks, np.asarray(obj_ids, np.int64), config)
    to_remove, state = process_hotstart(state, frame_idx, reverse, assoc, config) if obj_ids else \
        (np.zeros(0, bool), state)
    pairs = recondition_pairs(frame_idx, assoc, trk_scores, obj_ids, config)
    masks = blend_reconditioned(trk_masks, det.masks, pairs, obj_ids)
    masks, last_occluded = suppress_recently_occluded(frame_idx, masks, state.last_occluded, to_remove, config,
                                                      reverse)
    # new objects (the cap keeps the highest-scoring ones, in descending score)
    new_inds = assoc.new_det_fa_inds
    dropped = 0
    limit = config.effective_max_num_objects
    if len(obj_ids) + len(new_inds) > limit:
        keep_n = limit - len(obj_ids)
        dropped = len(new_inds) - keep_n
        new_inds = drop_new_det_with_obj_limit(new_inds, det.probs.float().cpu().numpy(), keep_n)
    new_ids = state.max_obj_id + 1 + np.arange(len(new_inds), dtype=np.int64)
    removed = frozenset(int(i) for i, r in zip(obj_ids, to_remove) if r)
    # bookkeeping
    scores = dict(state.obj_id_to_score)
    probs = det.probs.float().cpu().numpy()
    scores.update({int(i): float(probs[d]) for i, d in zip(new_ids, new_inds)})
    for obj_id in removed:
        scores[obj_id] = REMOVED_OBJ_SCORE
    kept_rows = [i for i, obj_id in enumerate(obj_ids) if obj_id not in removed]
    updated_ids = tuple(obj_ids[i] for i in kept_rows) + tuple(int(i) for i in new_ids)
    k = len(new_ids)

    def extend(values: np.ndarray, fill) -> np.ndarray:
        return np.concatenate([values[kept_rows], np.full(k, fill, np.int64)])

    overlap = np.zeros((len(updated_ids),) * 2, np.int64)
    overlap[:len(kept_rows), :len(kept_rows)] = state.overlap_counts[np.ix_(kept_rows, kept_rows)]
    # masklet confirmation (MB update_masklet_confirmation_status), on the updated ids
    status = extend(state.status, UNCONFIRMED)
    consecutive = extend(state.consecutive_det, 0)
    if config.masklet_confirmation_enable:
        matched = {int(i) for i in new_ids}
        for ids in assoc.det_to_matched_trk_obj_ids.values():
            matched.update(int(i) for i in ids)
        for row, obj_id in enumerate(updated_ids):
            consecutive[row] = consecutive[row] + 1 if obj_id in matched else 0
            if consecutive[row] >= config.masklet_confirmation_consecutive_det_thresh:
                status[row] = CONFIRMED
    new_state = replace(
        state, obj_ids=updated_ids,
        max_obj_id=max(state.max_obj_id, int(new_ids.max())) if k else state.max_obj_id,
        obj_id_to_score=scores, first_frame=extend(state.first_frame, frame_idx),
        unmatch_count=extend(state.unmatch_count, 0), keep_alive=extend(state.keep_alive, config.init_trk_keep_alive),
        overlap_counts=overlap, last_occluded=extend(last_occluded, NEVER_OCCLUDED), status=status,
        consecutive_det=consecutive,
    )
    plan = FramePlan31(assoc, pairs, masks, np.asarray(new_inds, np.int64), new_ids, removed, dropped)
    return plan, new_state


def unconfirmed_obj_ids(state: PlanningState31) -> set[int]:
    """The ids not (yet) confirmed after a frame (the output hides them; MT:413-425)."""
    return {obj_id for obj_id, s in zip(state.obj_ids, state.status) if s != CONFIRMED}

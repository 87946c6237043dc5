"""The official SAM 3 video loop's per-frame planning rules, as pure functions.

Mirrors sam3 0.1.4 ``sam3/model/sam3_video_base.py`` ("VB"), rank 0 of a single-GPU run: which
detections survive NMS, which tracks are matched / unmatched / empty, which detections start new
objects, which objects hot-start removes, which are reconditioned from a detection, and which are
suppressed for a recent occlusion before their memory is encoded. Nothing here touches a model or a
tracker state: masks are plain tensors, per-object bookkeeping lives in a frozen ``PlanningState``
that every update returns anew (the official code mutates ``tracker_metadata`` dicts in place).

Shapes: detector masks ``(N, H, W)`` float logits, tracker masks ``(M, h, w)`` float logits, object
ids int64 numpy arrays in the tracker's order (``obj_ids_all_gpu``). Math, comparisons (``>`` vs
``>=``), ordering and tie-breaking follow the official code line by line; the line numbers quoted
refer to the installed 0.1.4 files. Thresholds are in ``Sam3LoopConfig`` with the values that
``sam3.model_builder.build_sam3_video_model`` passes (model_builder.py:716-740) and the VB class
defaults (VB:37-83) for everything the builder leaves alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sam3video.model.sam3_tracker_utils import apply_non_overlapping_constraints  # noqa: F401 - part of the rules (sam3_tracker_base.py:1118)
from sam3video.thresholds import HIGH_CONF_THRESH, HIGH_IOU_THRESH, NO_LIMIT_MAX_NUM_OBJECTS, Sam3LoopConfig  # noqa: F401 - the loop's thresholds

# constants hard-coded in the official code
NEVER_OCCLUDED = -1  # VB:845
ALWAYS_OCCLUDED = 100000  # VB:846, "removed by hotstart"
NO_OBJ_LOGIT = -10.0  # VB:884, logit written over occlusion-suppressed masks
NMS_SUPPRESSED_LOGIT_OFFSET = 1e4  # sam3_image.py:831, subtracted from NMS-removed logits
REMOVED_OBJ_SCORE = -1e4  # VB:785, score given to hot-start-removed objects
SHRINK_THRESHOLD = 0.3  # sam3_tracking_predictor.py:1321
MEMORY_OBJ_SCORE_LOGIT = 10.0  # VB:1474, +-10 object score proxy for the memory encoder


# --------------------------------------------------------------------------------------------
# IoU and detection filtering
# --------------------------------------------------------------------------------------------


def mask_iou(pred_masks: Tensor, gt_masks: Tensor) -> Tensor:
    """(N, M) float32 IoU of bool masks (N, H, W) and (M, H, W); union clamped to >= 1 (0 if both
    empty). Follows ``sam3.perflib.masks_ops.mask_iou`` (masks_ops.py:48)."""
    assert pred_masks.dtype == gt_masks.dtype == torch.bool
    n, h, w = pred_masks.shape
    m = gt_masks.shape[0]
    pred_flat = pred_masks.reshape(n, 1, h * w)
    gt_flat = gt_masks.reshape(1, m, h * w)
    intersection = (pred_flat & gt_flat).sum(dim=2).float()
    union = (pred_flat | gt_flat).sum(dim=2).float()
    return intersection / union.clamp(min=1)


def resize_to_smaller(det_masks: Tensor, trk_masks: Tensor) -> tuple[Tensor, Tensor]:
    """Bring (N, H, W) detector and (M, h, w) tracker logits to one size: the one with fewer pixels
    is kept and the other is bilinearly resized (align_corners=False) onto it; equal pixel counts
    resize the detections (VB:1236-1251)."""
    if det_masks.shape[-2:] == trk_masks.shape[-2:]:
        return det_masks, trk_masks
    if np.prod(det_masks.shape[-2:]) < np.prod(trk_masks.shape[-2:]):
        trk_masks = F.interpolate(
            trk_masks.unsqueeze(1), size=det_masks.shape[-2:], mode="bilinear", align_corners=False
        ).squeeze(1)
    else:
        det_masks = F.interpolate(
            det_masks.unsqueeze(1), size=trk_masks.shape[-2:], mode="bilinear", align_corners=False
        ).squeeze(1)
    return det_masks, trk_masks


def generic_nms(ious: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS over a (K, K) IoU matrix and (K,) scores -> int64 kept indices in visiting order.

    ``sam3.perflib.nms.generic_nms_cpu`` (nms.py:73): visit by ``np.argsort(scores)[::-1]`` (so
    among equal scores the higher index goes first), drop the rest whose IoU with the kept one is
    ``> iou_threshold`` (a pair at exactly the threshold survives). The CUDA kernels are meant to
    be the same greedy rule.
    """
    assert ious.dim() == 2 and ious.size(0) == ious.size(1)
    assert scores.dim() == 1 and scores.size(0) == ious.size(0)
    ious_np = ious.float().detach().cpu().numpy()
    scores_np = scores.float().detach().cpu().numpy()
    order = scores_np.argsort()[::-1]
    kept = []
    while order.size > 0:
        i = order.item(0)
        kept.append(i)
        inds = np.where(ious_np[i, order[1:]] <= iou_threshold)[0]
        order = order[inds + 1]
    return torch.tensor(kept, dtype=torch.int64, device=scores.device)


def nms_masks(pred_probs: Tensor, pred_masks: Tensor, prob_threshold: float, iou_threshold: float) -> Tensor:
    """(Q,) bool keep of detections with prob ``> prob_threshold`` that survive mask NMS
    (masks ``> 0``, IoU as ``mask_iou``). ``sam3.perflib.nms.nms_masks`` (nms.py:23)."""
    is_valid = pred_probs > prob_threshold
    probs = pred_probs[is_valid]
    masks_binary = pred_masks[is_valid] > 0
    if probs.numel() == 0:
        return is_valid
    ious = mask_iou(masks_binary, masks_binary)
    kept_inds = generic_nms(ious, probs, iou_threshold)
    valid_inds = torch.where(is_valid, is_valid.cumsum(dim=0) - 1, -1)
    return torch.isin(valid_inds, kept_inds)


def select_detections(
    pred_probs: Tensor, pred_masks: Tensor, config: Sam3LoopConfig, allow_new_detections: bool = True
) -> Tensor:
    """int64 indices (ascending query order) of the detections the loop keeps for one prompt.

    ``pred_probs`` (Q,) detector probabilities, ``pred_masks`` (Q, H, W) logits. NMS runs only if
    ``det_nms_thresh > 0`` (VB:356-358; NMS-removed logits get -1e4, sam3_image.py:824-831), then
    ``prob > score_threshold_detection`` (VB:365-370). ``det_out`` = the rows at these indices.
    """
    probs = pred_probs
    if config.det_nms_thresh > 0.0:
        keep = nms_masks(probs, pred_masks, config.score_threshold_detection, config.det_nms_thresh)
        # the official code subtracts 1e4 from removed logits: sigmoid -> 0, below any threshold
        probs = torch.where(keep, probs, torch.zeros_like(probs))
    if not allow_new_detections:
        probs = probs - 1e8
    return torch.where(probs > config.score_threshold_detection)[0]


def suppress_detections_close_to_boundary(boxes: Tensor, margin: float = 0.025) -> Tensor:
    """(N,) bool keep of normalized xyxy boxes (N, 4) whose centre is strictly inside the
    ``margin`` border (VB:292). Only used when ``suppress_det_close_to_boundary`` (off)."""
    x_min, y_min, x_max, y_max = boxes.unbind(-1)
    x_c = (x_min + x_max) / 2
    y_c = (y_min + y_max) / 2
    return (x_c > margin) & (x_c < 1.0 - margin) & (y_c > margin) & (y_c < 1.0 - margin)


# --------------------------------------------------------------------------------------------
# detection <-> track association
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Association:
    """Result of ``associate_det_trk`` (the five values VB:1160 returns, same names)."""

    new_det_fa_inds: np.ndarray  # (K,) int64 detection indices that start new objects
    unmatched_trk_obj_ids: np.ndarray  # ids of non-empty tracks with no det at IoU >= trk thresh
    det_to_matched_trk_obj_ids: dict[int, np.ndarray]  # det idx -> ids at IoU >= assoc thresh
    trk_id_to_max_iou_high_conf_det: dict[int, int]  # track id -> det idx (recondition pairs)
    empty_trk_obj_ids: np.ndarray  # ids of tracks whose mask is empty (no logit > 0)


def associate_det_trk(
    det_masks: Tensor, det_scores_np: np.ndarray, trk_masks: Tensor, trk_obj_ids: np.ndarray, config: Sam3LoopConfig
) -> Association:
    """Match (N, H, W) detector logits with (M, h, w) tracker logits (VB:1160 ``_associate_det_trk``).

    IoU of ``> 0`` masks at the smaller resolution. A track is matched if some detection has IoU
    ``>= trk_assoc_iou_thresh`` (or, with o2o matching, its Hungarian partner does); non-empty
    unmatched tracks are "unmatched", empty ones "empty". A detection is new if its score is
    ``>= new_det_thresh`` and no track reaches IoU ``>= assoc_iou_thresh``, except that with no
    tracks at all EVERY detection is new, whatever its score (VB:1214-1228, the early return).
    Recondition pairs: a non-new det with score >= 0.8 whose best IoU is >= 0.8 maps its argmax
    track (first track on ties) to itself; a later det overwrites an earlier one (VB:1280-1295).
    """
    assert det_masks.is_floating_point(), "float tensor expected (do not binarize)"
    assert trk_masks.is_floating_point(), "float tensor expected (do not binarize)"
    trk_obj_ids = np.asarray(trk_obj_ids, np.int64)
    det_scores_np = np.asarray(det_scores_np)
    assert trk_masks.size(0) == len(trk_obj_ids)
    if trk_masks.size(0) == 0:
        return Association(np.arange(det_masks.size(0)), np.array([], np.int64), {}, {}, np.array([], np.int64))
    if det_masks.size(0) == 0:
        trk_is_nonempty = (trk_masks > 0).any(dim=(1, 2)).cpu().numpy()
        return Association(
            np.array([], np.int64), trk_obj_ids[trk_is_nonempty], {}, {}, trk_obj_ids[~trk_is_nonempty]
        )

    det_masks, trk_masks = resize_to_smaller(det_masks, trk_masks)
    det_masks_binary = det_masks > 0
    trk_masks_binary = trk_masks > 0
    ious_np = mask_iou(det_masks_binary, trk_masks_binary).cpu().numpy()  # (N, M)

    if config.o2o_matching_masklets_enable:  # VB:1258-1267
        from scipy.optimize import linear_sum_assignment

        row_ind, col_ind = linear_sum_assignment(1 - ious_np)
        trk_is_matched = np.zeros(trk_masks.size(0), dtype=bool)
        for d, t in zip(row_ind, col_ind):
            if ious_np[d, t] >= config.trk_assoc_iou_thresh:
                trk_is_matched[t] = True
    else:
        trk_is_matched = (ious_np >= config.trk_assoc_iou_thresh).any(axis=0)
    trk_is_nonempty = trk_masks_binary.any(dim=(1, 2)).cpu().numpy()
    unmatched_trk_obj_ids = trk_obj_ids[np.logical_and(trk_is_nonempty, ~trk_is_matched)]
    empty_trk_obj_ids = trk_obj_ids[~trk_is_nonempty]

    is_new_det = np.logical_and(
        det_scores_np >= config.new_det_thresh,
        np.logical_not(np.any(ious_np >= config.assoc_iou_thresh, axis=1)),
    )
    new_det_fa_inds = np.nonzero(is_new_det)[0]

    det_to_matched_trk_obj_ids: dict[int, np.ndarray] = {}
    trk_id_to_max_iou_high_conf_det: dict[int, int] = {}
    det_to_max_iou_trk_idx = np.argmax(ious_np, axis=1)
    det_is_high_conf = (det_scores_np >= config.recondition_det_score_thresh) & ~is_new_det
    det_is_high_iou = np.max(ious_np, axis=1) >= config.recondition_iou_thresh
    det_is_high_conf_and_iou = set(np.nonzero(det_is_high_conf & det_is_high_iou)[0].tolist())
    for d in range(det_masks.size(0)):
        det_to_matched_trk_obj_ids[d] = trk_obj_ids[ious_np[d, :] >= config.assoc_iou_thresh]
        if d in det_is_high_conf_and_iou:
            trk_id_to_max_iou_high_conf_det[int(trk_obj_ids[det_to_max_iou_trk_idx[d]])] = d
    return Association(
        new_det_fa_inds, unmatched_trk_obj_ids, det_to_matched_trk_obj_ids, trk_id_to_max_iou_high_conf_det,
        empty_trk_obj_ids,
    )


def drop_new_det_with_obj_limit(new_det_fa_inds: np.ndarray, det_scores_np: np.ndarray, num_to_keep: int) -> np.ndarray:
    """Keep the ``num_to_keep`` highest-scoring new detections, reordered by descending score
    (``np.argsort(...)[::-1]``: higher index first among ties). VB:1752."""
    assert 0 <= num_to_keep <= len(new_det_fa_inds)
    if num_to_keep == 0:
        return np.array([], np.int64)
    if num_to_keep == len(new_det_fa_inds):
        return new_det_fa_inds
    score_order = np.argsort(det_scores_np[new_det_fa_inds])[::-1]
    return new_det_fa_inds[score_order[:num_to_keep]]


# --------------------------------------------------------------------------------------------
# per-object bookkeeping and hot-start
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanningState:
    """Per-object counters carried between frames (VB:1582 ``_initialize_metadata``, world size 1).

    Treat as immutable: every update function returns a new state with fresh containers.
    """

    obj_ids: tuple[int, ...] = ()  # tracked ids in tracker order ("obj_ids_all_gpu")
    max_obj_id: int = -1
    obj_id_to_score: Mapping[int, float] = field(default_factory=dict)  # det score at birth
    obj_id_to_last_occluded: Mapping[int, int] = field(default_factory=dict)
    # "rank0_metadata"
    obj_first_frame_idx: Mapping[int, int] = field(default_factory=dict)
    unmatched_frame_inds: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    trk_keep_alive: Mapping[int, int] = field(default_factory=dict)
    overlap_pair_to_frame_inds: Mapping[tuple[int, int], tuple[int, ...]] = field(default_factory=dict)
    removed_obj_ids: frozenset[int] = frozenset()
    suppressed_obj_ids: Mapping[int, frozenset[int]] = field(default_factory=dict)  # frame -> ids
    # not official: objects a positive exemplar box started or re-prompted, never removed by hot-start
    exemplar_obj_ids: frozenset[int] = frozenset()


def _ints(a) -> list[int]:
    return [int(x) for x in np.asarray(a, np.int64).reshape(-1)]


def process_hotstart(
    state: PlanningState,
    frame_idx: int,
    reverse: bool,
    det_to_matched_trk_obj_ids: Mapping[int, np.ndarray],
    new_det_obj_ids: np.ndarray,
    empty_trk_obj_ids: np.ndarray,
    unmatched_trk_obj_ids: np.ndarray,
    config: Sam3LoopConfig,
) -> tuple[set[int], PlanningState]:
    """Hot-start removal and keep-alive counters (VB:1311 ``_process_hotstart``).

    1. New ids get their first frame and ``init_trk_keep_alive``. Every id listed by any detection
       in ``det_to_matched_trk_obj_ids`` (IoU >= assoc_iou_thresh, the loose 0.1) gets keep-alive
       +1 (capped at max), then every unmatched id (IoU < trk_assoc_iou_thresh) is logged as
       unmatched on this frame and gets -1 (floored at min); an id can get both on one frame.
       Empty tracks count down too only with ``decrease_trk_keep_alive_for_empty_masklets``.
    2. An id with ``>= hotstart_unmatch_thresh`` unmatched frames (all frames so far, not a
       window) is removed if its first frame is ``> frame_idx - hotstart_delay`` (forward) /
       ``< frame_idx + hotstart_delay`` (reverse). Keep-alive ``<= 0`` only hides it on this frame
       ("suppressed") when ``suppress_unmatched_only_within_hotstart`` is False (not the builder).
    3. Detections matched to >= 2 tracks: each track but the earliest-born (``min`` by first
       frame, first in track order on ties; ``max`` in reverse) logs a duplicate frame for the pair
       (earliest, it); the later one is removed once the pair has ``>= hotstart_dup_thresh`` frames
       while it is within its hot-start window.
    Returns (ids newly removed on this frame, new state).
    """
    obj_first_frame_idx = dict(state.obj_first_frame_idx)
    unmatched_frame_inds = {k: list(v) for k, v in state.unmatched_frame_inds.items()}
    trk_keep_alive = dict(state.trk_keep_alive)
    overlap_pair_to_frame_inds = {k: list(v) for k, v in state.overlap_pair_to_frame_inds.items()}
    removed_obj_ids = set(state.removed_obj_ids)
    suppressed_all = dict(state.suppressed_obj_ids)
    suppressed_obj_ids = set(suppressed_all.get(frame_idx, frozenset()))

    obj_ids_newly_removed: set[int] = set()
    hotstart_diff = frame_idx - config.hotstart_delay if not reverse else frame_idx + config.hotstart_delay

    def within_hotstart(obj_id: int) -> bool:
        first = obj_first_frame_idx[obj_id]
        return (first > hotstart_diff and not reverse) or (first < hotstart_diff and reverse)

    # Step 1 (VB:1342-1375)
    for obj_id in _ints(new_det_obj_ids):
        if obj_id not in obj_first_frame_idx:
            obj_first_frame_idx[obj_id] = frame_idx
        assert obj_id not in trk_keep_alive
        trk_keep_alive[obj_id] = config.init_trk_keep_alive
    matched_trks: set[int] = set()
    for matched_trks_per_det in det_to_matched_trk_obj_ids.values():
        matched_trks.update(_ints(matched_trks_per_det))
    for obj_id in matched_trks:
        trk_keep_alive[obj_id] = min(config.max_trk_keep_alive, trk_keep_alive.get(obj_id, 0) + 1)
    for obj_id in _ints(unmatched_trk_obj_ids):
        unmatched_frame_inds.setdefault(obj_id, []).append(frame_idx)
        trk_keep_alive[obj_id] = max(config.min_trk_keep_alive, trk_keep_alive.get(obj_id, 0) - 1)
    if config.decrease_trk_keep_alive_for_empty_masklets:
        for obj_id in _ints(empty_trk_obj_ids):
            trk_keep_alive[obj_id] = max(config.min_trk_keep_alive, trk_keep_alive.get(obj_id, 0) - 1)

    # Step 2 (VB:1377-1408)
    for obj_id, frame_indices in unmatched_frame_inds.items():
        if obj_id in removed_obj_ids or obj_id in obj_ids_newly_removed:
            continue
        if (len(frame_indices) >= config.hotstart_unmatch_thresh and within_hotstart(obj_id)
                and obj_id not in state.exemplar_obj_ids):
            obj_ids_newly_removed.add(obj_id)
        if obj_id not in trk_keep_alive:
            trk_keep_alive[obj_id] = 0  # defaultdict(int) read
        if (
            trk_keep_alive[obj_id] <= 0
            and not config.suppress_unmatched_only_within_hotstart
            and obj_id not in removed_obj_ids
            and obj_id not in obj_ids_newly_removed
        ):
            suppressed_obj_ids.add(obj_id)

    # Step 3 (VB:1410-1443)
    for matched_trk_obj_ids in det_to_matched_trk_obj_ids.values():
        ids = _ints(matched_trk_obj_ids)
        if len(ids) < 2:
            continue
        if not reverse:
            first_appear_obj_id = min(ids, key=lambda x: obj_first_frame_idx[x])
        else:
            first_appear_obj_id = max(ids, key=lambda x: obj_first_frame_idx[x])
        for obj_id in ids:
            if obj_id != first_appear_obj_id:
                overlap_pair_to_frame_inds.setdefault((first_appear_obj_id, obj_id), []).append(frame_idx)
    for (_, obj_id), frame_indices in overlap_pair_to_frame_inds.items():
        if obj_id in removed_obj_ids or obj_id in obj_ids_newly_removed:
            continue
        if (within_hotstart(obj_id) and len(frame_indices) >= config.hotstart_dup_thresh
                and obj_id not in state.exemplar_obj_ids):
            obj_ids_newly_removed.add(obj_id)

    removed_obj_ids.update(obj_ids_newly_removed)
    suppressed_all[frame_idx] = frozenset(suppressed_obj_ids)
    new_state = replace(
        state,
        obj_first_frame_idx=obj_first_frame_idx,
        unmatched_frame_inds={k: tuple(v) for k, v in unmatched_frame_inds.items()},
        trk_keep_alive=trk_keep_alive,
        overlap_pair_to_frame_inds={k: tuple(v) for k, v in overlap_pair_to_frame_inds.items()},
        removed_obj_ids=frozenset(removed_obj_ids),
        suppressed_obj_ids=suppressed_all,
    )
    return obj_ids_newly_removed, new_state


# --------------------------------------------------------------------------------------------
# reconditioning
# --------------------------------------------------------------------------------------------


def mask_to_box(masks: Tensor) -> Tensor:
    """(B, 1, H, W) bool -> (B, 1, 4) int xyxy with INCLUSIVE max (no +1), zeros for empty masks
    (``sam3.model.sam3_tracker_utils.mask_to_box``, sam3_tracker_utils.py:57)."""
    b, _, h, w = masks.shape
    xs = torch.arange(w, device=masks.device, dtype=torch.int32)
    ys = torch.arange(h, device=masks.device, dtype=torch.int32)
    grid_xs, grid_ys = torch.meshgrid(xs, ys, indexing="xy")
    grid_xs = grid_xs[None, None].expand(b, 1, h, w)
    grid_ys = grid_ys[None, None].expand(b, 1, h, w)
    min_xs = torch.where(masks, grid_xs, w).flatten(-2).min(dim=-1).values
    max_xs = torch.where(masks, grid_xs, -1).flatten(-2).max(dim=-1).values
    min_ys = torch.where(masks, grid_ys, h).flatten(-2).min(dim=-1).values
    max_ys = torch.where(masks, grid_ys, -1).flatten(-2).max(dim=-1).values
    coords = torch.stack((min_xs, min_ys, max_xs, max_ys), dim=-1)
    area = masks.sum(dim=(-1, -2))
    return torch.where(area[..., None] > 0, coords, torch.zeros_like(coords))


def bbox_mismatch_recondition_ids(
    trk_id_to_max_iou_high_conf_det: Mapping[int, int],
    det_boxes_xyxy: Tensor,
    det_scores: Tensor,
    trk_masks: Tensor,
    trk_obj_ids: np.ndarray,
    config: Sam3LoopConfig,
) -> set[int]:
    """Ids whose tracker-mask box (normalized by the mask size) has box IoU
    ``< reconstruction_bbox_iou_thresh`` with their high-confidence det's normalized box while the
    det score is ``>= reconstruction_bbox_det_score`` (VB:668-718). Off unless the IoU thresh > 0;
    these are the only ids ``build_outputs`` overrides with the detector mask."""
    out: set[int] = set()
    if not (config.reconstruction_bbox_iou_thresh > 0 and len(trk_id_to_max_iou_high_conf_det) > 0):
        return out
    ids = _ints(trk_obj_ids)
    for trk_obj_id, det_idx in trk_id_to_max_iou_high_conf_det.items():
        if trk_obj_id not in ids:
            continue
        mask_binary = trk_masks[ids.index(trk_obj_id)] > 0
        if mask_binary.sum().item() == 0:
            continue
        box = mask_to_box(mask_binary[None, None])[0, 0]
        mh, mw = mask_binary.shape[-2:]
        trk_box = torch.tensor([box[0] / mw, box[1] / mh, box[2] / mw, box[3] / mh], device=box.device)
        det_box = det_boxes_xyxy[det_idx]
        area1 = (det_box[2:] - det_box[:2]).prod(-1)
        area2 = (trk_box[2:] - trk_box[:2]).prod(-1)
        inter = (torch.min(det_box[2:], trk_box[2:]) - torch.max(det_box[:2], trk_box[:2])).clamp(min=0).prod(-1)
        iou = inter / (area1 + area2 - inter)  # fast_diag_box_iou, box_ops.py:173
        if iou < config.reconstruction_bbox_iou_thresh and det_scores[det_idx] >= config.reconstruction_bbox_det_score:
            out.add(trk_obj_id)
    return out


def should_recondition_periodic(frame_idx: int, trk_id_to_max_iou_high_conf_det: Mapping[int, int], config: Sam3LoopConfig) -> bool:
    """Every ``recondition_every_nth_frame``-th absolute frame index (frame 0 included, same in
    reverse) when there is at least one recondition pair (VB:720-724)."""
    n = config.recondition_every_nth_frame
    return n > 0 and frame_idx % n == 0 and len(trk_id_to_max_iou_high_conf_det) > 0


def masklets_to_recondition(
    trk_id_to_max_iou_high_conf_det: Mapping[int, int],
    trk_obj_ids: np.ndarray,
    trk_obj_score_logits: Tensor,
    config: Sam3LoopConfig,
) -> dict[int, int]:
    """Track id -> det idx that ``_recondition_masklets`` (VB:419) re-prompts with the det mask
    (bilinear to ``input_mask_size``, ``> 0``): pairs whose tracker object score, a LOGIT (sigmoid
    is applied only later, VB:276), is ``> 0.8``. Call only when a recondition is due."""
    ids = _ints(trk_obj_ids)
    out = {}
    for trk_obj_id, det_idx in trk_id_to_max_iou_high_conf_det.items():
        obj_score = trk_obj_score_logits[ids.index(trk_obj_id)]
        if obj_score > config.recondition_obj_score_logit_thresh:
            out[trk_obj_id] = det_idx
    return out


# --------------------------------------------------------------------------------------------
# occlusion suppression and non-overlap constraints before memory encoding
# --------------------------------------------------------------------------------------------


def objects_to_suppress_based_on_most_recently_occluded(
    binary_low_res_masks: Tensor, last_occluded: Tensor, threshold: float, reverse: bool = False
) -> Tensor:
    """(N,) bool: for every pair i < j with mask IoU ``>= threshold``, suppress the one occluded
    more recently (larger last-occluded frame; smaller in reverse), provided the OTHER one's
    last-occluded value is ``> -1`` (VB:1016 ``_get_objects_to_suppress_based_on_most_recently_occluded``).

    ``binary_low_res_masks`` (N, H, W) bool, ``last_occluded`` (N,) int64 (-1 never occluded).
    Equal values suppress neither. Note the guard: forward, a never-occluded object cannot
    suppress an occluded one; in reverse, the never-occluded (-1, the smallest) one is suppressed.
    """
    assert binary_low_res_masks.dtype == torch.bool
    n = binary_low_res_masks.size(0)
    to_suppress = torch.zeros(n, device=binary_low_res_masks.device, dtype=torch.bool)
    if n <= 1:
        return to_suppress
    iou = mask_iou(binary_low_res_masks, binary_low_res_masks)
    overlapping_pairs = torch.triu(iou >= threshold, diagonal=1)
    occ_i = last_occluded.unsqueeze(1)
    occ_j = last_occluded.unsqueeze(0)
    cmp_op = torch.gt if not reverse else torch.lt
    suppress_i = overlapping_pairs & cmp_op(occ_i, occ_j) & (occ_j > -1)
    suppress_j = overlapping_pairs & cmp_op(occ_j, occ_i) & (occ_i > -1)
    return suppress_i.any(dim=1) | suppress_j.any(dim=0)


def suppress_overlapping_based_on_recent_occlusion(
    frame_idx: int,
    trk_masks: Tensor,
    obj_ids: np.ndarray,
    obj_id_to_last_occluded_prev: Mapping[int, int],
    obj_ids_newly_removed: set[int],
    config: Sam3LoopConfig,
    reverse: bool = False,
) -> tuple[Tensor, Tensor, dict[int, int]]:
    """VB:819 ``_suppress_overlapping_based_on_recent_occlusion`` without the in-place write.

    ``trk_masks`` (M, h, w) hole-filled tracker logits in ``obj_ids`` order. An id missing from the
    previous record starts at -1, or at 100000 if hot-start removes it on this frame (so in
    practice only an object removed on its first tracked frame gets 100000: removal needs >= 8
    frames, by which time it is always recorded). Returns (masks with suppressed rows set to -10,
    (M,) bool to_suppress, new id -> last occluded frame), where an id is "occluded" on this frame
    if its mask is empty or it was suppressed. The official code writes the -10 rows INTO the
    tracker masks, which ``build_outputs`` then also uses, so suppressed objects vanish from this
    frame's outputs too.
    """
    ids = _ints(obj_ids)
    binary = trk_masks > 0
    m = trk_masks.size(0)
    if m == 0:
        return trk_masks, torch.zeros(0, dtype=torch.bool), {}
    assert len(ids) == m
    last_occluded_prev = torch.tensor(
        [
            obj_id_to_last_occluded_prev.get(
                obj_id, NEVER_OCCLUDED if obj_id not in obj_ids_newly_removed else ALWAYS_OCCLUDED
            )
            for obj_id in ids
        ],
        dtype=torch.long,
        device=trk_masks.device,
    )
    to_suppress = objects_to_suppress_based_on_most_recently_occluded(
        binary, last_occluded_prev, config.suppress_overlapping_based_on_recent_occlusion_threshold, reverse
    )
    is_occluded = ~binary.any(dim=(-1, -2))
    last_occluded_new = last_occluded_prev.clone()
    last_occluded_new[is_occluded | to_suppress] = frame_idx
    out_masks = trk_masks.clone()
    out_masks[to_suppress] = NO_OBJ_LOGIT
    return out_masks, to_suppress, dict(zip(ids, last_occluded_new.tolist()))


def suppress_shrinked_masks(pred_masks: Tensor, new_pred_masks: Tensor, shrink_threshold: float = SHRINK_THRESHOLD) -> Tensor:
    """Clamp to <= -10 every whole mask whose ``> 0`` area after / before is ``< shrink_threshold``
    (before-area clamped to >= 1) (sam3_tracking_predictor.py:1320)."""
    area_before = torch.clamp((pred_masks > 0).sum(dim=(-1, -2)), min=1.0)
    area_after = (new_pred_masks > 0).sum(dim=(-1, -2))
    keep = (area_after / area_before) >= shrink_threshold
    keep_mask = keep[..., None, None].expand_as(pred_masks)
    return torch.where(keep_mask, pred_masks, torch.clamp(pred_masks, max=-10.0))


def suppress_object_pw_area_shrinkage(pred_masks: Tensor) -> Tensor:
    """(N, 1, H, W) logits -> same, masks that lose >= 70% of their area under the pixel-argmax
    non-overlap are suppressed; the rest are returned UNCHANGED (may still overlap)
    (sam3_tracking_predictor.py:1334). Applied by ``_tracker_update_memories`` (VB:1468) to the
    memory-resolution masks before encoding."""
    return suppress_shrinked_masks(pred_masks, apply_non_overlapping_constraints(pred_masks))


def memory_object_score_logits(high_res_masks: Tensor) -> Tensor:
    """(N, 1, H, W) -> (N, 1): +10 where any pixel > 0 else -10, the object-score proxy given to the
    memory encoder (VB:1473-1475)."""
    return torch.where((high_res_masks > 0).any(dim=(-1, -2)), MEMORY_OBJ_SCORE_LOGIT, -MEMORY_OBJ_SCORE_LOGIT)


def apply_object_wise_non_overlapping_constraints(pred_masks: Tensor, obj_scores: Tensor, background_value: float = -10.0) -> Tensor:
    """(N, 1, H, W) masks, (N, 1) scores: an overlapped pixel goes wholly to the object with the
    highest score (first on ties); others are clamped to <= background_value
    (sam3_tracking_predictor.py:1350; the output stage calls it with tracker probs, bg 0)."""
    single = torch.where(pred_masks > 0, obj_scores[..., None, None], background_value)
    pixel_level = apply_non_overlapping_constraints(single)
    return torch.where(pixel_level > 0, pred_masks, torch.clamp(pred_masks, max=background_value))


# --------------------------------------------------------------------------------------------
# the whole planning phase
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramePlan:
    """What ``run_tracker_update_planning_phase`` decides on one frame (its ``tracker_update_plan``
    plus what it hands to the tracker)."""

    new_det_fa_inds: np.ndarray  # det indices that become new objects (order = id order)
    new_det_obj_ids: np.ndarray  # their new ids: max_obj_id + 1 + arange
    unmatched_trk_obj_ids: np.ndarray
    empty_trk_obj_ids: np.ndarray
    det_to_matched_trk_obj_ids: dict[int, np.ndarray]
    obj_ids_newly_removed: set[int]
    num_obj_dropped_due_to_limit: int
    trk_id_to_max_iou_high_conf_det: dict[int, int]
    reconditioned_obj_ids: set[int]  # bbox heuristic only (build_outputs override)
    recondition: dict[int, int]  # id -> det idx to re-prompt the tracker with now ({} if none)
    suppressed_by_occlusion: Tensor  # (M,) bool
    memory_masks: Tensor  # (M, h, w) tracker logits to encode into memory (and to output)


def plan_frame(
    state: PlanningState,
    frame_idx: int,
    det_masks: Tensor,
    det_scores: Tensor,
    trk_masks: Tensor,
    trk_obj_scores: Tensor,
    config: Sam3LoopConfig,
    reverse: bool = False,
    det_boxes_xyxy: Tensor | None = None,
    is_image_only: bool = False,
    exemplar_dets: tuple[int, ...] = (),
) -> tuple[FramePlan, PlanningState]:
    """One ``run_tracker_update_planning_phase`` (VB:505) on rank 0 of one GPU, minus the tracker
    calls: association, boundary filter, object limit, id assignment, hot-start, recondition
    choice, occlusion suppression, then the metadata update (VB:743-801).

    ``det_masks`` (N, H, W) / ``det_scores`` (N,) are the kept detections (``select_detections``),
    ``trk_masks`` (M, h, w) / ``trk_obj_scores`` (M,) logits the propagated tracks in
    ``state.obj_ids`` order. ``det_boxes_xyxy`` (N, 4) normalized are needed only by the
    (default-off) boundary filter and bbox recondition heuristic.

    ``exemplar_dets`` (not official: the official loop takes one box on one frame): detections that a
    positive exemplar box marks. Each becomes a new object when no track reaches ``assoc_iou_thresh``
    with it, whatever its score, and otherwise re-prompts (reconditions) the track it overlaps most,
    whatever the recondition rules say; hot-start never removes these objects.
    """
    obj_ids = np.array(state.obj_ids, np.int64)
    det_scores_np = det_scores.float().cpu().numpy()
    assoc = associate_det_trk(det_masks, det_scores_np, trk_masks, obj_ids, config)
    new_det_fa_inds = assoc.new_det_fa_inds
    exemplar_recondition: dict[int, int] = {}
    if exemplar_dets:
        unmatched = [d for d in exemplar_dets if len(assoc.det_to_matched_trk_obj_ids.get(d, ())) == 0]
        new_det_fa_inds = np.union1d(new_det_fa_inds, np.asarray(unmatched, np.int64)).astype(np.int64)
        matched = [d for d in exemplar_dets if d not in unmatched]
        if matched:
            det_r, trk_r = resize_to_smaller(det_masks[matched], trk_masks)
            ious = mask_iou(det_r > 0, trk_r > 0)
            for row, d in enumerate(matched):
                exemplar_recondition[int(obj_ids[int(ious[row].argmax())])] = d
    if config.suppress_det_close_to_boundary:
        keep = suppress_detections_close_to_boundary(det_boxes_xyxy[new_det_fa_inds])
        new_det_fa_inds = new_det_fa_inds[keep.cpu().numpy()]

    prev_obj_num = len(obj_ids)
    new_det_num = len(new_det_fa_inds)
    num_dropped = 0
    max_num = config.effective_max_num_objects
    if not is_image_only and prev_obj_num + new_det_num > max_num:
        to_keep = max_num - prev_obj_num
        num_dropped = new_det_num - to_keep
        new_det_fa_inds = drop_new_det_with_obj_limit(new_det_fa_inds, det_scores_np, to_keep)
        new_det_num = len(new_det_fa_inds)
    new_det_obj_ids = state.max_obj_id + 1 + np.arange(new_det_num)
    exemplar_obj_ids = {int(i) for d, i in zip(new_det_fa_inds, new_det_obj_ids) if int(d) in exemplar_dets}
    exemplar_obj_ids |= set(exemplar_recondition)
    if exemplar_obj_ids:
        state = replace(state, exemplar_obj_ids=state.exemplar_obj_ids | exemplar_obj_ids)

    removed, state_h = process_hotstart(
        state, frame_idx, reverse, assoc.det_to_matched_trk_obj_ids, new_det_obj_ids,
        assoc.empty_trk_obj_ids, assoc.unmatched_trk_obj_ids, config,
    )

    pairs = assoc.trk_id_to_max_iou_high_conf_det
    reconditioned_obj_ids = set()
    if config.reconstruction_bbox_iou_thresh > 0:
        reconditioned_obj_ids = bbox_mismatch_recondition_ids(pairs, det_boxes_xyxy, det_scores, trk_masks, obj_ids, config)
    recondition = {}
    if should_recondition_periodic(frame_idx, pairs, config) or len(reconditioned_obj_ids) > 0:
        recondition = masklets_to_recondition(pairs, obj_ids, trk_obj_scores, config)
    recondition.update((i, d) for i, d in exemplar_recondition.items() if i not in removed)

    memory_masks = trk_masks
    to_suppress = torch.zeros(trk_masks.size(0), dtype=torch.bool, device=trk_masks.device)
    last_occluded: dict[int, int] = {}
    if trk_masks.size(0) > 0 and config.suppress_overlapping_based_on_recent_occlusion_threshold > 0.0:
        memory_masks, to_suppress, last_occluded = suppress_overlapping_based_on_recent_occlusion(
            frame_idx, trk_masks, obj_ids, state.obj_id_to_last_occluded, removed, config, reverse
        )

    new_ids = list(state.obj_ids) + _ints(new_det_obj_ids)
    new_ids = [i for i in new_ids if i not in removed]
    obj_id_to_score = dict(state.obj_id_to_score)
    max_obj_id = state.max_obj_id
    if len(new_det_obj_ids) > 0:
        obj_id_to_score.update(zip(_ints(new_det_obj_ids), det_scores_np[new_det_fa_inds].tolist()))
        max_obj_id = max(max_obj_id, int(np.max(new_det_obj_ids)))
    for obj_id in removed:
        obj_id_to_score[obj_id] = REMOVED_OBJ_SCORE
        last_occluded.pop(obj_id, None)
    new_state = replace(
        state_h, obj_ids=tuple(new_ids), max_obj_id=max_obj_id, obj_id_to_score=obj_id_to_score,
        obj_id_to_last_occluded=last_occluded,
    )
    plan = FramePlan(
        new_det_fa_inds=new_det_fa_inds, new_det_obj_ids=new_det_obj_ids,
        unmatched_trk_obj_ids=assoc.unmatched_trk_obj_ids, empty_trk_obj_ids=assoc.empty_trk_obj_ids,
        det_to_matched_trk_obj_ids=assoc.det_to_matched_trk_obj_ids, obj_ids_newly_removed=removed,
        num_obj_dropped_due_to_limit=num_dropped, trk_id_to_max_iou_high_conf_det=pairs,
        reconditioned_obj_ids=reconditioned_obj_ids, recondition=recondition,
        suppressed_by_occlusion=to_suppress, memory_masks=memory_masks,
    )
    return plan, new_state


def hidden_obj_ids(state: PlanningState, frame_idx: int) -> set[int]:
    """Ids not shown on ``frame_idx`` besides empty masks: every id removed by hot-start so far (the
    output is delayed ``hotstart_delay`` frames, so a removal also hides the buffered frames) and
    the ids suppressed on that frame (sam3_video_inference.py:296-343, 468-476)."""
    return set(state.removed_obj_ids) | set(state.suppressed_obj_ids.get(frame_idx, frozenset()))

"""Rules of the official SAM 3 per-frame planning (sam3video.trackers.sam3.planning).

Hand-made 16 x 16 cases pin each rule; the parity tests replay inputs recorded from the official
sam3 0.1.4 functions (tools/make_planning_fixture.py -> tests/data/planning_parity.pt) and demand
identical outputs.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam3video.errors import InputError
from sam3video.trackers.sam3.planning import PlanningState, Sam3LoopConfig
from sam3video.trackers.sam3 import planning as sp
from sam3video.trackers.sam3.loop import exclusive_masks

CFG = Sam3LoopConfig()
FIXTURE = Path(__file__).resolve().parents[2] / "data" / "planning_parity.pt"


def rect(y0, x0, y1, x1, size=16, inside=5.0, outside=-5.0):
    m = torch.full((size, size), outside)
    m[y0:y1, x0:x1] = inside
    return m


def stack(*masks, size=16):
    return torch.stack(masks) if masks else torch.zeros(0, size, size)


EMPTY = torch.full((16, 16), -5.0)


# ---------------------------------------------------------------- config / IoU / NMS


def test_config_defaults_are_the_builder_values():
    c = Sam3LoopConfig()
    assert (c.score_threshold_detection, c.det_nms_thresh, c.assoc_iou_thresh, c.trk_assoc_iou_thresh) == (0.5, 0.1, 0.1, 0.5)
    assert (c.new_det_thresh, c.hotstart_delay, c.hotstart_unmatch_thresh, c.hotstart_dup_thresh) == (0.7, 15, 8, 8)
    assert (c.init_trk_keep_alive, c.max_trk_keep_alive, c.min_trk_keep_alive) == (30, 30, -1)
    assert c.suppress_unmatched_only_within_hotstart and not c.decrease_trk_keep_alive_for_empty_masklets
    assert c.suppress_overlapping_based_on_recent_occlusion_threshold == 0.7
    assert (c.fill_hole_area, c.recondition_every_nth_frame, c.effective_max_num_objects) == (16, 16, 10000)
    assert (c.recondition_det_score_thresh, c.recondition_iou_thresh, c.recondition_obj_score_logit_thresh) == (0.8, 0.8, 0.8)
    with pytest.raises(InputError, match="must not exceed hotstart_delay"):
        Sam3LoopConfig(hotstart_delay=5, hotstart_unmatch_thresh=8)


def test_mask_iou_values_and_empty():
    a = stack(rect(0, 0, 4, 4), EMPTY) > 0
    b = stack(rect(0, 2, 4, 6), EMPTY) > 0
    iou = sp.mask_iou(a, b)
    assert iou.dtype == torch.float32
    torch.testing.assert_close(iou, torch.tensor([[8 / 24, 0.0], [0.0, 0.0]]))


def test_nms_removes_lower_score_keeps_ties_by_higher_index_and_threshold_inclusive():
    m = stack(rect(0, 0, 4, 4), rect(0, 1, 4, 5), rect(8, 8, 12, 12), rect(8, 8, 12, 12))
    probs = torch.tensor([0.9, 0.8, 0.6, 0.6])
    keep = sp.nms_masks(probs, m, prob_threshold=0.5, iou_threshold=0.1)
    # 0 beats 1 (IoU 0.6); 2 and 3 tie: the one np.argsort(...)[::-1] visits first survives (numpy's
    # default sort is not stable for float32 on SIMD builds, so the official tie order is numpy's)
    first = [i for i in np.argsort(probs.numpy())[::-1] if i in (2, 3)][0]
    assert keep.tolist() == [True, False, first == 2, first == 3]
    # IoU exactly at the threshold is kept (suppression needs IoU > thresh): 2 px / 20 px = 0.1
    a = torch.full((16, 16), -1.0)
    b = torch.full((16, 16), -1.0)
    a[0, 0:11] = 1
    b[0, 9:16] = 1
    b[1, 0:4] = 1
    assert sp.mask_iou(stack(a) > 0, stack(b) > 0).item() == pytest.approx(0.1)
    assert sp.nms_masks(torch.tensor([0.9, 0.8]), stack(a, b), 0.5, 0.1).tolist() == [True, True]


def test_select_detections_threshold_nms_and_order():
    m = stack(rect(0, 0, 4, 4), rect(8, 8, 12, 12), rect(0, 1, 4, 5), rect(12, 0, 16, 4))
    probs = torch.tensor([0.7, 0.5, 0.9, 0.51])  # 0.5 is not > 0.5
    assert sp.select_detections(probs, m, CFG).tolist() == [2, 3]  # ascending query order
    assert sp.select_detections(probs, m, Sam3LoopConfig(det_nms_thresh=0.0)).tolist() == [0, 2, 3]
    assert sp.select_detections(probs, m, CFG, allow_new_detections=False).tolist() == []


# ---------------------------------------------------------------- association


def test_matched_track_new_object_above_and_below_threshold():
    trk = stack(rect(0, 0, 6, 6))
    det = stack(rect(0, 0, 6, 6), rect(10, 10, 14, 14), rect(10, 0, 14, 4))
    a = sp.associate_det_trk(det, np.array([0.9, 0.75, 0.65], np.float32), trk, np.array([7]), CFG)
    assert a.new_det_fa_inds.tolist() == [1]  # 0.65 < new_det_thresh 0.7
    assert a.unmatched_trk_obj_ids.tolist() == [] and a.empty_trk_obj_ids.tolist() == []
    assert {k: v.tolist() for k, v in a.det_to_matched_trk_obj_ids.items()} == {0: [7], 1: [], 2: []}
    assert a.trk_id_to_max_iou_high_conf_det == {7: 0}  # score 0.9 >= 0.8, IoU 1 >= 0.8


def test_overlap_iou_005_is_new_but_02_is_not():
    trk = stack(rect(0, 0, 10, 8))
    det_a = rect(0, 7, 10, 15)  # overlap 10 px of 150 -> IoU 0.067
    det_b = rect(0, 5, 10, 13)  # overlap 30 px of 130 -> IoU 0.23
    ious = sp.mask_iou(stack(det_a, det_b) > 0, trk > 0)[:, 0]
    assert ious[0] < 0.1 <= ious[1] < 0.5
    a = sp.associate_det_trk(stack(det_a), np.array([0.9], np.float32), trk, np.array([3]), CFG)
    assert a.new_det_fa_inds.tolist() == [0] and a.unmatched_trk_obj_ids.tolist() == [3]
    b = sp.associate_det_trk(stack(det_b), np.array([0.9], np.float32), trk, np.array([3]), CFG)
    assert b.new_det_fa_inds.tolist() == []  # loosely matched (>= 0.1): not new
    assert b.unmatched_trk_obj_ids.tolist() == [3]  # but the track is unmatched (< 0.5)
    assert b.det_to_matched_trk_obj_ids[0].tolist() == [3]  # and still counts for keep-alive / dups
    assert b.trk_id_to_max_iou_high_conf_det == {}


def test_no_tracks_makes_every_detection_new_even_below_new_det_thresh():
    det = stack(rect(0, 0, 4, 4), rect(8, 8, 12, 12))
    a = sp.associate_det_trk(det, np.array([0.9, 0.55], np.float32), stack(), np.array([], np.int64), CFG)
    assert a.new_det_fa_inds.tolist() == [0, 1]  # official early return ignores new_det_thresh
    assert a.det_to_matched_trk_obj_ids == {}


def test_no_detections_nonempty_tracks_unmatched_empty_ones_listed():
    a = sp.associate_det_trk(stack(), np.zeros(0, np.float32), stack(rect(0, 0, 4, 4), EMPTY), np.array([4, 9]), CFG)
    assert a.new_det_fa_inds.tolist() == [] and a.unmatched_trk_obj_ids.tolist() == [4] and a.empty_trk_obj_ids.tolist() == [9]


def test_recondition_pairs_later_det_wins_and_argmax_tie_takes_first_track():
    trk = stack(rect(0, 0, 6, 6), rect(0, 0, 6, 6), rect(10, 10, 16, 16))
    det = stack(rect(0, 0, 6, 6), rect(10, 10, 16, 16), rect(10, 10, 16, 16), rect(10, 10, 16, 16))
    scores = np.array([0.85, 0.9, 0.8, 0.79], np.float32)
    a = sp.associate_det_trk(det, scores, trk, np.array([1, 2, 3]), CFG)
    # det 0 ties on tracks 1 and 2 -> track 1; dets 1 and 2 both pick track 3 -> det 2 (later); det 3 < 0.8
    assert a.trk_id_to_max_iou_high_conf_det == {1: 0, 3: 2}
    assert a.det_to_matched_trk_obj_ids[0].tolist() == [1, 2]


def test_association_at_the_smaller_resolution():
    det = F.interpolate(stack(rect(0, 0, 8, 8))[:, None], size=(32, 32), mode="nearest")[:, 0]
    trk = stack(rect(0, 0, 8, 8))
    a = sp.associate_det_trk(det, np.array([0.9], np.float32), trk, np.array([0]), CFG)
    assert a.trk_id_to_max_iou_high_conf_det == {0: 0} and a.unmatched_trk_obj_ids.tolist() == []
    d2, t2 = sp.resize_to_smaller(det, trk)
    assert d2.shape[-2:] == (16, 16) and t2 is trk


def test_o2o_matching_one_track_per_detection():
    trk = stack(rect(0, 0, 6, 6), rect(0, 0, 6, 6))
    det = stack(rect(0, 0, 6, 6))
    ids = np.array([1, 2])
    assert sp.associate_det_trk(det, np.array([0.9], np.float32), trk, ids, CFG).unmatched_trk_obj_ids.tolist() == []
    o2o = Sam3LoopConfig(o2o_matching_masklets_enable=True)
    assert sp.associate_det_trk(det, np.array([0.9], np.float32), trk, ids, o2o).unmatched_trk_obj_ids.tolist() == [2]


def test_object_limit_keeps_top_scores_in_score_order():
    assert sp.drop_new_det_with_obj_limit(np.array([0, 1, 2, 3]), np.array([0.7, 0.9, 0.8, 0.9]), 2).tolist() == [3, 1]


# ---------------------------------------------------------------- hot-start and keep-alive


def _hot(state, frame, matched=None, new=(), unmatched=(), empty=(), cfg=CFG, reverse=False):
    d2t = {i: np.array(ids, np.int64) for i, ids in enumerate(matched or [])}
    return sp.process_hotstart(state, frame, reverse, d2t, np.array(new, np.int64), np.array(empty, np.int64),
                               np.array(unmatched, np.int64), cfg)


def test_hotstart_removes_after_8_unmatched_frames_within_15_frames():
    removed, s = _hot(PlanningState(), 0, new=[0])
    for f in range(1, 8):
        removed, s = _hot(s, f, unmatched=[0])
        assert removed == set()
    removed, s = _hot(s, 8, unmatched=[0])
    assert removed == {0} and s.removed_obj_ids == {0}
    assert s.unmatched_frame_inds[0] == tuple(range(1, 9))
    removed, s = _hot(s, 9, unmatched=[0])
    assert removed == set()  # removed once


def test_hotstart_counts_all_unmatched_frames_not_consecutive_ones():
    removed, s = _hot(PlanningState(), 0, new=[0])
    for f in range(1, 12):  # unmatched 1-4, matched 5-8, unmatched 9-11 -> 7 unmatched frames
        removed, s = _hot(s, f, unmatched=[0] if not 5 <= f <= 8 else [], matched=[[0]] if 5 <= f <= 8 else [])
        assert removed == set()
    removed, s = _hot(s, 12, unmatched=[0])
    assert removed == {0}  # the 8th unmatched frame, born 0 > 12 - 15


def test_hotstart_no_removal_after_the_window():
    removed, s = _hot(PlanningState(), 0, new=[0])
    for f in range(1, 16):
        removed, s = _hot(s, f, matched=[[0]])
    for f in range(16, 50):
        removed, s = _hot(s, f, unmatched=[0])
        assert removed == set()  # born at 0, not > f - 15
    assert len(s.unmatched_frame_inds[0]) == 34 and s.trk_keep_alive[0] == -1  # floored at min


def test_hotstart_reverse_window():
    removed, s = _hot(PlanningState(), 30, new=[5], reverse=True)
    for f in range(29, 21, -1):
        removed, s = _hot(s, f, unmatched=[5], reverse=True)
    assert removed == {5}  # 8 unmatched frames, born 30 < 22 + 15


def test_duplicate_removes_the_later_born_track():
    _, s = _hot(PlanningState(), 0, new=[0])
    _, s = _hot(s, 2, new=[1], matched=[[0]])
    for f in range(3, 10):
        removed, s = _hot(s, f, matched=[[1, 0]])  # order in the list does not matter: birth frame does
        assert removed == set()
    removed, s = _hot(s, 10, matched=[[1, 0]])
    assert removed == {1} and s.overlap_pair_to_frame_inds[(0, 1)] == tuple(range(3, 11))


def test_duplicate_reverse_and_birth_tie():
    _, s = _hot(PlanningState(), 30, new=[0], reverse=True)
    _, s = _hot(s, 28, new=[1], reverse=True)
    for f in range(27, 19, -1):
        removed, s = _hot(s, f, matched=[[0, 1]], reverse=True)
    assert removed == {1}  # in reverse the earliest-born is the max first frame (30 -> id 0)
    _, s = _hot(PlanningState(), 0, new=[4, 3])  # same birth frame: first in track order wins
    for f in range(1, 9):
        removed, s = _hot(s, f, matched=[[4, 3]])
    assert removed == {3} and (4, 3) in s.overlap_pair_to_frame_inds


def test_keep_alive_counters_and_loose_match_quirk():
    _, s = _hot(PlanningState(), 0, new=[0, 1])
    assert s.trk_keep_alive == {0: 30, 1: 30}
    _, s = _hot(s, 1, matched=[[0]])
    assert s.trk_keep_alive[0] == 30  # capped at max
    _, s = _hot(s, 2, matched=[[1]], unmatched=[1])  # 0.1 <= IoU < 0.5: +1 (capped) then -1
    assert s.trk_keep_alive[1] == 29
    _, s = _hot(s, 3, empty=[0])
    assert s.trk_keep_alive[0] == 30  # empty masks do not count down (builder)
    cfg = Sam3LoopConfig(decrease_trk_keep_alive_for_empty_masklets=True)
    _, s = _hot(s, 4, empty=[0], cfg=cfg)
    assert s.trk_keep_alive[0] == 29


def test_keep_alive_suppression_only_when_not_limited_to_hotstart():
    cfg = Sam3LoopConfig(suppress_unmatched_only_within_hotstart=False, init_trk_keep_alive=1)
    _, s = _hot(PlanningState(), 0, new=[0], cfg=cfg)
    removed, s = _hot(s, 1, unmatched=[0], cfg=cfg)
    assert removed == set() and s.suppressed_obj_ids[1] == {0} and sp.hidden_obj_ids(s, 1) == {0}
    _, s2 = _hot(PlanningState(), 0, new=[0], cfg=Sam3LoopConfig(init_trk_keep_alive=1))
    _, s2 = _hot(s2, 1, unmatched=[0], cfg=Sam3LoopConfig(init_trk_keep_alive=1))
    assert s2.suppressed_obj_ids[1] == frozenset()  # builder: never suppressed


def test_hotstart_is_pure():
    _, s = _hot(PlanningState(), 0, new=[0])
    before = asdict(s)
    _hot(s, 1, unmatched=[0])
    assert asdict(s) == before


# ---------------------------------------------------------------- recondition


def test_periodic_recondition_and_obj_score_logit_gate():
    pairs = {3: 0, 5: 1}
    assert [f for f in range(0, 40) if sp.should_recondition_periodic(f, pairs, CFG)] == [0, 16, 32]
    assert not sp.should_recondition_periodic(16, {}, CFG)
    got = sp.masklets_to_recondition(pairs, np.array([5, 3]), torch.tensor([0.8, 0.81]), CFG)
    assert got == {3: 0}  # logit 0.8 is not > 0.8


def test_bbox_recondition_heuristic_off_by_default_and_on():
    trk = stack(rect(0, 0, 4, 4))
    trk[0, 15, 15] = 5  # a stray pixel blows up the tracker box
    boxes = torch.tensor([[0.0, 0.0, 0.25, 0.25]])
    args = ({0: 0}, boxes, torch.tensor([0.9]), trk, np.array([0]))
    assert sp.bbox_mismatch_recondition_ids(*args, CFG) == set()
    assert sp.bbox_mismatch_recondition_ids(*args, Sam3LoopConfig(reconstruction_bbox_iou_thresh=0.5)) == {0}


# ---------------------------------------------------------------- occlusion suppression and overlap


def _supp(last, reverse=False, masks=None):
    masks = masks if masks is not None else stack(rect(0, 0, 8, 8), rect(0, 0, 8, 8)) > 0
    return sp.objects_to_suppress_based_on_most_recently_occluded(masks, torch.tensor(last), 0.7, reverse).tolist()


def test_occlusion_suppresses_the_more_recently_occluded():
    assert _supp([5, 3]) == [True, False]
    assert _supp([3, 5]) == [False, True]
    assert _supp([5, 3], reverse=True) == [False, True]
    assert _supp([4, 4]) == [False, False]
    low = stack(rect(0, 0, 8, 8), rect(0, 2, 8, 10)) > 0  # IoU 0.6
    assert _supp([5, 3], masks=low) == [False, False]


def test_occlusion_never_occluded_guard_quirk():
    assert _supp([5, -1]) == [False, False]  # a never-occluded track cannot suppress forward
    assert _supp([5, -1], reverse=True) == [False, True]  # ... and is itself suppressed in reverse


def test_suppress_overlapping_updates_last_occluded_and_masks():
    masks = stack(rect(0, 0, 8, 8), rect(0, 0, 8, 8), EMPTY)
    out, sup, last = sp.suppress_overlapping_based_on_recent_occlusion(
        9, masks, np.array([1, 2, 3]), {1: 4, 2: 2}, set(), CFG
    )
    assert sup.tolist() == [True, False, False]
    assert last == {1: 9, 2: 2, 3: 9}  # suppressed and empty objects are "occluded" now
    assert (out[0] == -10).all() and torch.equal(out[1:], masks[1:]) and not (masks[0] == -10).any()
    # an object missing from the record that hot-start removes now starts as "always occluded"
    _, sup, last = sp.suppress_overlapping_based_on_recent_occlusion(
        9, masks[:2], np.array([1, 7]), {1: 4}, {7}, CFG
    )
    assert sup.tolist() == [False, True] and last == {1: 4, 7: 9}


def test_area_shrinkage_suppresses_mostly_covered_masks_only():
    big = rect(0, 0, 10, 10, inside=8.0)
    small = rect(0, 0, 4, 5, inside=2.0)  # fully inside big with lower logits -> area 0 after argmax
    side = rect(12, 12, 16, 16, inside=2.0)
    masks = stack(big, small, side)[:, None]
    out = sp.suppress_object_pw_area_shrinkage(masks)
    assert torch.equal(out[0], masks[0]) and torch.equal(out[2], masks[2])
    assert (out[1] <= -10).all()
    assert sp.memory_object_score_logits(out).reshape(-1).tolist() == [10.0, -10.0, 10.0]


def test_object_wise_non_overlap_goes_to_the_higher_score():
    masks = stack(rect(0, 0, 8, 8), rect(4, 4, 12, 12))[:, None]
    out = sp.apply_object_wise_non_overlapping_constraints(masks, torch.tensor([[0.3], [0.9]]), background_value=0)
    assert not ((out[0] > 0) & (out[1] > 0)).any() and (out[1] > 0).sum() == 64 and (out[0] > 0).sum() == 48


def test_exact_ties_go_to_the_first_object_as_officially():
    """Equal logits (or equal scores) at a pixel: torch.argmax's first index keeps it, in the order the objects
    are given (bucket order for memories, sorted ids for outputs) — the official tie-breaking."""
    same = rect(2, 2, 10, 10, inside=3.0)
    masks = stack(same, same, rect(11, 11, 15, 15))[:, None]
    pixel = sp.apply_non_overlapping_constraints(masks)
    assert (pixel[0] > 0).sum() == 64 and (pixel[1] <= -10).all() and (pixel[2] > 0).sum() == 16
    shrunk = sp.suppress_object_pw_area_shrinkage(masks)
    assert torch.equal(shrunk[0], masks[0]) and (shrunk[1] <= -10).all() and torch.equal(shrunk[2], masks[2])
    objectwise = sp.apply_object_wise_non_overlapping_constraints(masks, torch.tensor([[1.0], [1.0], [1.0]]),
                                                                  background_value=0)
    assert (objectwise[0] > 0).sum() == 64 and not (objectwise[1] > 0).any()


# ---------------------------------------------------------------- whole planning phase


def test_plan_frame_birth_ids_and_removal_bookkeeping():
    det = stack(rect(0, 0, 6, 6), rect(10, 10, 15, 15))
    plan, s = sp.plan_frame(PlanningState(), 0, det, torch.tensor([0.9, 0.6]), stack(), torch.zeros(0), CFG)
    assert plan.new_det_obj_ids.tolist() == [0, 1] and s.obj_ids == (0, 1) and s.max_obj_id == 1
    assert s.obj_id_to_score == pytest.approx({0: 0.9, 1: 0.6})
    # object 1 (a blob never re-detected) is unmatched for 8 frames and removed; 0 keeps matching
    for f in range(1, 9):
        plan, s = sp.plan_frame(s, f, det[:1], torch.tensor([0.9]), stack(rect(0, 0, 6, 6), rect(10, 10, 15, 15)),
                                torch.tensor([2.0, 2.0]), CFG)
    assert plan.obj_ids_newly_removed == {1} and s.obj_ids == (0,) and s.obj_id_to_score[1] == -1e4
    assert 1 not in s.obj_id_to_last_occluded and s.obj_id_to_last_occluded == {0: -1}
    assert plan.recondition == {}  # frame 8 is not a recondition frame
    plan, s = sp.plan_frame(s, 16, det[:1], torch.tensor([0.9]), stack(rect(0, 0, 6, 6)), torch.tensor([2.0]), CFG)
    assert plan.recondition == {0: 0}


# ---------------------------------------------------------------- parity with the official code


@pytest.fixture(scope="module")
def parity():
    if not FIXTURE.exists():
        pytest.skip("tests/data/planning_parity.pt missing (tools/make_planning_fixture.py)")
    return torch.load(io.BytesIO(gzip.decompress(FIXTURE.read_bytes())), weights_only=True)


def _pairs(d):
    return sorted([int(k), v] for k, v in d.items())


def test_parity_config_defaults_match_recorded_builder(parity):
    assert {k: getattr(CFG, k) for k in parity["configs"]["builder"]} == parity["configs"]["builder"]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_parity_planning_sequences(parity, which):
    seq = parity["sequences"][which]
    cfg = Sam3LoopConfig(**parity["configs"][seq["config"]])
    reverse = seq["reverse"]
    det_all, trk_all = seq["det_masks"].float(), seq["trk_masks"].float()
    di = ti = 0
    state = PlanningState()
    for rec in seq["records"]:
        f = rec["frame_idx"]
        n, m = len(rec["det_scores"]), len(rec["trk_scores"])
        det, trk = det_all[di:di + n], trk_all[ti:ti + m]
        di, ti = di + n, ti + m
        assert list(state.obj_ids) == rec["obj_ids_prev"], f
        plan, state = sp.plan_frame(
            state, f, det, torch.tensor(rec["det_scores"], dtype=torch.float32), trk,
            torch.tensor(rec["trk_scores"], dtype=torch.float32), cfg, reverse=reverse,
            det_boxes_xyxy=torch.tensor(rec["det_boxes"], dtype=torch.float32).reshape(-1, 4),
        )
        got = {
            "new_det_fa_inds": plan.new_det_fa_inds.tolist(),
            "new_det_obj_ids": plan.new_det_obj_ids.tolist(),
            "unmatched_trk_obj_ids": plan.unmatched_trk_obj_ids.tolist(),
            "det_to_matched_trk_obj_ids": [[k, v.tolist()] for k, v in sorted(plan.det_to_matched_trk_obj_ids.items())],
            "obj_ids_newly_removed": sorted(plan.obj_ids_newly_removed),
            "num_obj_dropped_due_to_limit": plan.num_obj_dropped_due_to_limit,
            "trk_id_to_max_iou_high_conf_det": _pairs(plan.trk_id_to_max_iou_high_conf_det),
            "reconditioned_obj_ids": sorted(plan.reconditioned_obj_ids),
            "recondition_ids": list(plan.recondition),
            "suppressed_rows": plan.suppressed_by_occlusion.tolist(),
            "obj_ids_all_gpu": list(state.obj_ids),
            "max_obj_id": state.max_obj_id,
            "obj_id_to_last_occluded": _pairs(state.obj_id_to_last_occluded),
            "obj_first_frame_idx": _pairs(state.obj_first_frame_idx),
            "unmatched_frame_inds": [[k, list(v)] for k, v in sorted(state.unmatched_frame_inds.items())],
            "trk_keep_alive": _pairs(state.trk_keep_alive),
            "overlap_pair_to_frame_inds": [[a, b, list(v)] for (a, b), v in sorted(state.overlap_pair_to_frame_inds.items())],
            "removed_obj_ids": sorted(state.removed_obj_ids),
            "suppressed_obj_ids": sorted(state.suppressed_obj_ids[f]),
        }
        for key, val in got.items():
            assert val == rec[key], (f, key, val, rec[key])
        assert _pairs(state.obj_id_to_score) == [[k, pytest.approx(v)] for k, v in rec["obj_id_to_score"]]
        # memory encoder inputs: masks after occlusion suppression -> interpol size -> area shrinkage
        if m:
            hr = F.interpolate(plan.memory_masks.unsqueeze(1), size=tuple(parity["interpol_size"]), mode="bilinear", align_corners=False)
            hr = sp.suppress_object_pw_area_shrinkage(hr)
            assert hr.double().sum(dim=(1, 2, 3)).tolist() == rec["memory_sums"][0], f
            assert (hr > 0).sum(dim=(1, 2, 3)).tolist() == rec["memory_pos"][0], f
            assert sp.memory_object_score_logits(hr).reshape(-1).tolist() == rec["memory_obj_logits"][0], f
        else:
            assert rec["memory_sums"] == []


def test_parity_associate_det_trk_mixed_resolutions(parity):
    for case in parity["assoc"]:
        a = sp.associate_det_trk(case["det_masks"].float(), case["det_scores"].numpy(), case["trk_masks"].float(),
                                 np.array(case["trk_obj_ids"], np.int64), CFG)
        assert a.new_det_fa_inds.tolist() == case["new_det_fa_inds"]
        assert a.unmatched_trk_obj_ids.tolist() == case["unmatched_trk_obj_ids"]
        assert a.empty_trk_obj_ids.tolist() == case["empty_trk_obj_ids"]
        assert [[k, v.tolist()] for k, v in sorted(a.det_to_matched_trk_obj_ids.items())] == case["det_to_matched_trk_obj_ids"]
        assert _pairs(a.trk_id_to_max_iou_high_conf_det) == case["trk_id_to_max_iou_high_conf_det"]


def test_parity_nms_and_selection(parity):
    for case in parity["nms"]:
        masks = case["masks"].float()
        assert sp.nms_masks(case["probs"], masks, 0.5, case["iou_thresh"]).tolist() == case["keep"]
        cfg = Sam3LoopConfig(det_nms_thresh=case["iou_thresh"])
        assert sp.select_detections(case["probs"], masks, cfg).tolist() == case["selected"]


def test_parity_non_overlap_constraints(parity):
    for case in parity["overlap"]:
        masks = case["masks"].float()
        assert torch.equal(sp.suppress_object_pw_area_shrinkage(masks).to(torch.int8), case["shrink"])
        got = sp.apply_object_wise_non_overlapping_constraints(masks, case["scores"], background_value=0)
        assert torch.equal(got.to(torch.int8), case["objwise"])
        # the loop's output stage, by one boolean pass per object (trackers/sam3/loop.py)
        exclusive = exclusive_masks(case["masks"][:, 0].numpy() > 0, case["scores"][:, 0].numpy())
        assert np.array_equal(exclusive, case["objwise"][:, 0].numpy() > 0)

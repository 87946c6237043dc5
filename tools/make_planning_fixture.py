"""Record the official SAM 3 planning rules on small synthetic inputs -> tests/data/planning_parity.pt.

Run with the oracle venv (it imports the official ``sam3`` package; the project never does):

    OMP_NUM_THREADS=1 ~/.cache/sam3-oracle/bin/python tools/make_planning_fixture.py

What is recorded (all on CPU, no model):
- ``sequences``: multi-frame runs of the official ``Sam3VideoBase.run_tracker_update_planning_phase``
  (unbound logic on a minimal subclass whose tracker is a recorder: ``add_new_mask`` logs the
  reconditioned ids, ``_run_memory_encoder`` logs the memory-resolution masks after the official
  ``_suppress_object_pw_area_shrinkage``), fed synthetic detections and tracker masks of a few moving
  rectangles, duplicates, drop-outs and spurious blobs; forward and reverse; builder thresholds and a
  class-default-like variant (o2o matching, keep-alive suppression, bbox recondition, object limit).
- ``assoc``: ``_associate_det_trk`` with detector / tracker masks of different sizes.
- ``nms``: ``sam3.perflib.nms.nms_masks`` (CPU path) with tied scores + the loop's threshold.
- ``overlap``: the tracker's ``_suppress_object_pw_area_shrinkage`` and
  ``_apply_object_wise_non_overlapping_constraints``.
Masks are small integer logits stored as int8, and the torch.save payload is gzip-compressed, to keep
the file small: load with ``torch.load(io.BytesIO(gzip.decompress(raw)), weights_only=True)``.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor
from sam3.model.sam3_video_base import Sam3VideoBase
from sam3.perflib.nms import nms_masks

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "planning_parity.pt")
H = W = 12
INTERPOL = (20, 20)  # stand-in for the memory encoder's 1152 x 1152 interpol_size

BUILDER = dict(
    score_threshold_detection=0.5, assoc_iou_thresh=0.1, det_nms_thresh=0.1, new_det_thresh=0.7,
    hotstart_delay=15, hotstart_unmatch_thresh=8, hotstart_dup_thresh=8,
    suppress_unmatched_only_within_hotstart=True, min_trk_keep_alive=-1, max_trk_keep_alive=30,
    init_trk_keep_alive=30, suppress_overlapping_based_on_recent_occlusion_threshold=0.7,
    suppress_det_close_to_boundary=False, fill_hole_area=16, recondition_every_nth_frame=16,
    masklet_confirmation_enable=False, decrease_trk_keep_alive_for_empty_masklets=False,
)
VARIANT = dict(
    BUILDER, hotstart_delay=10, hotstart_unmatch_thresh=3, hotstart_dup_thresh=3,
    suppress_unmatched_only_within_hotstart=False, min_trk_keep_alive=-4, max_trk_keep_alive=8,
    init_trk_keep_alive=0, decrease_trk_keep_alive_for_empty_masklets=True,
    o2o_matching_masklets_enable=True, recondition_every_nth_frame=5,
    reconstruction_bbox_iou_thresh=0.5, reconstruction_bbox_det_score=0.6, max_num_objects=6,
    suppress_det_close_to_boundary=True,
)

_SHRINK = Sam3TrackerPredictor.__new__(Sam3TrackerPredictor)  # methods only, no module state


class RecordingTracker:
    """The attributes of ``self.tracker`` the planning phase touches, recording the calls."""

    input_mask_size = 16

    def __init__(self):
        self.maskmem_backbone = SimpleNamespace(mask_downsampler=SimpleNamespace(interpol_size=INTERPOL))
        self.recondition_ids, self.memory = [], []
        self._suppress_object_pw_area_shrinkage = _SHRINK._suppress_object_pw_area_shrinkage

    def add_new_mask(self, inference_state, frame_idx, obj_id, mask, **_):
        self.recondition_ids.append(int(obj_id))

    def propagate_in_video_preflight(self, *a, **k):
        pass

    def _run_memory_encoder(self, state, frame_idx, batch_size, high_res_masks, object_score_logits, **_):
        self.memory.append((high_res_masks.clone(), object_score_logits.clone()))
        return torch.zeros(batch_size, 1), [torch.zeros(batch_size, 1)]

    def _add_output_per_object(self, **_):
        pass


class Stub(Sam3VideoBase):
    def __init__(self, **kw):
        super().__init__(detector=torch.nn.Identity(), tracker=None, **kw)
        self.tracker = RecordingTracker()


def rect_logits(rng, rect, flip_p=0.01, size=(H, W)):
    y0, x0, h, w = rect
    m = np.full(size, -4, np.int8)
    m[max(y0, 0):max(y0 + h, 0), max(x0, 0):max(x0 + w, 0)] = 4
    noise = rng.integers(-2, 3, size).astype(np.int8)
    m = m + noise
    m[m == 0] = 1
    flips = rng.random(size) < flip_p
    m[flips] = -m[flips]
    return m


def jitter(rng, rect, p=0.75):
    if rng.random() < p:
        return rect
    y0, x0, h, w = rect
    return (y0 + int(rng.integers(-1, 2)), x0 + int(rng.integers(-1, 2)), h, w)


def rect_box(rect):
    y0, x0, h, w = rect
    return [x0 / W, y0 / H, (x0 + w) / W, (y0 + h) / H]


def sorted_pairs(d):
    return [[int(k), float(v) if isinstance(v, float) else int(v)] for k, v in sorted(d.items())]


def run_sequence(seed, cfg, frames, reverse, spur_p=0.35):
    rng = np.random.default_rng(seed)
    model = Stub(**cfg)
    true_objs = [[int(rng.integers(0, 7)), int(rng.integers(0, 7)), int(rng.integers(4, 7)), int(rng.integers(4, 7))] for _ in range(3)]
    source = {}  # obj id -> ("true", k) / ("spur", rect)
    meta = {}
    meta.update(model._initialize_metadata())
    records = []
    for frame_idx in frames:
        for r in true_objs:  # move
            r[0] = int(np.clip(r[0] + rng.integers(-1, 2), -1, 9))
            r[1] = int(np.clip(r[1] + rng.integers(-1, 2), -1, 9))
        dets = []  # (mask, score, src, box)
        for k, r in enumerate(true_objs):
            if rng.random() < 0.85:
                rr = jitter(rng, tuple(r))
                dets.append((rect_logits(rng, rr), rng.uniform(0.5, 1.0), ("true", k), rect_box(rr)))
        while rng.random() < spur_p:
            rr = (int(rng.integers(0, 10)), int(rng.integers(0, 10)), 2, 3)
            dets.append((rect_logits(rng, rr), rng.uniform(0.5, 0.95), ("spur", rr), rect_box(rr)))
        for oid, src in source.items():  # occasional re-detection of a spurious blob
            if src[0] == "spur" and oid in set(meta["obj_ids_all_gpu"].tolist()) and rng.random() < 0.2:
                dets.append((rect_logits(rng, src[1]), rng.uniform(0.5, 0.9), src, rect_box(src[1])))
        order = rng.permutation(len(dets))
        dets = [dets[i] for i in order]
        obj_ids = meta["obj_ids_all_gpu"]
        trk = []
        for oid in obj_ids.tolist():
            src = source[oid]
            rect = tuple(true_objs[src[1]]) if src[0] == "true" else src[1]
            if rng.random() < 0.12:
                trk.append(np.full((H, W), -3, np.int8) + rng.integers(-1, 1, (H, W)).astype(np.int8))
            else:
                trk.append(rect_logits(rng, jitter(rng, rect)))
        det_masks_i8 = np.stack([d[0] for d in dets]) if dets else np.zeros((0, H, W), np.int8)
        trk_masks_i8 = np.stack(trk) if trk else np.zeros((0, H, W), np.int8)
        det_scores = torch.tensor([d[1] for d in dets], dtype=torch.float32)
        det_boxes = torch.tensor([d[3] for d in dets], dtype=torch.float32).reshape(-1, 4)
        trk_scores = torch.tensor(rng.uniform(-1.0, 3.0, len(trk)), dtype=torch.float32)
        det_out = {"mask": torch.from_numpy(det_masks_i8).float(), "scores": det_scores, "bbox": det_boxes}
        trk_masks = torch.from_numpy(trk_masks_i8).float()
        trk_masks_in = trk_masks.clone()
        state = {"obj_ids": obj_ids.tolist(), "output_dict": {"cond_frame_outputs": {}, "non_cond_frame_outputs": {frame_idx: {}}}}
        model.tracker.recondition_ids, model.tracker.memory = [], []
        plan, meta_new = model.run_tracker_update_planning_phase(
            frame_idx=frame_idx, num_frames=100, reverse=reverse, det_out=det_out,
            tracker_low_res_masks_global=trk_masks, tracker_obj_scores_global=trk_scores,
            tracker_metadata_prev=meta, tracker_states_local=[state] if len(obj_ids) else [],
        )
        for oid, d in zip(plan["new_det_obj_ids"].tolist(), plan["new_det_fa_inds"].tolist()):
            source[oid] = dets[d][2]
        r0 = meta_new["rank0_metadata"]
        mem = model.tracker.memory
        rec = {
            "frame_idx": frame_idx,
            "det_masks": det_masks_i8, "det_scores": det_scores.tolist(), "det_boxes": det_boxes.tolist(),
            "trk_masks": trk_masks_i8, "trk_scores": trk_scores.tolist(),
            "obj_ids_prev": obj_ids.tolist(),
            "new_det_fa_inds": plan["new_det_fa_inds"].tolist(),
            "new_det_obj_ids": plan["new_det_obj_ids"].tolist(),
            "unmatched_trk_obj_ids": plan["unmatched_trk_obj_ids"].tolist(),
            "det_to_matched_trk_obj_ids": [[int(k), v.tolist()] for k, v in sorted(plan["det_to_matched_trk_obj_ids"].items())],
            "obj_ids_newly_removed": sorted(int(x) for x in plan["obj_ids_newly_removed"]),
            "num_obj_dropped_due_to_limit": int(plan["num_obj_dropped_due_to_limit"]),
            "trk_id_to_max_iou_high_conf_det": sorted_pairs(plan["trk_id_to_max_iou_high_conf_det"]),
            "reconditioned_obj_ids": sorted(int(x) for x in plan["reconditioned_obj_ids"]),
            "recondition_ids": list(model.tracker.recondition_ids),
            "suppressed_rows": (trk_masks != trk_masks_in).any(dim=(1, 2)).tolist() if len(obj_ids) else [],
            "memory_sums": [m[0].double().sum(dim=(1, 2, 3)).tolist() for m in mem],
            "memory_pos": [(m[0] > 0).sum(dim=(1, 2, 3)).tolist() for m in mem],
            "memory_obj_logits": [m[1].reshape(-1).tolist() for m in mem],
            "obj_ids_all_gpu": meta_new["obj_ids_all_gpu"].tolist(),
            "max_obj_id": int(meta_new["max_obj_id"]),
            "obj_id_to_score": [[int(k), float(v)] for k, v in sorted(meta_new["obj_id_to_score"].items())],
            "obj_id_to_last_occluded": [[int(k), int(v.item())] for k, v in sorted(meta_new["obj_id_to_last_occluded"].items())],
            "obj_first_frame_idx": sorted_pairs(r0["obj_first_frame_idx"]),
            "unmatched_frame_inds": [[int(k), list(map(int, v))] for k, v in sorted(r0["unmatched_frame_inds"].items())],
            "trk_keep_alive": sorted_pairs(dict(r0["trk_keep_alive"])),
            "overlap_pair_to_frame_inds": [[int(a), int(b), list(map(int, v))] for (a, b), v in sorted(r0["overlap_pair_to_frame_inds"].items())],
            "removed_obj_ids": sorted(int(x) for x in r0["removed_obj_ids"]),
            "suppressed_obj_ids": sorted(int(x) for x in r0["suppressed_obj_ids"][frame_idx]),
        }
        records.append(rec)
        meta = meta_new
    # one int8 tensor per sequence for all masks (many small tensors bloat the file)
    det_all = torch.from_numpy(np.concatenate([r.pop("det_masks") for r in records]))
    trk_all = torch.from_numpy(np.concatenate([r.pop("trk_masks") for r in records]))
    return records, det_all, trk_all


def seq(config, reverse, seed, cfg, frames, **kw):
    records, det_all, trk_all = run_sequence(seed, cfg, frames, reverse, **kw)
    return {"config": config, "reverse": reverse, "records": records, "det_masks": det_all, "trk_masks": trk_all}


def assoc_cases(seed):
    rng = np.random.default_rng(seed)
    model = Stub(**BUILDER)
    cases = []
    for det_hw, trk_hw in [((16, 16), (12, 12)), ((12, 12), (16, 16)), ((8, 18), (12, 12)), ((12, 12), (12, 12))]:
        for _ in range(3):
            n, m = int(rng.integers(0, 6)), int(rng.integers(0, 6))
            dets = np.stack([rect_logits(rng, (int(rng.integers(0, det_hw[0] - 3)), int(rng.integers(0, det_hw[1] - 3)), 4, 4), size=det_hw) for _ in range(n)]) if n else np.zeros((0, *det_hw), np.int8)
            trks = np.stack([rect_logits(rng, (int(rng.integers(0, trk_hw[0] - 3)), int(rng.integers(0, trk_hw[1] - 3)), 4, 4), size=trk_hw) for _ in range(m)]) if m else np.zeros((0, *trk_hw), np.int8)
            if m:
                trks[rng.random(m) < 0.2] = -3
            scores = rng.choice([0.55, 0.7, 0.75, 0.8, 0.95], n).astype(np.float32)
            ids = np.sort(rng.choice(50, m, replace=False)).astype(np.int64)
            new, unmatched, d2t, pairs, empty = model._associate_det_trk(
                torch.from_numpy(dets).float(), scores, torch.from_numpy(trks).float(), ids
            )
            cases.append({
                "det_masks": torch.from_numpy(dets), "det_scores": torch.from_numpy(scores),
                "trk_masks": torch.from_numpy(trks), "trk_obj_ids": ids.tolist(),
                "new_det_fa_inds": new.tolist(), "unmatched_trk_obj_ids": unmatched.tolist(),
                "det_to_matched_trk_obj_ids": [[int(k), v.tolist()] for k, v in sorted(d2t.items())],
                "trk_id_to_max_iou_high_conf_det": sorted_pairs(pairs), "empty_trk_obj_ids": empty.tolist(),
            })
    return cases


def nms_cases(seed):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(12):
        q = int(rng.integers(1, 12))
        probs = torch.tensor(rng.choice(np.arange(0.3, 1.0, 0.05), q), dtype=torch.float32)
        masks = torch.from_numpy(np.stack([rect_logits(rng, (int(rng.integers(0, 8)), int(rng.integers(0, 8)), int(rng.integers(2, 6)), int(rng.integers(2, 6)))) for _ in range(q)]))
        thr = float(rng.choice([0.1, 0.3, 0.5]))
        keep = nms_masks(probs, masks.float(), prob_threshold=0.5, iou_threshold=thr)
        # the loop: removed logits -= 1e4 (sam3_image.py:831), then prob > 0.5 (VB:365-370)
        logits = torch.logit(probs) - 1e4 * (~keep).float()
        selected = torch.where(logits.sigmoid() > 0.5)[0]
        cases.append({"probs": probs, "masks": masks, "iou_thresh": thr, "keep": keep.tolist(), "selected": selected.tolist()})
    return cases


def overlap_cases(seed):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(8):
        n = int(rng.integers(1, 5))
        masks = torch.from_numpy(np.stack([rect_logits(rng, (int(rng.integers(0, 8)), int(rng.integers(0, 8)), int(rng.integers(2, 7)), int(rng.integers(2, 7)))) for _ in range(n)]))[:, None]
        scores = torch.tensor(rng.choice([0.2, 0.5, 0.9], (n, 1)), dtype=torch.float32)
        shrink = _SHRINK._suppress_object_pw_area_shrinkage(masks.float())
        objwise = _SHRINK._apply_object_wise_non_overlapping_constraints(masks.float(), scores, background_value=0)
        cases.append({"masks": masks, "scores": scores, "shrink": shrink.to(torch.int8), "objwise": objwise.to(torch.int8)})
    return cases


def main():
    torch.manual_seed(0)
    data = {
        "H": H, "W": W, "interpol_size": list(INTERPOL),
        "configs": {"builder": BUILDER, "variant": VARIANT},
        "sequences": [
            seq("builder", False, 11, BUILDER, list(range(0, 34))),
            seq("builder", True, 13, BUILDER, list(range(40, 18, -1))),
            seq("variant", False, 3, VARIANT, list(range(0, 22)), spur_p=0.6),
        ],
        "assoc": assoc_cases(4),
        "nms": nms_cases(5),
        "overlap": overlap_cases(6),
    }
    buf = io.BytesIO()
    torch.save(data, buf)
    with open(OUT, "wb") as f:  # gzip-compressed torch.save payload (read with gzip.decompress)
        f.write(gzip.compress(buf.getvalue(), mtime=0))
    size = os.path.getsize(OUT)
    stats = {}
    for s in data["sequences"]:
        recs = s["records"]
        stats[(s["config"], s["reverse"])] = dict(
            removed=recs[-1]["removed_obj_ids"], new=sum(len(r["new_det_obj_ids"]) for r in recs),
            suppressed_rows=sum(sum(r["suppressed_rows"]) for r in recs),
            recond=sum(len(r["recondition_ids"]) for r in recs), dup_pairs=len(recs[-1]["overlap_pair_to_frame_inds"]),
            hidden=sum(len(r["suppressed_obj_ids"]) for r in recs), dropped=sum(r["num_obj_dropped_due_to_limit"] for r in recs),
            bbox_recond=sum(len(r["reconditioned_obj_ids"]) for r in recs),
        )
    print(f"wrote {OUT} ({size / 1024:.1f} KiB)", stats, file=sys.stderr)
    assert size < 200 * 1024, size
    assert math.isfinite(size)


if __name__ == "__main__":
    main()

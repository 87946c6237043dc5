"""Tracking metrics of MOT box files and MOTS mask files with TrackEval (HOTA, CLEAR, Identity, Count).

The figures are TrackEval's own: this module only reads the files, builds the per-sequence ``data``
dict TrackEval's metric classes take (ids made contiguous, similarity = box IoU or mask IoU computed by
TrackEval's ``_calculate_box_ious`` / ``_calculate_mask_ious``), calls ``eval_sequence`` on each sequence
and ``combine_sequences`` on all. Conventions:

* class-agnostic: all ground-truth instances form one class (one concept), as do all predictions;
* MOT: ground-truth rows with ``conf`` 0 are dropped; no MOT17 distractor classes (TrackEval with
  ``DO_PREPROC`` off, as for MOT15);
* MOTS: ground-truth rows of class 10 are ignore regions: an unmatched prediction lying more than
  half inside them is dropped (TrackEval's MOTSChallenge preprocessing);
* the sequence length is the last frame in either file.

Scores are fractions in [0, 1]; the HOTA family is averaged over TrackEval's 19 thresholds 0.05..0.95.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

import numpy as np
from scipy.optimize import linear_sum_assignment

from sam3video.errors import InputError, MissingDependencyError
from sam3video.export.tables import MOTS_IGNORE_CLASS, TrackTable, detect_kind, read_tracks
from sam3video.eval.sequences import PathLike, SequencePair, pair_sequences

LIBRARY = "trackeval"
COMBINED = "COMBINED"
IGNORE_MATCH_IOU = 0.5  # MOTS: a prediction matched to ground truth at this IoU is never ignored
IGNORE_REGION_IOA = 0.5  # MOTS: an unmatched prediction more than this much inside ignore regions is dropped
HOTA_KEYS = ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr", "OWTA", "HOTA(0)", "LocA(0)")
CLEAR_KEYS = ("MOTA", "MOTP", "MODA", "CLR_Re", "CLR_Pr", "CLR_F1", "sMOTA", "IDSW", "CLR_TP", "CLR_FN",
              "CLR_FP", "Frag", "MT", "PT", "ML", "CLR_Frames")
IDENTITY_KEYS = ("IDF1", "IDR", "IDP", "IDTP", "IDFN", "IDFP")
COUNT_KEYS = ("GT_Dets", "Dets", "GT_IDs", "IDs")
INTEGER_KEYS = frozenset({"IDSW", "CLR_TP", "CLR_FN", "CLR_FP", "Frag", "MT", "PT", "ML", "CLR_Frames",
                          "IDTP", "IDFN", "IDFP", *COUNT_KEYS})


@dataclass(frozen=True)
class SequenceResult:
    """One sequence's (or the combination's) metrics, TrackEval's names, fractions or counts."""

    name: str
    metrics: dict[str, float]
    hota_by_alpha: dict[str, list[float]]
    gt: str | None = None
    pred: str | None = None


@dataclass(frozen=True)
class EvalResult:
    """Per-sequence and combined metrics, and what computed them."""

    kind: str
    sequences: tuple[SequenceResult, ...]
    combined: SequenceResult
    library: str
    library_version: str
    iou_threshold: float

    def to_json(self) -> dict:
        """A JSON-serialisable dict: library, settings, then ``sequences`` and ``combined``."""
        def entry(r: SequenceResult) -> dict:
            out = {"metrics": dict(r.metrics), "hota_by_alpha": r.hota_by_alpha}
            if r.gt is not None:
                out.update(gt=r.gt, pred=r.pred)
            return out

        return {
            "library": {"name": self.library, "version": self.library_version},
            "kind": self.kind,
            "iou_threshold": self.iou_threshold,
            "conventions": "scores are fractions in [0, 1]; HOTA family averaged over alpha 0.05..0.95; "
                           "CLEAR and Identity match at IoU >= iou_threshold",
            "sequences": {r.name: entry(r) for r in self.sequences},
            "combined": entry(self.combined),
        }


def _trackeval():
    """Import TrackEval on first use (it takes about a second and is only needed here)."""
    try:
        import trackeval
    except ImportError:
        raise MissingDependencyError("sam3video eval needs TrackEval, which is not installed: "
                                     "pip install 'trackeval>=1.3,<2'") from None
    return trackeval


def _metric_objects(iou_threshold: float) -> dict:
    m = _trackeval().metrics
    config = {"THRESHOLD": iou_threshold, "PRINT_CONFIG": False}
    return {"HOTA": m.HOTA(), "CLEAR": m.CLEAR(dict(config)), "Identity": m.Identity(dict(config)),
            "Count": m.Count()}


def _similarity(gt: TrackTable, gt_rows, pred: TrackTable, pred_rows) -> np.ndarray:
    """(n_gt, n_pred) IoU of one frame's boxes (MOT) or masks (MOTS), by TrackEval's functions."""
    base = _trackeval().datasets._base_dataset._BaseDataset
    if gt.kind == "mot":
        return base._calculate_box_ious(gt.boxes[gt_rows], pred.boxes[pred_rows], box_format="xywh")
    gt_masks, pred_masks = list(gt.rles[gt_rows]), list(pred.rles[pred_rows])
    if not gt_masks or not pred_masks:
        return np.zeros((len(gt_masks), len(pred_masks)))
    return np.asarray(base._calculate_mask_ious(gt_masks, pred_masks, is_encoded=True), float)


def _ignored_predictions(similarity: np.ndarray, pred_masks: list, ignore_masks: list) -> np.ndarray:
    """Indices of predictions unmatched at ``IGNORE_MATCH_IOU`` and inside ignore regions (MOTSChallenge)."""
    from pycocotools import mask as mask_utils

    unmatched = np.arange(len(pred_masks))
    if similarity.size:
        scores = np.where(similarity >= IGNORE_MATCH_IOU - np.finfo(float).eps, similarity, -10000.0)
        rows, cols = linear_sum_assignment(-scores)
        unmatched = np.setdiff1d(unmatched, cols[scores[rows, cols] > 0])
    if not len(unmatched) or not ignore_masks:
        return np.zeros(0, int)
    region = mask_utils.merge(ignore_masks, intersect=False)
    base = _trackeval().datasets._base_dataset._BaseDataset
    ioa = base._calculate_mask_ious([pred_masks[i] for i in unmatched], [region], is_encoded=True, do_ioa=True)
    return unmatched[np.any(np.asarray(ioa) > IGNORE_REGION_IOA + np.finfo(float).eps, axis=1)]


def _contiguous(ids_per_frame: list[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Relabel ids to 0..K-1 (TrackEval's metrics index arrays with them); returns (ids, K)."""
    unique = np.unique(np.concatenate(ids_per_frame)) if ids_per_frame else np.zeros(0, np.int64)
    return [np.searchsorted(unique, ids).astype(int) for ids in ids_per_frame], len(unique)


def sequence_data(gt: TrackTable, pred: TrackTable) -> dict:
    """TrackEval's per-sequence ``data`` dict for one ground-truth and one prediction table."""
    if gt.kind == "mots" and None not in (gt.image_size, pred.image_size) and gt.image_size != pred.image_size:
        raise InputError(f"mask size {pred.image_size} in {pred.path} differs from {gt.image_size} "
                         f"in {gt.path}")
    num_timesteps = max(gt.num_frames, pred.num_frames)
    is_ignore = gt.class_ids == MOTS_IGNORE_CLASS if gt.kind == "mots" else np.zeros(len(gt), bool)
    regions, gt = gt.select(is_ignore), gt.select(~is_ignore)
    gt_ids, pred_ids, similarities = [], [], []
    for g, p, r in zip(gt.frame_slices(num_timesteps), pred.frame_slices(num_timesteps),
                       regions.frame_slices(num_timesteps)):
        similarity = _similarity(gt, g, pred, p)
        keep = np.arange(p.stop - p.start)
        if regions.rles and r.stop > r.start:
            dropped = _ignored_predictions(similarity, list(pred.rles[p]), list(regions.rles[r]))
            keep = np.setdiff1d(keep, dropped)
        gt_ids.append(gt.ids[g])
        pred_ids.append(pred.ids[p][keep])
        similarities.append(np.asarray(similarity, float)[:, keep])
    gt_ids, num_gt_ids = _contiguous(gt_ids)
    pred_ids, num_pred_ids = _contiguous(pred_ids)
    return {
        "num_timesteps": num_timesteps, "gt_ids": gt_ids, "tracker_ids": pred_ids,
        "similarity_scores": similarities, "num_gt_ids": num_gt_ids, "num_tracker_ids": num_pred_ids,
        "num_gt_dets": int(sum(len(i) for i in gt_ids)),
        "num_tracker_dets": int(sum(len(i) for i in pred_ids)),
    }


def _summarise(name: str, raw: dict, alphas: np.ndarray, pair: SequencePair | None = None) -> SequenceResult:
    """TrackEval's raw results -> flat metrics (alpha arrays averaged, as TrackEval's summaries do)."""
    hota, values = raw["HOTA"], {}
    for key in HOTA_KEYS:
        values[key] = float(np.mean(hota[key]))
    for metric, keys in (("CLEAR", CLEAR_KEYS), ("Identity", IDENTITY_KEYS), ("Count", COUNT_KEYS)):
        for key in keys:
            values[key] = int(raw[metric][key]) if key in INTEGER_KEYS else float(raw[metric][key])
    by_alpha = {"alpha": [round(float(a), 2) for a in alphas]}
    by_alpha.update({k: [float(v) for v in hota[k]] for k in ("HOTA", "DetA", "AssA", "LocA")})
    return SequenceResult(name, values, by_alpha, None if pair is None else str(pair.gt),
                          None if pair is None else str(pair.pred))


def _resolve_kind(kind: str, pairs: list[SequencePair]) -> str:
    if kind in ("mot", "mots"):
        return kind
    if kind != "auto":
        raise InputError(f"kind must be 'auto', 'mot' or 'mots', got {kind!r}")
    kinds = {p: detect_kind(p) for pair in pairs for p in (pair.gt, pair.pred)}
    seen = {k for k in kinds.values() if k is not None}
    if len(seen) > 1:
        mots = next(p for p, k in kinds.items() if k == "mots")
        mot = next(p for p, k in kinds.items() if k == "mot")
        raise InputError(f"mixed formats: {mots} holds MOTS masks but {mot} holds MOT boxes")
    if not seen:
        raise InputError("all files are empty: pass kind='mot' or 'mots'")
    return seen.pop()


def evaluate_pairs(pairs: list[SequencePair], kind: str, *, iou_threshold: float = 0.5,
                   allow_mask_overlap: bool = False) -> EvalResult:
    """Evaluate paired files of one ``kind`` ("mot" or "mots") with TrackEval."""
    metrics = _metric_objects(iou_threshold)
    alphas = metrics["HOTA"].array_labels
    raw: dict[str, dict] = {name: {} for name in metrics}
    results = []
    for pair in pairs:
        gt = read_tracks(pair.gt, kind, is_gt=True, allow_overlap=allow_mask_overlap)
        pred = read_tracks(pair.pred, kind, allow_overlap=allow_mask_overlap)
        data = sequence_data(gt, pred)
        per_seq = {name: m.eval_sequence(data) for name, m in metrics.items()}
        for name in metrics:
            raw[name][pair.name] = per_seq[name]
        results.append(_summarise(pair.name, per_seq, alphas, pair))
    combined = {name: m.combine_sequences(raw[name]) for name, m in metrics.items()}
    return EvalResult(kind, tuple(results), _summarise(COMBINED, combined, alphas), LIBRARY,
                      metadata.version(LIBRARY), iou_threshold)


def run_eval(
    gt_paths: PathLike | Sequence[PathLike],
    pred_paths: PathLike | Sequence[PathLike],
    kind: str = "auto",
    names: Sequence[str] | None = None,
    *,
    iou_threshold: float = 0.5,
    allow_mask_overlap: bool = False,
) -> EvalResult:
    """Evaluate predictions against ground truth: files paired by position or one directory each side.

    ``kind`` "auto" tells MOT boxes from MOTS masks by the files' first lines. ``iou_threshold`` is the
    CLEAR/Identity match threshold (HOTA integrates over thresholds). See ``sam3video.eval.sequences``
    for the directory layout and ``sam3video.export.tables`` for the file formats.
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise InputError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    pairs = pair_sequences(gt_paths, pred_paths, names)
    return evaluate_pairs(pairs, _resolve_kind(kind, pairs), iou_threshold=iou_threshold,
                          allow_mask_overlap=allow_mask_overlap)

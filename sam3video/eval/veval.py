"""SA-Co/VEval scores as the official evaluator (sam3 0.1.4 ``saco_veval_evaluators.py``) computes them.

Every (video, noun phrase) pair is scored as its own video, for masks (``segm``) and boxes (``bbox``):

- **cgF1** (``VideoCGF1Evaluator``): predictions scoring at least ``VEVAL_SCORE_THRESHOLD`` count. Per pair,
  predicted and true masklets (crowd ones left out) are matched one to one by Hungarian matching on masklet
  IoU (intersection over union summed over the frames); at each IoU threshold 0.50:0.05:0.95 a match at or
  above it is a TP, the other predictions FPs, the other truths FNs. Video level: a pair with truths and
  predictions is an IL_TP, predictions only an IL_FP, truths only an IL_FN, neither an IL_TN; IL_MCC is
  their Matthews correlation. Positive micro F1 (pmF1) sums TP, FN over every pair with truths and FP over
  the pairs with truths and predictions; cgF1 = pmF1 x IL_MCC. The pairs are those of the predictions,
  of the annotations and of ``video_np_pairs`` (the negatives).
- **phrase HOTA** (``VideoPhraseHotaEvaluator``): predictions scoring above the threshold count (strictly,
  as officially), frames with an empty box or no area dropped; every pair with a truth or a counted
  prediction is one sequence of one class; TrackEval's HOTA (the PyPI package: its metric, its IoUs)
  scores them all together.

- **class mAP** and **phrase AP** (``YTVISPredFileEvaluator``, ``VideoPhraseApEvaluator``): pycocotools'
  COCOeval with a video's masklets for an image's instances (IoU summed over frames), every score counting;
  YT-VIS's area ranges.

Keys are the official ones (``video_mask_demo_cgf1_micro_50_95``, ``video_mask_all_phrase_HOTA``,
``video_mask_mAP_50_95``, ...) plus precision, recall and the video-level counts of the cgF1 matching
(``video_mask_demo_precision_50_95``, ``video_mask_demo_IL_TP`` ...); per-pair results as the official
``video_np_results``. Not computed: TETA (``VideoTetaEvaluator``).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..export.veval import Masklet, VevalGroundTruth
from ..thresholds import VEVAL_SCORE_THRESHOLD

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)  # pycocotools'
IOU_TYPES = ("bbox", "segm")
HOTA_FIELDS = ("HOTA", "DetA", "AssA", "DetRe", "DetPr", "AssRe", "AssPr", "LocA", "OWTA")
CHALLENGING_TAG = "tracking_challenging_pair"
PAPER_ROWS = {  # test cgF1 / pHOTA (RELEASE_SAM3p1.md, the SAM 3 paper), for the benchmark's table
    "SAM 3": {"SA-V": (30.3, 58.0), "YT-Temporal-1B": (50.8, 69.9), "SmartGlasses": (36.4, 63.6)},
    "SAM 3.1": {"SA-V": (30.5, 58.7), "YT-Temporal-1B": (52.9, 70.7), "SmartGlasses": (36.3, 64.4)},
}


def _kind(iou_type: str) -> str:
    return "mask" if iou_type == "segm" else "bbox"


@dataclass
class VevalResult:
    """``metrics``: official key -> value; ``pairs``: (video_id, category_id) -> that pair's results."""

    metrics: dict[str, float]
    pairs: dict[tuple[int, int], dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The official ``eval_res`` layout: ``dataset_results`` and ``video_np_results``."""
        return {"dataset_results": self.metrics,
                "video_np_results": [{"video_id": v, "category_id": c, **r} for (v, c), r in self.pairs.items()]}


# --- masklet IoU -----------------------------------------------------------------------------------------


def _masklet_iou_masks(pred: Masklet, gt: Masklet) -> float:
    """Intersection over union summed over frames (1 when both are empty everywhere), as ``iou_masklets``."""
    from pycocotools import mask as mask_utils

    inter = union = 0
    for p, g in zip(pred.segmentations, gt.segmentations):
        if p is not None and g is not None:
            both = mask_utils.area(mask_utils.merge([p, g], intersect=True))
            inter += both
            union += mask_utils.area(p) + mask_utils.area(g) - both
        elif g is not None:
            union += mask_utils.area(g)
        elif p is not None:
            union += mask_utils.area(p)
    return float(inter / union) if union > 0 else 1.0


def _masklet_ious_boxes(preds: list[Masklet], gts: list[Masklet]) -> np.ndarray:
    """(P, G) box-tracklet IoU: per-frame intersections and unions (xywh, absent = zero box) summed over frames,
    in float32 as the official ``iou_tracklets`` computes them."""
    p = _boxes(preds)[:, None]  # (P, 1, T, 4)
    g = _boxes(gts)[None]  # (1, G, T, 4)
    p0, p1, g0, g1 = p[..., :2], p[..., :2] + p[..., 2:], g[..., :2], g[..., :2] + g[..., 2:]
    inter = np.clip(np.minimum(p1, g1) - np.maximum(p0, g0), 0, None).prod(-1)
    union = (p1 - p0).prod(-1) + (g1 - g0).prod(-1) - inter
    inter, union = inter.sum(-1, dtype=np.float32), union.sum(-1, dtype=np.float32)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float64)


def _boxes(masklets: list[Masklet]) -> np.ndarray:
    """(M, T, 4) float32 xywh boxes, an absent box as zeros (the official ``YTVIS`` fill)."""
    return np.asarray([[b if b is not None else [0, 0, 0, 0] for b in m.bboxes] for m in masklets],
                      np.float32).reshape(len(masklets), -1, 4)


def _ious(preds: list[Masklet], gts: list[Masklet], iou_type: str) -> np.ndarray:
    if not preds or not gts:
        return np.zeros((len(preds), len(gts)))
    if iou_type == "bbox":
        return _masklet_ious_boxes(preds, gts)
    return np.asarray([[_masklet_iou_masks(p, g) for g in gts] for p in preds], np.float64)


# --- cgF1 --------------------------------------------------------------------------------------------------


def _by_pair(masklets: list[Masklet]) -> dict[tuple[int, int], list[Masklet]]:
    grouped = defaultdict(list)
    for m in masklets:
        grouped[(m.video_id, m.category_id)].append(m)
    return grouped


def _cgf1_pairs(gt: VevalGroundTruth, preds: list[Masklet]) -> list[tuple[int, int]]:
    """The scored pairs: those of the predictions (all of them) and annotations, then the negative pairs."""
    pairs = sorted({(m.video_id, m.category_id) for m in preds} | {(a.video_id, a.category_id)
                                                                   for a in gt.annotations})
    known = set(pairs)
    for pair in gt.pairs:
        key = (pair.video_id, pair.category_id)
        if key not in known:
            pairs.append(key)
            known.add(key)
    return pairs


def _safe(a, b):
    """``a / b`` in float64 with numpy's nan for 0 / 0 (the official ``np.array(a) / np.array(b)``)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _cgf1(gt: VevalGroundTruth, preds: list[Masklet], iou_type: str, threshold: float
          ) -> tuple[dict[str, float], dict[tuple[int, int], dict[str, float]]]:
    n, i75, kind = len(IOU_THRESHOLDS), int(np.where(IOU_THRESHOLDS == 0.75)[0][0]), _kind(iou_type)
    gts_by_pair, dts_by_pair = _by_pair([a for a in gt.annotations if not a.iscrowd]), _by_pair(
        [m for m in preds if m.score >= threshold])
    tp_sum, fp_sum, fn_sum, pm_fp_sum = (np.zeros(n, np.int64) for _ in range(4))
    il = {"TP": 0, "FP": 0, "TN": 0, "FN": 0}
    per_pair = {}
    for pair in _cgf1_pairs(gt, preds):
        g, d = gts_by_pair.get(pair, []), dts_by_pair.get(pair, [])
        if not g and not d:
            il["TN"] += 1
            tps = fps = fns = None
        else:
            if not d:
                tps, fps, fns = np.zeros(n, np.int64), np.zeros(n, np.int64), np.full(n, len(g), np.int64)
            else:
                ious = _ious(d, g, iou_type)
                rows, cols = linear_sum_assignment(-ious)
                matched = ious[rows, cols]
                tps = np.asarray([(matched >= t).sum() for t in IOU_THRESHOLDS], np.int64)
                fps, fns = len(d) - tps, len(g) - tps
            il["TP" if g and d else "FP" if d else "FN"] += 1
            tp_sum += tps
            fp_sum += fps
            fn_sum += fns
            if g and d:
                pm_fp_sum += fps
        zeros = np.zeros(n, np.int64)
        tps, fps, fns = (zeros, zeros, zeros) if tps is None else (tps, fps, fns)
        denominator = 2 * tps + fps + fns
        f1 = np.where(denominator > 0, 2 * tps / np.maximum(denominator, 1), 1.0)
        per_pair[pair] = {
            f"{kind}_TP_50_95": float(tps.mean()), f"{kind}_FP_50_95": float(fps.mean()),
            f"{kind}_FN_50_95": float(fns.mean()), f"{kind}_F1_50_95": float(f1.mean()),
            **{f"{kind}_{name}_{label}": float(values[i]) for label, i in (("50", 0), ("75", i75))
               for name, values in (("TP", tps), ("FP", fps), ("FN", fns), ("F1", f1))}}
    precision = tp_sum / (tp_sum + fp_sum + 1e-4)
    recall = tp_sum / (tp_sum + fn_sum + 1e-4)
    pm_precision = tp_sum / (tp_sum + pm_fp_sum + 1e-4)
    pm_f1 = 2 * pm_precision * recall / (pm_precision + recall + 1e-4)
    tp, fp, tn, fn = il["TP"], il["FP"], il["TN"], il["FN"]
    mcc = float(tp * tn - fp * fn) / ((float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn)) ** 0.5
                                      + 1e-6)
    cgf1 = pm_f1 * mcc
    prefix = f"video_{kind}_demo"

    def mean(values):
        kept = values[values > -1]
        return float(np.mean(kept)) if len(kept) else -1.0

    metrics = {f"{prefix}_cgf1_micro_50_95": mean(cgf1), f"{prefix}_ilmcc_50_95": mcc,
               f"{prefix}_positive_micro_f1_50_95": mean(pm_f1)}
    for label, i in (("50", 0), ("75", i75)):
        metrics[f"{prefix}_cgf1_micro_{label}"] = float(cgf1[i])
        metrics[f"{prefix}_ilmcc_{label}"] = _safe(cgf1[i], pm_f1[i])
        metrics[f"{prefix}_positive_micro_f1_{label}"] = float(pm_f1[i])
    for name, values in (("precision", precision), ("recall", recall)):
        metrics[f"{prefix}_{name}_50_95"] = mean(values)
        metrics[f"{prefix}_{name}_50"] = float(values[0])
        metrics[f"{prefix}_{name}_75"] = float(values[i75])
    metrics.update({f"{prefix}_IL_{k}": float(v) for k, v in il.items()})
    return metrics, per_pair


# --- phrase HOTA -------------------------------------------------------------------------------------------


def _counted_for_hota(preds: list[Masklet], threshold: float) -> list[Masklet]:
    """Predictions above ``threshold``, frames with no area or an empty box blanked, as officially."""
    kept = []
    for m in preds:
        if not m.score > threshold:
            continue
        m = copy.copy(m)
        m.segmentations, m.bboxes, m.areas = list(m.segmentations), list(m.bboxes), list(m.areas)
        for t, box in enumerate(m.bboxes):
            if m.areas[t] == 0 or box is None or all(x == 0 for x in box):
                m.segmentations[t] = m.bboxes[t] = m.areas[t] = None
        kept.append(m)
    return kept


def _present(masklet: Masklet, t: int, iou_type: str):
    value = masklet.segmentations[t] if iou_type == "segm" else masklet.bboxes[t]
    return value if value else None


def _hota_sequence(gts: list[Masklet], dts: list[Masklet], num_frames: int, iou_type: str) -> dict:
    """TrackEval's per-sequence ``data`` for one pair (what its YouTubeVIS dataset prepares)."""
    from .metrics import _contiguous, _trackeval

    base = _trackeval().datasets._base_dataset._BaseDataset
    gt_ids, dt_ids, similarities = [], [], []
    for t in range(num_frames):
        g = [(m.id, _present(m, t, iou_type)) for m in gts if _present(m, t, iou_type) is not None]
        d = [(k, _present(m, t, iou_type)) for k, m in enumerate(dts) if _present(m, t, iou_type) is not None]
        if not g or not d:
            similarity = np.zeros((len(g), len(d)))
        elif iou_type == "segm":
            similarity = np.asarray(base._calculate_mask_ious([x for _, x in g], [x for _, x in d], is_encoded=True,
                                                              do_ioa=False), float)
        else:
            similarity = base._calculate_box_ious(np.asarray([x for _, x in g], np.float32).reshape(-1, 4),
                                                  np.asarray([x for _, x in d], np.float32).reshape(-1, 4),
                                                  box_format="xywh", do_ioa=False)
        gt_ids.append(np.asarray([i for i, _ in g], np.int64))
        dt_ids.append(np.asarray([i for i, _ in d], np.int64))
        similarities.append(similarity)
    gt_ids, num_gt_ids = _contiguous(gt_ids)
    dt_ids, num_dt_ids = _contiguous(dt_ids)
    return {"num_timesteps": num_frames, "gt_ids": gt_ids, "tracker_ids": dt_ids, "similarity_scores": similarities,
            "num_gt_ids": num_gt_ids, "num_tracker_ids": num_dt_ids,
            "num_gt_dets": int(sum(len(i) for i in gt_ids)), "num_tracker_dets": int(sum(len(i) for i in dt_ids))}


def _phrase_hota(gt: VevalGroundTruth, preds: list[Masklet], iou_type: str, threshold: float
                 ) -> tuple[dict[str, float], dict[tuple[int, int], dict[str, float]]]:
    from .metrics import _trackeval

    hota = _trackeval().metrics.HOTA()
    dts = _counted_for_hota(preds, threshold)
    gts_by_pair, dts_by_pair = _by_pair(gt.annotations), _by_pair(dts)
    pairs = sorted(set(gts_by_pair) | set(dts_by_pair))
    results = {pair: hota.eval_sequence(_hota_sequence(gts_by_pair.get(pair, []), dts_by_pair.get(pair, []),
                                                       gt.videos[pair[0]].num_frames, iou_type))
               for pair in pairs}
    kind = _kind(iou_type)
    per_pair = {pair: {f"{kind}_{name}": float(np.mean(res[name])) for name in HOTA_FIELDS}
                for pair, res in results.items()}
    metrics: dict[str, float] = {}
    subsets = {"all": pairs}
    if gt.has_tags:
        tagged = {(a.video_id, a.category_id) for a in gt.annotations if CHALLENGING_TAG in a.tags}
        subsets["challenging"] = [p for p in pairs if p in tagged]
    for subset, members in subsets.items():
        if not members:
            continue
        combined = hota.combine_sequences({str(p): results[p] for p in members})
        combined = hota.combine_classes_class_averaged({"phrase": combined})
        for name in HOTA_FIELDS:
            metrics[f"video_{kind}_{subset}_phrase_{name}"] = float(np.mean(combined[name]))
    return metrics, per_pair


# --- class mAP and phrase AP (pycocotools' COCOeval on masklets) ---------------------------------------------

AREA_RANGES = [[0**2, 1e5**2], [0**2, 128**2], [128**2, 256**2], [256**2, 1e5**2]]  # YT-VIS's, in pixels


def _coco_eval_class():
    from pycocotools.cocoeval import COCOeval

    class MaskletEval(COCOeval):
        """COCOeval with a video's masklets for an image's instances (official ``YTVISeval``): IoU summed over
        frames, detections sorted by score; areas are masklet means."""

        def _prepare(self):
            p = self.params
            ann_ids = dict(imgIds=p.imgIds, catIds=p.catIds) if p.useCats else dict(imgIds=p.imgIds)
            gts = self.cocoGt.loadAnns(self.cocoGt.getAnnIds(**ann_ids))
            dts = self.cocoDt.loadAnns(self.cocoDt.getAnnIds(**ann_ids))
            for g in gts:
                g["ignore"] = bool(g.get("iscrowd"))
            self._gts, self._dts = defaultdict(list), defaultdict(list)
            for g in gts:
                self._gts[g["image_id"], g["category_id"]].append(g)
            for d in dts:
                self._dts[d["image_id"], d["category_id"]].append(d)
            self.evalImgs, self.eval = defaultdict(list), {}

        def computeIoU(self, imgId, catId):
            p = self.params
            if p.useCats:
                g, d = self._gts[imgId, catId], self._dts[imgId, catId]
            else:
                g = [x for c in p.catIds for x in self._gts[imgId, c]]
                d = [x for c in p.catIds for x in self._dts[imgId, c]]
            if not g or not d:
                return []
            d = [d[i] for i in np.argsort([-x["score"] for x in d], kind="mergesort")][:p.maxDets[-1]]
            return _ious([x["masklet"] for x in d], [x["masklet"] for x in g], p.iouType)

    return MaskletEval


def _coco(images: list[dict], categories: list[dict], annotations: list[dict]):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _average_precision(gt: VevalGroundTruth, preds: list[Masklet], iou_type: str, phrase: bool) -> np.ndarray:
    """COCOeval's 12 stats: class mAP (``phrase`` False: categories kept) or phrase AP (every (video, phrase)
    pair its own video, one class), as ``YTVISPredFileEvaluator`` / ``VideoPhraseApEvaluator``."""
    if phrase:
        pairs = sorted({(m.video_id, m.category_id) for m in preds} | {(a.video_id, a.category_id)
                                                                       for a in gt.annotations})
        image_of = {pair: i + 1 for i, pair in enumerate(pairs)}
        images = [{"id": i} for i in image_of.values()]
        categories, category = [{"id": -1, "name": "object"}], lambda m: -1  # noqa: E731
        image = lambda m: image_of[(m.video_id, m.category_id)]  # noqa: E731
    else:
        images = [{"id": v} for v in gt.videos]
        ids = sorted(gt.categories) or sorted({a.category_id for a in gt.annotations})
        categories, category = [{"id": c, "name": str(c)} for c in ids], lambda m: m.category_id  # noqa: E731
        image = lambda m: m.video_id  # noqa: E731
    gt_anns = [{"id": i + 1, "image_id": image(a), "category_id": category(a), "iscrowd": int(a.iscrowd),
                "area": float(np.mean([x or 0 for x in a.areas])), "masklet": a} for i, a in enumerate(gt.annotations)]
    dt_anns = [{"id": i + 1, "image_id": image(m), "category_id": category(m), "iscrowd": 0, "score": m.score,
                "area": float(np.mean([(b[2] * b[3]) if b else 0 for b in m.bboxes])), "masklet": m}
               for i, m in enumerate(preds)]
    evaluator = _coco_eval_class()(_coco(images, categories, gt_anns), _coco(images, categories, dt_anns), iou_type)
    evaluator.params.areaRng, evaluator.params.areaRngLbl = AREA_RANGES, ["all", "small", "medium", "large"]
    evaluator.params.useCats = not phrase
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def _average_precisions(gt: VevalGroundTruth, preds: list[Masklet], iou_type: str, threshold: float
                        ) -> tuple[dict[str, float], dict]:
    kind = _kind(iou_type)
    metrics = {}
    if preds:  # the official evaluators stop on an empty prediction file
        metrics[f"video_{kind}_mAP_50_95"] = float(_average_precision(gt, preds, iou_type, phrase=False)[0])
        stats = _average_precision(gt, preds, iou_type, phrase=True)
        for i, label in enumerate(("50_95", "50", "75")):
            metrics[f"video_{kind}_phrase_ap_{label}"] = float(stats[i])
    return metrics, {}


def score_veval(gt: VevalGroundTruth, predictions: list[Masklet], iou_types=IOU_TYPES,
                threshold: float = VEVAL_SCORE_THRESHOLD, average_precision: bool = True) -> VevalResult:
    """cgF1 and phrase HOTA of ``predictions`` against ``gt``, for each of ``iou_types``; with
    ``average_precision`` also the official class mAP and phrase AP (every score counts there)."""
    result = VevalResult({})
    scorers = (_phrase_hota, _cgf1) + ((_average_precisions,) if average_precision else ())
    for iou_type in iou_types:
        for scorer in scorers:
            metrics, per_pair = scorer(gt, predictions, iou_type, threshold)
            result.metrics.update(metrics)
            for pair, values in per_pair.items():
                result.pairs.setdefault(pair, {}).update(values)
    return result


def format_veval(result: VevalResult) -> str:
    """The headline table: cgF1 with its parts, and phrase HOTA with its parts, per IoU type (in %)."""
    from tabulate import tabulate

    rows = []
    for iou_type in IOU_TYPES:
        kind = _kind(iou_type)
        m = result.metrics
        if f"video_{kind}_demo_cgf1_micro_50_95" not in m:
            continue
        demo, hota = f"video_{kind}_demo", f"video_{kind}_all_phrase"
        pct = lambda key: "-" if key not in m else f"{100 * m[key]:.1f}"  # noqa: E731
        rows.append([kind, pct(f"{demo}_cgf1_micro_50_95"), f"{m[f'{demo}_ilmcc_50_95']:.3f}",
                     pct(f"{demo}_positive_micro_f1_50_95"), pct(f"{demo}_precision_50_95"),
                     pct(f"{demo}_recall_50_95"), pct(f"{hota}_HOTA"), pct(f"{hota}_DetA"), pct(f"{hota}_AssA"),
                     pct(f"{hota}_LocA"), pct(f"video_{kind}_mAP_50_95"), pct(f"video_{kind}_phrase_ap_50_95")])
    return tabulate(rows, headers=["", "cgF1", "IL_MCC", "pmF1", "precision", "recall", "pHOTA", "pDetA", "pAssA",
                                   "LocA", "mAP", "phrase AP"])

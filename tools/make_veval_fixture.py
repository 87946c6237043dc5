"""Make the SA-Co/VEval scoring fixture (tests/data/veval) with the OFFICIAL evaluators.

Run with the oracle venv (never with the project's), from the repository root:

    ~/.cache/sam3-oracle/bin/python tools/make_veval_fixture.py --out tests/data/veval

Writes seeded random cases, each a small ground truth (``case_K.gt.json``: videos of 4-9 frames of at most
20x24 pixels, positive and negative (video, noun phrase) pairs, crowd masklets, masklets absent on some
frames, tags on some cases) and predictions (``case_K.pred.json``: masklets near the truths with noise,
id switches between two truths, false positives on negative pairs and on pairs the ground truth does not
list, empty masklets, scores drawn around 0.5 with some exactly 0.5, which counts for cgF1 (>=) and not for
phrase HOTA (>)), and ``case_K.expected.json``: what sam3 0.1.4's ``VideoCGF1Evaluator``, ``VideoPhraseHotaEvaluator``,
``YTVISPredFileEvaluator`` (class mAP) and ``VideoPhraseApEvaluator`` (``sam3/eval/saco_veval_evaluators.py``) return (``dataset_results``,
``video_np_results``), plus the precision and recall of the cgF1 evaluation (``CGF1Eval.stats``, which
the evaluator computes and does not return). Nothing of ``sam3video`` is imported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from sam3.eval import saco_veval_evaluators as official
from sam3.eval.cgf1_eval import CGF1_METRICS
from sam3.eval.ytvis_eval import VideoDemoF1Eval

_stats: list = []
_summarize = VideoDemoF1Eval.summarize


def _recording_summarize(self):
    _summarize(self)
    _stats.append((self.params.iouType, list(map(float, self.stats))))


VideoDemoF1Eval.summarize = _recording_summarize


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _box(mask: np.ndarray) -> list[float]:
    """The official writer's box: last pixel as the far corner (``mask_to_box`` + ``convert_to_xywh``)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def _track(rng, num_frames, h, w, present_prob=0.85):
    """Per-frame masks of an object moving by a few pixels a frame (absent on some frames)."""
    y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
    bh, bw = rng.integers(2, max(3, h // 2)), rng.integers(2, max(3, w // 2))
    vy, vx = rng.integers(-1, 2), rng.integers(-2, 3)
    masks = []
    for _ in range(num_frames):
        y, x = int(np.clip(y + vy, 0, h - 2)), int(np.clip(x + vx, 0, w - 2))
        if rng.random() < present_prob:
            m = np.zeros((h, w), bool)
            m[y:y + bh, x:x + bw] = True
            masks.append(m)
        else:
            masks.append(None)
    return masks


def _noisy(rng, masks, flip=0.08):
    """The masks with a shifted and eroded/dilated copy, or dropped frames."""
    out = []
    for m in masks:
        if m is None:
            out.append(None if rng.random() < 0.8 else _random_mask(rng, *masks_shape(masks)))
            continue
        if rng.random() < 0.1:
            out.append(None)
            continue
        shift = (int(rng.integers(-1, 2)), int(rng.integers(-1, 2))) if rng.random() < 0.5 else (0, 0)
        shifted = np.roll(m, shift, axis=(0, 1))
        noise = rng.random(m.shape) < flip
        out.append(shifted ^ (noise & np.roll(shifted, 1, axis=0)))
    return out


def masks_shape(masks):
    for m in masks:
        if m is not None:
            return m.shape
    return (8, 8)


def _random_mask(rng, h, w):
    m = np.zeros((h, w), bool)
    y, x = rng.integers(0, h - 2), rng.integers(0, w - 2)
    m[y:y + rng.integers(1, 4), x:x + rng.integers(1, 4)] = True
    return m


def _masklet_fields(masks):
    segs = [None if m is None or not m.any() else _rle(m) for m in masks]
    boxes = [None if s is None else _box(m) for s, m in zip(segs, masks)]
    areas = [None if s is None else int(m.sum()) for s, m in zip(segs, masks)]
    return segs, boxes, areas


def make_case(seed: int, tags: bool) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    videos, annotations, pairs, preds = [], [], [], []
    categories = [{"id": c, "name": f"phrase {c}"} for c in range(1, 8)]
    ann_id = 1
    for v in range(int(rng.integers(2, 4))):
        num_frames, h, w = int(rng.integers(4, 10)), int(rng.integers(10, 21)), int(rng.integers(12, 25))
        video_id = 10 + v
        videos.append({"id": video_id, "video_name": f"vid{video_id}", "file_names": [
            f"vid{video_id}/{t:05d}.jpg" for t in range(num_frames)], "height": h, "width": w, "length": num_frames})
        cats = rng.choice(np.arange(1, 8), size=int(rng.integers(2, 5)), replace=False)
        for k, category_id in enumerate(cats.tolist()):
            negative = k == 0 or rng.random() < 0.25
            num = 0 if negative else int(rng.integers(1, 4))
            pairs.append({"id": len(pairs) + 1, "video_id": video_id, "category_id": category_id,
                          "noun_phrase": f"phrase {category_id}", "num_masklets": num})
            truths = [_track(rng, num_frames, h, w) for _ in range(num)]
            for n, masks in enumerate(truths):
                segs, boxes, areas = _masklet_fields(masks)
                ann = {"id": ann_id, "video_id": video_id, "category_id": category_id, "segmentations": segs,
                       "bboxes": boxes, "areas": areas, "iscrowd": int(rng.random() < 0.1), "height": h, "width": w,
                       "noun_phrase": f"phrase {category_id}"}
                if tags:
                    ann["tags"] = ["tracking_challenging_pair"] if video_id % 2 == 0 else ["easy"]
                annotations.append(ann)
                ann_id += 1
            for n, masks in enumerate(truths):  # predictions near the truths
                if rng.random() < 0.15:
                    continue
                pred_masks = _noisy(rng, masks)
                if len(truths) > 1 and rng.random() < 0.4:  # an id switch halfway
                    other = truths[(n + 1) % len(truths)]
                    half = num_frames // 2
                    pred_masks = pred_masks[:half] + _noisy(rng, other)[half:]
                preds.append(_pred(rng, video_id, category_id, pred_masks))
            for _ in range(int(rng.choice([0, 1, 2], p=[0.6, 0.3, 0.1]))):  # false positives (negatives too)
                preds.append(_pred(rng, video_id, category_id, _track(rng, num_frames, h, w, 0.6)))
            if rng.random() < 0.2:  # a masklet empty on every frame
                preds.append(_pred(rng, video_id, category_id, [None] * num_frames))
        if rng.random() < 0.4:  # a pair the ground truth does not list
            preds.append(_pred(rng, video_id, 99, _track(rng, num_frames, h, w)))
    gt = {"info": {"description": f"sam3video fixture case seed {seed}"}, "videos": videos,
          "annotations": annotations, "categories": categories, "video_np_pairs": pairs}
    return gt, preds


def _pred(rng, video_id, category_id, masks):
    segs, boxes, areas = _masklet_fields(masks)
    score = float(rng.choice([0.5, rng.uniform(0.3, 0.7), rng.uniform(0.5, 1.0)], p=[0.15, 0.45, 0.4]))
    return {"video_id": video_id, "category_id": category_id, "score": score, "segmentations": segs,
            "bboxes": [b if b is not None else [0, 0, 0, 0] for b in boxes],
            "areas": [a if a is not None else 0 for a in areas]}


def official_results(gt_path: Path, pred_path: Path) -> dict:
    _stats.clear()
    dataset, per_pair = {}, {}
    for evaluator in (official.VideoPhraseHotaEvaluator(str(gt_path)), official.VideoCGF1Evaluator(str(gt_path)),
                      official.YTVISPredFileEvaluator(str(gt_path)), official.VideoPhraseApEvaluator(str(gt_path))):
        d, v = evaluator.evaluate(str(pred_path))
        dataset.update(d)
        for key, res in v.items():
            per_pair.setdefault(key, {}).update(res)
    for iou_type, stats in _stats:
        kind = "mask" if iou_type == "segm" else "bbox"
        for metric, value in zip(CGF1_METRICS, stats):
            if metric.name in ("precision", "recall"):
                label = {None: "50_95", 0.5: "50", 0.75: "75"}[metric.iou_threshold]
                dataset[f"video_{kind}_demo_{metric.name}_{label}"] = value
    return {"dataset_results": dataset,
            "video_np_results": [{"video_id": k[0], "category_id": k[1], **r} for k, r in per_pair.items()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--cases", type=int, default=6)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k in range(args.cases):
        gt, preds = make_case(1000 + k, tags=k % 3 == 2)
        gt_path, pred_path = out / f"case_{k}.gt.json", out / f"case_{k}.pred.json"
        gt_path.write_text(json.dumps(gt, separators=(",", ":")))
        pred_path.write_text(json.dumps(preds, separators=(",", ":")))
        expected = official_results(gt_path, pred_path)
        (out / f"case_{k}.expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True))
        print(f"case {k}: {len(gt['videos'])} videos, {len(gt['video_np_pairs'])} pairs, "
              f"{len(gt['annotations'])} masklets, {len(preds)} predictions; mask cgF1 "
              f"{expected['dataset_results'].get('video_mask_demo_cgf1_micro_50_95')}, pHOTA "
              f"{expected['dataset_results'].get('video_mask_all_phrase_HOTA')}")


if __name__ == "__main__":
    main()

"""The precision modes against fp32 on the demo model's benchmark clips: detections, masks and HOTA.

    python tools/check_precision.py                                  # 6 clips of 5 s, bf16 and int8
    python tools/check_precision.py --clips 20 --seconds 10 --precisions int8 --json runs/precision.json
    python tools/check_precision.py --precisions bf16+openvino int8+openvino   # the trunk in OpenVINO

Each mode runs the tracking benchmark (``sam3video.eval.benchmark``, classic world: the suite the demo
model is scored on) and is compared with fp32 on the same frames. Per frame and prompt, the confident
detections (score >= the model's threshold) of the mode and of fp32 are matched one to one by mask IoU
(Hungarian); a pair with IoU >= 0.5 is the same detection. Printed per mode: the detections of both,
the share of fp32's that the mode has too ("same"), the mask IoU of the matched pairs (mean, 5th
percentile, min), the largest score difference of a matched pair, and HOTA / IDF1 next to fp32's.
Frames/s is the benchmark's end to end (decode, detect, track, write; one prompt) on this machine.

Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from sam3video.detections import Detections
from sam3video.eval.benchmark import run_benchmark
from sam3video.video.session import PRECISIONS

# "PRECISION" runs the trunk in torch, "PRECISION+openvino" in OpenVINO (--runtime openvino)
MODES = [*(p for p in PRECISIONS if p != "fp32"), "fp32+openvino", "bf16+openvino", "int8+openvino"]

SAME_DETECTION_IOU = 0.5  # matched masks overlapping at least this much are the same detection


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W), (M, H, W) bool -> (N, M) mask IoU."""
    a, b = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def compare_frame(reference: Detections, other: Detections, threshold: float) -> dict:
    """Confident detections of one frame, fp32 (``reference``) against a mode: counts, matched IoUs,
    score differences of the matched pairs."""
    ref = reference[reference.confidence >= threshold]
    out = other[other.confidence >= threshold]
    ious, score_diffs = [], []
    if len(ref) and len(out):
        matrix = mask_iou_matrix(ref.mask, out.mask)
        matrix = np.where(ref.class_id[:, None] == out.class_id[None, :], matrix, 0.0)
        rows, cols = linear_sum_assignment(-matrix)
        keep = matrix[rows, cols] >= SAME_DETECTION_IOU
        ious = matrix[rows, cols][keep].tolist()
        score_diffs = np.abs(ref.confidence[rows] - out.confidence[cols])[keep].tolist()
    return {"reference": len(ref), "other": len(out), "ious": ious, "score_diffs": score_diffs}


def summarise(frames: list[dict]) -> dict:
    """Totals over frames: detections of each side, the share of fp32's matched, matched mask IoU."""
    ious = np.array([iou for f in frames for iou in f["ious"]])
    diffs = [d for f in frames for d in f["score_diffs"]]
    reference = sum(f["reference"] for f in frames)
    return {"frames": len(frames), "fp32_detections": reference, "detections": sum(f["other"] for f in frames),
            "same": len(ious) / reference if reference else 1.0,
            "mask_iou_mean": float(ious.mean()) if len(ious) else None,
            "mask_iou_p5": float(np.percentile(ious, 5)) if len(ious) else None,
            "mask_iou_min": float(ious.min()) if len(ious) else None,
            "score_max_abs_diff": max(diffs, default=0.0)}


def run(args) -> dict:
    """fp32 and each mode over the same suite; the comparison and the benchmark scores."""
    candidates: dict[str, dict[str, list[Detections]]] = {}
    results = {}
    with tempfile.TemporaryDirectory(prefix="check_precision_") as tmp:
        for precision in ["fp32", *args.precisions]:
            seqs = candidates.setdefault(precision, {})
            mode, _, runtime = precision.partition("+")
            summary = run_benchmark(Path(tmp) / precision, args.checkpoint, args.clips, args.seconds,
                                    args.device, "classic", mode,
                                    on_sequence=lambda name, frames, seqs=seqs: seqs.__setitem__(name, frames),
                                    runtime=runtime or "torch")
            results[precision] = {"frames_per_s": summary["frames_per_s_end_to_end"],
                                  **{k: summary["methods"]["sam3video"][k] for k in ("HOTA", "IDF1", "MOTA")}}
            print(f"{precision}: HOTA {results[precision]['HOTA'] * 100:.2f} "
                  f"({results[precision]['frames_per_s']:.1f} frames/s)", flush=True)
    threshold = summary["score_threshold"]  # the model's calibrated one, the same for every mode
    for precision in args.precisions:
        frames = [compare_frame(ref, other, threshold)
                  for name, ref_frames in candidates["fp32"].items()
                  for ref, other in zip(ref_frames, candidates[precision][name], strict=True)]
        results[precision] |= summarise(frames)
    return {"checkpoint": args.checkpoint or "demo", "clips": args.clips, "seconds": args.seconds,
            "score_threshold": threshold, "modes": results}


def format_table(result: dict) -> str:
    modes = result["modes"]
    fp32 = modes["fp32"]
    lines = [f"{'mode':13s} {'frames/s':>8s} {'HOTA':>6s} {'dHOTA':>6s} {'IDF1':>6s} {'dets':>6s} {'fp32 dets':>9s} "
             f"{'same':>6s} {'mask IoU mean/p5/min':>20s} {'max |dscore|':>12s}",
             f"{'fp32':13s} {fp32['frames_per_s']:8.1f} {fp32['HOTA'] * 100:6.2f} {'-':>6s} {fp32['IDF1'] * 100:6.2f}"]
    for precision, m in modes.items():
        if precision == "fp32":
            continue
        iou = (f"{m['mask_iou_mean']:.4f}/{m['mask_iou_p5']:.3f}/{m['mask_iou_min']:.3f}"
               if m["mask_iou_mean"] is not None else "-")
        lines.append(f"{precision:13s} {m['frames_per_s']:8.1f} {m['HOTA'] * 100:6.2f} "
                     f"{(m['HOTA'] - fp32['HOTA']) * 100:+6.2f} {m['IDF1'] * 100:6.2f} {m['detections']:6d} "
                     f"{m['fp32_detections']:9d} {m['same'] * 100:5.1f}% {iou:>20s} {m['score_max_abs_diff']:12.2e}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="weights (default: the shipped demo model)")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "int8"],
                        choices=MODES)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    result = run(args)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

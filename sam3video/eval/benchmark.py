"""The tracking benchmark: a held-out synthetic suite, sam3video against two baselines on the same detections.

    python -m sam3video.eval.benchmark --out runs/benchmark               # 20 clips of 10 s
    python -m sam3video.eval.benchmark --clips 4 --seconds 5 --out /tmp/b  # quicker
    python -m sam3video.eval.benchmark --worlds classic train heldout       # and the randomised styles

``--worlds``: the classic world (the one the shipped demo model was trained on), and the randomised
world of ``sam3video.data.styles`` in its train split and in its held-out split (backgrounds and fills
that training never draws), each its own suite of the same seeds, side by side.

Exemplar line: on clips where a shape prompt ("circle") matches objects of several colours, the
intended concept is one colour ("red circle"); HOTA for it with the shape prompt alone, and with one
positive and one negative exemplar box on one frame.

For every clip, each colour + shape prompt with an instance in the clip is one `track` run (one
sequence). The detections handed to the tracker are recorded, and three trackers run on exactly them:
sam3video's tracker, "no tracker" (a new id for every detection of every frame) and "greedy IoU"
(each detection takes the id of the free previous-frame detection it overlaps most, box IoU >= 0.3).
TrackEval scores all sequences (HOTA, IDF1, MOTA, ID switches). Frames/s is end to end for sam3video
with one prompt: decode, detect, track and write the MOT file (no overlay).

Recall by size: the share of ground-truth boxes that sam3video reports (a box with IoU >= 0.5), split by
the box's size where the model sees it: sqrt(area) after the frame is resized to the model's square
input, in patches (14 px each at every preset): under 1, 1 to 2, 2 or more.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.concepts import PROMPTS, TARGET_SHAPES
from ..data.dataset import MOT_NAME, write_clip
from ..data.synthetic import WorldConfig
from ..data.clips import generate_clip
from ..detections import Detections
from ..export import MOTWriter
from ..export.outputs import OUTPUT_NAMES, prompt_slug
from ..run import DIRECTIONS
from ..trackers.association.exemplars import Exemplar
from ..trackers.association.matching import box_iou
from ..video.session import PRECISIONS, RUNTIMES
from .metrics import run_eval

SUITE_SEED = 2_000_000_000  # suite seeds start here; training samples clip seeds from its own generator
GREEDY_MIN_IOU = 0.3
SIZE_BUCKETS = ((0.0, 1.0, "< 1 patch"), (1.0, 2.0, "1-2 patches"), (2.0, float("inf"), ">= 2 patches"))
RECALL_IOU = 0.5


def sam3_method(direction: str) -> str:
    """The benchmark's name of the official loop run with ``track --direction direction``."""
    return "sam3" if direction == "forward" else f"sam3 {direction}"


def no_tracker(frames: list[Detections], score_threshold: float) -> list[Detections]:
    """Baseline (a): every confident detection of every frame gets a new id."""
    out, next_id = [], 1
    for dets in frames:
        dets = dets[dets.confidence >= score_threshold]
        dets.tracker_id = np.arange(next_id, next_id + len(dets))
        next_id += len(dets)
        out.append(dets)
    return out


def greedy_iou_tracker(frames: list[Detections], score_threshold: float, min_iou: float = GREEDY_MIN_IOU
                       ) -> list[Detections]:
    """Baseline (b): greedy box-IoU matching to the previous frame's detections of the same class."""
    out, next_id, previous = [], 1, Detections.empty()
    previous.tracker_id = np.zeros(0, np.int64)
    for dets in frames:
        dets = dets[dets.confidence >= score_threshold]
        ids = np.zeros(len(dets), np.int64)
        iou = box_iou(previous.xyxy, dets.xyxy) * (previous.class_id[:, None] == dets.class_id[None, :])
        while iou.size and iou.max() >= min_iou:
            p, d = np.unravel_index(np.argmax(iou), iou.shape)
            ids[d] = previous.tracker_id[p]
            iou[p, :] = iou[:, d] = -1
        for d in np.flatnonzero(ids == 0):
            ids[d], next_id = next_id, next_id + 1
        dets.tracker_id = ids
        out.append(dets)
        previous = dets
    return out


def recall_by_size(sequences: list[tuple[Path, Path, tuple[int, int]]], resolution: int,
                   patch_size: int) -> dict[str, dict]:
    """``{bucket: {"gt": count, "recall": share found (None without boxes)}}`` over ``(gt MOT file,
    predicted MOT file, (width, height) of the frames)`` sequences; a box's size is sqrt(w h) in
    model-input pixels (the frame resized to ``resolution`` x ``resolution``) over ``patch_size``; found:
    a predicted box on the same frame with IoU >= RECALL_IOU (boxes of one sequence, ids ignored)."""
    from ..export.mot import read_mot

    found = {label: [0, 0] for *_, label in SIZE_BUCKETS}
    for gt_path, pred_path, (width, height) in sequences:
        preds = read_mot(pred_path) if Path(pred_path).exists() else {}
        for frame, truth in read_mot(gt_path).items():
            sides = truth.xyxy[:, 2:] - truth.xyxy[:, :2]
            size = np.sqrt(sides[:, 0] * resolution / width * sides[:, 1] * resolution / height) / patch_size
            pred = preds.get(frame)
            hit = (box_iou(truth.xyxy, pred.xyxy).max(1) >= RECALL_IOU if pred is not None and len(pred)
                   else np.zeros(len(truth), bool))
            for low, high, label in SIZE_BUCKETS:
                inside = (size >= low) & (size < high)
                found[label][0] += int(inside.sum())
                found[label][1] += int(hit[inside].sum())
    return {label: {"gt": total, "recall": hits / total if total else None}
            for label, (total, hits) in found.items()}


def clip_prompts(clip) -> list[str]:
    """The colour + shape prompts with at least one instance in ``clip``."""
    return [p for p in PROMPTS if " " in p and clip.objects_matching(p)]


def write_tracks(path: Path, frames: list[Detections], class_id: int) -> None:
    with MOTWriter(path) as writer:
        for index, dets in enumerate(frames):
            writer.write(index, dets[dets.class_id == class_id])


WORLDS = ("classic", "train", "heldout")  # WorldConfig.style of each suite


def run_benchmark(out: Path, checkpoint: str | None, num_clips: int, seconds: float, device: str = "cpu",
                  world: str = "classic", precision: str = "fp32",
                  on_sequence: Callable[[str, list[Detections]], None] | None = None,
                  sam3_checkpoint: str | None = None, runtime: str = "auto",
                  sam3_directions: tuple[str, ...] = ("forward",), resolution: int | None = None) -> dict:
    """The suite of ``num_clips`` clips of ``world``; ``on_sequence(name, candidates)`` gets each
    sequence's per-frame tracker candidates (what ``precision`` and ``runtime`` change). ``sam3_checkpoint``: a video
    checkpoint (tracker weights) whose official SAM 3 loop (``--tracker sam3``) is scored too, once per
    ``track --direction`` of ``sam3_directions``: "sam3" (forward), "sam3 both". ``resolution``: the models' input
    size (``track --resolution``; None: the checkpoint's)."""
    from ..model.checkpoint import load_model
    from ..model.video_checkpoint import load_video_model
    from ..run import TrackJob, prepare

    model = load_model(checkpoint, None, device, resolution)
    video_model = load_video_model(sam3_checkpoint, None, device, resolution) if sam3_checkpoint else None
    score_threshold = model.config.score_threshold
    config = WorldConfig(duration_s=seconds, style=world)
    gt_files: list[Path] = []
    frame_sizes: list[tuple[int, int]] = []
    pred_files: dict[str, list[Path]] = {"sam3video": [], "no tracker": [], "greedy IoU": []}
    sam3_methods = {direction: sam3_method(direction) for direction in sam3_directions} if video_model else {}
    for method in sam3_methods.values():
        pred_files[method] = []
    names, frames_total, seconds_total = [], 0, 0.0
    sam3_seconds = dict.fromkeys(sam3_methods.values(), 0.0)
    for i in range(num_clips):
        seed = SUITE_SEED + i
        clip = generate_clip(seed, config)
        prompts = clip_prompts(clip)
        clip_dir = write_clip(clip, out / "suite" / f"clip_{i:02d}", prompts)
        for prompt in prompts:  # one run per prompt: frames/s is that of `track --prompt P`
            name = f"clip_{i:02d}/{prompt_slug(prompt)}"
            names.append(name)
            run_dir = out / "sam3video" / name.replace("/", "__")
            start = time.perf_counter()  # timed like `track --no-render`: MOT, MOTS and summary written
            candidates = []
            job = TrackJob(clip_dir / "video.mp4", run_dir, prompts=(prompt,), checkpoint=checkpoint, render=False,
                           precision=precision, runtime=runtime)
            prepare(job, model).execute(on_result=lambda result: candidates.append(result.candidates))
            seconds_total += time.perf_counter() - start
            mot_path = run_dir / OUTPUT_NAMES["mot"]
            frames_total += len(candidates)
            if on_sequence is not None:
                on_sequence(name, candidates)
            baselines = {"no tracker": no_tracker(candidates, score_threshold),
                         "greedy IoU": greedy_iou_tracker(candidates, score_threshold)}
            for method, frames in baselines.items():
                path = out / method.replace(" ", "_") / f"{name.replace('/', '__')}.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_tracks(path, frames, 0)
                pred_files[method].append(path)
            pred_files["sam3video"].append(mot_path)
            for direction, method in sam3_methods.items():  # the official loop on the same clip (its own detector pass)
                sam3_dir = out / method.replace(" ", "_") / name.replace("/", "__")
                start = time.perf_counter()
                prepare(TrackJob(clip_dir / "video.mp4", sam3_dir, prompts=(prompt,), checkpoint=sam3_checkpoint,
                                 render=False, precision=precision, runtime=runtime, tracker="sam3",
                                 direction=direction), video_model).execute()
                sam3_seconds[method] += time.perf_counter() - start
                pred_files[method].append(sam3_dir / OUTPUT_NAMES["mot"])
            gt_files.append(clip_dir / "gt" / prompt_slug(prompt) / MOT_NAME)
            frame_sizes.append(clip.size)
        print(f"clip {i + 1}/{num_clips}: {len(prompts)} prompts", flush=True)
    fps = frames_total / seconds_total
    rows = {method: run_eval(gt_files, preds, kind="mot", names=names) for method, preds in pred_files.items()}
    summary = {
        "clips": num_clips, "seconds_per_clip": seconds, "sequences": len(names), "frames": frames_total,
        "frames_per_s_end_to_end": fps, "checkpoint": checkpoint or "demo", "world": world, "precision": precision,
        "resolution": model.config.resolution,
        "runtime": getattr(model, "runtime", "torch"),
        "sam3_checkpoint": sam3_checkpoint,
        "sam3_frames_per_s_end_to_end": {m: frames_total / t for m, t in sam3_seconds.items() if t} or None,
        "score_threshold": score_threshold,
        "methods": {m: {k: r.combined.metrics[k] for k in ("HOTA", "DetA", "AssA", "IDF1", "MOTA", "IDSW")}
                    for m, r in rows.items()},
        "recall_by_size": recall_by_size(list(zip(gt_files, pred_files["sam3video"], frame_sizes)),
                                         model.config.resolution, model.config.patch_size),
    }
    (out / "benchmark.json").write_text(json.dumps(summary, indent=2))
    return summary


def ambiguous_case(clip) -> tuple[str, str, Exemplar, Exemplar] | None:
    """(shape prompt, intended colour+shape prompt, positive exemplar, negative exemplar) for a clip where
    a shape prompt matches objects of several colours; exemplars on the first frame showing both well."""
    for shape in TARGET_SHAPES:
        objects = [o for o in clip.objects_matching(shape) if not o.distractor]
        colours = sorted({o.colour for o in objects})
        if len(colours) < 2:
            continue
        intended = f"{colours[0]} {shape}"
        for t in range(clip.num_frames):
            truth = clip.frame(t)[1]
            good = [o for o in truth.matching(shape) if o.visibility > 0.9]
            pos = [o for o in good if o.colour == colours[0]]
            neg = [o for o in good if o.colour != colours[0]]
            if pos and neg:
                return (shape, intended, Exemplar(t, tuple(map(float, pos[0].box)), True),
                        Exemplar(t, tuple(map(float, neg[0].box)), False))
    return None


def run_exemplar_benchmark(out: Path, checkpoint: str | None, num_clips: int, seconds: float,
                           device: str = "cpu") -> dict:
    """HOTA for the intended concept with the ambiguous shape prompt alone, and with exemplars added."""
    from ..model.checkpoint import load_model
    from ..run import TrackJob, prepare

    model = load_model(checkpoint, None, device)
    config = WorldConfig(duration_s=seconds)
    gts, preds = [], {"text only": [], "text + exemplars": []}
    seed = SUITE_SEED + 10_000
    while len(gts) < num_clips:
        clip, seed = generate_clip(seed, config), seed + 1
        case = ambiguous_case(clip)
        if case is None:
            continue
        shape, intended, positive, negative = case
        name = f"clip_{len(gts):02d}"
        clip_dir = write_clip(clip, out / "exemplar_suite" / name, [intended])
        gts.append(clip_dir / "gt" / prompt_slug(intended) / MOT_NAME)
        for method, exemplars in (("text only", ()), ("text + exemplars", (positive, negative))):
            run_dir = out / "exemplar" / method.replace(" ", "_").replace("+", "and") / name
            job = TrackJob(clip_dir / "video.mp4", run_dir, prompts=(shape,), exemplars=exemplars,
                           checkpoint=checkpoint, render=False)
            prepare(job, model).execute()
            preds[method].append(run_dir / OUTPUT_NAMES["mot"])
    names = [f"clip_{i:02d}" for i in range(len(gts))]
    return {m: run_eval(gts, p, kind="mot", names=names).combined.metrics["HOTA"] for m, p in preds.items()}


def _recall_cell(cell: dict) -> str:
    """One ``recall_by_size`` bucket as "83.8 % of 3420" ("- % of 0" without boxes)."""
    recall = "-" if cell["recall"] is None else f"{100 * cell['recall']:.1f}"
    return f"{recall} % of {cell['gt']}"


def format_summary(summary: dict) -> str:
    lines = [f"{summary['clips']} held-out clips x {summary['seconds_per_clip']:g} s, {summary['sequences']} "
             f"(clip, colour+shape prompt) sequences, {summary['frames']} frames",
             f"{'method':12s} {'HOTA':>6s} {'DetA':>6s} {'AssA':>6s} {'IDF1':>6s} {'MOTA':>6s} {'IDSW':>6s} {'frames/s':>9s}"]
    for method, m in summary["methods"].items():
        fps = f"{'(same)':>9s}"
        if method == "sam3video":
            fps = f"{summary['frames_per_s_end_to_end']:9.1f}"
        elif method in (summary.get("sam3_frames_per_s_end_to_end") or {}):
            fps = f"{summary['sam3_frames_per_s_end_to_end'][method]:9.1f}"
        lines.append(f"{method:12s} {100 * m['HOTA']:6.1f} {100 * m['DetA']:6.1f} {100 * m['AssA']:6.1f} "
                     f"{100 * m['IDF1']:6.1f} {100 * m['MOTA']:6.1f} {int(m['IDSW']):6d} {fps}")
    if "recall_by_size" in summary:
        lines.append("sam3video recall by object size at the model input: " + ", ".join(
            f"{label} {_recall_cell(cell)}" for label, cell in summary["recall_by_size"].items()))
    if "exemplar_hota" in summary:
        hota = summary["exemplar_hota"]
        lines.append(f"exemplars, ambiguous shape prompt -> intended colour: HOTA {100 * hota['text only']:.1f} "
                     f"(text only) vs {100 * hota['text + exemplars']:.1f} (text + 1 positive, 1 negative box)")
    return "\n".join(lines)


def format_worlds(summaries: dict[str, dict]) -> str:
    """sam3video's scores on each world's suite, one line each."""
    buckets = [label for *_, label in SIZE_BUCKETS]
    lines = [f"{'world':8s} {'HOTA':>6s} {'DetA':>6s} {'AssA':>6s} {'IDF1':>6s} {'MOTA':>6s} {'IDSW':>6s} "
             f"{'sequences':>9s}  recall by size at the model input ({', '.join(buckets)})"]
    for world, summary in summaries.items():
        m = summary["methods"]["sam3video"]
        by_size = summary.get("recall_by_size", {})
        recalls = "  ".join(f"{_recall_cell(by_size[b]):>16s}" for b in buckets if b in by_size)
        lines.append(f"{world:8s} {100 * m['HOTA']:6.1f} {100 * m['DetA']:6.1f} {100 * m['AssA']:6.1f} "
                     f"{100 * m['IDF1']:6.1f} {100 * m['MOTA']:6.1f} {int(m['IDSW']):6d} "
                     f"{summary['sequences']:9d}  {recalls}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/benchmark")
    parser.add_argument("--checkpoint", help="weights (default: the shipped demo model)")
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="as `track --precision`")
    parser.add_argument("--runtime", default="auto", choices=RUNTIMES, help="as `track --runtime`")
    parser.add_argument("--exemplar-clips", type=int, default=10,
                        help="clips with an ambiguous shape prompt for the exemplar line (0: skip)")
    parser.add_argument("--sam3-checkpoint", help="also score the official SAM 3 loop (--tracker sam3) of this "
                                                  "video checkpoint (tracker weights), e.g. a train_tracker export")
    parser.add_argument("--sam3-directions", nargs="+", default=["forward"], choices=DIRECTIONS,
                        help="score that loop once per `track --direction` (forward: \"sam3\", both: \"sam3 both\")")
    parser.add_argument("--resolution", type=int, help="the models' input size, as `track --resolution` "
                                                       "(default: the checkpoint's)")
    parser.add_argument("--worlds", nargs="+", default=["classic"], choices=WORLDS,
                        help="suites: classic (OUT), and train / heldout (OUT/<world>), side by side")
    args = parser.parse_args(argv)
    out = Path(args.out)
    summaries = {}
    for world in args.worlds:
        world_out = out if world == "classic" else out / world
        summary = run_benchmark(world_out, args.checkpoint, args.clips, args.seconds, args.device, world,
                                args.precision, sam3_checkpoint=args.sam3_checkpoint, runtime=args.runtime,
                                sam3_directions=tuple(args.sam3_directions), resolution=args.resolution)
        if world == "classic" and args.exemplar_clips:
            summary["exemplar_hota"] = run_exemplar_benchmark(out, args.checkpoint, args.exemplar_clips,
                                                              args.seconds, args.device)
            (out / "benchmark.json").write_text(json.dumps(summary, indent=2))
        print(f"[{world}]\n{format_summary(summary)}", flush=True)
        summaries[world] = summary
    if len(summaries) > 1:
        print(format_worlds(summaries))
        (out / "worlds.json").write_text(json.dumps({w: s["methods"]["sam3video"] for w, s in summaries.items()},
                                                    indent=2))


if __name__ == "__main__":
    main()

"""Where a frame's time goes in ``track`` with the official SAM 3 loop, by stage, for N objects.

    python tools/profile_sam3_loop.py                          # full size, 1 and 5 objects, 3 timed frames each
    python tools/profile_sam3_loop.py --size tiny --objects 1 3 --frames 4     # a quick check
    python tools/profile_sam3_loop.py --json runs/bench/profile_sam3_loop.json

The video model of ``--size`` (full: sam3.pt's layout and size) with seeded random weights tracks a 640x480 synthetic
clip written as an mp4 (so decoding is real), one prompt, through ``sam3video.run`` as ``track`` does (MOT, MOTS,
detections.npz and the overlay written). Random weights score every query alike, so the score and new-object
thresholds are set between the N-th and the (N+1)-th best scores of the first frame, and ``--max-objects N`` caps the
objects: about N detections a frame and N objects tracked (the loop's detection NMS off: random weights give every
query about the same mask). Each stage's seconds per frame come from wrapping the functions that do it (the detector
runs in a worker thread beside the loop, so the stages may add up to more than the wall time):

  decoding          the video's frames alone (measured apart, before the run)
  ViT + necks       ``SAM3VLBackbone.forward_image`` (the trunk and both necks)
  detector heads    ``Sam3Image.forward_grounding`` less the backbone (encoder, decoder, scoring, masks)
  detections post   ``video.detect.postprocess`` (masks to the frame, cleaning, NMS, appearance)
  tracker features  ``tracker_features`` (the tracker's convolutions on the second neck)
  propagation       ``TrackerBucket.propagate`` (memory attention + SAM heads, per object)
  memory encoding   ``TrackerBucket.encode_memory`` and ``add_masks`` (new objects)
  planning          ``plan_frame`` (association, hot-start, reconditioning, occlusion)
  loop output       ``postprocess_frame`` (masks to the video, non-overlap, boxes)
  writing           the run's files (``WindowFiles.write``: MOT, MOTS RLE, detections.npz, the overlay encoder)
  drawing           the overlay's drawing (``annotate``)
Prints one table (a column per object count); asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("decoding", "ViT + necks", "detector heads", "detections post", "tracker features", "propagation",
          "memory encoding", "planning", "loop output", "writing", "drawing")
CONFIGS = {"full": "sam3", "tiny": "tiny"}


@contextlib.contextmanager
def timed_functions(seconds: dict, targets: list[tuple[object, str, str]]):
    """Accumulate the wall time of each ``owner.name`` (a class's method or a module's function) into
    ``seconds[stage]`` while inside; restored after."""
    saved = []
    for owner, name, stage in targets:
        inner = getattr(owner, name)

        def timed(*args, __inner=inner, __stage=stage, **kwargs):
            start = time.perf_counter()
            try:
                return __inner(*args, **kwargs)
            finally:
                seconds[__stage] += time.perf_counter() - start

        saved.append((owner, name, inner))
        setattr(owner, name, timed)
    try:
        yield
    finally:
        for owner, name, inner in reversed(saved):
            setattr(owner, name, inner)


def targets() -> list[tuple[object, str, str]]:
    import sam3video.trackers.sam3.loop as loop
    import sam3video.video.predictor as predictor
    from sam3video.export.outputs import WindowFiles
    from sam3video.model.sam3_image import Sam3Image
    from sam3video.model.vl_combiner import SAM3VLBackbone
    from sam3video.export import overlay

    return [(SAM3VLBackbone, "forward_image", "ViT + necks"), (Sam3Image, "forward_grounding", "detector + backbone"),
            (predictor, "postprocess", "detections post"), (predictor, "tracker_features", "tracker features"),
            (loop.TrackerBucket, "propagate", "propagation"), (loop.TrackerBucket, "encode_memory", "memory encoding"),
            (loop.TrackerBucket, "add_masks", "memory encoding"), (loop, "plan_frame", "planning"),
            (loop, "postprocess_frame", "loop output"), (WindowFiles, "write", "writing"),
            (overlay, "annotate", "drawing")]


def loop_nms_off(predictor):
    """``predictor`` with the official loops' detection NMS off (``det_nms_thresh`` 0): random weights give every
    query about the same mask, which the official NMS (IoM 0.1) would cut to one detection."""
    c = predictor.config
    predictor.config = replace(c, sam3=replace(c.sam3, det_nms_thresh=0.0), sam31=replace(c.sam31, det_nms_thresh=0.0))
    return predictor


@contextlib.contextmanager
def without_loop_nms():
    """``loop_nms_off`` for the predictors of runs prepared inside."""
    import sam3video.run as run

    make = run.make_predictor

    def make_predictor(job, model):
        return loop_nms_off(make(job, model))

    run.make_predictor = make_predictor
    try:
        yield make_predictor
    finally:
        run.make_predictor = make


def write_clip(path: Path, frames: int) -> None:
    from sam3video.data.clips import generate_clip
    from sam3video.data.synthetic import WorldConfig
    from sam3video.export.overlay import OverlayWriter

    clip = generate_clip(0, WorldConfig(width=640, height=480, fps=10.0, duration_s=(frames + 1) / 10.0))
    with OverlayWriter(path, 10.0, 640, 480) as writer:
        for t in range(frames):
            writer.write(clip.image(t))


def nth_best_score(model, video: Path, n: int) -> float:
    """Midway between the N-th and the (N+1)-th highest query score of the first frame (the loop's joint
    probability): a threshold N queries pass, with room for the loop's own rounding."""
    from sam3video.sources.loader import open_video
    from sam3video.trackers.sam3.tracking import frame_detections
    from sam3video.video.detect import encode_prompts, run_frame
    from sam3video.model.geometry_encoders import prompt_from_boxes
    from sam3video.preprocess import preprocess_image

    detector = model.detector
    image = next(iter(open_video(str(video)))).image
    frames = [preprocess_image(torch.from_numpy(image).permute(2, 0, 1), detector.config.resolution)]
    with torch.inference_mode():
        outputs = run_frame(detector, 0, {"img_batch_all_stages": frames}, encode_prompts(detector, ["a red circle"]),
                            prompt_from_boxes([[]], detector.device))
    probs = frame_detections(outputs)[0].probs.float()
    ranked = torch.sort(probs, descending=True).values
    return float(ranked[n - 1] + ranked[n]) / 2 if n < len(ranked) else 0.0


def profile(model, video: Path, frames: int, objects: int, out: Path) -> dict:
    from sam3video.run import TrackJob, prepare
    from sam3video.sources.loader import open_video
    from sam3video.thresholds import Thresholds

    start = time.perf_counter()
    for _ in open_video(str(video)):
        pass
    decoding = time.perf_counter() - start
    threshold = nth_best_score(model, video, objects)
    job = TrackJob(source=str(video), out_dir=out, prompts=("a red circle",), tracker="sam3", max_objects=objects,
                   thresholds=Thresholds(score_threshold=threshold, low_score_threshold=threshold,
                                         new_track_threshold=threshold))
    seconds: dict = defaultdict(float)
    with timed_functions(seconds, targets()), without_loop_nms():
        start = time.perf_counter()
        run = prepare(job, model)
        summary = run.execute(None)
        wall = time.perf_counter() - start
    seconds["decoding"] = decoding
    seconds["detector heads"] = seconds.pop("detector + backbone", 0.0) - seconds["ViT + necks"]
    held = len(run.session.sam3.loops[0].obj_ids)
    return {"objects": objects, "tracked": held, "frames": summary["frames"], "wall_s": wall,
            "per_frame": {k: seconds.get(k, 0.0) / summary["frames"] for k in STAGES}}


def format_table(rows: list[dict], name: str) -> str:
    lines = [f"seconds per frame, {name}; {rows[0]['frames']} frames a run (the first included)",
             f"{'stage':<18}" + "".join(f"{str(r['objects']) + ' obj (' + str(r['tracked']) + ' held)':>16}" for r in rows)]
    for stage in STAGES:
        lines.append(f"{stage:<18}" + "".join(f"{r['per_frame'][stage]:16.3f}" for r in rows))
    lines.append(f"{'wall (the run)':<18}" + "".join(f"{r['wall_s'] / r['frames']:16.3f}" for r in rows))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(CONFIGS), default="full")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--frames", type=int, default=3, help="frames of the clip (each run tracks them all)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from sam3video.model.build_video import build_video_model, load_video_config

    torch.manual_seed(0)
    model = build_video_model(load_video_config(CONFIGS[args.size])).eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="profile_sam3_loop_") as tmp:
        video = Path(tmp) / "clip.mp4"
        write_clip(video, args.frames)
        for n in args.objects:
            rows.append(profile(model, video, args.frames, n, Path(tmp) / f"run{n}"))
            print(f"{n} objects: {rows[-1]['wall_s'] / rows[-1]['frames']:.2f} s per frame", file=sys.stderr,
                  flush=True)
    name = f"{args.size} size, {torch.get_num_threads()} threads, CPU"
    print(format_table(rows, name))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"size": args.size, "threads": torch.get_num_threads(), "rows": rows},
                                              indent=2))


if __name__ == "__main__":
    main()

"""The GPU path in one prepared run: parity with the CPU, then full-size speed of the official loops.

    python3 tools/gpu_check.py --json gpu_check.json     # on a GPU machine, from the repo root: about 5 minutes
    python3 tools/gpu_check.py --device cpu --size tiny --frames 3 --objects 1 2   # a smoke test (the tests run it)

1. Parity, the device against the CPU (TF32 off): ``check_device.py``'s checks (the official tiny parity fixture;
   the demo model with our association tracker), then the two official loops: the demo video model's SAM 3 loop on
   the demo clip's first second, and the tiny SAM 3.1 model (seeded weights, thresholds lowered so that objects are
   tracked) on a drifting random clip. Each frame must give the CPU's ids, and each object's mask IoU >= 0.99.
2. Speed: the video model of ``--size`` (full: sam3.pt's and sam3.1_multiplex.pt's sizes, seeded random weights)
   tracks ``--frames`` 640x480 synthetic frames, one prompt, thresholds at 0 and the loop's detection NMS off so that
   random detections start objects, at most N of them (``--max-objects``) for each N of ``--objects``; in fp32, bf16 (``--precision bf16``) and bf16
   with the vision trunk under ``torch.compile``. A warm-up run over 4 frames first (compilation), then the timed
   run: frames/s of the stream, the most objects the loop held at once, peak device memory.
The official code is not run here (its venv cannot be carried to a machine without internet). Prints one line per
check and a speed table; ``--json`` keeps everything. Exits 1 if a parity check fails.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import check_device  # noqa: E402  (this folder's: parity fixture and association checks, ``report``)
from profile_sam3_loop import loop_nms_off  # noqa: E402  (random weights: the loops' detection NMS off)

IOU_TOL = 0.99
MODES = ("fp32", "bf16", "bf16+compile")
SIZES = {"full": ("sam3", "sam3.1"), "tiny": ("tiny", str(ROOT / "tests/data/sam31_parity/config.toml"))}
WARMUP_FRAMES = 4


def loop_runs(model_for, frames: np.ndarray, prompt: str, device: torch.device, thresholds=None) -> dict:
    """Per device (the CPU and ``device``): each frame's {id: mask} from the official loop of ``model_for(dev)``."""
    from sam3video.run import TrackJob, make_predictor
    from sam3video.thresholds import Thresholds

    runs = {}
    for dev in (torch.device("cpu"), device):
        job = TrackJob(source=None, out_dir="", prompts=(prompt,), tracker="sam3", thresholds=thresholds or Thresholds())
        predictor = make_predictor(job, model_for(dev))
        runs[dev.type] = [{int(i): m for i, m in zip(r.detections.tracker_id, r.detections.mask)}
                          for r in predictor.track(frames, prompts=[prompt], source_fps=10.0)]
    return runs


def compare_loop(name: str, runs: dict, device: torch.device) -> None:
    reference, tested = runs["cpu"], runs[device.type]
    other_ids = abs(len(reference) - len(tested)) + sum(a.keys() != b.keys() for a, b in zip(reference, tested))
    objects = sum(len(a) for a in reference)
    check_device.report(f"{name}: frames with other ids", float(other_ids), 0,
                        f"{len(reference)} frames, {objects} reference masks")
    if objects == 0:
        check_device.report(f"{name}: the reference tracked nothing", float("inf"), 0)
    if other_ids or objects == 0:
        return
    worst = min((np.logical_and(a[i], b[i]).sum() / max(1, np.logical_or(a[i], b[i]).sum())
                 for a, b in zip(reference, tested) for i in a), default=1.0)
    check_device.report(f"{name}: 1 - lowest mask IoU", 1.0 - float(worst), 1.0 - IOU_TOL)


def check_loops(device: torch.device) -> None:
    from sam3video.model.video_checkpoint import load_video_model
    from sam3video.sources.loader import open_video
    from sam3video.thresholds import Thresholds

    frames = np.stack([f.image for f in open_video(str(ROOT / "demos/shapes/video.mp4"), end=1.0)])
    compare_loop("SAM 3 loop (demo video model)",
                 loop_runs(lambda dev: load_video_model("demo-video", device=dev), frames, "yellow circle", device),
                 device)
    import check_sam31_loop_parity

    seeded = check_sam31_loop_parity.load_model(seed=0)
    g = torch.Generator().manual_seed(5)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 8, generator=g), size=(48, 64), mode="bilinear")
    drift = torch.cat([torch.roll(base, 2 * t, dims=-1) for t in range(8)]).permute(0, 2, 3, 1)
    low = Thresholds(score_threshold=0.14, new_track_threshold=0.15)
    compare_loop("SAM 3.1 loop (tiny, seeded)",
                 loop_runs(lambda dev: _copy_to(seeded, dev), (drift * 255).round().to(torch.uint8).numpy(),
                           "a red circle", device, low), device)


def _copy_to(model, device: torch.device):
    import copy

    return copy.deepcopy(model).to(device).eval()


def synthetic_frames(count: int) -> np.ndarray:
    from sam3video.data.clips import generate_clip
    from sam3video.data.synthetic import WorldConfig

    clip = generate_clip(0, WorldConfig(width=640, height=480, fps=30.0, duration_s=(count + 1) / 30.0))
    return np.stack([clip.image(t) for t in range(count)])


def seeded_video_model(config: str, device: torch.device):
    from sam3video.model.build_video import build_video_model, load_video_config

    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs (the full model's random init takes minutes on a CPU)
        return build_video_model(load_video_config(config)).eval()


def time_loop(model, mode: str, max_objects: int, frames: np.ndarray, device: torch.device) -> dict:
    """One row: a warm-up run, then the timed one; frames/s, objects tracked, peak device memory."""
    from sam3video.run import TrackJob, make_predictor
    from sam3video.thresholds import Thresholds

    precision = "fp32" if mode == "fp32" else "bf16"
    job = TrackJob(source=None, out_dir="", prompts=("a red circle",), tracker="sam3", precision=precision,
                   max_objects=max_objects,
                   thresholds=Thresholds(score_threshold=0.0, low_score_threshold=0.0, new_track_threshold=0.0))
    predictor = loop_nms_off(make_predictor(job, model))  # converts the model to ``precision`` (in place, once)
    if mode.endswith("+compile"):
        trunk = model.detector.backbone.vision_backbone.trunk
        if not hasattr(trunk, "_compiled"):
            trunk._compiled = trunk.forward = torch.compile(trunk.forward)
    for _ in predictor.track(frames[:WARMUP_FRAMES], prompts=["a red circle"], source_fps=30.0):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    session = predictor.start_session(["a red circle"], fps=30.0)
    start, objects = time.perf_counter(), 0
    for _ in predictor.track(frames, session=session, source_fps=30.0):
        objects = max(objects, len(session.sam3.loops[0].obj_ids))  # tracked, confirmed or not yet
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return {"mode": mode, "max_objects": max_objects, "frames": len(frames), "seconds": seconds,
            "frames_per_s": len(frames) / seconds, "objects": objects,
            "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}


def speed(device: torch.device, size: str, frame_count: int, object_counts: list[int], modes: list[str]) -> list[dict]:
    rows = []
    frames = synthetic_frames(frame_count)
    for version, config in zip(("sam3", "sam3.1"), SIZES[size]):
        model = seeded_video_model(config, device)
        for mode in modes:  # fp32 first: the bf16 modes convert the model in place
            for n in object_counts:
                row = {"version": version, **time_loop(model, mode, n, frames, device)}
                rows.append(row)
                print(f"speed {version:6s} {mode:13s} <= {n:2d} objects: {row['frames_per_s']:7.2f} frames/s, "
                      f"{row['objects']} tracked" + (f", peak {row['peak_gib']:.1f} GiB" if row["peak_gib"] else ""),
                      flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="the speed rows' model size")
    parser.add_argument("--frames", type=int, default=16, help="timed frames per speed row")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 5, 16], help="--max-objects of the rows")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--skip-parity", action="store_true")
    parser.add_argument("--json", help="write the checks and the speed rows here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or device.type
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}, device {device} ({name})", flush=True)
    check_device.failures.clear()
    started = time.perf_counter()
    if not args.skip_parity:
        check_device.check_parity(device)
        check_device.check_video(device, seed=0)
        check_loops(device)
    parity_s = time.perf_counter() - started
    rows = speed(device, args.size, args.frames, args.objects, args.modes)
    failures = list(check_device.failures)
    print("all parity checks passed" if not failures else f"{len(failures)} check(s) failed: {', '.join(failures)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "torch": torch.__version__, "failures": failures,
                                               "parity_s": parity_s, "speed": rows}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

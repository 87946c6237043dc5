"""The tracker's cost per frame by object count: the SAM 3 loop's tracker against SAM 3.1's multiplex tracker,
ours, and the official SAM 3.1 code where its venv is given — one command, one table.

    python tools/bench_multiplex.py                                   # full size, 1 / 4 / 16 / 64 objects
    python tools/bench_multiplex.py --objects 1 16 --frames 8 --official ~/.cache/sam31-oracle/bin/python
    python tools/bench_multiplex.py --size tiny                      # a quick check
    python tools/bench_multiplex.py --device cuda --bf16 --families sam3.1 --objects 1 16 64   # on a GPU

Protocol (the same for each row): seeded random weights at the official size, random features of the tracker's
shapes (288², 144², 72² x 256 at full size); a mask prompt for every object on frame 0, then ``--frames`` frames
each propagated and encoded into memory, as the loop does per frame (its detector is not timed: it costs the same
for both). Printed: seconds per frame once the 7-frame memory window is full (mean), per object, and the memory
kept after the last frame. SAM 3 tracks every object on its own (``MaskPropagator``); SAM 3.1 packs 16 objects
per bucket (``MultiplexTrackerState``), so 1-16 objects cost one bucket. ``--official PYTHON``: the official
multiplex tracker (Meta's main @96914d2, CPU-patched; tools/oracle31_bench_child.py in that venv) under the same
protocol. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

CONFIGS = {"full": ("sam3", "sam3.1"), "tiny": ("tiny", str(ROOT / "tests/data/sam31_parity/config.toml"))}


DEVICE = torch.device("cpu")
AUTOCAST = False


def autocast():
    import contextlib

    return torch.autocast(DEVICE.type, dtype=torch.bfloat16) if AUTOCAST else contextlib.nullcontext()


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def sam31_features(tracker, generator: torch.Generator):
    from sam3video.trackers.sam31.loop import Sam31Features

    h = tracker.image_size // tracker.backbone_stride
    c = tracker.hidden_dim
    paths = []
    for interactive in (True, False):
        maps = [torch.randn(1, c, s, s, generator=generator).to(DEVICE) for s in (4 * h, 2 * h, h)]
        pos = [torch.randn(1, c, s, s, generator=generator).to(DEVICE) for s in (4 * h, 2 * h, h)]
        with torch.inference_mode(), autocast():
            paths.append(tracker.tracker_features({"backbone_fpn": maps, "vision_pos_enc": pos}, interactive))
    return Sam31Features(*paths)


def prompt_masks(objects: int, size: int) -> torch.Tensor:
    masks = torch.zeros(objects, size, size, dtype=torch.bool)
    for i in range(objects):  # one box-shaped mask each, spread over the frame
        y, x = (i * 97) % (size // 2), (i * 53) % (size // 2)
        masks[i, y:y + size // 4, x:x + size // 4] = True
    return masks


def run_sam31(tracker, objects: int, frames: int, generator: torch.Generator) -> dict:
    """Our multiplex tracker: one state, ceil(objects / 16) buckets."""
    from sam3video.model.sam3_tracker_utils import apply_non_overlapping_constraints
    from sam3video.trackers.sam31.loop import MultiplexTrackerState

    state = MultiplexTrackerState(tracker, frames + 1, (tracker.image_size,) * 2, torch.bfloat16)
    masks = prompt_masks(objects, tracker.sam_image_embedding_size * 16).to(DEVICE)
    with torch.inference_mode(), autocast():
        start = time.perf_counter()
        state.add_masks(0, list(range(objects)), masks, sam31_features(tracker, generator))
        sync()
        prompt_s = time.perf_counter() - start
        seconds = []
        for t in range(1, frames + 1):
            features = sam31_features(tracker, generator)
            start = time.perf_counter()
            low, _ = state.propagate(t, features)
            size = tracker.maskmem_backbone.mask_downsampler.interpol_size
            high = torch.nn.functional.interpolate(low[:, None], size=size, mode="bilinear", align_corners=False)
            scores = torch.where((high > 0).any(dim=(-1, -2)), 10.0, -10.0)
            state.encode_memory(t, apply_non_overlapping_constraints(high), scores, features)
            state.evict(t)
            sync()
            seconds.append(time.perf_counter() - start)
    full = seconds[tracker.num_maskmem - 1:] or seconds[-1:]
    per_frame = sum(full) / len(full)
    return {"objects": objects, "buckets": state.mplex.num_buckets, "prompt_s": prompt_s, "per_frame_s": per_frame,
            "per_object_s": per_frame / objects, "memory_mib": state.nbytes() / 2**20}


def run_sam3(tracker, objects: int, frames: int, generator: torch.Generator) -> dict:
    import contextlib

    import bench_sam3_tracker

    row = bench_sam3_tracker.run(tracker, objects, frames, generator, contextlib.nullcontext)
    return {"objects": objects, "buckets": objects, "prompt_s": row["prompt_s"], "per_frame_s": row["per_frame_s"],
            "per_object_s": row["per_object_s"], "memory_mib": row["bank_mib"]}


def run_official(python: str, size: str, objects: int, frames: int, seed: int) -> dict:
    extra = ["--device", DEVICE.type] + (["--bf16"] if AUTOCAST else [])
    out = subprocess.run([python, str(ROOT / "tools" / "oracle31_bench_child.py"), "--size", size, "--objects",
                          str(objects), "--frames", str(frames), "--seed", str(seed),
                          "--threads", str(torch.get_num_threads()), *extra],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(CONFIGS), default="full")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--frames", type=int, default=8, help="propagated frames per row")
    parser.add_argument("--families", nargs="+", choices=["sam3", "sam3.1"], default=["sam3", "sam3.1"])
    parser.add_argument("--official", metavar="PYTHON", help="the official SAM 3.1 venv's python (oracle31)")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast around the tracker (the official GPU mode)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    global DEVICE, AUTOCAST
    DEVICE, AUTOCAST = torch.device(args.device), args.bf16
    if args.threads:
        torch.set_num_threads(args.threads)
    from sam3video.model.build_video import build_multiplex_tracker, build_tracker, load_video_config

    sam3_config, sam31_config = CONFIGS[args.size]
    torch.manual_seed(args.seed)
    trackers = {}
    if "sam3" in args.families:
        video = load_video_config(sam3_config)
        trackers["sam3"] = (build_tracker(video.detector, video.tracker).eval(), run_sam3)
    if "sam3.1" in args.families:
        video = load_video_config(sam31_config)
        trackers["sam3.1"] = (build_multiplex_tracker(video.detector, video.multiplex).eval().to(DEVICE), run_sam31)
    if "sam3" in trackers and DEVICE.type != "cpu":
        raise SystemExit("the SAM 3 rows run on the CPU only here (tools/bench_sam3_tracker.py)")
    mode = "bf16 autocast" if AUTOCAST else "fp32"
    print(f"--size {args.size}, {mode} (memories bf16), {DEVICE}, {torch.get_num_threads()} threads, {args.frames} frames per row; "
          "seconds per frame once the memory window is full")
    print(f"{'tracker':>16s} {'objects':>7s} {'buckets':>7s} {'prompt s':>8s} {'s/frame':>8s} {'s/object':>8s} "
          f"{'memory MiB':>10s}")
    for objects in args.objects:
        rows = [(f"ours {name}", runner(tracker, objects, args.frames, torch.Generator().manual_seed(args.seed)))
                for name, (tracker, runner) in trackers.items()]
        if args.official:
            rows.append(("official sam3.1", run_official(args.official, args.size, objects, args.frames, args.seed)))
        for name, row in rows:
            print(f"{name:>16s} {row['objects']:7d} {row['buckets']:7d} {row['prompt_s']:8.2f} {row['per_frame_s']:8.2f} "
                  f"{row['per_object_s']:8.3f} {row['memory_mib']:10.1f}", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (ours)")


if __name__ == "__main__":
    main()

"""What the SAM 3 tracker (``tracker.*`` of sam3.pt) costs per frame on this machine, by object count.

    python tools/bench_sam3_tracker.py                          # full size, 1 / 5 / 20 objects, fp32
    python tools/bench_sam3_tracker.py --objects 1 5 --frames 10 --precision bf16
    python tools/bench_sam3_tracker.py --size tiny              # a quick check

The full-size tracker (``build_tracker`` of configs/sam3.toml, seeded random weights) tracks B objects
with ``MaskPropagator``: a mask prompt on frame 0, then ``--frames`` propagated frames (memory attention
over up to 7 memories and 16 object pointers, the SAM heads, the memory encoder), on random features
of the second neck's shapes (288², 144², 72² x 256 at full size). The detector's backbone is not part
of these times (see tools/bench_official.py). Printed per object count: seconds per propagated frame
(the mean over the frames after the memory window is full, when each frame reads the most memory),
per object, the bank's size after the last frame (bounded by ``MemoryBank.evict``) and per object, and
the process's peak RSS. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time

import torch

from sam3video.model.build_video import build_tracker, load_video_config
from sam3video.trackers.sam3.propagation import MaskPropagator, frame_features

SIZES = {"full": "sam3", "tiny": "tiny"}


def random_features(tracker, generator: torch.Generator):
    """One frame's ``FrameFeatures`` from random second-neck maps of the tracker's shapes."""
    h = tracker.image_size // tracker.backbone_stride
    channels = tracker.hidden_dim
    sizes = [(4 * h, 4 * h), (2 * h, 2 * h), (h, h)]
    maps = [torch.randn(1, channels, *s, generator=generator) for s in sizes]
    pos = [torch.randn(1, channels, *s, generator=generator) for s in sizes]
    with torch.inference_mode():
        return frame_features(tracker, tracker.tracker_backbone_out({"backbone_fpn": maps, "vision_pos_enc": pos}))


def run(tracker, objects: int, frames: int, generator: torch.Generator, autocast) -> dict:
    """Prompt ``objects`` masks on frame 0, propagate ``frames`` frames; the timings and bank size."""
    propagator = MaskPropagator(tracker, num_frames=frames + 1)
    size = tracker.input_mask_size
    masks = torch.zeros(objects, size, size, dtype=torch.bool)
    for i in range(objects):  # one box-shaped mask each, spread over the frame
        y, x = (i * 97) % (size // 2), (i * 53) % (size // 2)
        masks[i, y : y + size // 4, x : x + size // 4] = True
    with autocast():
        start = time.perf_counter()
        propagator.add_masks(0, masks, random_features(tracker, generator))
        prompt_s = time.perf_counter() - start
        seconds = []
        for t in range(1, frames + 1):
            features = random_features(tracker, generator)
            start = time.perf_counter()
            propagator.propagate(t, features)
            seconds.append(time.perf_counter() - start)
    full = seconds[tracker.num_maskmem - 1:] or seconds[-1:]  # once the memory window is full
    per_frame = sum(full) / len(full)
    bank = propagator.bank.nbytes()
    return {"objects": objects, "prompt_s": prompt_s, "per_frame_s": per_frame, "per_object_s": per_frame / objects,
            "bank_mib": bank / 2**20, "bank_per_object_mib": bank / 2**20 / objects}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 5, 20])
    parser.add_argument("--frames", type=int, default=10, help="propagated frames per object count")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: autocast around the tracker (as the official code runs it on CUDA)")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    video = load_video_config(SIZES[args.size])
    torch.manual_seed(args.seed)
    tracker = build_tracker(video.detector, video.tracker).eval()
    generator = torch.Generator().manual_seed(args.seed)

    def autocast():
        if args.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    parameters = sum(p.numel() for p in tracker.parameters())
    print(f"tracker: --size {args.size}, {parameters / 1e6:.1f} M parameters, image {tracker.image_size}, "
          f"{args.precision}, {torch.get_num_threads()} threads, {args.frames} propagated frames per row")
    print(f"{'objects':>7s} {'prompt s':>9s} {'s/frame':>8s} {'s/object':>9s} {'bank MiB':>9s} {'MiB/object':>10s}")
    for objects in args.objects:
        row = run(tracker, objects, args.frames, generator, autocast)
        print(f"{row['objects']:7d} {row['prompt_s']:9.2f} {row['per_frame_s']:8.2f} {row['per_object_s']:9.3f} "
              f"{row['bank_mib']:9.1f} {row['bank_per_object_mib']:10.1f}", flush=True)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()

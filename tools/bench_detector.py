"""Per-frame time of the SAM 3 detector on this machine, split by stage, and peak memory.

    python tools/bench_detector.py                       # full size (configs/sam3.toml), random weights
    python tools/bench_detector.py --config tiny --frames 5
    python tools/bench_detector.py --checkpoint sam3.pt  # the real weights (same timings)

Prints numbers; asserts nothing. Stages: backbone (ViT + neck) per frame, text (once per prompt),
encoder + decoder + heads per frame and prompt.
"""

import argparse
import resource
import statistics
import time

import torch

from sam3video import build_model, load_model
from sam3video.model.sam3_image import FindStage


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def timed(fn, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="sam3", help="preset name or config file (default: sam3)")
    parser.add_argument("--checkpoint", help="weights to load (default: random weights)")
    parser.add_argument("--frames", type=int, default=3, help="timed frames after one warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--prompt", default="a red circle")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    model = load_model(args.checkpoint, args.config, "cpu") if args.checkpoint else build_model(args.config)
    build_s = time.perf_counter() - start
    cfg = model.config
    params = sum(p.numel() for p in model.parameters())
    print(f"model {cfg.name}: {params / 1e6:.1f} M parameters, {cfg.resolution} px, built in {build_s:.1f} s, "
          f"{torch.get_num_threads()} threads, fp32 CPU")

    image = torch.randn(1, 3, cfg.resolution, cfg.resolution)
    find = FindStage(img_ids=torch.tensor([0]), text_ids=torch.tensor([0]))
    with torch.inference_mode():
        model.backbone.forward_image(image)  # warm-up
        backbone_out, backbone_t = timed(lambda: model.backbone.forward_image(image), args.frames)
        text_out, text_t = timed(lambda: model.backbone.forward_text([args.prompt], device="cpu"), args.frames)
        backbone_out.update(text_out)
        _, heads_t = timed(
            lambda: model.forward_grounding(backbone_out, find, model._get_dummy_prompt()), args.frames
        )
    rows = [("backbone (per frame)", backbone_t), ("text (once per prompt)", text_t),
            ("encoder+decoder+heads (per frame, prompt)", heads_t)]
    print(f"{'stage':44s} {'median s':>9s} {'min s':>8s}")
    for name, times in rows:
        print(f"{name:44s} {statistics.median(times):9.3f} {min(times):8.3f}")
    per_frame = statistics.median(backbone_t) + statistics.median(heads_t)
    print(f"{'per frame, one prompt':44s} {per_frame:9.3f}   ({1 / per_frame:.3g} frames/s)")
    print(f"peak RSS: {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()

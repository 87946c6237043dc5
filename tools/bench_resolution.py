"""Seconds per frame at several input sizes (``track --resolution``) in each precision mode, on this CPU.

    python tools/bench_resolution.py                        # full size at 1008 644 504 336 px, fp32 and int8
    python tools/bench_resolution.py --sizes 1008 336 --precisions fp32 bf16+openvino --json runs/bench/res.json
    python tools/bench_resolution.py --show runs/bench/res.json

The full model (``configs/sam3.toml``; ``--config`` for another) with seeded random weights, built at each size as
``--resolution`` builds it (the same weights at every size: the position embedding and the RoPE tables follow the
grid), runs the video path end to end on the same 640x480 synthetic frames (``bench_official.time_video``: a warm-up
run, then the timed frames; a fresh model per size and mode, as modes convert in place). ``PRECISION+openvino`` is
``--precision PRECISION --runtime openvino`` (its first run per size converts the trunk, not timed). Prints a table;
asserts nothing. What sam3.pt loses at other sizes needs the real weights; the demo model's loss is measured by
``python -m sam3video.eval.benchmark --resolution N``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_official as bench  # noqa: E402  (this folder's: the frames, timing and CPU helpers)

DEFAULT_SIZES = (1008, 644, 504, 336)
DEFAULT_MODES = ("fp32", "int8")  # what an AVX2-only CPU runs well; bf16 without bf16 units is emulated (8x slower)


def measure(config: str, size: int, mode: str, frames_dir: Path, prompt: str, seed: int) -> dict:
    """One size in one mode: build, convert, time the video path; seconds per frame and per stage."""
    import torch

    from sam3video import build_model
    from sam3video.model.build import at_resolution, load_config
    from sam3video.model.precision import apply_precision

    precision, _, runtime = mode.partition("+")
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model(at_resolution(load_config(config), size)).eval()
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    apply_precision(model, precision, runtime or "torch")
    convert_s = time.perf_counter() - start
    row = bench.time_video(model, str(frames_dir), prompt, precision, bench.DEFAULT_THRESHOLD, runtime or "torch")
    return {"size": size, "mode": mode, "build_s": build_s, "convert_s": convert_s,
            **{k: row[k] for k in ("total", "backbone", "heads", "post", "text", "per_frame_total")}}


def format_table(result: dict) -> str:
    rows = result["rows"]
    sizes = sorted({r["size"] for r in rows}, reverse=True)
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    by = {(r["size"], r["mode"]): r for r in rows}
    native = sizes[0]
    lines = [f"seconds per frame (video path end to end; backbone in brackets), {result['cpu']}",
             f"{'size':>6} {'grid':>5} " + " ".join(f"{m:>22}" for m in modes) + "   x largest (first mode)"]
    for size in sizes:
        cells = []
        for mode in modes:
            r = by.get((size, mode))
            cells.append(f"{r['total']:8.2f} ({r['backbone']:7.2f})".rjust(22) if r else f"{'-':>22}")
        first = by.get((size, modes[0])), by.get((native, modes[0]))
        ratio = f"{first[0]['total'] / first[1]['total']:.2f}x" if all(first) else "-"
        lines.append(f"{size:>6} {size // 14:>5} " + " ".join(cells) + f"   {ratio:>8}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="sam3", help="preset or config file (default: sam3, the full model)")
    parser.add_argument("--sizes", nargs="+", type=int, default=list(DEFAULT_SIZES), help="input sizes, pixels")
    parser.add_argument("--precisions", nargs="+", choices=bench.MODES, default=list(DEFAULT_MODES))
    parser.add_argument("--frames", type=int, default=bench.DEFAULT_FRAMES, help="timed frames, after the warm-up")
    parser.add_argument("--warmup", type=int, default=bench.DEFAULT_WARMUP, help="warm-up frames (not timed)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--prompt", default="a red circle")
    parser.add_argument("--seed", type=int, default=0, help="weights and frames")
    parser.add_argument("--json", help="write the rows here (after every row: a long run keeps what it measured)")
    parser.add_argument("--show", metavar="JSON", help="print the table of a saved --json run (runs nothing)")
    args = parser.parse_args(argv)
    if args.show:
        print(format_table(json.loads(Path(args.show).read_text())))
        return
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cpu = bench.cpu_info()
    flags = ", ".join(f for f, on in cpu["flags"].items() if on)
    result = {"cpu": f"{cpu['model']}, {torch.get_num_threads()} threads, flags: {flags}", "config": args.config,
              "torch": bench.torch_info(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench_resolution_") as tmp:
        bench.make_frames(Path(tmp), args.warmup, args.frames, args.seed)
        for mode in args.precisions:
            for size in args.sizes:
                row = measure(args.config, size, mode, Path(tmp), args.prompt, args.seed)
                result["rows"].append(row)
                bench.log(f"{size} px {mode}: {[round(t, 2) for t in row['per_frame_total']]} s per frame")
                if args.json:
                    bench.write_json(args.json, result)
    print(format_table(result))


if __name__ == "__main__":
    sys.exit(main())

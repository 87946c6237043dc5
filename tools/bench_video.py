"""Frames/s and peak memory of `sam3video track` on a 3 s and a 30 s clip of the same size, side by side.

    python tools/bench_video.py                      # tiny config, random weights (or --checkpoint)
    python tools/bench_video.py --seconds 3 30 120   # any lengths
    python tools/bench_video.py --checkpoint demo --size 640x360 --overlay both   # with and without overlay.mp4

Each run is a fresh process, so its peak RSS is its own. Memory should be flat in clip length: the
frames are decoded lazily and only a few frames and backbone outputs are kept at a time. Prints numbers;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_clip(path: Path, seconds: float, width: int, height: int, fps: float) -> None:
    from sam3video.data.dataset import write_clip
    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip

    clip = generate_clip(7, WorldConfig(width=width, height=height, fps=fps, duration_s=seconds))
    out = write_clip(clip, path.parent / path.stem, prompts=())
    (out / "video.mp4").rename(path)


def child(args) -> None:
    """Run one `track` in this process and print its timings and peak RSS as JSON."""
    from sam3video.cli import main

    start = time.perf_counter()
    code = main(["track", args.video, *sum((["--prompt", p] for p in args.prompt), []), "--out", args.out,
                 "--quiet", *([] if args.render else ["--no-render"]),
                 *(["--checkpoint", args.checkpoint] if args.checkpoint else []),
                 *(["--config", args.config] if args.config else [])])
    elapsed = time.perf_counter() - start
    summary = json.loads((Path(args.out) / "summary.json").read_text())
    print(json.dumps({"code": code, "frames": summary["frames"], "elapsed_s": elapsed,
                      "frames_per_s": summary["timings"]["frames_per_s"],
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[3.0, 30.0])
    parser.add_argument("--size", default="320x240", help="WIDTHxHEIGHT of the generated clips")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--prompt", action="append", default=None)
    parser.add_argument("--checkpoint", help="weights (default: tiny config with random weights)")
    parser.add_argument("--config", help="model config when the checkpoint has none")
    parser.add_argument("--overlay", choices=["off", "on", "both"], default="off",
                        help="write overlay.mp4 too (on), or measure without and with it (both)")
    parser.add_argument("--render", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--video", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.prompt = args.prompt or ["red circle"]
    if args.child:
        child(args)
        return
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            import torch

            from sam3video import build_model

            model = build_model("tiny")
            checkpoint = str(Path(tmp) / "tiny.pt")
            torch.save({"model": model.state_dict(), "config": model.config.to_dict()}, checkpoint)
        renders = {"off": [False], "on": [True], "both": [False, True]}[args.overlay]
        rows = {render: [] for render in renders}
        for seconds in args.seconds:
            video = Path(tmp) / f"clip_{seconds:g}s.mp4"
            make_clip(video, seconds, width, height, args.fps)
            for render in renders:
                command = [sys.executable, __file__, "--child", "--video", str(video), "--out",
                           str(Path(tmp) / f"run_{seconds:g}_{render}"), "--checkpoint", checkpoint,
                           *sum((["--prompt", p] for p in args.prompt), []), *(["--render"] if render else [])]
                if args.config:
                    command += ["--config", args.config]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    sys.exit(f"run failed for {seconds:g} s: {result.stderr.strip().splitlines()[-1:]}")
                rows[render].append((seconds, json.loads(result.stdout.strip().splitlines()[-1])))
    for render, table in rows.items():
        print(f"clip {width}x{height} @ {args.fps:g} fps, prompts {args.prompt}, end to end (decode, detect, track, "
              f"write MOT/MOTS{', overlay.mp4' if render else '; no overlay'})")
        print(f"{'clip':>8s} {'frames':>7s} {'frames/s':>9s} {'peak RSS MiB':>13s}")
        for seconds, row in table:
            print(f"{seconds:7g}s {row['frames']:7d} {row['frames_per_s']:9.1f} {row['peak_rss_mib']:13.0f}")
        if len(table) >= 2:
            ratio = table[-1][1]["peak_rss_mib"] / table[0][1]["peak_rss_mib"]
            print(f"peak RSS ratio {table[-1][0]:g} s / {table[0][0]:g} s: {ratio:.2f}")


if __name__ == "__main__":
    main()

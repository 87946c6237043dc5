"""Frames/s of `sam3video batch` with 1 and 2 workers against a shell loop of `sam3video track`, one run.

    python tools/bench_batch.py                          # 8 clips of 10 s, 320x240, 10 fps, demo model
    python tools/bench_batch.py --clips 16 --seconds 5 --workers 1 2 4 --json runs/bench_batch.json

The same generated clips (the synthetic world, seeds 0..N-1) go through: a loop of `sam3video track`
processes, one after the other, as a shell would run them; then `sam3video batch --workers W` for each
W (a fresh local Ray instance each). Every run writes the usual outputs. Prints wall time, frames/s,
the time outside tracking (process start, imports, model loads, Ray), and the model-load time a worker
pays once where the loop pays it per video. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_clips(folder: Path, count: int, seconds: float, width: int, height: int, fps: float) -> list[Path]:
    from sam3video.data.dataset import write_clip
    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip

    paths = []
    for seed in range(count):
        clip = generate_clip(seed, WorldConfig(width=width, height=height, fps=fps, duration_s=seconds))
        out = write_clip(clip, folder / f".clip{seed}", prompts=())
        path = folder / f"clip{seed:02d}.mp4"
        (out / "video.mp4").rename(path)
        paths.append(path)
    return paths


def cli() -> list[str]:
    return [sys.executable, "-m", "sam3video.cli"]


def tracked_seconds(out: Path) -> tuple[int, float]:
    """(frames, seconds of tracking and writing) from a run's summary.json."""
    summary = json.loads((out / "summary.json").read_text())
    return summary["frames"], summary["timings"]["total_s"]


def run_loop(clips: list[Path], out: Path, track_args: list[str]) -> dict:
    start = time.perf_counter()
    frames = tracked = 0.0
    for clip in clips:
        subprocess.run([*cli(), "track", str(clip), "--out", str(out / clip.stem), "--quiet", *track_args],
                       check=True, stdout=subprocess.DEVNULL)
        f, s = tracked_seconds(out / clip.stem)
        frames, tracked = frames + f, tracked + s
    wall = time.perf_counter() - start
    return {"run": "shell loop of track", "workers": 1, "wall_s": wall, "frames": int(frames),
            "tracking_s": tracked, "overhead_s": wall - tracked}


def run_batch(clips: list[Path], out: Path, workers: int, track_args: list[str]) -> dict:
    start = time.perf_counter()
    subprocess.run([*cli(), "batch", *map(str, clips), "--out", str(out), "--workers", str(workers), "--quiet",
                    *track_args], check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    index = json.loads((out / "index.json").read_text())
    frames = index["totals"]["frames"]
    tracked = sum(row["seconds"] for row in index["videos"])  # summed over workers (they overlap)
    return {"run": f"batch --workers {workers}", "workers": workers, "wall_s": wall, "frames": frames,
            "tracking_s": tracked, "overhead_s": None}


def model_load_s(checkpoint: str | None) -> float:
    """One model load in a fresh process that has already imported torch (what a worker pays once)."""
    code = ("import time, torch; from sam3video.model.checkpoint import load_model; t = time.perf_counter(); "
            f"load_model({checkpoint!r}, None, 'cpu'); print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def startup_s() -> float:
    """Process start to the CLI's first line of work: interpreter, imports (torch), nothing tracked."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, sam3video.run, sam3video.video.predictor"], check=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--size", default="320x240")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--prompt", default="circle")
    p.add_argument("--checkpoint", help="default: the demo model")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    width, height = map(int, args.size.split("x"))
    track_args = ["--prompt", args.prompt, "--device", "cpu", *(["--checkpoint", args.checkpoint] if args.checkpoint
                                                                  else [])]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = make_clips(tmp, args.clips, args.seconds, width, height, args.fps)
        rows = [run_loop(clips, tmp / "loop", track_args)]
        rows += [run_batch(clips, tmp / f"batch{w}", w, track_args) for w in args.workers]
        load, start = model_load_s(args.checkpoint), startup_s()
    loop_wall = rows[0]["wall_s"]
    print(f"{args.clips} clips of {args.seconds:g} s, {width}x{height} at {args.fps:g} fps, prompt {args.prompt!r}, "
          f"model {args.checkpoint or 'demo'}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print(f"{'run':<22} {'wall_s':>7} {'frames':>7} {'frames/s':>9} {'vs loop':>8} {'outside tracking_s':>19}")
    for row in rows:
        outside = row["overhead_s"] if row["overhead_s"] is not None else row["wall_s"] - row["tracking_s"] / row[
            "workers"]
        row["frames_per_s"] = row["frames"] / row["wall_s"]
        row["outside_tracking_s"] = outside
        print(f"{row['run']:<22} {row['wall_s']:7.1f} {row['frames']:7d} {row['frames_per_s']:9.1f} "
              f"{loop_wall / row['wall_s']:7.2f}x {outside:19.1f}")
    print(f"per process: start and imports {start:.1f} s, model load {load:.2f} s; the loop pays both per video "
          f"({args.clips * (start + load):.1f} s for {args.clips}), batch once per worker (plus Ray's start)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "model_load_s": load,
                                               "startup_s": start}, indent=1))


if __name__ == "__main__":
    main()

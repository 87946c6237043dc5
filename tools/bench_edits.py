"""What edits cost on a long clip: ``track`` (the official loop, streaming) against ``track --edits`` (sessions on the
whole clip, then each edit tracked again) and ``--direction both``, peak RSS and seconds, each in its own process.

    python tools/bench_edits.py                      # a 30 s 320x240 synthetic clip at 10 fps, the demo model
    python tools/bench_edits.py --checkpoint runs/train_tracker/video.pt --seconds 10 --fps 30

Model: the demo detector with a tracker (``--checkpoint``: a video checkpoint in the official layout; default: the
demo video model of ``sam3video.train.train_tracker.demo_video_model``, whose tracker is random unless trained;
costs do not depend on the weights, only on how many objects there are). Edits: a click refining track 1 in the
middle of the clip, a new object by a click a quarter in, a removal. Printed: per run the wall time, peak RSS
(``ru_maxrss`` of the child), the tracks, and for the edits the seconds of each click and of its propagation.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, seconds: float, fps: float, checkpoint: str | None) -> tuple[Path, Path]:
    import numpy as np
    import torch

    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip
    sys.path.insert(0, str(ROOT))
    from tests.helpers import write_video

    clip = generate_clip(7, WorldConfig(duration_s=seconds, fps=fps))
    video = folder / "clip.mp4"
    write_video(video, (clip.image(t) for t in range(clip.num_frames)), fps=fps)
    if checkpoint is not None:
        return video, Path(checkpoint)
    from sam3video.train.train_tracker import demo_video_model

    torch.manual_seed(0)
    model, config = demo_video_model()
    path = folder / "demo_video.pt"
    torch.save({"model": model.state_dict(), "config": config}, path)
    np.random.seed(0)
    return video, path


PRELUDE = ("import resource, runpy, sys\n"
           "sys.argv = ['sam3video', *sys.argv[1:]]\n"
           "try:\n    runpy.run_module('sam3video.cli', run_name='__main__')\n"
           "finally:\n    print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n")


def child(args: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS in MiB) of ``sam3video`` with ``args`` in a new process."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PRELUDE, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"sam3video {' '.join(args)} failed: {result.stderr[-2000:]}")
    peak = int(result.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[0])
    return time.perf_counter() - start, peak // 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--checkpoint", help="a video checkpoint (default: the demo video model, see above)")
    parser.add_argument("--prompt", default="circle")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video, checkpoint = make_inputs(folder, args.seconds, args.fps, args.checkpoint)
        frames = int(round(args.seconds * args.fps))
        edits = folder / "edits.json"
        edits.write_text(json.dumps([
            {"frame": frames // 2, "obj_id": 1, "points": [[160, 120]], "labels": [1]},
            {"frame": frames // 4, "obj_id": 99, "points": [[80, 60]], "labels": [1]},
            {"remove": 99}]))
        common = ["track", str(video), "--prompt", args.prompt, "--checkpoint", str(checkpoint), "--quiet",
                  "--no-render", "--tracker", "sam3"]
        for name, extra in [("track", []), ("track --edits", ["--edits", str(edits)]),
                            ("track --direction both", ["--direction", "both"])]:
            out = folder / name.replace(" ", "_")
            seconds, rss = child([*common, "--out", str(out), *extra])
            summary = json.loads((out / "summary.json").read_text())
            row = {"run": name, "frames": summary["frames"], "tracks": len(summary["tracks"]),
                   "wall_s": round(seconds, 1), "peak_rss_mib": rss}
            if "edits" in summary:
                row["edits"] = [{k: e[k] for k in ("tracked_again", "click_s", "propagation_s") if k in e}
                                for e in summary["edits"]]
                row["recomputed"] = {k: v.get("frames") for k, v in summary["recomputed"].items()
                                     if isinstance(v, dict)}
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""The official SAM 3 loop (``--tracker sam3``) end to end: time per frame and peak memory by clip length.

    python tools/bench_sam3_loop.py                      # 3 s and 30 s clips at 10 fps, one process each
    python tools/bench_sam3_loop.py --durations 3 30 60 --fps 10
    python tools/bench_sam3_loop.py --version sam3.1     # the SAM 3.1 multiplex loop (tiny model, seeded weights)

Model: the demo detector (the shipped checkpoint, trained on the synthetic shapes world, so it finds
the objects) with the second neck and the tracker of the tiny parity fixtures (random weights at the
demo's widths, d_model 64: tests/data/video_loop_parity and tests/data/tracker_parity); the official
loop's thresholds. Clip: a synthetic shapes clip (320x240) with its benchmark prompts (``clip_prompts``). Each duration runs
in its own process; printed per duration: frames, seconds per frame (detector + loop), objects born,
the largest number tracked at once, the memory banks' size at the end, and the process's peak RSS, then
the peak RSS ratio of the longest clip to the shortest. Asserts nothing.

``--version sam3.1``: the tiny SAM 3.1 model of the parity fixtures (tests/data/sam31_parity/config.toml) with
seeded random weights (seed 1) and the loop's thresholds lowered to fit them
(detection 0.30, new object 0.32); the same clips, prompts and measurements.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def video_model():
    """The demo detector + the tiny fixtures' second neck and tracker (random weights, d_model 64)."""
    import torch

    from sam3video.model.build_video import build_video_model, load_video_config
    from sam3video.model.checkpoint import load_model

    detector = load_model("demo", device="cpu")
    tiny = load_video_config("tiny")
    config = {**detector.config.to_dict(), "tracker": tiny.tracker.to_dict()}
    model = build_video_model(config)
    state = {f"detector.{k}": v for k, v in detector.state_dict().items()}
    data = ROOT / "tests" / "data"
    state.update(torch.load(data / "tracker_parity" / "tracker_parity.pt", weights_only=True)["state_dict"])
    import io
    import lzma

    raw = lzma.decompress((data / "video_loop_parity" / "three_fp32_n0_c0.pt.xz").read_bytes())
    neck = torch.load(io.BytesIO(raw), weights_only=True)["sam2_convs"]  # the second neck of the parity case
    state.update({k: v.float() for k, v in neck.items()})
    model.load_state_dict(state, strict=True)
    return model.eval()


def video_model_31():
    """The tiny SAM 3.1 model with seeded random weights (tools/check_sam31_loop_parity.load_model)."""
    sys.path.insert(0, str(ROOT / "tools"))
    from check_sam31_loop_parity import load_model

    return load_model(seed=1)


def one(duration: float, fps: float, seed: int, version: str = "sam3") -> dict:
    import numpy as np
    import torch

    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip
    from sam3video.eval.benchmark import clip_prompts
    from sam3video.video.predictor import VideoPredictor
    from sam3video.video.session import TrackingConfig

    torch.set_num_threads(max(1, torch.get_num_threads()))
    clip = generate_clip(seed, WorldConfig(duration_s=duration, fps=fps))
    frames = np.stack([clip.image(t) for t in range(clip.num_frames)])
    if version == "sam3.1":
        from sam3video.thresholds import Sam31LoopConfig

        loop = Sam31LoopConfig(score_threshold_detection=0.30, new_det_thresh=0.32)
        predictor = VideoPredictor(video_model_31(), TrackingConfig(tracker_name="sam3", sam31=loop))
    else:
        predictor = VideoPredictor(video_model(), TrackingConfig(tracker_name="sam3"))
    prompts = clip_prompts(clip)
    session = predictor.start_session(prompts, fps=fps)
    start = time.perf_counter()
    most, count = 0, 0
    for _ in predictor.track(frames, session=session, source_fps=fps):
        loops = session.sam3.loops
        most = max(most, sum(len(loop.obj_ids) for loop in loops))
        count += 1
    seconds = time.perf_counter() - start
    loops = session.sam3.loops
    if version == "sam3.1":
        bank = sum(state.nbytes() for loop in loops for state in loop.states)
        born = sum(loop.planning.max_obj_id + 1 for loop in loops)
    else:
        bank = sum(b.bank.nbytes() for loop in loops for b in loop.buckets)
        born = sum(loop.state.max_obj_id + 1 for loop in loops)
    return {"version": version, "duration_s": duration, "frames": count, "s_per_frame": round(seconds / max(count, 1), 4),
            "objects_born": born, "most_tracked": most,
            "bank_mib_at_end": round(bank / 2**20, 2), "prompts": prompts,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=float, nargs="+", default=[3.0, 30.0])
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--version", choices=["sam3", "sam3.1"], default="sam3")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.fps, args.seed, args.version)))
        return
    rows = []
    for duration in args.durations:
        out = subprocess.run([sys.executable, __file__, "--one", str(duration), "--fps", str(args.fps),
                              "--seed", str(args.seed), "--version", args.version], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    shortest, longest = min(rows, key=lambda r: r["duration_s"]), max(rows, key=lambda r: r["duration_s"])
    print(f"peak RSS {longest['duration_s']:g} s / {shortest['duration_s']:g} s: "
          f"{longest['peak_rss_mib'] / shortest['peak_rss_mib']:.3f}")


if __name__ == "__main__":
    main()

"""What the requests of an interactive session cost (``VideoSession``), SAM 3 and SAM 3.1, on this machine.

    python tools/bench_session.py                         # tiny models, 6 frames
    python tools/bench_session.py --size full --frames 4  # the real architectures (random weights), slow on a CPU

Models: seeded random weights (SAM 3.1: tools/sam31_weights.py, as the parity fixtures; SAM 3: the tiny parity
weights with a stored case's second neck, or at full size PyTorch's init). Tiny: thresholds lowered so that random
detections start objects; full: no detection starts one (random full-size detectors score hundreds of queries
alike, and the loop's cost is per object: tools/bench_multiplex.py), so the clicked object is the only one. Clip: a synthetic shapes clip (320x240). Printed per version, in seconds: the text
prompt on frame 0 (ViT + detector + loop), the full propagation per frame, a click that starts an object on a
frame not seen since (ViT + SAM heads + memory), a second click there (heads + memory: the frame's features are
kept), the partial propagation per frame (ViT + the clicked object's state), and the objects held. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))


def model_and_config(version: str, size: str):
    threshold = 0.3 if size == "tiny" else 1.0  # full: no births (see above)
    if version == "sam3.1":
        from check_sam31_loop_parity import load_model

        from sam3video.thresholds import Sam31LoopConfig

        return load_model(seed=1, size=size), Sam31LoopConfig(score_threshold_detection=threshold,
                                                              new_det_thresh=threshold)
    from sam3video.thresholds import Sam3LoopConfig

    config = Sam3LoopConfig(score_threshold_detection=threshold, new_det_thresh=threshold, hotstart_delay=2,
                            hotstart_unmatch_thresh=2, hotstart_dup_thresh=2)
    if size == "tiny":
        from check_sam3_loop_parity import load_model, read_fixture

        fixture = read_fixture(ROOT / "tests" / "data" / "video_loop_parity" / "three_fp32_n0_c0.pt.xz")
        return load_model("tiny", None, fixture), config
    from sam3video.model.build_video import build_video_model

    torch.manual_seed(0)
    return build_video_model("sam3").eval(), config


def seconds(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(version: str, size: str, frames: int) -> dict:
    from sam3video.data.synthetic import WorldConfig
    from sam3video.data.clips import generate_clip
    from sam3video.session import VideoSession

    model, config = model_and_config(version, size)
    clip = generate_clip(3, WorldConfig(duration_s=frames / 10, fps=10))
    video = np.stack([clip.image(t) for t in range(frames)])
    session = VideoSession(model, video, config=config, source_fps=10)
    height, width = session.video_size
    row = {"version": version, "size": size, "frames": frames}
    _, row["text_prompt_s"] = seconds(lambda: session.add_prompt(0, text="circle"))
    _, t = seconds(lambda: list(session.propagate("forward")))
    row["full_propagation_s_per_frame"] = t / frames
    new_id = session.max_obj_id + 1
    k = frames // 2
    session._feature_cache.clear()  # as after propagating elsewhere
    _, row["click_new_object_s"] = seconds(lambda: session.add_prompt(
        k, points=[(width / 2, height / 2)], point_labels=[1], obj_id=new_id))
    _, row["second_click_same_frame_s"] = seconds(lambda: session.add_prompt(
        k, points=[(width / 2, height / 2), (width / 4, height / 4)], point_labels=[1, 0], obj_id=new_id))
    _, t = seconds(lambda: list(session.propagate("forward", start_frame=0)))
    row["partial_propagation_s_per_frame"] = t / frames
    row["objects"] = len(session.obj_ids)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--versions", nargs="+", choices=["sam3", "sam3.1"], default=["sam3", "sam3.1"])
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    print(f"torch threads {torch.get_num_threads()}")
    for version in args.versions:
        print(json.dumps(run(version, args.size, args.frames)), flush=True)


if __name__ == "__main__":
    main()

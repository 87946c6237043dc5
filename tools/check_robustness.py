"""How often the demo model finds a prompted object on gray frames and in portrait video, beside the
same scenes in colour and landscape: the "found in N of M frames" checks of the demo-model issue.

    python tools/check_robustness.py                       # shipped demo model, 6 clips per case
    python tools/check_robustness.py --checkpoint runs/train_styled/last.pt --clips 10

Cases (classic synthetic world, seeds never used in training, 3 s at 10 fps):
- ``colour`` / ``gray``: 320x240 clips, a shape prompt ("circle") of a shape in the clip; ``gray``
  is the same frames as luma (R = G = B), as a grayscale video decodes;
- ``landscape`` / ``portrait``: 640x360 and 360x640 clips, a colour + shape prompt in the clip.
A frame counts when the concept is visible in it; it is found when a reported detection has box IoU
>= 0.5 with one of the visible instances. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sam3video.data.concepts import PROMPTS  # noqa: E402
from sam3video.data.effects import gray_frame  # noqa: E402
from sam3video.data.synthetic import WorldConfig  # noqa: E402
from sam3video.data.clips import generate_clip  # noqa: E402
from sam3video.trackers.association.matching import box_iou  # noqa: E402

SEED = 2_100_000_000  # clear of the training generator and of the benchmark suites
FOUND_IOU = 0.5
CASES = {  # name: (width, height, prompt kind, gray)
    "colour": (320, 240, "shape", False), "gray": (320, 240, "shape", True),
    "landscape": (640, 360, "colour+shape", False), "portrait": (360, 640, "colour+shape", False),
}


def pick_prompt(clip, kind: str) -> str | None:
    """The first prompt of ``kind`` with an instance in the clip."""
    for prompt in PROMPTS:
        if (" " in prompt) == (kind == "colour+shape") and clip.objects_matching(prompt):
            return prompt
    return None


def found_rate(model, checkpoint: str | None, case: str, num_clips: int, out: Path) -> dict:
    from sam3video.export.overlay import OverlayWriter
    from sam3video.run import TrackJob, prepare

    width, height, kind, gray = CASES[case]
    config = WorldConfig(width=width, height=height, duration_s=3.0, fps=10, radius_px=(12.0, 30.0))
    visible = found = clips = 0
    seed = SEED
    while clips < num_clips:
        clip, seed = generate_clip(seed, config), seed + 1
        prompt = pick_prompt(clip, kind)
        if prompt is None:
            continue
        clips += 1
        frames, truths = zip(*(clip.frame(t) for t in range(clip.num_frames)))
        video = out / f"{case}_{clips}.mp4"
        with OverlayWriter(video, config.fps, width, height) as writer:  # H.264, as a user's video would be
            for frame in frames:
                writer.write(gray_frame(frame) if gray else frame)
        reported = []
        job = TrackJob(str(video), out / f"{case}_{clips}", prompts=(prompt,), checkpoint=checkpoint, render=False)
        prepare(job, model).execute(on_result=lambda result: reported.append(result.detections))
        for truth, dets in zip(truths, reported):
            gt = np.array([o.box for o in truth.matching(prompt)], np.float32).reshape(-1, 4)
            if not len(gt):
                continue
            visible += 1
            found += bool(len(dets) and box_iou(gt, dets.xyxy).max() >= FOUND_IOU)
    return {"case": case, "clips": clips, "frames_visible": visible, "frames_found": found,
            "rate": found / max(visible, 1)}


def main() -> None:
    import tempfile

    from sam3video.model.checkpoint import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="default: the shipped demo model")
    p.add_argument("--clips", type=int, default=6)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    model = load_model(args.checkpoint, None, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [found_rate(model, args.checkpoint, case, args.clips, Path(tmp)) for case in CASES]
    print(f"model {args.checkpoint or 'demo'}; found = a reported box with IoU >= {FOUND_IOU} on a visible instance")
    print(f"{'case':10s} {'clips':>5s} {'frames':>7s} {'found':>6s} {'rate':>6s}")
    for row in rows:
        print(f"{row['case']:10s} {row['clips']:5d} {row['frames_visible']:7d} {row['frames_found']:6d} "
              f"{100 * row['rate']:5.1f}%")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()

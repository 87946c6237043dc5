"""How fast the synthetic world renders (frames with their ground truth), printed, not asserted.

    .venv/bin/python tools/bench_synthetic.py

Two numbers: the classic world at 320x240 (frames/s, wall time, 60 frames of one clip after the first), and the
randomised world with every style option drawn (ms of CPU time per frame, 15 frames of 8 clips after each first).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sam3video.data.styles import StyleConfig  # noqa: E402
from sam3video.data.synthetic import WorldConfig  # noqa: E402
from sam3video.data.clips import generate_clip  # noqa: E402


def classic_fps(frames: int = 60) -> float:
    clip = generate_clip(0, WorldConfig())
    clip.frame(0)
    start = time.perf_counter()
    for t in range(frames):
        clip.frame(t)
    return frames / (time.perf_counter() - start)


def randomised_ms_per_frame(clips: int = 8, frames: int = 15) -> float:
    style = StyleConfig(long_side_px=(320, 320), aspect=(4 / 3, 4 / 3), portrait_prob=0.0)
    made = [generate_clip(seed, WorldConfig(duration_s=2.0, fps=10.0, style=style)) for seed in range(clips)]
    for clip in made:
        clip.frame(0)
    start = time.process_time()
    for clip in made:
        for t in range(1, frames + 1):
            clip.frame(t)
    return (time.process_time() - start) / (clips * frames) * 1000


def main() -> int:
    print(f"classic synthetic rendering at 320x240 with truth: {classic_fps():.0f} frames/s")
    print(f"randomised rendering at 320x240 with truth: {randomised_ms_per_frame():.1f} ms/frame (CPU time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

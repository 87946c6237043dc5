"""Choose the demo model's score thresholds on validation clips (seeds neither training nor the benchmark
suite use): detect once with a low threshold, then re-track the recorded detections for each candidate
(score threshold, low threshold) pair and keep the pair with the best combined HOTA.

    python tools/calibrate_thresholds.py --out runs/calibrate [--clips 6 --seconds 6]
    python tools/calibrate_thresholds.py --worlds classic train     # also the randomised training styles

``--worlds``: the classic world and/or the training styles (``--clips`` clips of each, HOTA combined over
all their sequences). The held-out styles are for evaluation only and are refused.

The tracker is a pure function of the detections, so the sweep costs one detection pass.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from sam3video.data.dataset import MOT_NAME, write_clip
from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.eval.benchmark import clip_prompts, write_tracks
from sam3video.eval.metrics import run_eval
from sam3video.export.outputs import prompt_slug
from sam3video.model.checkpoint import load_model
from sam3video.run import TrackJob, prepare
from sam3video.thresholds import Thresholds
from sam3video.trackers.association.completion import track_frames
from sam3video.trackers.association.tracker import Tracker
from sam3video.video.predictor import TrackingConfig

VALIDATION_SEED = 2_500_000_000  # benchmark suite: 2_000_000_000 + i; exemplar suite: + 10_000 + i
SCORES = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
LOWS = (0.05, 0.1, 0.15)
CALIBRATION_WORLDS = ("classic", "train")  # WorldConfig.style; "heldout" is for evaluation only


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/calibrate"))
    parser.add_argument("--checkpoint", help="weights (default: the shipped demo model)")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--worlds", nargs="+", default=["classic"], choices=CALIBRATION_WORLDS,
                        help="validation worlds (held-out styles are never used to choose thresholds)")
    args = parser.parse_args(argv)
    # Candidates (every detection down to the lowest threshold swept) do not depend on the tracker.
    model = load_model(args.checkpoint, None, "cpu")
    lowest = Thresholds(score_threshold=min(LOWS), low_score_threshold=min(LOWS))
    sequences = []  # (name, gt path, per-frame candidates)
    for world, i in itertools.product(args.worlds, range(args.clips)):
        clip = generate_clip(VALIDATION_SEED + i, WorldConfig(duration_s=args.seconds, style=world))
        prompts = clip_prompts(clip)
        clip_name = f"{world}_clip_{i:02d}"
        clip_dir = write_clip(clip, args.out / "clips" / clip_name, prompts)
        for prompt in prompts:
            candidates = []
            job = TrackJob(clip_dir / "video.mp4", args.out / "detect" / f"{clip_name}__{prompt_slug(prompt)}",
                           prompts=(prompt,), checkpoint=args.checkpoint, thresholds=lowest, render=False)
            prepare(job, model).execute(on_result=lambda result: candidates.append(result.candidates))
            sequences.append((f"{clip_name}__{prompt_slug(prompt)}",
                              clip_dir / "gt" / prompt_slug(prompt) / MOT_NAME, candidates))
        print(f"{world} clip {i + 1}/{args.clips}: {len(prompts)} prompts", flush=True)
    results = []
    for score, low in itertools.product(SCORES, LOWS):
        if low > score:
            continue
        config = TrackingConfig.at_score_threshold(score, low).tracker  # the thresholds `track` would use
        preds = []
        for name, _, candidates in sequences:
            tracked = track_frames(Tracker(config, fps=30.0),  # with the track completion, as `track` runs it
                                   ((t, c[c.confidence >= low]) for t, c in enumerate(candidates)))
            frames = [f.detections for f in tracked]
            path = args.out / "sweep" / f"{score}_{low}" / f"{name}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_tracks(path, frames, 0)
            preds.append(path)
        metrics = run_eval([g for _, g, _ in sequences], preds, kind="mot",
                           names=[n for n, _, _ in sequences]).combined.metrics
        results.append((metrics["HOTA"], score, low, metrics["IDF1"], metrics["MOTA"]))
        print(f"score {score:.2f} low {low:.2f} new {config.new_track_threshold:.2f}: HOTA {100 * metrics['HOTA']:.1f} "
              f"IDF1 {100 * metrics['IDF1']:.1f} MOTA {100 * metrics['MOTA']:.1f}", flush=True)
    best = max(results)
    print(f"best: --score-threshold {best[1]} --low-score-threshold {best[2]} (HOTA {100 * best[0]:.1f})")


if __name__ == "__main__":
    main()

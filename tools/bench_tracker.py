"""Our tracker beside the `trackers` package's SORT, ByteTrack, OC-SORT and BoT-SORT on the same detections.

    python tools/bench_tracker.py --mot ../shared/mot15          # MOTChallenge folders: SEQ/det/det.txt,
                                                                  # SEQ/gt/gt.txt, SEQ/seqinfo.ini
    python tools/bench_tracker.py --mot DIR --trackers sam3video bytetrack --out runs/bench_tracker

Each tracker gets every frame's detections (boxes and scores only, class 0; frames without a row get
none) with the sequence's frame rate, and its own defaults; BoT-SORT runs without camera motion
compensation (no frames). Scored by TrackEval (HOTA, DetA, AssA, IDF1, MOTA, IDSW) per sequence and
combined; frames/s is the tracker's update loop alone. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import configparser
import time
import warnings
from pathlib import Path

from sam3video.detections import Detections
from sam3video.eval.metrics import run_eval
from sam3video.export import MOTWriter, read_detection_file
from sam3video.video.peers import TRACKER_NAMES
from sam3video.video.predictor import TrackingConfig

TRACKERS = TRACKER_NAMES
COLUMNS = ("HOTA", "DetA", "AssA", "IDF1", "MOTA", "IDSW")


def mot_sequences(root: Path) -> list[dict]:
    """[{name, det, gt, fps, frames}] of every folder under ``root`` with det/det.txt and gt/gt.txt."""
    sequences = []
    for folder in sorted(p for p in root.iterdir() if (p / "det" / "det.txt").is_file() and (p / "gt" / "gt.txt").is_file()):
        info = configparser.ConfigParser()
        info.read(folder / "seqinfo.ini")
        section = info["Sequence"] if info.has_section("Sequence") else {}
        sequences.append({"name": folder.name, "det": folder / "det" / "det.txt", "gt": folder / "gt" / "gt.txt",
                          "fps": float(section.get("frameRate", 30)), "frames": int(section.get("seqLength", 0))})
    if not sequences:
        raise SystemExit(f"no sequence folders with det/det.txt and gt/gt.txt under {root}")
    return sequences


def run_tracker(name: str, frames: list[Detections], fps: float, out: Path) -> float:
    """Track ``frames`` and write the MOT file ``out``; returns the update loop's frames/s."""
    tracker = TrackingConfig(tracker_name=name).make_tracker(fps)  # as `track --tracker NAME` makes it
    tracked, start = [], time.perf_counter()
    for index, detections in enumerate(frames):
        tracked.append(tracker.update(detections, index))
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    with MOTWriter(out) as writer:
        for index, detections in enumerate(tracked):
            writer.write(index, detections)
    return len(frames) / max(seconds, 1e-9)


def table(title: str, rows: list[tuple[str, dict, float | None]]) -> str:
    lines = [title, f"{'tracker':12s} " + " ".join(f"{c:>6s}" for c in COLUMNS) + f" {'frames/s':>9s}"]
    for name, m, fps in rows:
        values = " ".join(f"{m[c]:6.0f}" if c == "IDSW" else f"{100 * m[c]:6.1f}" for c in COLUMNS)
        lines.append(f"{name:12s} {values} {fps:9.0f}" if fps is not None else f"{name:12s} {values}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mot", type=Path, required=True, help="folder of MOTChallenge sequence folders")
    parser.add_argument("--trackers", nargs="+", default=list(TRACKERS), choices=TRACKERS)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tracker"))
    parser.add_argument("--per-sequence", action="store_true", help="also print a table per sequence")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", module="trackers")  # deprecation notices of the peers
    sequences = mot_sequences(args.mot)
    loaded = []
    for seq in sequences:
        by_frame = read_detection_file(seq["det"])
        count = max(seq["frames"], max(by_frame, default=-1) + 1)
        loaded.append([by_frame.get(i, Detections.empty()) for i in range(count)])
    results = {}
    for name in args.trackers:
        preds, speeds = [], []
        for seq, frames in zip(sequences, loaded):
            path = args.out / name / f"{seq['name']}.txt"
            speeds.append((len(frames), run_tracker(name, frames, seq["fps"], path)))
            preds.append(path)
        total = sum(n for n, _ in speeds)
        fps = total / sum(n / f for n, f in speeds)
        results[name] = (run_eval([s["gt"] for s in sequences], preds, kind="mot",
                                  names=[s["name"] for s in sequences]), fps)
        print(f"{name}: done", flush=True)
    frames = sum(len(f) for f in loaded)
    print(table(f"{args.mot}: {len(sequences)} sequences, {frames} frames, combined",
                [(n, r.combined.metrics, fps) for n, (r, fps) in results.items()]))
    if args.per_sequence:
        for i, seq in enumerate(sequences):
            print(table(f"\n{seq['name']} ({seq['fps']:g} fps)",
                        [(n, r.sequences[i].metrics, None) for n, (r, _) in results.items()]))


if __name__ == "__main__":
    main()

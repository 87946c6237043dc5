"""Our tracker beside the `trackers` package's SORT, ByteTrack, OC-SORT, BoT-SORT, C-BIoU and McByte on the
same detections.

    python tools/bench_tracker.py --mot ../shared/mot15 ../shared/kitti/car ../shared/kitti/pedestrian \
        ../shared/mot20                                           # folders of MOTChallenge sequence folders:
                                                                  # SEQ/det/det.txt, SEQ/gt/gt.txt, SEQ/seqinfo.ini
    python tools/bench_tracker.py --synthetic runs/benchmark     # `make benchmark`'s output folder
    python tools/bench_tracker.py --synthetic runs/benchmark --frames   # with the clips' frames (CMC)
    python tools/bench_tracker.py --mot DIR --trackers sam3video bytetrack --out runs/bench_tracker
    python tools/bench_tracker.py --mot DIR --fill-peer-gaps 0.5   # the peers' outputs with our gap filling

MOTChallenge: each tracker gets every frame's detections (boxes and scores only, class 0; frames
without a row get none) with the sequence's frame rate, and its own defaults; BoT-SORT and McByte run
without camera motion compensation (no frames). Scored by TrackEval's MOTChallenge evaluator
(``MotChallenge2DBox``, class pedestrian = 1): with its distractor preprocessing where the ground truth has
classes (predictions matched to distractor rows are removed, zero-marked rows dropped), as for MOT17/MOT20;
without it for MOT15-form ground truth (class -1), as TrackEval does for MOT15. One table per data set and
one combining every sequence of all of them. Synthetic: the candidates `make benchmark`'s runs saved
(``detections.npz``: boxes, scores, masks, embeddings, exactly what their tracker was given), each
tracker built as ``sam3video retrack RUN --tracker NAME`` builds it, scored against the suite's ground
truth with ``sam3video eval``'s scoring; ``--frames`` gives every tracker the clips' frames too (as ``track``
does: our camera motion compensation, BoT-SORT's and McByte's). HOTA, DetA, AssA, IDF1, MOTA, IDSW per sequence and combined;
frames/s is the tracker's update loop alone. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import time
import warnings
from pathlib import Path

from sam3video.data.dataset import MOT_NAME
from sam3video.detections import Detections
from sam3video.eval.metrics import _metric_objects, _summarise, run_eval
from sam3video.export import MOTWriter, read_detection_file
from sam3video.export.outputs import OUTPUT_NAMES
from sam3video.trackers.association.completion import track_frames
from sam3video.trackers.association.peers import TRACKER_NAMES
from sam3video.trackers.association.tracker import TrackerConfig
from sam3video.video.session import TrackingConfig

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


def synthetic_sequences(root: Path) -> list[dict]:
    """[{name, run, gt}] of a `make benchmark` folder: its runs ``sam3video/CLIP__PROMPT`` (with
    ``detections.npz``) and their ground truth ``suite/CLIP/gt/PROMPT/gt.txt``."""
    sequences = []
    for run in sorted((root / "sam3video").glob("*__*")):
        clip, slug = run.name.split("__", 1)
        gt = root / "suite" / clip / "gt" / slug / MOT_NAME
        if (run / OUTPUT_NAMES["detections"]).is_file() and gt.is_file():
            sequences.append({"name": run.name, "run": run, "gt": gt, "video": root / "suite" / clip / "video.mp4"})
    if not sequences:
        raise SystemExit(f"no runs with {OUTPUT_NAMES['detections']} and ground truth under {root} "
                         f"(made by `make benchmark`)")
    return sequences


def tracker_overrides(parser, items: list[str]) -> dict:
    """{field: value} of ``FIELD=VALUE`` items for ``TrackerConfig`` (values parsed as Python literals)."""
    import ast

    fields = {f.name for f in dataclasses.fields(TrackerConfig)}
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields or not value:
            parser.error(f"--set {item}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(fields))}")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parser.error(f"--set {item}: {value!r} is not a number or literal")
    return overrides


def with_overrides(config: TrackingConfig, overrides: dict) -> TrackingConfig:
    """``config`` with ``overrides`` applied to its tracker config (ours only; the peers keep theirs)."""
    return dataclasses.replace(config, tracker=dataclasses.replace(config.tracker, **overrides)) if overrides else config


def run_tracker(tracker, frames, out: Path, peer_gap_s: float = 0.0) -> float:
    """Track ``frames`` (Detections, or (frame index, Detections[, image])) with ``tracker`` and write the
    MOT file ``out``; returns the loop's frames/s. As ``track`` and ``retrack`` run it (``track_frames``): ours
    through its track completion; a peer through its gap filling alone when ``peer_gap_s``."""
    items = [item if isinstance(item, tuple) else (index, item) for index, item in enumerate(frames)]
    start = time.perf_counter()
    tracked = list(track_frames(tracker, items, peer_gap_s))
    seconds = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    with MOTWriter(out) as writer:
        for result in tracked:
            writer.write(result.frame_index, result.detections)
    return len(items) / max(seconds, 1e-9)


def table(title: str, rows: list[tuple[str, dict, float | None]]) -> str:
    lines = [title, f"{'tracker':12s} " + " ".join(f"{c:>6s}" for c in COLUMNS) + f" {'frames/s':>9s}"]
    for name, m, fps in rows:
        values = " ".join(f"{m[c]:6.0f}" if c == "IDSW" else f"{100 * m[c]:6.1f}" for c in COLUMNS)
        lines.append(f"{name:12s} {values} {fps:9.0f}" if fps is not None else f"{name:12s} {values}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mot", type=Path, nargs="+", help="folders of MOTChallenge sequence folders (a data set each)")
    parser.add_argument("--synthetic", type=Path, help="a `make benchmark` output folder (runs/benchmark)")
    parser.add_argument("--trackers", nargs="+", default=list(TRACKER_NAMES), choices=TRACKER_NAMES)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_tracker"))
    parser.add_argument("--per-sequence", action="store_true", help="also print a table per sequence")
    parser.add_argument("--fill-peer-gaps", type=float, default=0.0, metavar="SECONDS",
                        help="give the peers' outputs our track completion's gap filling (gaps up to SECONDS; "
                             "ours fills 0.5 s): the post-processing ByteTrack's published results had")
    parser.add_argument("--frames", action="store_true",
                        help="synthetic: give the trackers the clips' frames (camera motion compensation)")
    parser.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                        help="override fields of our tracker's TrackerConfig (ablations), e.g. min_hits=3")
    args = parser.parse_args(argv)
    if args.mot is None and args.synthetic is None:
        parser.error("give --mot DIR and/or --synthetic DIR")
    args.overrides = tracker_overrides(parser, args.set)
    warnings.filterwarnings("ignore", module="trackers")  # deprecation notices of the peers
    if args.mot is not None:
        bench_mot(args)
    if args.synthetic is not None:
        bench_synthetic(args)


def score_trackers(args, kind: str, sequences: list[dict], track) -> dict:
    """{tracker name: (TrackEval result, frames/s)} over ``sequences`` ({name, gt, ...});
    ``track(name, sequence, out path) -> (frames, frames/s)`` tracks one and writes its MOT file."""
    results = {}
    for name in args.trackers:
        preds, speeds = [], []
        for seq in sequences:
            path = args.out / kind / name / f"{seq['name']}.txt"
            speeds.append(track(name, seq, path))
            preds.append(path)
        results[name] = (run_eval([s["gt"] for s in sequences], preds, kind="mot",
                                  names=[s["name"] for s in sequences]), _frames_per_s(speeds))
        print(f"{name}: done", flush=True)
    return results


def bench_mot(args) -> None:
    """One table per ``--mot`` folder and one over all their sequences (TrackEval's MOTChallenge evaluator)."""
    raw: dict[str, dict[str, dict]] = {name: {} for name in args.trackers}  # tracker -> "set/seq" -> metrics
    speeds: dict[str, list] = {name: [] for name in args.trackers}
    total = 0
    for root in args.mot:
        sequences = mot_sequences(root)
        for seq in sequences:
            by_frame = read_detection_file(seq["det"])
            count = max(seq["frames"], max(by_frame, default=-1) + 1)
            seq["detections"] = [by_frame.get(i, Detections.empty()) for i in range(count)]
        benchmark = mot_benchmark(sequences)
        folder = args.out / "mot" / root.name
        for name in args.trackers:
            for seq in sequences:
                tracker = with_overrides(TrackingConfig(tracker_name=name), args.overrides).make_tracker(seq["fps"])
                out = folder / name / "data" / f"{seq['name']}.txt"
                speeds[name].append((len(seq["detections"]), run_tracker(tracker, seq["detections"], out,
                                                                         args.fill_peer_gaps)))
        scores = mot_challenge_scores(root, folder, sequences, args.trackers, benchmark)
        frames = sum(len(s["detections"]) for s in sequences)
        total += frames
        rows = []
        for name in args.trackers:
            raw[name].update({f"{root.name}/{k}": v for k, v in scores[name].items()})
            rows.append((name, combine(scores[name]), None))
        print(table(f"{root}: {len(sequences)} sequences, {frames} frames, {benchmark} rules, combined", rows),
              flush=True)
        if args.per_sequence:
            for seq in sequences:
                print(table(f"\n{seq['name']} ({seq['fps']:g} fps)",
                            [(n, flat(scores[n][seq["name"]]), None) for n in args.trackers]))
        print()
    if len(args.mot) > 1:
        print(table(f"all {len(args.mot)} sets: {len(next(iter(raw.values())))} sequences, {total} frames, combined",
                    [(n, combine(raw[n]), _frames_per_s(speeds[n])) for n in args.trackers]))


def mot_benchmark(sequences: list[dict]) -> str:
    """TrackEval's benchmark rules for these ground truths: "MOT15" (no preprocessing) unless every row of
    every sequence has a MOTChallenge class id (column 8, an integer 1-13; MOT15 keeps -1 or world
    coordinates there); then "MOT20" for MOT20 sequences, else "MOT17"."""
    import numpy as np

    for seq in sequences:
        rows = np.loadtxt(seq["gt"], delimiter=",", ndmin=2)
        classes = rows[:, 7] if rows.shape[1] >= 8 else np.zeros(0)
        if not len(classes) or not np.all((classes >= 1) & (classes <= 13) & (classes == np.round(classes))):
            return "MOT15"
    return "MOT20" if all(s["name"].startswith("MOT20") for s in sequences) else "MOT17"


def mot_challenge_scores(gt_root: Path, tracker_root: Path, sequences: list[dict], trackers: list[str],
                         benchmark: str) -> dict[str, dict[str, dict]]:
    """{tracker: {sequence: {HOTA, CLEAR, Identity: TrackEval's per-sequence results}}} of the MOT files
    ``tracker_root/TRACKER/data/SEQ.txt`` against ``gt_root/SEQ/gt/gt.txt``, by ``MotChallenge2DBox``."""
    import trackeval

    dataset = trackeval.datasets.MotChallenge2DBox({
        "GT_FOLDER": str(gt_root), "TRACKERS_FOLDER": str(tracker_root), "TRACKERS_TO_EVAL": list(trackers),
        "BENCHMARK": benchmark, "SKIP_SPLIT_FOL": True, "DO_PREPROC": True, "PRINT_CONFIG": False,
        "SEQ_INFO": {s["name"]: len(s["detections"]) for s in sequences}})
    metrics = _metrics()
    scores = {}
    for name in trackers:
        scores[name] = {}
        for seq in sequences:
            data = dataset.get_preprocessed_seq_data(dataset.get_raw_seq_data(name, seq["name"]), "pedestrian")
            scores[name][seq["name"]] = {m: metric.eval_sequence(data) for m, metric in metrics.items()}
    return scores


def _metrics() -> dict:
    """TrackEval's metric objects as ``sam3video eval`` builds them (CLEAR/Identity at IoU 0.5)."""
    return _metric_objects(0.5)


def flat(result: dict) -> dict:
    """TrackEval's results of one sequence (or a combination) -> flat metrics (HOTA, DetA, AssA, IDF1, MOTA,
    IDSW, ...), summarised as ``sam3video eval`` does."""
    return _summarise("", result, _metrics()["HOTA"].array_labels).metrics


def combine(per_sequence: dict[str, dict]) -> dict:
    """Flat metrics of sequences combined as TrackEval combines them (sums of counts, not means)."""
    return flat({m: metric.combine_sequences({k: v[m] for k, v in per_sequence.items()})
                 for m, metric in _metrics().items()})


def bench_synthetic(args) -> None:
    from sam3video.replay import load_run, retrack_config
    from sam3video.sources.loader import open_video

    sequences = synthetic_sequences(args.synthetic)
    for seq in sequences:
        seq["saved"] = load_run(seq["run"])  # read and checked once; masks are decoded while tracking

    def track(name: str, seq: dict, path: Path) -> tuple[int, float]:
        saved = seq["saved"]
        config, _, _ = retrack_config(saved, name, {})  # as `retrack RUN --tracker NAME`
        tracker = with_overrides(config, args.overrides).make_tracker(saved.meta.fps)
        if not args.frames:
            return len(saved.frames), run_tracker(tracker, ((f.index, f.candidates) for f in saved.frames), path,
                                                  args.fill_peer_gaps)
        images = {f.index: f.image for f in open_video(seq["video"])}
        return len(saved.frames), run_tracker(
            tracker, ((f.index, f.candidates, images[f.index]) for f in saved.frames), path, args.fill_peer_gaps)

    results = score_trackers(args, "synthetic", sequences, track)
    frames = sum(len(s["saved"].frames) for s in sequences)
    print(table(f"{args.synthetic}: {len(sequences)} synthetic sequences (masks, embeddings), {frames} "
                f"frames, combined", [(n, r.combined.metrics, fps) for n, (r, fps) in results.items()]))


def _frames_per_s(speeds: list[tuple[int, float]]) -> float:
    """Frames/s over sequences of (frames, frames/s)."""
    return sum(n for n, _ in speeds) / sum(n / f for n, f in speeds)


if __name__ == "__main__":
    main()

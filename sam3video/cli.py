"""The ``sam3video`` command: ``track``, ``retrack``, ``refine``, ``batch``, ``eval``, ``render`` and ``app``.

Exit codes: 0 done, 2 bad input or usage (one line on stderr naming the problem), 1 internal error,
130 interrupted (Ctrl-C; no output file is left half-written under its final name).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from .errors import InputError, Sam3VideoError

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_VIDEOS_FAILED = 1  # batch: some video failed (the others are done)

TRACK_EXAMPLES = """examples:
  sam3video track clip.mp4 --prompt dog
  sam3video track clip.mp4 --prompt dog --prompt cat --out runs/pets --fps 10
  sam3video track frames/ --prompt "red circle" --exemplar 0:40,30,90,80 --exemplar 0:150,20,200,70:neg
  sam3video track clip.mp4 --checkpoint sam3.pt --device cuda --prompt person --no-render

Without --checkpoint the small DEMO model shipped in the package is used: it was trained on the
synthetic shapes world only (prompts like "circle" or "red circle") and finds nothing in real videos.
Real videos need the official weights: --checkpoint facebook/sam3 (gated: accept the licence on the
hub and log in) or --checkpoint PATH to a downloaded sam3.pt. With sam3.pt (the official video model,
1465 tensors) all of them are used: the default tracker is then the official SAM 3 loop (--tracker sam3:
detector + memory tracker, outputs 14 frames behind for its hot-start rule); --tracker sam3video uses the
image model's 1134 tensors with our association tracker.
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


RESOLUTION_HELP = (
    "the model's square input size in pixels, a multiple of 14 (default: the checkpoint's, 1008 for sam3.pt; e.g. "
    "672 or 336, whose token grids fill sam3.pt's 24-token windows): fewer pixels, faster (the vision trunk's cost "
    "grows about with the square of N), small objects lost; sam3.pt was trained at 1008 and what it loses at other "
    "sizes is unmeasured (that needs the gated weights); the demo model (224) loses 20 HOTA at 168 (docs: Speed and "
    "precision modes)")


def add_track_parser(sub) -> None:
    p = sub.add_parser("track", help="track every instance of a concept in a video",
                       description="Detect, segment and track every instance of the prompted concepts.",
                       epilog=TRACK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", help="video file, folder of JPEG/PNG frames, or .npy array (T, H, W, 3)")
    p.add_argument("--prompt", action="append", default=[], help="noun phrase to track (repeatable)")
    p.add_argument("--exemplar", action="append", default=[], metavar="FRAME:X1,Y1,X2,Y2[:neg]",
                   help="exemplar box in pixels on a 0-based output frame (repeatable)")
    p.add_argument("--exemplars", metavar="FILE", help="JSON list of {frame, box: [x1,y1,x2,y2], label, prompt}")
    p.add_argument("--out", help="output directory (default: runs/<video stem>)")
    _add_run_options(p)
    p.add_argument("--resume", action="store_true",
                   help="go on from the last complete window of an interrupted or failed run into the same --out "
                        "(same settings; the files equal those of an uninterrupted run)")
    p.add_argument("--edits", metavar="FILE",
                   help="JSON list of clicks, boxes and removals on the tracks, applied in order after tracking "
                        "(the official loop, one clip of at most --window-seconds; see `sam3video refine -h`)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_run_options(p) -> None:
    """The options ``track`` and ``batch`` share: model, video sampling, thresholds, tracker, render."""
    from .video.session import PRECISIONS, RUNTIMES, TRACK_TRACKERS

    p.add_argument("--carry-exemplar-boxes", action="store_true",
                   help="keep giving positive exemplar boxes to the model on later frames, at their track's "
                        "box (default: on their own frame only, as the official code)")
    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", help="sam3.pt path or hub id such as facebook/sam3 (default: the demo "
                                            "model, synthetic shapes only)")
    model.add_argument("--config", help="model config: preset (sam3, tiny, demo) or file (default: from the checkpoint)")
    model.add_argument("--resolution", type=int, metavar="N", help=RESOLUTION_HELP)
    model.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    model.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                       help="fp32: exact (default); bf16/fp16: weights cast once + autocast; int8: the vision "
                            "trunk's linear layers quantized (CPU); auto: the fastest this device runs well")
    model.add_argument("--runtime", default="auto", choices=list(RUNTIMES),
                       help="what runs the vision trunk: torch, or openvino (CPU; fp32, bf16 or int8; converted "
                            "once and cached); auto (default): openvino where it is faster (bf16 or int8 on a CPU "
                            "with bf16 units, full-size model), else torch")
    model.add_argument("--frame-batch", type=int, help="frames per model call (default: 4 on a GPU "
                                                         "or for models up to 512 px, 1 for sam3.pt on a CPU)")
    video = p.add_argument_group("video")
    video.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav", "opencv"])
    video.add_argument("--fps", type=_positive_float, help="subsample to this frame rate")
    video.add_argument("--start", type=float, help="start time in seconds")
    video.add_argument("--end", type=float, help="end time in seconds (exclusive)")
    video.add_argument("--window-seconds", type=_positive_float, default=30.0, help="window length, <= 30 s")
    _add_threshold_flags(p.add_argument_group("thresholds"), retrack=False)
    p.add_argument("--tracker", choices=TRACK_TRACKERS,
                   help="sam3: the official SAM 3 loop (memory tracker + detector; default when the checkpoint "
                        "has tracker weights, as sam3.pt); sam3video: our association tracker (default for the "
                        "demo model); or a peer of the `trackers` package with its defaults")
    p.add_argument("--max-objects", type=int,
                   help="most objects the official loop tracks at once per prompt, the lowest-scoring new ones "
                        "dropped beyond it (--tracker sam3; default: no limit; Meta's SAM 3.1 builder uses 16)")
    p.add_argument("--direction", default="forward", choices=["forward", "both"],
                   help="both: objects first found after frame 0 are also tracked back to where they appear "
                        "(the official loop through a session, one clip of at most --window-seconds; beyond the "
                        "official requests, whose 'both' covers only frames before the prompt frame)")
    p.add_argument("--camera-motion", action="store_true",
                   help="compensate camera motion in the association trackers (sam3video, botsort, mcbyte): the "
                        "global motion between frames (sparse optical flow, as BoT-SORT) warps their predictions; "
                        "for pans and shaking cameras (not the official loop: --tracker sam3 ignores it); costs a few ms "
                        "a frame; retrack has no frames and re-tracks such a run without it")
    p.add_argument("--no-render", action="store_true", help="do not write overlay.mp4")


def _add_threshold_flags(group, retrack: bool) -> None:
    """The threshold flags of ``track`` (defaults of ``sam3video.thresholds``) or of ``retrack`` (not
    given: the run's, or for a detection file the defaults)."""
    from . import thresholds as t

    flags = [  # flag, type, track's default, that default in words, what it sets
        ("--score-threshold", _unit_float, None, "the model's calibrated value; 0.5 for sam3.pt",
         "confident detection: reported, may start a track"),
        ("--low-score-threshold", _unit_float, t.LOW_SCORE_THRESHOLD, f"{t.LOW_SCORE_THRESHOLD:g}",
         "weaker detections only continue tracks" + ("; not below the run's" if retrack else "")),
        ("--new-track-threshold", _unit_float, None, f"score threshold + {t.NEW_TRACK_MARGIN:g}",
         "score to start a track"),
        ("--nms-iou", _unit_float, t.NMS_IOU, f"{t.NMS_IOU:g}",
         "mask NMS IoU" + (", applied before the detections were saved: only the run's" if retrack else "")),
        ("--min-hits", int, t.MIN_HITS, str(t.MIN_HITS), "matched frames in a row before a track is confirmed (it is then reported from its first frame)"),
        ("--lost-buffer", float, t.LOST_BUFFER_S, f"{t.LOST_BUFFER_S:g}",
         "seconds a lost track is kept for re-identification"),
    ]
    for flag, kind, value, shown, text in flags:
        if retrack:  # a detection file has no calibrated model, and no masks to suppress
            shown = "the run's" + ("" if flag == "--nms-iou" else "; for a detection file " + (
                f"{t.SCORE_THRESHOLD:g}" if flag == "--score-threshold" else shown))
        group.add_argument(flag, type=kind, default=None if retrack else value, help=f"{text} (default: {shown})")


def _check_counts(args) -> None:
    """``--frame-batch`` / ``--min-hits`` >= 1 and ``--lost-buffer`` >= 0, where given."""
    for flag, value, least in (("--frame-batch", getattr(args, "frame_batch", None), 1),
                               ("--max-objects", getattr(args, "max_objects", None), 1),
                               ("--min-hits", args.min_hits, 1), ("--lost-buffer", args.lost_buffer, 0)):
        if value is not None and not value >= least:
            raise _usage(f"{flag} must be >= {least}, got {value:g}")


THRESHOLD_FLAGS = {"score_threshold": "score_threshold", "low_score_threshold": "low_score_threshold",
                   "new_track_threshold": "new_track_threshold", "nms_iou": "nms_iou", "min_hits": "min_hits",
                   "lost_buffer_s": "lost_buffer"}  # Thresholds field -> argparse dest


def _job(args):
    """The ``TrackJob`` of the command line (flags not given take the defaults of ``sam3video.thresholds``)."""
    from .trackers.association.exemplars import load_exemplars, parse_exemplar

    exemplars = [parse_exemplar(text) for text in args.exemplar]
    if args.exemplars:
        exemplars += load_exemplars(args.exemplars)
    edits = {}
    if args.edits:
        from .export.edits import load_edits

        edits = {"edits": tuple(load_edits(args.edits)), "edits_name": args.edits}
    return _settings_job(args, source=args.video, out_dir=args.out or Path("runs") / Path(args.video.rstrip("/")).stem,
                         exemplars=tuple(exemplars), resume=args.resume, source_name=args.video, **edits)


def _settings_job(args, **job):
    """A ``TrackJob`` with the options of ``_add_run_options`` and the fields ``job``."""
    from .run import TrackJob
    from .thresholds import Thresholds

    _check_counts(args)
    thresholds = Thresholds(score_threshold=args.score_threshold, low_score_threshold=args.low_score_threshold,
                            new_track_threshold=args.new_track_threshold, nms_iou=args.nms_iou,
                            min_hits=args.min_hits, lost_buffer_s=args.lost_buffer)
    return TrackJob(
        prompts=tuple(args.prompt), checkpoint=args.checkpoint, model_config=args.config,
        resolution=args.resolution, device=args.device,
        thresholds=thresholds, carry_exemplar_boxes=args.carry_exemplar_boxes, precision=args.precision,
        runtime=args.runtime, frame_batch=args.frame_batch, tracker=args.tracker, max_objects=args.max_objects,
        direction=args.direction, camera_motion=args.camera_motion,
        backend=args.backend, fps=args.fps, start=args.start,
        end=args.end, window_seconds=args.window_seconds, render=not args.no_render, **job)


def _usage(message: str) -> Sam3VideoError:
    from .errors import InputError

    return InputError(message)


def run_track(args) -> int:
    from .run import prepare

    # Every check first (arguments, video, exemplars, output folder, checkpoint), so that bad input
    # ends in one line before anything else is printed.
    run = prepare(_job(args))
    info = run.info
    if not args.quiet:
        count = f"{info.num_frames} frames" if info.num_frames is not None else "frame count unknown"
        print(f"{args.video}: {info.width}x{info.height}, {info.fps:.3f} fps, {count} ({info.backend}); "
              f"{run.source.num_output_frames or '?'} frames to track", file=sys.stderr)
    return _execute(run, "track", args.quiet)


RETRACK_EXAMPLES = """examples:
  sam3video retrack runs/pets --out runs/pets-bytetrack --tracker bytetrack
  sam3video retrack runs/pets --out runs/pets-strict --score-threshold 0.6 --min-hits 5 --no-render
  sam3video retrack --detections MOT17-02/det/det.txt --fps 30 --out runs/mot17-02 --tracker ocsort

From a run folder: its detections.npz (every frame's candidates, as `track` gave them to the tracker)
tracked again, without the model, into every file of `track` (overlay.mp4 if the run's video is still
there, or --video PATH). Flags not given keep the run's values: the same settings give the same
tracks.txt and tracks.mots.txt, byte for byte. Refused: a --low-score-threshold below the run's and
another --nms-iou (applied before the detections were saved), and any change to a run with
--carry-exemplar-boxes (its detections depended on its tracks).
With --detections: a MOTChallenge detection file of any detector (frame,-1,x,y,w,h,score,..., frames
1-based), boxes only, into tracks.txt and summary.json.
"""


def add_retrack_parser(sub) -> None:
    from .trackers.association.peers import TRACKER_NAMES

    p = sub.add_parser("retrack", help="track saved detections again (another tracker or thresholds), no model",
                       description="Re-run association and every output from a run's saved detections "
                                   "(RUN_DIR/detections.npz), or track a MOTChallenge detection file.",
                       epilog=RETRACK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", help="output folder of `sam3video track` (holds detections.npz)")
    p.add_argument("--detections", metavar="FILE", help="instead of RUN_DIR: a MOTChallenge detection file")
    p.add_argument("--fps", type=_positive_float, help="frame rate of the detection file (default 30)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tracker", choices=TRACKER_NAMES, help="association (default: the run's; sam3video for a "
                                                            "detection file)")
    _add_threshold_flags(p.add_argument_group("thresholds"), retrack=True)
    p.add_argument("--video", help="the run's video for overlay.mp4 (default: the one named in the run)")
    p.add_argument("--no-render", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_retrack(args) -> int:
    from .run import RetrackJob, prepare_retrack

    _check_counts(args)
    given = {field: getattr(args, dest) for field, dest in THRESHOLD_FLAGS.items() if getattr(args, dest) is not None}
    run = prepare_retrack(RetrackJob(run_dir=args.run_dir, out_dir=args.out, detection_file=args.detections,
                                     tracker=args.tracker, thresholds=given, fps=args.fps, video=args.video,
                                     render=not args.no_render))
    if not args.quiet:
        print(f"{args.run_dir or args.detections}: {run.source.num_output_frames} frames of saved detections; "
              f"tracker {run.config.tracker_name}", file=sys.stderr)
    return _execute(run, "retrack", args.quiet)


def _execute(run, command: str, quiet: bool) -> int:
    """Print the run's notes, run it (with a progress bar unless ``quiet``), print its one-line result."""
    for note in run.notes:
        print(f"sam3video {command}: note: {note}", file=sys.stderr)
    summary = run.execute(progress=None if quiet else _progress)
    print(f"{summary['frames']} frames, {len(summary['tracks'])} tracks, "
          f"{summary['timings']['frames_per_s']} frames/s -> {run.out_dir}/")
    return EXIT_OK


def _progress(results, total):
    from tqdm import tqdm

    with tqdm(results, total=total, unit="frame", dynamic_ncols=True, file=sys.stderr) as bar:
        yield from bar


BATCH_EXAMPLES = """examples:
  sam3video batch clips/ --prompt person --out runs/day
  sam3video batch a.mp4 b.mp4 list.txt --prompt dog --prompt cat --out runs/pets --workers 2
  sam3video batch clips/ --prompt car --out runs/cars --address 10.0.0.5:6379 --device cuda

INPUTS: video files, folders (searched recursively for videos and for folders of JPEG/PNG frames),
and .txt lists of such paths (one per line, relative to the list). Each video gets OUT/<name>/ with
the files of `track`; OUT/manifest.json records each one done (with output checksums) or failed (why),
OUT/index.json and OUT/index.csv list them all. Run the same command again to skip the done videos
and retry the others (an interrupted one goes on from its last complete window).
Ray runs the videos: a local instance sized to this machine, or a cluster with --address (the inputs
and OUT must then be on a filesystem every node sees). Each worker loads the model once.
Exit: 0 all done, 1 some video failed (one line each), 2 bad usage, 130 interrupted.
"""


def add_batch_parser(sub) -> None:
    p = sub.add_parser("batch", help="track many videos on Ray (local, or a cluster); resumable",
                       description="Track every video of INPUTS with the same settings, on Ray workers that "
                                   "load the model once.",
                       epilog=BATCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUTS", help="video files, folders of videos, .txt lists")
    p.add_argument("--prompt", action="append", default=[], help="noun phrase to track (repeatable)")
    p.add_argument("--exemplars-dir", metavar="DIR",
                   help="per-video exemplars: DIR/<name>.json (as track --exemplars) for the video written to "
                        "OUT/<name>/")
    p.add_argument("--out", required=True, help="output directory: OUT/<name>/ per video, manifest, index")
    _add_run_options(p)
    _add_ray_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_ray_options(p) -> None:
    """Where the runs of ``batch`` and ``benchmark veval`` go: a Ray cluster, its workers and threads."""
    ray = p.add_argument_group("ray")
    ray.add_argument("--address", help="join this Ray cluster (HOST:PORT of `ray start --head`, or auto); "
                                       "default: a local Ray instance")
    ray.add_argument("--workers", type=int, help="workers (each loads the model once); default: as many as "
                                                 "fit: GPUs, or CPUs / --threads")
    ray.add_argument("--threads", type=int, help="torch threads per worker (default: CPUs / --workers, or 2)")
    ray.add_argument("--gpus-per-worker", type=float,
                     help="GPUs per worker (default: 1 with --device cuda or auto on a GPU cluster; 0.5 packs two)")


def _check_ray_options(args) -> None:
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise _usage(f"{flag} must be >= 1, got {value}")
    if args.gpus_per_worker is not None and not args.gpus_per_worker > 0:
        raise _usage(f"--gpus-per-worker must be > 0, got {args.gpus_per_worker:g}")


def _check_checkpoint(checkpoint: str | None) -> None:
    from .model.checkpoint import is_demo, is_hub_id

    if not is_demo(checkpoint) and not is_hub_id(checkpoint) and not Path(checkpoint).exists():
        raise _usage(f"checkpoint not found: {checkpoint}")


def run_batch_command(args) -> int:
    from .batch import BatchJob, Manifest, collect_videos, run_batch, settings_of

    _check_ray_options(args)
    if not args.prompt and not args.exemplars_dir:
        raise _usage("nothing to track: give --prompt TEXT (and/or --exemplars-dir DIR)")
    if args.exemplars_dir and not Path(args.exemplars_dir).is_dir():
        raise _usage(f"--exemplars-dir {args.exemplars_dir} is not a folder")
    _check_checkpoint(args.checkpoint)
    base = _settings_job(args, source=None, out_dir=args.out)
    out = Path(args.out)
    known = Manifest.load(out.resolve(), settings_of(base)).known_names() if out.is_dir() else {}
    videos = collect_videos(args.inputs, out, args.exemplars_dir, known)
    job = BatchJob(base=base, videos=videos, out_dir=out, workers=args.workers, threads=args.threads,
                   address=args.address, gpus_per_worker=args.gpus_per_worker)
    report = run_batch(job, show_progress=not args.quiet)
    print(_batch_table(report))
    for name in report.failed:
        entry = report.entries[name]
        print(f"sam3video batch: failed: {name} ({entry['source']}): {entry['reason']}", file=sys.stderr)
    print(f"index: {out / 'index.json'}  {out / 'index.csv'}")
    return EXIT_VIDEOS_FAILED if report.failed else EXIT_OK


def _batch_table(report) -> str:
    """The final table of a batch, and a line on its workers."""
    from tabulate import tabulate

    row = [len(report.ran) + len(report.skipped), len(report.ran) - len(report.failed), len(report.skipped),
           len(report.failed), report.frames, f"{report.wall_s:.1f}",
           f"{report.frames / max(report.wall_s, 1e-9):.1f}" if report.ran else "-"]
    table = tabulate([row], headers=["videos", "done", "skipped", "failed", "frames", "time_s", "frames/s"])
    if not report.workers:
        return table + "\nnothing to run: every video is done"
    return table + (f"\n{report.workers} worker(s) x {report.threads} thread(s); {report.startup_s:.1f} s to start "
                    f"them (model load {report.model_load_s:.2f} s each)")


EVAL_EXAMPLES = """examples:
  sam3video eval --gt gt/ --pred runs/                       MOT / MOTS: HOTA, MOTA, IDF1 per sequence
  sam3video eval --veval saco_veval_sav_test.json runs/veval  SA-Co/VEval: cgF1 and phrase HOTA
  sam3video eval --veval GT.json PRED.json --json res.json   the official prediction format, the official keys

--veval PRED is a prediction JSON file (the official format), a run folder of `sam3video track` (its
predictions.veval.json) or a folder of runs; a run's masklets are tied to the ground truth by their video's
name and noun phrase. --export writes them as one official prediction file with the ground truth's ids.
"""


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="HOTA / MOTA / IDF1 of MOT or MOTS files, or SA-Co/VEval cgF1 and pHOTA",
                       description="Evaluate tracks with TrackEval's HOTA, CLEAR and Identity metrics (--gt, "
                                   "--pred: files, or folders of sequences <seq>/gt.txt and <seq>/tracks.txt), or "
                                   "score masklets on SA-Co/VEval as the official evaluator does (--veval).",
                       epilog=EVAL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gt", nargs="+", help="ground-truth file(s) or folder")
    p.add_argument("--pred", nargs="+", help="prediction file(s) or folder")
    p.add_argument("--kind", default="auto", choices=["auto", "mot", "mots"])
    p.add_argument("--veval", nargs=2, metavar=("GT", "PRED"),
                   help="SA-Co/VEval ground truth (JSON) and predictions (JSON file, run folder, folder of runs)")
    p.add_argument("--export", metavar="FILE", help="with --veval: write the predictions as one official file")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def run_eval_command(args) -> int:
    from .export.atomic import atomic_open

    if args.veval:
        if args.gt or args.pred:
            raise InputError("give either --veval GT PRED or --gt and --pred, not both")
        return _run_veval(args)
    if args.export:
        raise InputError("--export goes with --veval")
    if not args.gt or not args.pred:
        raise InputError("give --gt and --pred (MOT / MOTS files or folders), or --veval GT PRED")
    from .eval import format_table, run_eval

    gt = args.gt[0] if len(args.gt) == 1 else args.gt
    pred = args.pred[0] if len(args.pred) == 1 else args.pred
    result = run_eval(gt, pred, kind=args.kind)
    print(format_table(result))
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump(result.to_json(), f, indent=2)
    return EXIT_OK


def _run_veval(args) -> int:
    from .eval.veval import format_veval, score_veval
    from .export.atomic import atomic_open
    from .export.veval import read_ground_truth, read_predictions, write_masklets

    gt_path, pred_path = args.veval
    gt = read_ground_truth(gt_path)
    predictions = read_predictions(pred_path, gt)
    result = score_veval(gt, predictions)
    print(f"{gt_path}: {len(gt.videos)} videos, {len(gt.pairs)} (video, noun phrase) pairs, "
          f"{len(gt.annotations)} masklets; {len(predictions)} predicted masklets")
    print(format_veval(result))
    if args.export:
        with atomic_open(args.export, "w") as f:
            write_masklets(f, [m.to_json() for m in predictions])
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump(result.to_json(), f, indent=1)
    return EXIT_OK


REFINE_EXAMPLES = """examples:
  sam3video refine runs/pets --edits fixes.json --out runs/pets-fixed
  sam3video track clip.mp4 --prompt dog --checkpoint sam3.pt --edits fixes.json   # the same in one go

fixes.json is a JSON list of actions, applied in order (ids are those of the run's tracks.txt, frames 0-based,
coordinates in pixels of the video):
  [{"frame": 12, "obj_id": 3, "points": [[310, 200], [330, 260]], "labels": [1, 0]},   clicks on track 3
   {"frame": 40, "obj_id": 7, "box": [100, 80, 180, 160]},                              a box on track 7
   {"frame": 20, "obj_id": 9, "points": [[40, 60]], "labels": [1], "prompt": "dog"},   a new track 9
   {"remove": 5}]                                                                       track 5 goes
Clicks replace the object's earlier clicks on that frame unless "keep_old_points": true. After each action
the objects it touched are tracked again both ways from its frame; the others are kept. The run must come
from the official loop (--tracker sam3, the default with sam3.pt) on one clip of at most 30 s: its video,
model and settings are read from RUN_DIR/summary.json and the clip is tracked again (a run keeps no tracker
memory), then edited. Writes the files of `track` (no detections.npz); summary.json lists the edits and
what was computed.
"""


def add_refine_parser(sub) -> None:
    p = sub.add_parser("refine", help="fix a run's tracks with clicks, boxes and removals (JSON edits)",
                       description="Apply edits (clicks, boxes, removals) to a run of the official loop and write "
                                   "every output again.",
                       epilog=REFINE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="output folder of `sam3video track` (holds summary.json)")
    p.add_argument("--edits", required=True, metavar="FILE", help="JSON list of actions (see below)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--video", help="the run's video (default: the one named in summary.json)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--no-render", action="store_true", help="do not write overlay.mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_refine(args) -> int:
    from .export.edits import load_edits
    from .run import RefineJob, prepare_refine

    edits = load_edits(args.edits)
    run = prepare_refine(RefineJob(run_dir=args.run_dir, out_dir=args.out, edits=tuple(edits),
                                   edits_name=args.edits, video=args.video, device=args.device,
                                   render=not args.no_render))
    if not args.quiet:
        print(f"{args.run_dir}: {run.source.num_output_frames or '?'} frames, {len(edits)} edits", file=sys.stderr)
    return _execute(run, "refine", args.quiet)


BENCHMARK_EXAMPLES = """examples:
  sam3video benchmark veval saco_veval_sav_test.json sav_frames/ --checkpoint sam3.pt --out runs/veval-sav
  sam3video benchmark veval GT.json FRAMES/ --checkpoint sam3.pt --out runs/v --limit 20   the first 20 videos

FRAMES_ROOT holds the ground truth's file_names (VIDEO/00000.jpg ...). Every video is tracked once with all the
noun phrases the ground truth pairs with it (negative pairs included), each phrase on its own; runs go through
`batch` on Ray, so a rerun skips the videos already done. Writes OUT/runs/<video>/, OUT/predictions.json (the
official prediction format) and OUT/results.json (the official evaluator's layout), and prints cgF1 and pHOTA
beside the published SAM 3 / 3.1 test rows.
"""


def add_benchmark_parser(sub) -> None:
    p = sub.add_parser("benchmark", help="run a published benchmark's protocol (SA-Co/VEval)",
                       description="Run the protocol of a published benchmark and score it as the official code does.")
    which = p.add_subparsers(dest="benchmark", required=True)
    v = which.add_parser("veval", help="SA-Co/VEval: track every (video, noun phrase) pair, print cgF1 and pHOTA",
                         description="Track every (video, noun phrase) pair of a SA-Co/VEval ground truth and score "
                                     "the masklets with cgF1 and phrase HOTA.",
                         epilog=BENCHMARK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    v.add_argument("gt", metavar="GT", help="SA-Co/VEval ground truth (e.g. saco_veval_sav_test.json)")
    v.add_argument("frames_root", metavar="FRAMES_ROOT", help="folder holding the ground truth's file_names")
    v.add_argument("--out", required=True, help="output directory (runs, predictions.json, results.json)")
    v.add_argument("--limit", type=int, help="only the first N videos")
    v.add_argument("--subset", nargs="+", metavar="VIDEO", default=[], help="only these videos (names or ids)")
    _add_run_options(v)
    v.set_defaults(prompt=[])
    _add_ray_options(v)
    v.add_argument("--quiet", action="store_true", help="no progress bar")


def run_benchmark_command(args) -> int:
    from .eval.veval_benchmark import VevalBenchmarkJob, format_benchmark, run_veval_benchmark

    if args.limit is not None and args.limit < 1:
        raise _usage(f"--limit must be >= 1, got {args.limit}")
    changed = [flag for flag, value in (("--fps", args.fps), ("--start", args.start), ("--end", args.end))
               if value is not None]
    if changed:
        raise _usage(f"{', '.join(changed)} would change the frames: VEval scores every frame of the ground truth")
    _check_ray_options(args)
    _check_checkpoint(args.checkpoint)
    base = _settings_job(args, source=None, out_dir=args.out)
    report = run_veval_benchmark(VevalBenchmarkJob(
        gt=args.gt, frames_root=args.frames_root, out_dir=args.out, base=base, limit=args.limit,
        subset=tuple(args.subset), workers=args.workers, threads=args.threads, address=args.address,
        gpus_per_worker=args.gpus_per_worker), show_progress=not args.quiet)
    from .eval.veval import format_veval

    print(format_veval(report.result))
    print()
    print(format_benchmark(report, f"this run ({Path(args.checkpoint).name if args.checkpoint else 'demo'})"))
    for name in report.batch.failed:
        entry = report.batch.entries[name]
        print(f"sam3video benchmark: failed: {name}: {entry['reason']} (its pairs count as missed)", file=sys.stderr)
    print(f"results: {Path(args.out) / 'results.json'}  predictions: {Path(args.out) / 'predictions.json'}")
    return EXIT_VIDEOS_FAILED if report.batch.failed else EXIT_OK


def add_render_parser(sub) -> None:
    p = sub.add_parser("render", help="re-render overlay.mp4 from a run's saved outputs",
                       description="Draw the saved masks (tracks.mots.txt) or boxes (tracks.txt) of a run "
                                   "over its video.")
    p.add_argument("run_dir", help="output folder of `sam3video track` (holds summary.json)")
    p.add_argument("--video", help="the input video (default: the one named in summary.json)")
    p.add_argument("--out", help="overlay file (default: RUN_DIR/overlay.mp4)")
    p.add_argument("--boxes-only", action="store_true", help="draw tracks.txt boxes, not masks")


def run_render(args) -> int:
    from .run import render_run

    out = render_run(args.run_dir, video=args.video, out=args.out, boxes_only=args.boxes_only)
    print(f"wrote {out}")
    return EXIT_OK


def add_app_parser(sub) -> None:
    from .app import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser("app", help="a local web page: track concepts, fix them by clicking, export",
                       description="Start a local web page (Gradio) to track prompts in a video, add or refine "
                                   "objects by clicking, remove them, and export the run folder.")
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="videos the page offers (more can be uploaded)")
    p.add_argument("--checkpoint", help="sam3.pt, sam3.1_multiplex.pt or a hub id (default: the demo video model)")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--max-upload-mb", type=_positive_float, default=200.0, help="largest upload (default 200 MB)")
    p.add_argument("--resolution", type=int, metavar="N", help=RESOLUTION_HELP)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])


def run_app(args) -> int:
    from .app import serve

    serve(args.videos, args.checkpoint, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
          device=args.device, resolution=args.resolution)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="sam3video", description="Video concept tracking with SAM 3.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = parser.add_subparsers(dest="command", required=True)
    add_track_parser(sub)
    add_retrack_parser(sub)
    add_refine_parser(sub)
    add_batch_parser(sub)
    add_eval_parser(sub)
    add_benchmark_parser(sub)
    add_render_parser(sub)
    add_app_parser(sub)
    return parser


COMMANDS = {"track": run_track, "retrack": run_retrack, "refine": run_refine, "batch": run_batch_command,
            "eval": run_eval_command, "benchmark": run_benchmark_command, "render": run_render, "app": run_app}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit 2 through argparse
    try:
        return COMMANDS[args.command](args)
    except Sam3VideoError as e:
        print(f"sam3video {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        hint = {"track": " (the finished windows are kept: add --resume to go on)",
                "batch": " (finished videos are kept: run the same command again to go on)"}.get(args.command, "")
        print(f"sam3video {args.command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: say so in one line, full traceback with --debug
        if args.debug:
            traceback.print_exc()
        print(f"sam3video {args.command}: internal error: {type(e).__name__}: {e} (rerun with --debug)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())

"""``sam3video benchmark veval``: the SA-Co/VEval protocol in one command.

    sam3video benchmark veval saco_veval_sav_test.json FRAMES_ROOT --checkpoint sam3.pt --out runs/veval

For every video of the ground truth (or the first ``--limit``, or those named by ``--subset``), one ``track``
run with every noun phrase the ground truth pairs with that video as a prompt — the negative pairs too,
since they are half of cgF1 — each prompt tracked on its own as the official evaluation does (one
``add_prompt`` + ``propagate_in_video`` per phrase, the state reset between them). The runs go through
``batch`` (Ray workers that load the model once; rerunning the command skips the videos already done), each
writes ``predictions.veval.json`` with the ground truth's ids. Then the masklets are scored as the official
evaluator does (``sam3video.eval.veval``) against the ground truth of the videos run, and the table is
printed with the published SAM 3 and 3.1 rows beside it. Written to OUT: ``runs/<video>/`` (each a run
folder), ``frames/<video>/`` (links to the ground truth's frames, in its order), ``predictions.json`` (all
masklets, the official format: the official ``saco_veval_eval.py`` reads it), ``results.json`` (the official
``eval_res`` layout).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import InputError
from ..export.atomic import atomic_open
from ..export.veval import (
    PREDICTIONS_NAME,
    VevalGroundTruth,
    VevalIds,
    read_ground_truth,
    read_predictions,
    write_masklets,
)
from .veval import PAPER_ROWS, VevalResult, score_veval


@dataclass(frozen=True)
class VevalBenchmarkJob:
    """``gt``: a VEval ground-truth file; ``frames_root``: where its ``file_names`` are; ``base``: the ``track``
    settings (model, device, tracker ...; no prompts); ``limit``/``subset``: which videos."""

    gt: str | Path
    frames_root: str | Path
    out_dir: str | Path
    base: object  # run.TrackJob
    limit: int | None = None
    subset: tuple[str, ...] = ()
    workers: int | None = None
    threads: int | None = None
    address: str | None = None
    gpus_per_worker: float | None = None


@dataclass
class VevalBenchmarkReport:
    result: VevalResult
    gt: VevalGroundTruth  # the videos that were run
    batch: object  # batch.BatchReport
    set_name: str | None


def restrict(gt: VevalGroundTruth, video_ids: set[int]) -> VevalGroundTruth:
    """The ground truth of ``video_ids`` only."""
    return VevalGroundTruth(gt.path, {i: v for i, v in gt.videos.items() if i in video_ids},
                            [a for a in gt.annotations if a.video_id in video_ids],
                            [p for p in gt.pairs if p.video_id in video_ids], gt.categories)


def select_videos(gt: VevalGroundTruth, limit: int | None, subset: tuple[str, ...]) -> list[int]:
    """Video ids in ground-truth order: those named by ``subset`` (video names or ids), at most ``limit``."""
    ids = list(gt.videos)
    if subset:
        by_name = {v.name: i for i, v in gt.videos.items()} | {str(i): i for i in gt.videos}
        unknown = [s for s in subset if s not in by_name]
        if unknown:
            raise InputError(f"--subset: {', '.join(unknown[:3])} not a video of {gt.path} (names or ids)")
        ids = [by_name[s] for s in dict.fromkeys(subset)]
    if limit is not None:
        ids = ids[:limit]
    if not ids:
        raise InputError(f"no video of {gt.path} to run")
    return ids


def link_frames(gt: VevalGroundTruth, video_id: int, frames_root: Path, out: Path) -> Path:
    """``out/<video>/`` holding links ``00000<ext>``, ... to the video's ``file_names`` under ``frames_root``,
    in the ground truth's order (so the run sees exactly its frames); ``InputError`` for a missing frame."""
    video = gt.videos[video_id]
    folder = out / _folder_name(video.name, video_id)
    folder.mkdir(parents=True, exist_ok=True)
    for t, name in enumerate(video.file_names):
        source = (frames_root / name).resolve()
        link = folder / f"{t:05d}{source.suffix.lower()}"
        if link.is_symlink() and Path(os.readlink(link)) == source:
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    return folder


def check_frames(gt: VevalGroundTruth, video_ids: list[int], frames_root: Path) -> None:
    """``InputError`` naming the first frame of ``video_ids`` missing under ``frames_root``."""
    for video_id in video_ids:
        for t, name in enumerate(gt.videos[video_id].file_names):
            if not (frames_root / name).is_file():
                raise InputError(f"{frames_root / name} does not exist (frame {t} of video {video_id} in {gt.path})")


def _folder_name(name: str, video_id: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "video"
    return f"{video_id}-{safe}"


def set_name(gt: VevalGroundTruth) -> str | None:
    """Which published set the ground truth is (by its file name or description): SA-V, YT-Temporal-1B,
    SmartGlasses, or None."""
    text = gt.path.name.lower()
    for key, name in (("sav", "SA-V"), ("yt1b", "YT-Temporal-1B"), ("smartglasses", "SmartGlasses")):
        if key in text:
            return name
    return None


def run_veval_benchmark(job: VevalBenchmarkJob, show_progress: bool = True) -> VevalBenchmarkReport:
    """Run every selected video (resumable), score the masklets, write ``predictions.json`` and ``results.json``."""
    from ..batch import BatchJob, BatchVideo, run_batch
    from ..export.outputs import prepare_out_dir

    gt = read_ground_truth(job.gt)
    frames_root = Path(job.frames_root)
    if not frames_root.is_dir():
        raise InputError(f"frames root {frames_root} is not a folder")
    ids = select_videos(gt, job.limit, job.subset)
    check_frames(gt, ids, frames_root)
    out = prepare_out_dir(Path(job.out_dir).resolve())
    videos = []
    for video_id in ids:
        video = gt.videos[video_id]
        phrases: dict[str, int] = {}
        for pair in gt.pairs:
            if pair.video_id == video_id and pair.noun_phrase and pair.noun_phrase not in phrases:
                phrases[pair.noun_phrase] = pair.category_id
        if not phrases:
            continue
        folder = link_frames(gt, video_id, frames_root, out / "frames")
        videos.append(BatchVideo(name=folder.name, source=str(folder), prompts=tuple(phrases),
                                 veval_ids=VevalIds(video.name, video_id, tuple(phrases.values()))))
    if not videos:
        raise InputError(f"no (video, noun phrase) pair with a noun phrase among the videos chosen from {gt.path}")
    batch = run_batch(BatchJob(base=replace(job.base, prompts=(), render=False), videos=tuple(videos),
                               out_dir=out / "runs", workers=job.workers, threads=job.threads, address=job.address,
                               gpus_per_worker=job.gpus_per_worker), show_progress=show_progress)
    run_gt = restrict(gt, {int(v.veval_ids.video_id) for v in videos})
    predictions = []
    for video in videos:  # a video that failed has no file: all its pairs count as missed
        path = out / "runs" / video.name / PREDICTIONS_NAME
        if path.is_file():
            predictions += read_predictions(path, run_gt)
    result = score_veval(run_gt, predictions)
    with atomic_open(out / "predictions.json", "w") as f:
        write_masklets(f, [m.to_json() for m in predictions])
    with atomic_open(out / "results.json", "w") as f:
        json.dump(result.to_json(), f, indent=1)
    return VevalBenchmarkReport(result, run_gt, batch, set_name(gt))


def format_benchmark(report: VevalBenchmarkReport, label: str) -> str:
    """cgF1 and pHOTA (masks, in %) of this run beside the published test rows of the same set."""
    from tabulate import tabulate

    m = report.result.metrics
    rows = [[label, f"{100 * m['video_mask_demo_cgf1_micro_50_95']:.1f}",
             f"{100 * m['video_mask_all_phrase_HOTA']:.1f}" if "video_mask_all_phrase_HOTA" in m else "-",
             f"{m['video_mask_demo_ilmcc_50_95']:.3f}", f"{100 * m['video_mask_demo_positive_micro_f1_50_95']:.1f}",
             f"{len(report.gt.videos)} videos, {len(report.gt.pairs)} pairs"]]
    sets = [report.set_name] if report.set_name else list(PAPER_ROWS["SAM 3"])
    for model, by_set in PAPER_ROWS.items():
        for name in sets:
            cgf1, phota = by_set[name]
            rows.append([f"{model} (published, {name} test)", f"{cgf1:.1f}", f"{phota:.1f}", "", "", "all videos"])
    return tabulate(rows, headers=["", "cgF1", "pHOTA", "IL_MCC", "pmF1", "scored on"])

"""Consume a tracking stream into the output files of a run, each written atomically.

``OUT/tracks.txt`` (MOTChallenge boxes), ``OUT/tracks.mots.txt`` (MOTS masks, COCO RLE),
``OUT/overlay.mp4`` (unless ``render=False``) and ``OUT/summary.json``; with several prompts also
``OUT/tracks.<prompt>.txt``, the MOT file of each prompt alone (MOT lines carry no class). An interrupted run (error or
Ctrl-C) leaves no file named as final: the writers' temp files are removed.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

from ..data.concepts import prompt_slug
from ..errors import InputError
from ..export import MOTSWriter, MOTWriter, OverlayWriter, TrackStats, annotate, write_summary
from .predictor import FrameResult

OUTPUT_NAMES = {"mot": "tracks.txt", "mots": "tracks.mots.txt", "overlay": "overlay.mp4", "summary": "summary.json"}


def prepare_out_dir(out_dir: "str | Path") -> Path:
    """Create ``out_dir`` if needed and check that files can be written there (``InputError`` if not)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"cannot write to output directory {out_dir}: {e.strerror or e}") from None
    return out_dir


def per_prompt_names(class_names: list[str]) -> list[str]:
    """``tracks.<slug>.txt`` for each prompt (``_2``, ``_3`` ... where slugs collide)."""
    names: list[str] = []
    for name in class_names:
        slug, n = prompt_slug(name), 2
        candidate = f"tracks.{slug}.txt"
        while candidate in names:
            candidate, n = f"tracks.{slug}_{n}.txt", n + 1
        names.append(candidate)
    return names


def write_outputs(
    results: Iterable[FrameResult],
    out_dir: "str | Path",
    class_names: list[str],
    fps: float,
    frame_size: tuple[int, int],
    render: bool = True,
    summary: dict | None = None,
) -> dict:
    """Write every output of a run from ``results``; returns the summary written to ``summary.json``.

    ``frame_size`` is (height, width) of the original video; ``summary`` holds run facts (input, model,
    prompts, thresholds) to which the per-track table and timings are added.
    """
    out_dir = prepare_out_dir(out_dir)
    height, width = frame_size
    stats = TrackStats(class_names)
    num_frames, start = 0, time.perf_counter()
    render_seconds = 0.0
    with ExitStack() as stack:
        mot = stack.enter_context(MOTWriter(out_dir / OUTPUT_NAMES["mot"]))
        mots = stack.enter_context(MOTSWriter(out_dir / OUTPUT_NAMES["mots"]))
        per_prompt = []
        if len(class_names) > 1:
            per_prompt = [stack.enter_context(MOTWriter(out_dir / name)) for name in per_prompt_names(class_names)]
        overlay = None
        if render:
            overlay = stack.enter_context(OverlayWriter(out_dir / OUTPUT_NAMES["overlay"], fps, width, height))
        for result in results:
            mot.write(result.frame_index, result.detections)
            mots.write(result.frame_index, result.detections)
            for class_id, writer in enumerate(per_prompt):
                writer.write(result.frame_index, result.detections[result.detections.class_id == class_id])
            stats.update(result.frame_index, result.detections)
            if overlay is not None:
                render_start = time.perf_counter()
                overlay.write(annotate(result.image, result.detections, class_names))
                render_seconds += time.perf_counter() - render_start
            num_frames += 1
        if num_frames == 0:
            raise InputError("the video produced no frames to track")
    elapsed = time.perf_counter() - start
    summary = dict(summary or {})
    summary.update({
        "frames": num_frames,
        "tracks": stats.table(),
        "outputs": {**{k: v for k, v in OUTPUT_NAMES.items() if render or k != "overlay"},
                    **({"per_prompt_mot": dict(zip(class_names, per_prompt_names(class_names)))}
                       if len(class_names) > 1 else {})},
        "timings": {
            **summary.get("timings", {}),
            "total_s": round(elapsed, 3),
            "render_s": round(render_seconds, 3),
            "frames_per_s": round(num_frames / elapsed, 2) if elapsed > 0 else None,
            "frames_per_s_without_render": round(num_frames / max(elapsed - render_seconds, 1e-9), 2),
        },
    })
    write_summary(out_dir / OUTPUT_NAMES["summary"], summary)
    return summary

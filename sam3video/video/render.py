"""Re-render a run's overlay video from its saved outputs (``sam3video render``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..detections import Detections
from ..errors import InputError
from ..export import OverlayWriter, annotate, read_mot, read_mots
from .loader import open_video
from .outputs import OUTPUT_NAMES


def render_run(run_dir: "str | Path", video: "str | None" = None, out: "str | Path | None" = None,
               boxes_only: bool = False) -> Path:
    """Draw ``tracks.mots.txt`` masks (or ``tracks.txt`` boxes) over the run's video; returns the path.

    The video, its sampling (fps/start/end) and the prompt names come from ``summary.json``.
    """
    run_dir = Path(run_dir)
    summary_path = run_dir / OUTPUT_NAMES["summary"]
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        raise InputError(f"{summary_path} not found: is {run_dir} the output folder of `sam3video track`?") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{summary_path} is not valid JSON: {e}") from None
    sampling = summary.get("config", {})
    source = video or summary["input"]["source"]
    if str(source).endswith(".npy"):
        source = np.load(source, mmap_mode="r")
    reader = open_video(source, fps=sampling.get("fps"), start=sampling.get("start"), end=sampling.get("end"))
    if boxes_only:
        tracks, class_names = read_mot(run_dir / OUTPUT_NAMES["mot"]), []
    else:
        tracks, class_names = read_mots(run_dir / OUTPUT_NAMES["mots"]), summary.get("prompts", [])
    out = Path(out) if out else run_dir / OUTPUT_NAMES["overlay"]
    info = reader.info
    fps = sampling.get("fps") or info.fps
    with OverlayWriter(out, fps, info.width, info.height) as writer:
        for frame in reader:
            detections = tracks.get(frame.index, Detections.empty(info.height, info.width))
            writer.write(annotate(frame.image, detections, class_names))
    return out

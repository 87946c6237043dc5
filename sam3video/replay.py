"""Frame sources without the model, for ``sam3video retrack``: saved detections through a tracker again.

``Replay`` yields the ``FrameResult`` stream that ``sam3video.run.Run`` consumes, as
``VideoPredictor.track`` does: per stored frame, the exemplar memory learns what it learnt on that frame
(``ExemplarMemory.learn`` with the stored inputs) and ``track_candidates`` (the predictor's own step)
associates the candidates. The windows are the stored ones, so the segments, the ids (carried across
windows) and therefore the files equal those of ``track``.

Two stores: a run's ``detections.npz`` (``load_run``; its settings in ``retrack_config``) and a
MOTChallenge detection file from any detector (``detection_file_source``: boxes and scores, one class).

What can be re-tracked from a run's candidates: the candidates were kept by ``postprocess`` at the
run's low score threshold after mask NMS at its IoU. A higher ``low_score_threshold`` keeps exactly
the candidates a fresh run would (those below it are dropped: greedy NMS decides each detection by
higher-scoring ones only; a fresh run pools their embeddings in smaller batches, which can change the
last float32 bit); a lower one, or another NMS IoU, would need detections that were not kept, and is
refused. The tracker
and its thresholds (score, new-track, min hits, lost buffer) are free, except for a run with
``carry_exemplar_boxes``, whose detections depended on its own tracks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .detections import Detections
from .errors import InputError
from .export.detections_store import SavedFrame, SavedFrames, StoreMeta, read_saved_detections
from .export.outputs import OUTPUT_NAMES
from .export.summary import RunFacts
from .sources.loader import MAX_WINDOW_SECONDS, VideoReader
from .thresholds import SCORE_THRESHOLD, Thresholds
from .trackers.association.exemplars import Exemplar, ExemplarConfig, ExemplarMemory, exemplar_from_record
from .video.session import (DetectionConfig, FrameResult, TrackingConfig, TrackingSession, complete, flush_completion,
                            track_candidates)

DETECTION_FILE_FPS = 30.0  # a MOTChallenge detection file says no frame rate
DETECTION_FILE_CLASS = "object"  # its one class (MOT lines carry none)
MAX_DETECTION_FILE_FRAMES = 2**24  # frames a detection file may span (155 hours at 30 fps)


class Replay:
    """Stored frames as a ``Run``'s frame source; see the module docstring. ``min_confidence``: drop
    candidates scoring less (a raised low score threshold); ``reader``: the video, for the overlay."""

    def __init__(self, frames: "SavedFrames | _DetectionFileFrames", facts: RunFacts, fps: float,
                 frame_size: "tuple[int, int] | None", min_confidence: float | None = None,
                 reader: VideoReader | None = None):
        self.frames, self.facts, self.fps, self.frame_size = frames, facts, fps, frame_size
        self.masks = self.saves_candidates = frame_size is not None
        self.min_confidence, self.reader = min_confidence, reader
        self.num_output_frames = len(frames)

    def results(self, session: TrackingSession, first_window: int,
                on_window_end: Callable[[int], None]) -> Iterator[FrameResult]:
        """A ``FrameResult`` per stored frame (``image`` None without a video); windows before
        ``first_window`` are skipped (resuming), ``on_window_end(window)`` follows each window's last."""
        images = iter(self.reader) if self.reader is not None else None
        window = None
        for saved in self.frames:
            image = self._image(images, saved) if images is not None else None
            if saved.window < first_window:
                continue
            if window is not None and saved.window != window:
                yield from flush_completion(session)
                on_window_end(window)
            window = saved.window
            start = time.perf_counter()
            candidates = saved.candidates
            if self.min_confidence is not None:
                candidates = candidates[candidates.confidence >= self.min_confidence]
            if saved.learned is not None:
                session.exemplars.learn(saved.index, *saved.learned)
            tracked = track_candidates(session, saved.index, candidates)
            session.timings["track"] += time.perf_counter() - start
            session.frames_done += 1
            yield from complete(session, FrameResult(saved.index, saved.timestamp, saved.window, tracked, image,
                                                     candidates, saved.learned))
        yield from flush_completion(session)
        if window is not None:
            on_window_end(window)
        if images is not None and next(images, None) is not None:
            raise InputError(f"{self.reader.info.source} has more frames than the saved detections: not the "
                             f"run's video")

    def _image(self, images: Iterator, saved: SavedFrame):
        frame = next(images, None)
        if frame is None or frame.index != saved.index:
            raise InputError(f"{self.reader.info.source} ends before frame {saved.index} of the saved detections: "
                             f"not the run's video")
        return frame.image


@dataclass(frozen=True)
class SavedRun:
    """A run's ``detections.npz``, read and checked, with the settings it was made with."""

    path: Path
    meta: StoreMeta
    frames: SavedFrames
    thresholds: Thresholds
    score_default: float
    detection: DetectionConfig
    exemplar: ExemplarConfig
    exemplars: tuple[Exemplar, ...]
    tracker_name: str
    read_s: float

    def facts(self, thresholds: Thresholds, video: str | None) -> RunFacts:
        """The facts of a retrack of this run at ``thresholds`` (the overlay drawn on ``video``)."""
        run = self.meta.run
        retracked = {"run": str(self.path.parent), "detections": str(self.path)}
        if video is not None:
            retracked["video"] = video
        sampling = {k: run["config"].get(k) for k in ("fps", "start", "end", "window_seconds")}
        return RunFacts(input=run["input"], model=run["model"], sampling=sampling, thresholds=asdict(thresholds),
                        score_default=self.score_default, retracked_from=retracked)


def _run_of_sessions_with_exemplars(run_dir: Path) -> bool:
    """Whether ``run_dir``'s summary says its tracks came from interactive sessions with exemplar boxes (which save
    no detections)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    sessions = isinstance(summary, dict) and ("edits" in summary or summary.get("config", {}).get("direction") == "both")
    return sessions and bool(summary.get("exemplars"))


def load_run(run_dir: "str | Path") -> SavedRun:
    """``run_dir``'s ``detections.npz`` (or that file itself) and the settings it records."""
    start = time.perf_counter()
    path = Path(run_dir)
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    store = path / OUTPUT_NAMES["detections"] if path.is_dir() else path
    if not store.is_file():
        if path.is_dir() and _run_of_sessions_with_exemplars(path):
            raise InputError(f"{path} has no {OUTPUT_NAMES['detections']}: runs of the sessions (edits, --direction "
                             f"both, refine, the app) with exemplar boxes keep none; use refine on it, or track the "
                             f"video again")
        raise InputError(f"{store} not found: is {path} an output folder of `sam3video track` (made since runs "
                         f"save their detections)?")
    meta, frames = read_saved_detections(store)
    run = meta.run
    try:
        config = run["config"]
        exemplars = tuple(exemplar_from_record(e) for e in run["exemplars"])
        saved = SavedRun(store, meta, frames, Thresholds(**run["thresholds"]), float(run["model_score_threshold"]),
                         DetectionConfig(**config["detection"]), ExemplarConfig(**config["exemplar"]), exemplars,
                         str(run["tracker"]["name"]), time.perf_counter() - start)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # InputError is a ValueError
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:120]
        raise InputError(f"{store}: its run settings are incomplete or from another sam3video version "
                         f"({reason}); track the video again") from None
    learned = frames.learned_frames
    for exemplar in exemplars:
        if exemplar.frame in frames.indices and exemplar.frame not in learned:
            raise InputError(f"{store}: damaged detections file: no exemplar data on exemplar frame {exemplar.frame}")
    return saved


def retrack_config(saved: SavedRun, tracker: str | None, overrides: Mapping[str, Any]
                   ) -> tuple[TrackingConfig, Thresholds, float | None]:
    """(the config of a retrack of ``saved`` with ``tracker`` (None: the run's) and the ``Thresholds``
    fields ``overrides`` (the others: the run's), those thresholds, the confidence below which saved
    candidates are dropped or None). Refuses, with one line, what the saved candidates cannot
    reproduce (see the module docstring)."""
    thresholds = replace(saved.thresholds, **overrides)
    name = tracker or saved.tracker_name
    carry = saved.exemplar.carry_boxes
    if carry and (thresholds != saved.thresholds or name != saved.tracker_name):
        raise InputError("the run carried exemplar boxes (--carry-exemplar-boxes): its detections depend on its "
                         "own tracks, so retrack can only repeat it with the same tracker and thresholds; track "
                         "again to change them")
    config = TrackingConfig.from_thresholds(thresholds, saved.score_default, carry, tracker_name=name)
    low, saved_low = config.detection.low_score_threshold, saved.detection.low_score_threshold
    if low < saved_low:
        raise InputError(f"--low-score-threshold {low:g} is below the {saved_low:g} the detections were saved at "
                         f"(weaker ones were not kept); track again to go lower")
    nms, saved_nms = config.detection.nms_iou_threshold, saved.detection.nms_iou_threshold
    if nms != saved_nms:
        raise InputError(f"--nms-iou {nms:g} differs from the run's {saved_nms:g}: mask NMS ran before the "
                         f"detections were saved; track again to change it")
    detection = replace(saved.detection, score_threshold=config.detection.score_threshold, low_score_threshold=low)
    config = replace(config, detection=detection, exemplar=saved.exemplar)
    return config, thresholds, (low if low > saved_low else None)


def replay_session(saved: SavedRun, config: TrackingConfig) -> TrackingSession:
    """A fresh session for a retrack of ``saved``: its prompts and exemplars, ``config``'s tracker."""
    class_names = list(saved.meta.class_names)
    memory = ExemplarMemory(list(saved.exemplars), class_names, config.exemplar)
    return TrackingSession(class_names=class_names, text_out={}, exemplars=memory,
                           tracker=config.make_tracker(saved.meta.fps),
                           timings={"read": saved.read_s, "track": 0.0})


# ---- MOTChallenge detection files ----------------------------------------------------------------

class _DetectionFileFrames:
    """Frames 0 .. last of a detection file, each its boxes (or none), made while iterating."""

    def __init__(self, by_frame: dict[int, Detections], fps: float):
        self.by_frame, self.fps = by_frame, fps
        self.count = max(by_frame) + 1

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[SavedFrame]:
        for index in range(self.count):
            given = self.by_frame.get(index)
            boxes = Detections.empty() if given is None else Detections(given.xyxy, given.confidence, given.class_id)
            timestamp = index / self.fps
            yield SavedFrame(index, timestamp, math.floor(timestamp / MAX_WINDOW_SECONDS), boxes)


def detection_file_source(path: "str | Path", fps: float | None, tracker: str | None,
                          overrides: Mapping[str, Any]) -> tuple[Replay, TrackingConfig, TrackingSession]:
    """(the source, config and session) tracking a MOTChallenge detection file: its boxes and scores,
    one class, at ``fps`` (default 30); the thresholds are ``Thresholds``' defaults but ``overrides``,
    the low score threshold dropping weaker boxes as it drops the model's. Bad lines: ``InputError``
    naming file and line."""
    from .export.mot import read_detection_file

    start = time.perf_counter()
    if "nms_iou" in overrides:
        raise InputError("--nms-iou is for a run's masks: a detection file's boxes are tracked as given")
    fps = DETECTION_FILE_FPS if fps is None else float(fps)
    if not (math.isfinite(fps) and fps > 0):
        raise InputError(f"--fps must be > 0, got {fps:g}")
    by_frame = read_detection_file(path, max_frames=MAX_DETECTION_FILE_FRAMES)
    if not by_frame:
        raise InputError(f"{path}: no detections in it: nothing to track")
    thresholds = replace(Thresholds(), **overrides)
    config = TrackingConfig.from_thresholds(thresholds, SCORE_THRESHOLD, tracker_name=tracker or "sam3video")
    frames = _DetectionFileFrames(by_frame, fps)
    detection = config.detection
    facts = RunFacts(
        input={"source": str(path), "kind": "MOTChallenge detections", "fps": fps, "num_frames": len(frames)},
        model=None, sampling={"fps": fps, "start": None, "end": None, "window_seconds": MAX_WINDOW_SECONDS},
        thresholds=asdict(thresholds), score_default=SCORE_THRESHOLD,
        detection={"score_threshold": detection.score_threshold, "low_score_threshold": detection.low_score_threshold,
                   "note": "the file's boxes and scores as given (no NMS), class 0"})
    session = TrackingSession(class_names=[DETECTION_FILE_CLASS], text_out={},
                              exemplars=ExemplarMemory([], [DETECTION_FILE_CLASS], config.exemplar),
                              tracker=config.make_tracker(fps),
                              timings={"read": time.perf_counter() - start, "track": 0.0})
    return Replay(frames, facts, fps, None, min_confidence=detection.low_score_threshold), config, session

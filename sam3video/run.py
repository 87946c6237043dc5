"""One module runs a job: frames in -> detect (or replay saved detections) and track -> every output.

    job = TrackJob("clip.mp4", out_dir="runs/clip", prompts=("dog",))
    run = prepare(job)          # every check (video, exemplars, output folder, checkpoint), the model
    summary = run.execute()     # the files of ``export.outputs``; ``track(job)`` does both

    again = prepare_retrack(RetrackJob("runs/clip", out_dir="runs/clip-sort", tracker="sort"))
    again.execute()             # the same files from runs/clip/detections.npz, without the model

The CLI (``track``, ``retrack``, ``render``), ``make benchmark``, ``tools/bench_video.py`` and
``tools/calibrate_thresholds.py`` call it. A ``Run`` consumes a frame source's ``FrameResult`` stream:
the model's (``VideoPredictor.track``) or saved detections' (``sam3video.replay``), through one
``execute``. Each window's outputs are segments in ``OUT/.partial``, with the run's state after the
window (tracker, exemplar memory, per-track table, timings); ``TrackJob(resume=True)`` goes on after
the last complete window and gives the same files as an uninterrupted run. The state is JSON + ``.npz`` without
pickles (``export.run_state``): reading it runs no code of the file's choosing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .detections import Detections
from .errors import InputError
from .export.atomic import remove_temp_files
from .export.detections_store import SavedFrame, StoreMeta
from .export.edits import Edit, RemoveEdit, check_edits
from .export.mots import decode_rle, encode_rle
from .export.outputs import (
    OUTPUT_NAMES,
    PARTIAL_DIR,
    WindowFiles,
    output_files,
    per_prompt_names,
    prepare_out_dir,
    publish_outputs,
    remove_partial,
)
from .export.run_state import TREE_NAME, StateError, load_state, save_state
from .export.summary import RunFacts, TrackStats, summary_text
from .export.veval import PREDICTIONS_NAME, VevalIds, video_name_of
from .geometry import even_size
from .sources.loader import VideoInfo, VideoReader, open_video
from .thresholds import Thresholds
from .trackers.association.exemplars import Exemplar, check_exemplar, exemplar_from_record, exemplar_record
from .video.session import FrameResult, TrackingConfig, TrackingSession

if TYPE_CHECKING:
    from .replay import SavedRun
    from .video.predictor import VideoPredictor

DIRECTIONS = ("forward", "both")  # of ``track --direction``
STATE_NAME = TREE_NAME  # in OUT/.partial (with state.npz): the run after its last complete window
LEGACY_STATE_NAME = "state.pkl"  # what sam3video wrote before: a pickle, never read
STATE_VERSION = 3
FINGERPRINT = ("input", "model", "prompts", "exemplars", "tracker", "config", "retracked_from", "refined_from")

Progress = Callable[[Iterator[FrameResult], "int | None"], Iterator[FrameResult]]


@dataclass(frozen=True)
class TrackJob:
    """What to track where, and how: everything ``sam3video track`` takes."""

    source: Any  # video file, folder of frames, (T, H, W, 3) array, or iterable of frames
    out_dir: "str | Path"
    prompts: tuple[str, ...] = ()
    exemplars: tuple[Exemplar, ...] = ()
    checkpoint: str | None = None  # None: the demo model
    model_config: str | None = None  # None: the checkpoint's
    resolution: int | None = None  # the model's square input size (None: the config's, 1008 for sam3.pt)
    device: str = "auto"
    thresholds: Thresholds = field(default_factory=Thresholds)
    carry_exemplar_boxes: bool = False
    precision: str = "fp32"
    runtime: str = "auto"  # what runs the vision trunk: auto, torch or openvino (model.precision.resolve_runtime)
    frame_batch: int | None = None
    tracker: str | None = None  # None: "sam3" (official loop) if the checkpoint has tracker weights, else
    # "sam3video"; or sort, bytetrack, ocsort, botsort, cbiou, mcbyte (the `trackers` package)
    max_objects: int | None = None  # the official loop's object cap per prompt (None: no limit)
    backend: str = "auto"
    fps: float | None = None
    start: float | None = None
    end: float | None = None
    window_seconds: float = 30.0
    render: bool = True
    resume: bool = False
    source_name: str | None = None  # how the summary names the source (default: str(source))
    camera_motion: bool = False  # the association trackers get the frames: camera motion compensation
    direction: str = "forward"  # "both": objects first shown late are tracked back to the start (the loop, sessions)
    edits: tuple[Edit, ...] | None = None  # applied after tracking, in order (``export.edits``); needs the loop
    edits_name: str = "edits"  # how errors name the edits (their file)
    refined_from: dict | None = None  # ``refine``: the run the edits apply to
    veval_ids: VevalIds | None = None  # how predictions.veval.json names the video (default: the source's name)


@dataclass(frozen=True)
class RetrackJob:
    """What ``sam3video retrack`` takes: a run folder (its ``detections.npz``) or a MOTChallenge
    ``detection_file``, tracked again into ``out_dir`` without the model."""

    run_dir: "str | Path | None"  # a `track` output folder, or its detections.npz; None: ``detection_file``
    out_dir: "str | Path"
    detection_file: "str | Path | None" = None  # instead of run_dir: frame,-1,x,y,w,h,score,... (1-based)
    tracker: str | None = None  # None: the run's (sam3video for a detection file)
    thresholds: Mapping[str, Any] = field(default_factory=dict)  # ``Thresholds`` fields set; others: the run's
    fps: float | None = None  # detection files only (default 30)
    video: str | None = None  # the overlay's video (default: the run's, if it is still there)
    render: bool = True


@dataclass(frozen=True)
class RefineJob:
    """What ``sam3video refine`` takes: a run of the official loop, edits to apply, where to write."""

    run_dir: "str | Path"
    out_dir: "str | Path"
    edits: tuple[Edit, ...]
    edits_name: str = "edits"
    video: str | None = None  # default: the run's
    device: str = "auto"
    render: bool = True


class FrameSource(Protocol):
    """What a ``Run`` consumes: the model on a video (``Detector``) or saved detections (``replay.Replay``)."""

    facts: RunFacts
    fps: float  # the run's frame rate (its tracker's)
    frame_size: "tuple[int, int] | None"  # (H, W); None for box-only detections without frames
    masks: bool  # candidates carry masks (MOTS is written)
    saves_candidates: bool  # detections.npz is written (every frame's candidates, for retrack)
    num_output_frames: int | None

    def results(self, session: TrackingSession, first_window: int,
                on_window_end: Callable[[int], None]) -> Iterator[FrameResult]: ...


class Detector:
    """Frames of a video through the model: ``VideoPredictor.track`` (``sam3video track``)."""

    masks = saves_candidates = True

    def __init__(self, job: TrackJob, reader: VideoReader, predictor: VideoPredictor):
        self.reader, self.predictor = reader, predictor
        info, model = reader.info, predictor.model
        self.info: VideoInfo = info
        self.fps = job.fps or info.fps
        self.frame_size = (info.height, info.width)
        self.num_output_frames = reader.num_output_frames
        self.facts = RunFacts(
            input={"source": job.source_name or str(job.source), "backend": info.backend, "fps": info.fps,
                   "width": info.width, "height": info.height, "num_frames": info.num_frames},
            model={"checkpoint": job.checkpoint or "demo",
                   "version": getattr(getattr(model, "load_report", None), "version", None) or model.config.name,
                   "config": model.config.to_dict(),
                   "device": str(model.device), "precision": predictor.config.precision,
                   "runtime": predictor.config.runtime},
            sampling={"fps": job.fps, "start": job.start, "end": job.end, "window_seconds": job.window_seconds,
                      **({"direction": job.direction} if job.direction != "forward" else {})},
            thresholds=asdict(job.thresholds), score_default=model.config.score_threshold)

    def results(self, session: TrackingSession, first_window: int,
                on_window_end: Callable[[int], None]) -> Iterator[FrameResult]:
        return self.predictor.track(self.reader, session=session, first_window=first_window,
                                    on_window_end=on_window_end)


class SessionSource:
    """A clip through interactive sessions (``sam3video.session``, one per prompt, on the same frames): the official
    loop forward from frame 0, then each edit applied in order, the objects it touched tracked again both ways
    from its frame and the rest kept (``track --edits``, ``refine``). The whole clip is tracked before its first
    frame is given out; its frames stay in memory (one window, at most 30 s)."""

    masks = True

    def __init__(self, job: TrackJob, reader: VideoReader, predictor: VideoPredictor, model,
                 clip: "EditedClip | None" = None):
        """``clip``: one already tracked and edited (the app's): written as it is, nothing recomputed."""
        detector = Detector(job, reader, predictor)
        self.clip = clip
        self.reader, self.info, self.fps = reader, detector.info, detector.fps
        self.frame_size, self.num_output_frames = detector.frame_size, detector.num_output_frames
        self.model, self.job = model, job
        config = predictor.config
        self.loop_config = config.sam31 if predictor.multiplex else config.sam3
        self.memory_dtype = config.sam3_options.memory_dtype
        self.exemplar_conditioning = config.sam3_options.exemplar_conditioning
        self.detection_config = config.detection
        # detections.npz: the full pass's candidates; not with exemplar boxes (retrack would need what the exemplar
        # memory learnt on their frames, which the sessions do not compute)
        self.saves_candidates = not job.exemplars
        self.frames_fp16 = config.frames_fp16
        self.applied: list[dict] = []  # per edit: what it was and what it tracked again
        self.facts = replace(detector.facts, refined_from=job.refined_from)
        self.frames_tracked = self.frames_tracked_back = 0

    def recomputed(self) -> dict:
        """What this run computed (``summary.json``): the sessions' full passes and what the edits tracked again."""
        return {"full_pass": {"frames": self.frames_tracked, "prompts": len(self.job.prompts),
                              "what": "detector and tracker on every frame, once per prompt"},
                **({"tracked_back": {"frames": self.frames_tracked_back,
                                     "what": "the objects first shown after frame 0, tracked back from there"}}
                   if self.job.direction == "both" else {}),
                "edits": {"frames_tracked_again": sum(a["tracked_again"] for a in self.applied),
                          "what": "only the edited objects' tracker states, both ways from each edit's frame"},
                **({"reused": "nothing: a run keeps no tracker memory, and its detections.npz holds the kept "
                              "candidates, not the loop's inputs (every query)"} if self.job.refined_from else {})}

    def open_clip(self) -> EditedClip:
        """The clip's frames decoded into an ``EditedClip`` (not tracked yet), with the run's settings."""
        frames = list(self.reader)
        if not frames:
            raise InputError("the video produced no frames to track")
        if frames[-1].window > 0:
            raise InputError(f"edits and --direction both take one clip of at most --window-seconds "
                             f"({self.job.window_seconds:g} s); "
                             f"this one has {len(frames)} frames: choose a part with --start and --end")
        return EditedClip(self.model, np.stack([f.image for f in frames]), [f.timestamp for f in frames],
                          self.job.prompts, self.loop_config, self.memory_dtype, self.fps, self.frames_fp16,
                          self.job.direction, self.job.edits_name, self.job.exemplars, self.exemplar_conditioning,
                          self.detection_config if self.saves_candidates else None)

    def results(self, session: TrackingSession, first_window: int,
                on_window_end: Callable[[int], None]) -> Iterator[FrameResult]:
        start = time.perf_counter()
        clip = self.clip
        if clip is None:
            clip = self.open_clip()
            for _ in clip.track():
                pass
            for index, edit in enumerate(self.job.edits or ()):
                clip.apply(edit, index)
        clip.finish()
        self.applied, self.frames_tracked, self.frames_tracked_back = clip.applied, clip.frames_tracked, \
            clip.frames_tracked_back
        session.timings["track"] += time.perf_counter() - start
        session.frames_done = clip.num_frames
        yield from clip.results()
        if self.clip is None:
            clip.close()
        on_window_end(0)


class EditedClip:
    """A clip's interactive sessions (``sam3video.session``, one per prompt, on the same frames) and the edits
    applied to them so far, under the run's track ids: what ``track --edits``, ``refine`` and the app share.
    ``track()`` runs the official loop forward from frame 0 (and, ``direction="both"``, back from where each object
    was first shown); ``apply(edit)`` applies one edit and tracks the objects it touched again both ways from its
    frame (unless it waits: ``propagate=False``); ``finish()`` propagates clicks still waiting."""

    def __init__(self, model, images: np.ndarray, timestamps: Sequence[float], prompts: Sequence[str], loop_config,
                 memory_dtype: str, fps: float, frames_fp16: bool, direction: str = "forward",
                 edits_name: str = "edits", exemplars: Sequence[Exemplar] = (), exemplar_conditioning: bool = True,
                 detection_config=None):
        """``images`` (T, H, W, 3) uint8 RGB and their ``timestamps`` (s); ``exemplars`` boxes on any frames (their
        prompt's, or every prompt's), given to the detector there as ``track`` gives them (``Sam3Options``'s
        ``exemplar_conditioning``); ``detection_config``: keep the full pass's candidates, post-processed with it as
        ``track`` does (``candidates(t)``); the rest as ``SessionSource`` sets it."""
        from .session import VideoSession
        from .trackers.sam3.tracking import MEMORY_DTYPES

        self.prompts, self.direction, self.edits_name = list(prompts), direction, edits_name
        self.images, self.timestamps = images, list(timestamps)
        self.exemplars = list(exemplars)
        self.detection_config = detection_config
        self.kept: dict[int, list[_Candidates]] = {}  # frame -> the full pass's candidates, prompt by prompt
        self.sessions = [VideoSession(model, images, config=loop_config, memory_dtype=MEMORY_DTYPES[memory_dtype],
                                      source_fps=fps, frames_fp16=frames_fp16, keep_all_memory=direction == "both",
                                      exemplar_conditioning=exemplar_conditioning) for _ in self.prompts]
        self.ids = _RunIds([])
        self.applied: list[dict] = []  # per edit: what it was and what it tracked again
        self.waiting: dict | None = None  # the entry in ``applied`` of the last click not yet propagated
        self.clicked: set[int] = set()  # the prompts whose sessions have clicks not yet propagated
        self.frames_tracked = self.frames_tracked_back = 0

    @property
    def num_frames(self) -> int:
        return len(self.images)

    def track(self) -> Iterator[int]:
        """The full pass, prompt by prompt; yields after each frame (for progress: ``len(prompts) * num_frames``)."""
        for p, (prompt, one) in enumerate(zip(self.prompts, self.sessions)):
            if self.detection_config is not None:
                one.on_detector_outputs = lambda t, outputs, p=p: self._keep(p, t, outputs)
            by_frame: dict[int, list[Exemplar]] = {}
            for exemplar in self.exemplars:
                if exemplar.prompt in (None, prompt):
                    by_frame.setdefault(exemplar.frame, []).append(exemplar)
            first = by_frame.pop(0, [])
            one.add_prompt(0, text=prompt, boxes=[e.box for e in first] or None,
                           box_labels=[e.positive for e in first] or None)
            for frame, exemplars in sorted(by_frame.items()):
                one.add_exemplars(frame, [e.box for e in exemplars], [e.positive for e in exemplars])
            for _ in one.propagate("forward", start_frame=0):
                self.frames_tracked += 1
                yield self.frames_tracked
            one.on_detector_outputs = None
            if self.direction == "both":
                self.frames_tracked_back += one.track_back()
        self.ids = _RunIds(self.sessions)

    def _keep(self, prompt: int, t: int, outputs: dict) -> None:
        """Frame ``t``'s candidates of ``prompt`` from the detector's outputs (P = 1), as ``track`` post-processes
        them (appearance pooled from the same backbone level); the first frame runs twice: the last is kept."""
        from .video.detect import postprocess

        backbone = outputs["prev_encoder_out"]["backbone_out"]
        row = int(backbone["id_mapping"][t])
        features = backbone["backbone_fpn"][self.detection_config.embedding_level][row]
        found = postprocess(outputs, self.images.shape[1:3], self.detection_config, features)
        per_prompt = self.kept.setdefault(t, [None] * len(self.prompts))
        per_prompt[prompt] = _Candidates.of(replace(found, class_id=np.full(len(found), prompt)))

    def candidates(self, t: int) -> Detections:
        """Frame ``t``'s candidates of the full pass, every prompt's (``class_id`` its index), masks decoded: what
        ``track`` gives its tracker and saves in detections.npz; empty without ``detection_config``."""
        height, width = self.images.shape[1:3]
        kept = [c.unpacked(height, width) for c in self.kept.get(t, ()) if c is not None]
        found = [d for d in kept if len(d)]
        return Detections.merge(found) if found else (kept[0] if kept else Detections.empty(height, width))

    def track_ids(self) -> dict[int, str]:
        """The run's track ids now -> their prompts."""
        return {run_id: self.prompts[p] for run_id, (p, _) in sorted(self.ids.to_official.items())}

    def new_track_id(self) -> int:
        """The id a new object gets: one past the largest the run has given."""
        return max(self.ids.ever, default=0) + 1

    def apply(self, edit: Edit, index: int | None = None) -> dict:
        """One edit on its session, then (a click that propagates) the objects clicked since the last propagation
        tracked again both ways from its frame; returns what it did (the summary's entry)."""
        where = f"{self.edits_name}: entry {index}" if index is not None else self.edits_name
        found = self.ids.official(edit.obj_id)
        sessions, prompts = self.sessions, self.prompts
        if isinstance(edit, RemoveEdit):
            if found is None:
                raise InputError(f"{where}: no track {edit.obj_id} to remove (tracks: {self.ids.describe()})")
            sessions[found[0]].remove_object(found[1])
            self.ids.forget(edit.obj_id)
            return self._record({**edit.describe(), "tracked_again": 0, "click_s": 0.0, "propagation_s": 0.0})
        if found is None:
            if edit.prompt is None and len(prompts) > 1:
                raise InputError(f"{where}: track {edit.obj_id} is new: say under which prompt (\"prompt\": one of "
                                 f"{', '.join(prompts)})")
            if edit.prompt is not None and edit.prompt not in prompts:
                raise InputError(f"{where}: prompt {edit.prompt!r} is not one of the run's ({', '.join(prompts)})")
            p = prompts.index(edit.prompt) if edit.prompt is not None else 0
            found = self.ids.new(edit.obj_id, p, sessions[p].max_obj_id + 1)
        elif edit.prompt is not None and prompts[found[0]] != edit.prompt:
            raise InputError(f"{where}: track {edit.obj_id} is a {prompts[found[0]]!r}, not a {edit.prompt!r}")
        p, obj_id = found
        start = time.perf_counter()
        sessions[p].add_prompt(edit.frame, points=list(edit.points) or None, point_labels=list(edit.labels) or None,
                               box=edit.box, obj_id=obj_id, clear_old_points=not edit.keep_old_points)
        clicked = time.perf_counter()
        self.clicked.add(p)
        tracked = self._propagate(edit.frame) if edit.propagate else 0
        entry = self._record({**edit.describe(), "tracked_again": tracked, "click_s": round(clicked - start, 3),
                              "propagation_s": round(time.perf_counter() - clicked, 3)})
        self.waiting = None if edit.propagate else entry
        return entry

    def finish(self) -> int:
        """Propagate the clicks still waiting, from the last one's frame; its entry in ``applied`` then shows that
        propagation (as if it had propagated itself: the app's recorded click does). The frames tracked again."""
        if self.waiting is None:
            return 0
        entry, self.waiting = self.waiting, None
        start = time.perf_counter()
        tracked = self._propagate(entry["frame"])
        entry.pop("propagate", None)
        entry |= {"tracked_again": tracked, "propagation_s": round(time.perf_counter() - start, 3)}
        return tracked

    def _propagate(self, frame: int) -> int:
        tracked = sum(sum(1 for _ in self.sessions[p].propagate("both", start_frame=frame))
                      for p in sorted(self.clicked))
        self.clicked.clear()
        return tracked

    def _record(self, entry: dict) -> dict:
        self.applied.append(entry)
        return entry

    def detections(self, t: int) -> Detections:
        """Frame ``t``'s tracks as the sessions hold them now: ``class_id`` the prompt's index, ``tracker_id`` the
        run's ids."""
        parts = []
        for p, one in enumerate(self.sessions):
            out = one.output(t).detections
            run_ids = np.array([self.ids.run_id(p, int(i)) for i in out.tracker_id], np.int64)
            parts.append(replace(out, class_id=np.full(len(out), p, np.int64), tracker_id=run_ids))
        return Detections.merge(parts)

    def results(self) -> Iterator[FrameResult]:
        """Every frame's ``FrameResult``, for a ``Run`` to write."""
        for index, timestamp in enumerate(self.timestamps):
            yield FrameResult(index, timestamp, 0, self.detections(index), self.images[index], self.candidates(index))

    def close(self) -> None:
        for one in self.sessions:
            one.close()


@dataclass
class _Candidates:
    """One prompt's candidates on one frame, kept with their masks as COCO RLE (a few KB, not H x W bytes each)."""

    detections: Detections  # without masks
    rle: list[str]

    @classmethod
    def of(cls, found: Detections) -> "_Candidates":
        return cls(replace(found, mask=None), encode_rle(found.mask))

    def unpacked(self, height: int, width: int) -> Detections:
        return replace(self.detections, mask=decode_rle(self.rle, height, width))


class _RunIds:
    """The run's track ids (1-based, in the order objects are first shown, frame by frame, prompt by prompt, as
    ``Sam3Tracking`` gives them) <-> (prompt, the session's official id)."""

    def __init__(self, sessions: list):
        self.to_official: dict[int, tuple[int, int]] = {}
        self.to_run: dict[tuple[int, int], int] = {}
        self.ever: set[int] = set()  # every run id given, removed ones too
        for t in range(sessions[0].num_frames if sessions else 0):
            for p, one in enumerate(sessions):
                for obj_id in one.output(t).detections.tracker_id:
                    if (p, int(obj_id)) not in self.to_run:
                        self.new(len(self.to_run) + 1, p, int(obj_id))

    def new(self, run_id: int, prompt: int, obj_id: int) -> tuple[int, int]:
        self.to_official[run_id] = (prompt, obj_id)
        self.ever.add(run_id)
        self.to_run[(prompt, obj_id)] = run_id
        return prompt, obj_id

    def official(self, run_id: int) -> tuple[int, int] | None:
        return self.to_official.get(run_id)

    def forget(self, run_id: int) -> None:
        self.to_run.pop(self.to_official.pop(run_id))

    def run_id(self, prompt: int, obj_id: int) -> int:
        return self.to_run[(prompt, obj_id)]

    def describe(self) -> str:
        return ", ".join(str(i) for i in sorted(self.to_official)) or "none"


@dataclass
class _State:
    """A run after one of its windows, as saved in ``OUT/.partial/state.pkl``."""

    fingerprint: dict
    windows: list[int]  # complete windows, in order
    frames: int
    tracker: Any
    exemplars: Any
    stats: TrackStats
    timings: dict
    elapsed_s: float
    render_s: float
    version: int = STATE_VERSION


class Run:
    """A job checked and ready: ``execute()`` tracks and writes; ``source``, ``config``, ``notes`` inform."""

    def __init__(self, source: FrameSource, config: TrackingConfig, session: TrackingSession, out_dir: Path, *,
                 render: bool, resume: bool = False, notes: Sequence[str] = (), veval_ids: VevalIds | None = None):
        self.source, self.config, self.session = source, config, session
        self.out_dir, self.render, self.resume, self.notes = out_dir, render, resume, list(notes)
        self.veval_ids = veval_ids
        self.fps = source.fps

    @property
    def class_names(self) -> list[str]:
        return self.session.class_names

    @property
    def info(self) -> VideoInfo | None:
        """The video's, for a run on one (``Detector``)."""
        return getattr(self.source, "info", None)

    def summary_base(self) -> dict:
        """Run facts for ``summary.json``: input, model, prompts, exemplars, tracker, thresholds."""
        facts, config = self.source.facts, self.config
        return {
            "input": facts.input,
            "model": facts.model,
            "prompts": self.class_names,
            "exemplars": [exemplar_record(e) for e in self.session.exemplars.exemplars],
            "tracker": config.describe_tracker(),
            "config": {"detection": facts.detection or asdict(config.detection),
                       "tracker": asdict(config.tracker) if config.tracker_name == "sam3video" else None,
                       "exemplar": asdict(config.exemplar), "camera_motion": config.camera_motion, **facts.sampling},
            **({"retracked_from": facts.retracked_from} if facts.retracked_from else {}),
            **({"refined_from": facts.refined_from} if facts.refined_from else {}),
            **({"notes": self.notes} if self.notes else {}),
        }

    def _fingerprint(self) -> dict:
        """What decides the results: a resumed run must have the same."""
        summary = self.summary_base()
        return json.loads(json.dumps({k: summary[k] for k in FINGERPRINT if k in summary}
                                     | {"render": self.render, "precision": self.config.precision,
                                        "runtime": self.config.runtime}, default=str))

    def _store_meta(self) -> StoreMeta:
        """How ``detections.npz`` describes this run: its summary's facts and what ``retrack`` needs."""
        facts = self.source.facts
        run = {k: v for k, v in self.summary_base().items() if k != "notes"}
        run |= {"thresholds": facts.thresholds, "model_score_threshold": facts.score_default}
        height, width = self.source.frame_size
        return StoreMeta(height, width, float(self.fps), tuple(self.class_names), json.loads(summary_text(run)))

    def execute(self, progress: Progress | None = None,
                on_result: Callable[[FrameResult], None] | None = None) -> dict:
        """Track and write every output; returns the summary written to ``summary.json``.

        ``progress(results, total)`` wraps the result stream (a progress bar); ``on_result`` sees each
        frame's result after it is written (the benchmark records the tracker's candidates). On any
        exception (Ctrl-C too) no temp file is left in the output folder or its ``.partial``."""
        try:
            return self._execute(progress, on_result)
        except BaseException:
            # The writers remove their temp files, but an interrupt can strike between creating one
            # and the block that owns it: this run owns both folders, so sweep them.
            for folder in (self.out_dir / PARTIAL_DIR, self.out_dir):
                remove_temp_files(folder)
            raise

    def _execute(self, progress: Progress | None, on_result: Callable[[FrameResult], None] | None) -> dict:
        partial = self.out_dir / PARTIAL_DIR
        state = self._load_state(partial) if self.resume else None
        if state is None:
            remove_partial(self.out_dir)
            partial.mkdir()
            state = _State(self._fingerprint(), [], 0, None, None, TrackStats(self.class_names), {}, 0.0, 0.0)
        else:
            self.session.tracker, self.session.exemplars = state.tracker, state.exemplars
            self.session.timings.update(state.timings)
            self.session.frames_done = state.frames
        names = output_files(self.class_names, self.render, masks=self.source.masks,
                             detections=self.source.saves_candidates)
        store = self._store_meta() if OUTPUT_NAMES["detections"] in names else None
        start, elapsed_before = time.perf_counter(), state.elapsed_s
        writer: WindowFiles | None = None

        def window_done(window: int) -> None:
            """The window's segments are complete: save the run's state after it."""
            nonlocal writer
            writer.__exit__(None, None, None)
            writer = None
            state.windows.append(window)
            state.frames = self.session.frames_done
            state.tracker, state.exemplars = self.session.tracker, self.session.exemplars
            state.timings = dict(self.session.timings)
            state.elapsed_s = elapsed_before + time.perf_counter() - start
            save_state(partial, state)

        first_window = state.windows[-1] + 1 if state.windows else 0
        results = self.source.results(self.session, first_window, window_done)
        if progress is not None:
            remaining = self.source.num_output_frames
            results = progress(results, None if remaining is None else max(remaining - state.frames, 0))
        from .export.overlay import annotate

        try:
            for result in results:
                if writer is None:
                    writer = WindowFiles(partial, result.window, names, self.class_names, self.fps,
                                         self.source.frame_size, store).__enter__()
                overlay_frame = None
                if self.render:
                    render_start = time.perf_counter()
                    overlay_frame = annotate(result.image, result.detections, self.class_names)
                    state.render_s += time.perf_counter() - render_start
                saved = None if store is None else SavedFrame(result.frame_index, result.timestamp, result.window,
                                                              result.candidates, result.learned)
                writer.write(result.frame_index, result.detections, overlay_frame, saved)
                state.stats.update(result.frame_index, result.detections)
                if on_result is not None:
                    on_result(result)
        except BaseException as error:
            if writer is not None:
                writer.__exit__(type(error), error, error.__traceback__)
            raise
        if state.frames == 0:
            raise InputError("the video produced no frames to track")
        summary = self._summary(state, names)
        veval = self.veval_ids or VevalIds(video_name_of(summary["input"]["source"]))
        publish_outputs(self.out_dir, state.windows, names, summary, veval)
        remove_partial(self.out_dir)
        return summary

    def _load_state(self, partial: Path) -> _State | None:
        """The saved state of an earlier run of this job, or None (nothing to resume: start over)."""
        path = partial / STATE_NAME
        if (partial / LEGACY_STATE_NAME).exists():
            raise InputError(f"cannot resume: {partial / LEGACY_STATE_NAME} is from an older sam3video (a pickle, "
                             f"which is never read); run again without --resume")
        if not path.is_file():
            return None
        try:
            state = load_state(partial)
        except StateError as e:
            raise InputError(f"cannot resume: the state in {partial} was refused ({e}); run again without --resume") from None
        if not isinstance(state, _State) or state.version != STATE_VERSION:
            raise InputError(f"cannot resume: {path} is from another version; run again without --resume")
        now = self._fingerprint()
        changed = [key for key in now if now[key] != state.fingerprint.get(key)]
        if changed:
            raise InputError(f"cannot resume: the run in {self.out_dir} was made with other settings "
                             f"({', '.join(changed)} differ); run again without --resume")
        return state

    def _summary(self, state: _State, names: Sequence[str]) -> dict:
        elapsed = state.elapsed_s
        frames = state.frames
        summary = self.summary_base()
        outputs = {k: v for k, v in OUTPUT_NAMES.items() if v in names or k == "summary"}
        if OUTPUT_NAMES["mots"] in names:
            outputs["veval"] = PREDICTIONS_NAME
        if len(self.class_names) > 1:
            outputs["per_prompt_mot"] = dict(zip(self.class_names, per_prompt_names(self.class_names)))
        if self.render:
            height, width = self.source.frame_size
            even_width, even_height = even_size(width, height)
            outputs["overlay_size"] = {
                "width": even_width, "height": even_height,
                "padded": {"right": even_width - width, "bottom": even_height - height},
                "note": "H.264 4:2:0 needs even sizes: an odd width/height gets one column/row repeated "
                        "at the right/bottom edge; the content is never scaled",
            }
        summary.update({
            "frames": frames,
            "tracks": state.stats.table(),
            "outputs": outputs,
            "windows": len(state.windows),
            "timings": {
                **{k: round(v, 3) for k, v in state.timings.items()},
                "total_s": round(elapsed, 3),
                "render_s": round(state.render_s, 3),
                "frames_per_s": round(frames / elapsed, 2) if elapsed > 0 else None,
                "frames_per_s_without_render": round(frames / max(elapsed - state.render_s, 1e-9), 2),
            },
        })
        if self.session.exemplars.exemplars and self.session.sam3 is None:  # the official loop conditions instead
            summary["exemplar_effect"] = self.session.exemplars.summary()
        if isinstance(self.source, SessionSource):
            summary["edits"] = self.source.applied
            summary["recomputed"] = self.source.recomputed()
        return summary


def prepare(job: TrackJob, model=None, clip: "EditedClip | None" = None) -> Run:
    """Check everything a run needs before it writes or prints anything: the video (probed), the
    exemplars against it, the output folder, the checkpoint (loaded unless ``model`` is given), the
    thresholds and prompts. Raises ``Sam3VideoError`` (one line) for bad input. ``clip``: the job's clip already
    tracked with its edits applied (the app's), written without tracking again."""
    from .model.checkpoint import is_demo
    from .model.video_checkpoint import load_for_tracker

    source = _load_array(job.source)
    reader = open_video(source, backend=job.backend, fps=job.fps, start=job.start, end=job.end,
                        window_seconds=job.window_seconds)
    info = reader.info
    for exemplar in job.exemplars:
        check_exemplar(exemplar, reader.num_output_frames, info.width, info.height)
    out_dir = prepare_out_dir(job.out_dir)
    if model is None:
        model, tracker = load_for_tracker(job.checkpoint, job.model_config, job.device, job.tracker, job.resolution)
    else:
        tracker = job.tracker or ("sam3" if hasattr(model, "tracker") else "sam3video")
    if tracker == "sam3" and job.resume:
        raise InputError("--resume is not supported with the official loop (--tracker sam3, the default with "
                         "tracker weights): run without --resume, or with --tracker sam3video")
    if job.direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {job.direction!r}")
    by_session = job.edits is not None or job.direction == "both"
    if by_session:
        _check_session_job(job, tracker, reader)
    predictor = make_predictor(replace(job, tracker=tracker), model)
    session = predictor.start_session(job.prompts, job.exemplars, fps=job.fps or info.fps)
    notes = demo_vocabulary_notes(job.prompts) if is_demo(job.checkpoint) else []
    source = SessionSource(job, reader, predictor, model, clip) if by_session else Detector(job, reader, predictor)
    return Run(source, predictor.config, session, out_dir, render=job.render, resume=job.resume, notes=notes,
               veval_ids=job.veval_ids)


def _check_session_job(job: TrackJob, tracker: str, reader: VideoReader) -> None:
    """What edits and ``--direction both`` need, checked before anything is written: the official loop, a text
    prompt, one clip; the edits' frames and points in it."""
    info = reader.info
    what = "edits" if job.edits is not None else "--direction both"
    if tracker != "sam3":
        raise InputError(f"{what} need the official loop (--tracker sam3) and a checkpoint with tracker weights "
                         f"(sam3.pt, sam3.1_multiplex.pt); this run uses --tracker {tracker}")
    if job.carry_exemplar_boxes:
        raise InputError(f"{what} do not carry exemplar boxes forward (--carry-exemplar-boxes): each box acts on its "
                         "own frame")
    if not job.prompts:
        raise InputError(f"{what} need a text prompt (--prompt)")
    frames = reader.num_output_frames
    fps = job.fps or info.fps
    if frames is not None and frames / fps > job.window_seconds + 1e-6:
        raise InputError(f"{what} take one clip of at most --window-seconds ({job.window_seconds:g} s); this one is "
                         f"{frames / fps:.1f} s: choose a part with --start and --end")
    if job.edits is not None:
        check_edits(list(job.edits), frames, info.width, info.height, list(job.prompts), job.edits_name)


def make_predictor(job: TrackJob, model) -> VideoPredictor:
    """The ``VideoPredictor`` of ``job``'s settings (thresholds, precision, tracker) on ``model`` (a
    ``Sam3Image``, or a ``Sam3VideoModel`` for the official loop). With ``tracker="sam3"`` the official
    loop's thresholds apply; a score threshold or new-track threshold the user gives replaces its
    detection / new-object threshold."""
    detector = getattr(model, "detector", model)
    config = TrackingConfig.from_thresholds(job.thresholds, detector.config.score_threshold, job.carry_exemplar_boxes,
                                            precision=job.precision, runtime=job.runtime, frame_batch=job.frame_batch,
                                            tracker_name=job.tracker or "sam3video", camera_motion=job.camera_motion)
    given = {"score_threshold_detection": job.thresholds.score_threshold,
             "new_det_thresh": job.thresholds.new_track_threshold}
    given = {k: v for k, v in given.items() if v is not None}
    if job.max_objects is not None:
        given["max_num_objects"] = job.max_objects
    config = replace(config, sam3=replace(config.sam3, **given), sam31=replace(config.sam31, **given))
    from .video.predictor import VideoPredictor  # torch: only a run with the model needs it

    return VideoPredictor(model, config)


def track(job: TrackJob, model=None, progress: Progress | None = None) -> dict:
    """``prepare(job, model).execute(progress)``: the summary of the finished run."""
    return prepare(job, model).execute(progress)


def prepare_retrack(job: RetrackJob) -> Run:
    """Check a retrack job (the saved detections read and checked, the settings against what they can
    reproduce, the video for the overlay, the output folder) before anything is written; raises
    ``Sam3VideoError`` (one line) for bad input. See ``sam3video.replay``."""
    from . import replay

    if (job.run_dir is None) == (job.detection_file is None):
        raise InputError("retrack needs a run folder (RUN_DIR) or --detections FILE, one of them")
    if job.detection_file is not None:
        if job.video is not None:
            raise InputError("--video draws a run's masks: a detection file is tracked into tracks.txt only")
        source, config, session = replay.detection_file_source(job.detection_file, job.fps, job.tracker,
                                                               job.thresholds)
        return Run(source, config, session, prepare_out_dir(job.out_dir), render=False)
    if job.fps is not None:
        raise InputError("--fps is for --detections files: a run's detections keep the run's frame rate")
    saved = replay.load_run(job.run_dir)
    if Path(job.out_dir).resolve() == saved.path.parent.resolve():
        raise InputError(f"--out {job.out_dir} is the run folder itself: give another folder")
    config, thresholds, min_confidence = replay.retrack_config(saved, job.tracker, job.thresholds)
    video, reader, notes = _overlay_video(saved, job) if job.render else (None, None, [])
    if saved.meta.run.get("config", {}).get("camera_motion"):
        notes = [*notes, "the run compensated camera motion on its frames; retrack has no frames: re-tracked "
                         "without it (the tracks may differ)"]
    source = replay.Replay(saved.frames, saved.facts(thresholds, video), saved.meta.fps,
                           (saved.meta.height, saved.meta.width), min_confidence=min_confidence, reader=reader)
    session = replay.replay_session(saved, config)
    return Run(source, config, session, prepare_out_dir(job.out_dir), render=reader is not None, notes=notes)


def prepare_refine(job: RefineJob, model=None) -> Run:
    """The ``TrackJob`` of a run (its video, model, prompts, sampling and loop thresholds, from its
    ``summary.json``) with ``job``'s edits, checked as ``prepare`` checks it."""
    path = Path(job.run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        tracker, model_facts, sampling = summary["tracker"], summary["model"], summary["config"]
        settings, source, prompts = tracker.get("settings") or {}, summary["input"]["source"], summary["prompts"]
    except FileNotFoundError:
        raise InputError(f"{job.run_dir} is not a run folder of `sam3video track` (no summary.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"{path} cannot be read as a run's summary ({type(error).__name__}: {error})") from None
    if tracker.get("name") != "sam3":
        raise InputError(f"refine edits runs of the official loop (--tracker sam3); {job.run_dir} used "
                         f"--tracker {tracker.get('name')}")
    try:
        exemplars = tuple(exemplar_from_record(e) for e in summary.get("exemplars") or ())
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: its exemplars cannot be read ({type(error).__name__}: {error})") from None
    video = _run_video(job.video, source)
    if Path(job.out_dir).resolve() == Path(job.run_dir).resolve():
        raise InputError(f"--out {job.out_dir} is the run folder itself: give another folder")
    checkpoint = model_facts.get("checkpoint")
    thresholds = Thresholds(score_threshold=settings.get("score_threshold_detection"),
                            new_track_threshold=settings.get("new_det_thresh"))
    max_objects = settings.get("max_num_objects")
    resolution = (model_facts.get("config") or {}).get("resolution")
    track_job = TrackJob(
        source=video, out_dir=job.out_dir, prompts=tuple(prompts), checkpoint=None if checkpoint == "demo" else checkpoint,
        resolution=resolution if isinstance(resolution, int) else None, device=job.device, thresholds=thresholds,
        precision=model_facts.get("precision", "fp32"), tracker="sam3",
        max_objects=max_objects if isinstance(max_objects, int) and max_objects > 0 else None,
        fps=sampling.get("fps"), start=sampling.get("start"), end=sampling.get("end"),
        window_seconds=sampling.get("window_seconds", 30.0), direction=sampling.get("direction", "forward"),
        render=job.render, source_name=str(video), exemplars=exemplars,
        edits=job.edits, edits_name=job.edits_name,
        refined_from={"run": str(job.run_dir), "edits": job.edits_name})
    return prepare(track_job, model)


def retrack(job: RetrackJob, progress: Progress | None = None) -> dict:
    """``prepare_retrack(job).execute(progress)``: the summary of the finished run."""
    return prepare_retrack(job).execute(progress)


def _overlay_video(saved: SavedRun, job: RetrackJob) -> tuple[str | None, VideoReader | None, list[str]]:
    """(the overlay's video, ``job.video`` or the run's own, opened with the run's sampling, no notes),
    or (None, None, a note) when the run's video is no longer where it was."""
    video = job.video or saved.meta.run["input"].get("source")
    if job.video is None and not (isinstance(video, str) and os.path.exists(video)):  # never raises
        shown = repr(video) if len(str(video)) <= 80 else repr(str(video)[:77]) + "..."  # an array's text
        return None, None, [f"the run's video {shown} is not there: no overlay.mp4 (give --video PATH, or "
                            f"--no-render)"]
    sampling = saved.meta.run["config"]
    reader = open_video(_load_array(video), fps=sampling.get("fps"), start=sampling.get("start"),
                        end=sampling.get("end"), window_seconds=sampling.get("window_seconds", 30.0))
    size, saved_size = (reader.info.width, reader.info.height), (saved.meta.width, saved.meta.height)
    if size != saved_size:
        raise InputError(f"{video} is {size[0]}x{size[1]}, the saved detections {saved_size[0]}x{saved_size[1]}: "
                         f"not the run's video")
    return str(video), reader, []


def demo_vocabulary_notes(prompts: Sequence[str]) -> list[str]:
    """One line per prompt with words the demo model was never trained on (it will find nothing)."""
    from .data.concepts import ALL_COLOURS, ALL_SHAPES

    known = set(ALL_COLOURS) | set(ALL_SHAPES)
    notes = []
    for prompt in prompts:
        unknown = [w for w in prompt.lower().split() if w not in known]
        if unknown:
            notes.append(f"the demo model knows only coloured shapes ({', '.join(ALL_SHAPES)}; "
                         f"{', '.join(ALL_COLOURS)}): {', '.join(map(repr, unknown))} in prompt {prompt!r} is "
                         f"outside its vocabulary and will find nothing; real videos need --checkpoint "
                         f"facebook/sam3 (or a downloaded sam3.pt)")
    return notes


def _run_video(given: "str | None", recorded):
    """The video of a run: ``given`` (``--video``), else the one its summary names, if that file or folder is still
    there (a URL or a pattern is taken as it is; the app's summaries name the video, not where the server kept it)."""
    if given is not None:
        return given
    if not isinstance(recorded, str) or ("://" not in recorded and not any(c in recorded for c in "*?[")
                                         and not os.path.exists(recorded)):
        raise InputError(f"the run's video {recorded!r} is not there: give --video PATH")
    return recorded


def _load_array(source):
    """``.npy`` paths as (T, H, W, 3) arrays (memory-mapped); anything else as given."""
    if isinstance(source, (str, Path)) and str(source).endswith(".npy"):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"no such file: {path}")
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise InputError(f"cannot read {path} as a numpy array: {e}") from None
    return source


def render_run(run_dir: "str | Path", video: "str | None" = None, out: "str | Path | None" = None,
               boxes_only: bool = False) -> Path:
    """Draw ``tracks.mots.txt`` masks (or ``tracks.txt`` boxes) over the run's video; returns the path.

    The video, its sampling (fps/start/end) and the prompt names come from ``summary.json``.
    """
    from .export import OverlayWriter, annotate, read_mot, read_mots

    run_dir = Path(run_dir)
    summary_path = run_dir / OUTPUT_NAMES["summary"]
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        raise InputError(f"{summary_path} not found: is {run_dir} the output folder of `sam3video track`?") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{summary_path} is not valid JSON: {e}") from None
    sampling = summary.get("config", {})
    source = _load_array(_run_video(video, summary["input"]["source"]))
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


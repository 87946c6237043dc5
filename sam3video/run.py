"""One module runs a job: open the video -> detect and track -> write every output -> ``summary.json``.

    job = TrackJob("clip.mp4", out_dir="runs/clip", prompts=("dog",))
    run = prepare(job)          # every check (video, exemplars, output folder, checkpoint), the model
    summary = run.execute()     # the files of ``export.outputs``; ``track(job)`` does both

The CLI (``track``, ``render``), ``make benchmark``, ``tools/bench_video.py`` and
``tools/calibrate_thresholds.py`` call it. Each window's outputs are segments in ``OUT/.partial``,
with the run's state after the window (tracker, exemplar memory, per-track table, timings);
``TrackJob(resume=True)`` goes on after the last complete window and gives the same files as an
uninterrupted run. The state is a pickle of our own objects: resume only runs you made.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .detections import Detections
from .errors import InputError
from .export.atomic import atomic_open
from .export.outputs import (OUTPUT_NAMES, PARTIAL_DIR, WindowFiles, even_size, output_files, per_prompt_names,
                             prepare_out_dir, publish_outputs, remove_partial)
from .export.summary import TrackStats
from .thresholds import Thresholds
from .video.exemplars import Exemplar, check_exemplar
from .video.loader import VideoReader, open_video
from .video.predictor import FrameResult, TrackingConfig, TrackingSession, VideoPredictor

STATE_NAME = "state.pkl"  # in OUT/.partial: the run after its last complete window
STATE_VERSION = 1

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
    device: str = "auto"
    thresholds: Thresholds = field(default_factory=Thresholds)
    carry_exemplar_boxes: bool = False
    precision: str = "fp32"
    frame_batch: int | None = None
    tracker: str = "sam3video"  # or sort, bytetrack, ocsort, botsort (the `trackers` package)
    backend: str = "auto"
    fps: float | None = None
    start: float | None = None
    end: float | None = None
    window_seconds: float = 30.0
    render: bool = True
    resume: bool = False
    source_name: str | None = None  # how the summary names the source (default: str(source))


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
    """A job checked and ready: ``execute()`` tracks and writes; ``info``, ``reader``, ``notes`` inform."""

    def __init__(self, job: TrackJob, reader: VideoReader, predictor: VideoPredictor, session: TrackingSession,
                 out_dir: Path, notes: list[str]):
        self.job, self.reader, self.predictor, self.session = job, reader, predictor, session
        self.out_dir, self.notes = out_dir, notes
        self.info = reader.info
        self.fps = job.fps or self.info.fps

    @property
    def class_names(self) -> list[str]:
        return self.session.class_names

    def summary_base(self) -> dict:
        """Run facts for ``summary.json``: input, model, prompts, exemplars, thresholds."""
        info, config, job = self.info, self.predictor.config, self.job
        model = self.predictor.model
        return {
            "input": {"source": job.source_name or str(job.source), "backend": info.backend, "fps": info.fps,
                      "width": info.width, "height": info.height, "num_frames": info.num_frames},
            "model": {"checkpoint": job.checkpoint or "demo", "config": model.config.to_dict(),
                      "device": str(model.device)},
            "prompts": self.class_names,
            "exemplars": [{"frame": e.frame, "box": list(e.box), "positive": e.positive, "prompt": e.prompt}
                          for e in self.session.exemplars.exemplars],
            "tracker": config.describe_tracker(),
            "config": {"detection": asdict(config.detection),
                       "tracker": asdict(config.tracker) if config.tracker_name == "sam3video" else None,
                       "exemplar": asdict(config.exemplar), "fps": job.fps, "start": job.start, "end": job.end,
                       "window_seconds": job.window_seconds},
            **({"notes": self.notes} if self.notes else {}),
        }

    def _fingerprint(self) -> dict:
        """What decides the results: a resumed run must have the same."""
        summary = self.summary_base()
        return json.loads(json.dumps({k: summary[k] for k in ("input", "model", "prompts", "exemplars", "tracker",
                                                              "config")}
                                     | {"render": self.job.render, "precision": self.predictor.config.precision},
                                     default=str))

    def execute(self, progress: Progress | None = None,
                on_result: Callable[[FrameResult], None] | None = None) -> dict:
        """Track and write every output; returns the summary written to ``summary.json``.

        ``progress(results, total)`` wraps the result stream (a progress bar); ``on_result`` sees each
        frame's result after it is written (the benchmark records the tracker's candidates)."""
        partial = self.out_dir / PARTIAL_DIR
        state = self._load_state(partial) if self.job.resume else None
        if state is None:
            remove_partial(self.out_dir)
            partial.mkdir()
            state = _State(self._fingerprint(), [], 0, None, None, TrackStats(self.class_names), {}, 0.0, 0.0)
        else:
            self.session.tracker, self.session.exemplars = state.tracker, state.exemplars
            self.session.timings.update(state.timings)
            self.session.frames_done = state.frames
        names = output_files(self.class_names, self.job.render)
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
            with atomic_open(partial / STATE_NAME, "wb") as f:
                pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

        first_window = state.windows[-1] + 1 if state.windows else 0
        results = self.predictor.track(self.reader, session=self.session, first_window=first_window,
                                       on_window_end=window_done)
        if progress is not None:
            remaining = self.reader.num_output_frames
            results = progress(results, None if remaining is None else max(remaining - state.frames, 0))
        from .export.overlay import annotate

        try:
            for result in results:
                if writer is None:
                    writer = WindowFiles(partial, result.window, self.class_names, self.fps,
                                         (self.info.height, self.info.width), self.job.render).__enter__()
                overlay_frame = None
                if self.job.render:
                    render_start = time.perf_counter()
                    overlay_frame = annotate(result.image, result.detections, self.class_names)
                    state.render_s += time.perf_counter() - render_start
                writer.write(result.frame_index, result.detections, overlay_frame)
                state.stats.update(result.frame_index, result.detections)
                if on_result is not None:
                    on_result(result)
        except BaseException as error:
            if writer is not None:
                writer.__exit__(type(error), error, error.__traceback__)
            raise
        if state.frames == 0:
            raise InputError("the video produced no frames to track")
        summary = self._summary(state)
        publish_outputs(self.out_dir, state.windows, names, summary)
        remove_partial(self.out_dir)
        return summary

    def _load_state(self, partial: Path) -> _State | None:
        """The saved state of an earlier run of this job, or None (nothing to resume: start over)."""
        path = partial / STATE_NAME
        if not path.is_file():
            return None
        try:
            with open(path, "rb") as f:
                state = pickle.load(f)
        except Exception as e:  # noqa: BLE001 - any unreadable state means: cannot resume
            raise InputError(f"cannot resume: {path} is unreadable ({type(e).__name__}); "
                             f"run again without --resume") from None
        if not isinstance(state, _State) or state.version != STATE_VERSION:
            raise InputError(f"cannot resume: {path} is from another version; run again without --resume")
        now = self._fingerprint()
        changed = [key for key in now if now[key] != state.fingerprint.get(key)]
        if changed:
            raise InputError(f"cannot resume: the run in {self.out_dir} was made with other settings "
                             f"({', '.join(changed)} differ); run again without --resume")
        return state

    def _summary(self, state: _State) -> dict:
        elapsed = state.elapsed_s
        frames = state.frames
        summary = self.summary_base()
        outputs = {k: v for k, v in OUTPUT_NAMES.items() if self.job.render or k != "overlay"}
        if len(self.class_names) > 1:
            outputs["per_prompt_mot"] = dict(zip(self.class_names, per_prompt_names(self.class_names)))
        if self.job.render:
            width, height = even_size(self.info.width, self.info.height)
            outputs["overlay_size"] = {
                "width": width, "height": height,
                "padded": {"right": width - self.info.width, "bottom": height - self.info.height},
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
        if self.session.exemplars.exemplars:
            summary["exemplar_effect"] = self.session.exemplars.summary()
        return summary


def prepare(job: TrackJob, model=None) -> Run:
    """Check everything a run needs before it writes or prints anything: the video (probed), the
    exemplars against it, the output folder, the checkpoint (loaded unless ``model`` is given), the
    thresholds and prompts. Raises ``Sam3VideoError`` (one line) for bad input."""
    from .model.checkpoint import load_model

    source = _load_array(job.source)
    reader = open_video(source, backend=job.backend, fps=job.fps, start=job.start, end=job.end,
                        window_seconds=job.window_seconds)
    info = reader.info
    for exemplar in job.exemplars:
        check_exemplar(exemplar, reader.num_output_frames, info.width, info.height)
    out_dir = prepare_out_dir(job.out_dir)
    if model is None:
        model = load_model(job.checkpoint, job.model_config, job.device)
    config = TrackingConfig.from_thresholds(job.thresholds, model.config.score_threshold, job.carry_exemplar_boxes,
                                            precision=job.precision, frame_batch=job.frame_batch,
                                            tracker_name=job.tracker)
    predictor = VideoPredictor(model, config)
    session = predictor.start_session(job.prompts, job.exemplars, fps=job.fps or info.fps)
    notes = demo_vocabulary_notes(job.prompts) if job.checkpoint in (None, "demo") else []
    return Run(job, reader, predictor, session, out_dir, notes)


def track(job: TrackJob, model=None, progress: Progress | None = None) -> dict:
    """``prepare(job, model).execute(progress)``: the summary of the finished run."""
    return prepare(job, model).execute(progress)


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
    source = _load_array(video or summary["input"]["source"])
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


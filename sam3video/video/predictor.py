"""``VideoPredictor``: the frame loop. Prompts in, a generator of tracked per-frame results out.

    predictor = VideoPredictor(model)
    for result in predictor.track("clip.mp4", prompts=["dog"]):
        result.frame_index, result.detections.tracker_id, result.detections.mask

The model stays stateless; a ``TrackingSession`` (typed) holds what one run needs: encoded prompts,
exemplar memory, the tracker and timings. Frames are decoded lazily; windows of at most
``window_seconds`` bound the per-window frame cache, while the tracker (and so every id) carries across
window boundaries. Writing files is not done here: ``sam3video.run`` consumes the stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import torch

from ..detections import Detections
from ..errors import InputError
from ..model.geometry_encoders import prompt_from_boxes
from ..model.precision import apply_precision, autocast_context
from ..model.sam3_image import Sam3Image
from ..model.sam3_video import Sam3VideoModel
from ..model.sam31_video import Sam31VideoModel
from ..preprocess import preprocess_image
from ..processor import VISUAL_PROMPT
from ..sources.cache import LazyFrames
from ..sources.loader import Frame, VideoReader, iter_windows, open_video
from ..trackers.association.exemplars import Exemplar, ExemplarMemory, check_exemplar
from ..trackers.sam3.tracking import Sam3Tracking, frame_detections, tracker_features
from ..trackers.sam31.tracking import Sam31Tracking, sam31_features
from .detect import encode_prompts, pooled_embeddings, postprocess, run_frame, run_frames, split_frames
from .session import (  # noqa: F401 - the configs and the result stream, torch-free, importable from here too
    SAM3_TRACKER, DetectionConfig, FrameResult, TrackingConfig, TrackingSession, complete, flush_completion,
    track_candidates)


class VideoPredictor:
    """Runs a ``Sam3Image`` over a video and tracks every instance of the prompted concepts; with a
    ``Sam3VideoModel`` (detector + tracker) also the official SAM 3 loop (``tracker_name="sam3"``)."""

    def __init__(self, model: Sam3Image | Sam3VideoModel, config: TrackingConfig | None = None):
        """``config`` None: the defaults at the model's calibrated ``score_threshold`` (0.5 for sam3.pt).
        The tracker of a ``Sam3VideoModel`` runs in fp32 whatever the precision (the detector's)."""
        self.tracker_model = None
        self.multiplex = isinstance(model, Sam31VideoModel)
        if isinstance(model, Sam3VideoModel):
            self.tracker_model = model.tracker.eval()
            model = model.detector
        elif self.multiplex:
            self.tracker_model = model.tracker.model.eval()
            model = model.detector
        self.model = model.eval()
        self.config = config or TrackingConfig.at_score_threshold(model.config.score_threshold)
        if self.multiplex:
            self.config = replace(self.config, model_version="sam3.1")
        # the model converted once; the config names the mode it runs in ("auto" resolved)
        precision = apply_precision(self.model, self.config.precision, self.config.runtime)
        self.config = replace(self.config, precision=precision, runtime=self.model.runtime)
        self.resolution = model.config.resolution
        if self.config.tracker_name == SAM3_TRACKER and self.tracker_model is None:
            raise InputError("--tracker sam3 needs the SAM 3 tracker weights (tracker.* of the official sam3.pt); "
                             "this checkpoint has none: use --tracker sam3video")
        levels = len(model.config.neck_scales) - model.config.scalp
        if not 0 <= self.config.detection.embedding_level < levels:
            raise InputError(f"embedding_level must be in [0, {levels}) for this model's {levels} feature "
                             f"levels, got {self.config.detection.embedding_level}")

    def start_session(self, prompts: Iterable[str], exemplars: Iterable[Exemplar] = (), fps: float = 30.0
                      ) -> TrackingSession:
        """Validate and encode the prompts (once per run); with exemplars and no prompt, the text is
        "visual" as in the official code, and the exemplars alone define the concept."""
        prompts, exemplars = list(prompts), list(exemplars)
        for prompt in prompts:
            if not isinstance(prompt, str) or not prompt.strip():
                raise InputError("empty prompt: give a noun phrase such as --prompt dog")
        if not prompts and not exemplars:
            raise InputError("nothing to track: give --prompt TEXT and/or --exemplar FRAME:X1,Y1,X2,Y2")
        if len(set(prompts)) != len(prompts):
            raise InputError(f"duplicate prompts: {prompts}")
        prompts = prompts or [VISUAL_PROMPT]
        memory = ExemplarMemory(exemplars, prompts, self.config.exemplar)
        for exemplar in exemplars:
            memory.classes_of(exemplar)  # validates exemplar.prompt
        with self._precision():
            text_out = encode_prompts(self.model, prompts)
        return TrackingSession(
            class_names=prompts,
            text_out=text_out,
            exemplars=memory,
            tracker=self.config.make_tracker(fps),
        )

    def _precision(self):
        """The context of the model's calls: autocast for bf16 / fp16, nothing for fp32 and int8."""
        return autocast_context(self.model)

    def _lazy_frames(self, frames: Iterable[Frame]) -> LazyFrames:
        """One window's frames, preprocessed on demand and cached (at least one batch of them)."""
        return LazyFrames(frames, self._preprocess, capacity=max(self.config.frame_cache, self.frame_batch),
                          lookahead=self.config.lookahead)

    def _preprocess(self, frame: Frame) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, R, R) normalised (fp16 if configured), on the CPU."""
        image = frame.image if frame.image.flags.writeable else frame.image.copy()  # e.g. memory-mapped
        x = preprocess_image(torch.from_numpy(image).permute(2, 0, 1), self.resolution)
        return x.half() if self.config.frames_fp16 else x

    def track(
        self,
        source,
        prompts: Iterable[str] = (),
        exemplars: Iterable[Exemplar] = (),
        *,
        backend: str = "auto",
        fps: float | None = None,
        start: float | None = None,
        end: float | None = None,
        window_seconds: float = 30.0,
        source_fps: float | None = None,
        session: TrackingSession | None = None,
        first_window: int = 0,
        on_window_end: Callable[[int], None] | None = None,
    ) -> Iterator[FrameResult]:
        """Yield a ``FrameResult`` per output frame. ``source`` (or an open ``VideoReader``), ``fps``,
        ``start``, ``end``, ``window_seconds``, ``source_fps`` (frame rate of arrays, iterables,
        folders): see ``open_video``.

        Prompts and exemplars are given once: here, or to ``start_session`` when passing ``session``
        (to inspect timings and tracks afterwards, or to resume one). Windows before ``first_window``
        are decoded but not tracked (resuming); ``on_window_end(window)`` is called after the last
        frame of each window has been consumed, before the next window starts.
        """
        prompts, exemplars = list(prompts), list(exemplars)
        if session is not None and (prompts or exemplars):
            raise InputError("give prompts and exemplars to start_session or to track, not to both")
        if isinstance(source, VideoReader):
            reader = source
        else:
            reader = open_video(source, backend=backend, fps=fps, start=start, end=end,
                                window_seconds=window_seconds, source_fps=source_fps)
        info = reader.info
        session = session or self.start_session(prompts, exemplars, fps=fps or info.fps)
        for exemplar in session.exemplars.exemplars:
            check_exemplar(exemplar, reader.num_output_frames, info.width, info.height)
        session.info = info
        if self.config.tracker_name == SAM3_TRACKER:
            if first_window > 0:
                raise InputError("resuming is not supported with --tracker sam3: run again without --resume")
            loop_class, loop_config = (Sam31Tracking, self.config.sam31) if self.multiplex else \
                (Sam3Tracking, self.config.sam3)
            session.sam3 = session.sam3 or loop_class(
                self.tracker_model, loop_config, len(session.class_names), reader.num_output_frames,
                (info.height, info.width), self.config.sam3_options)
            yield from self._track_sam3(reader, session, on_window_end)
            return
        for window, frames in iter_windows(reader):
            if window < first_window:
                for _ in frames:  # decoded, not tracked
                    pass
                continue
            lazy = self._lazy_frames(frames)
            try:
                yield from self._track_window(lazy, session)
            finally:
                lazy.close()
            yield from flush_completion(session)
            if on_window_end is not None:
                on_window_end(window)

    def _track_sam3(self, reader: VideoReader, session: TrackingSession,
                    on_window_end: Callable[[int], None] | None) -> Iterator[FrameResult]:
        """The windows through the official loop. Its outputs come ``hotstart_delay - 1`` frames late, so
        a window ends (``on_window_end``) once its last frame has been given out."""
        ended: dict[int, int] = {}  # window -> its last frame, while some of its frames are held

        def given_out(results: Iterable[FrameResult]) -> Iterator[FrameResult]:
            for result in results:
                yield result
                for window in [w for w, last in ended.items() if result.frame_index >= last]:
                    del ended[window]
                    if on_window_end is not None:
                        on_window_end(window)

        for window, frames in iter_windows(reader):
            lazy = self._lazy_frames(frames)
            try:
                yield from given_out(self._track_window(lazy, session))
            finally:
                lazy.close()
            if session.held:
                ended[window] = max(session.held)
            elif on_window_end is not None:
                on_window_end(window)
        yield from given_out(self._sam3_results(session.sam3.flush(), session))

    def _sam3_results(self, ready: list[tuple[int, Detections]], session: TrackingSession) -> list[FrameResult]:
        """The official loop's output frames -> their ``FrameResult`` (the frames it held, released)."""
        results = []
        for frame_index, tracked in ready:
            frame, candidates, learned = session.held.pop(frame_index)
            results.append(FrameResult(frame.index, frame.timestamp, frame.window, tracked, frame.image, candidates,
                                       learned))
        return results

    def _track_window(self, lazy: LazyFrames, session: TrackingSession) -> Iterator[FrameResult]:
        """Frames of one window in order. The model runs on ``frame_batch`` frames at once, in a worker
        thread, while the previous ones are post-processed and tracked (batching and overlap use a
        multi-core CPU better). With exemplar boxes carried forward (``carry_boxes``) a frame's geometry
        prompts depend on the tracks after the previous frame, so frames go one at a time, one step
        after the other."""
        if session.exemplars.exemplars and self.config.exemplar.carry_boxes:
            batch, overlap = 1, False
        else:
            batch, overlap = self.frame_batch, self.config.overlap
        local = 0
        if not overlap:
            while detected := self._detect(lazy, range(local, local + batch), session):
                for item in detected:
                    yield from self._finish(local, *item, session)
                    local += 1
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sam3video-detect") as worker:
            pending = worker.submit(self._detect, lazy, range(local, local + batch), session)
            while detected := pending.result():
                ahead = local + len(detected)
                pending = worker.submit(self._detect, lazy, range(ahead, ahead + batch), session)
                for item in detected:
                    yield from self._finish(local, *item, session)
                    local += 1

    @property
    def frame_batch(self) -> int:
        """Frames per model call: ``config.frame_batch``, else 4 on a GPU or for models up to 512 px, and 1
        for a full-size model on a CPU (it gains nothing from batches there and needs the memory)."""
        if self.config.frame_batch is not None:
            return self.config.frame_batch
        return 4 if self.resolution <= 512 or self.model.device.type != "cpu" else 1

    def _detect(self, lazy: LazyFrames, locals_: range, session: TrackingSession
                ) -> list[tuple[Frame, dict, dict]]:
        """[(frame, its model outputs, the batch's backbone outputs)] for the window's frames ``locals_``
        that exist (an empty list past the window's end)."""
        frames: list[Frame] = []
        for local in locals_:
            try:
                frames.append(lazy.get(local)[0])
            except IndexError:
                if lazy.exhausted:
                    break
                raise
        if not frames:
            return []
        memory = session.exemplars
        carried = memory.prototypes and self.config.exemplar.carry_boxes  # else the tracks are not read here
        track_boxes = {t.id: t.box for t in session.tracker.tracks if t.id > 0} if carried else {}
        boxes = [b for frame in frames for b in memory.boxes_for_frame(
            frame.index, frame.image.shape[1], frame.image.shape[0], track_boxes)]
        local_ids = list(locals_)[: len(frames)]

        start = time.perf_counter()
        with self._precision():
            outputs = run_frames(self.model, local_ids, {"img_batch_all_stages": lazy},
                                 session.text_out, prompt_from_boxes(boxes, self.model.device))
        computed = outputs["prev_encoder_out"]["backbone_out"]
        detected = [(frame, frame_outputs, computed)
                    for frame, frame_outputs in zip(frames, split_frames(outputs, len(frames)))]
        session.timings["detect"] += time.perf_counter() - start
        return detected

    def _finish(self, local: int, frame: Frame, outputs: dict, backbone_out: dict,
                session: TrackingSession) -> list[FrameResult]:
        """Post-process one frame's outputs, apply exemplars, track -> the frames now tracked (those the
        track completion or the official loop's hot-start delay releases)."""
        height, width = frame.image.shape[:2]
        row = int(backbone_out["id_mapping"][local]) if backbone_out.get("id_mapping") is not None else 0
        features = backbone_out["backbone_fpn"][self.config.detection.embedding_level][row]  # appearance
        memory, timings = session.exemplars, session.timings
        start = time.perf_counter()
        detections = postprocess(outputs, (height, width), self.config.detection, features)
        learned = None
        if memory.on_frame(frame.index):
            learned = self._learn_exemplars(local, frame, session, features, backbone_out)
        timings["postprocess"] += time.perf_counter() - start

        start = time.perf_counter()
        if session.sam3 is not None:
            session.held[frame.index] = (frame, detections, learned)
            # officially, exemplar boxes without text start objects on their own frame only
            allow_new = session.class_names != [VISUAL_PROMPT] or bool(memory.on_frame(frame.index))
            boxes = [[] for _ in session.class_names]
            for exemplar in memory.on_frame(frame.index):
                if exemplar.positive:
                    x0, y0, x1, y1 = exemplar.box
                    for c in memory.classes_of(exemplar):
                        boxes[c].append((x0 / width, y0 / height, x1 / width, y1 / height))
            with self._precision():  # the tracker too, as the official code runs the whole loop under autocast
                if self.multiplex:
                    features = sam31_features(self.tracker_model, backbone_out, row)
                else:
                    features = tracker_features(self.tracker_model, backbone_out["sam2_backbone_out"], row)
                ready = session.sam3.step(frame.index, frame_detections(outputs), features, allow_new, boxes)
            results = self._sam3_results(ready, session)
        else:
            tracked = track_candidates(session, frame.index, detections,
                                       frame.image if self.config.camera_motion else None)
            results = complete(session, FrameResult(frame.index, frame.timestamp, frame.window, tracked, frame.image,
                                                    detections, learned))
        timings["track"] += time.perf_counter() - start
        session.frames_done += 1
        return results

    def _learn_exemplars(self, local: int, frame: Frame, session: TrackingSession, features: torch.Tensor,
                         backbone_out: dict) -> tuple[Detections, dict]:
        """Prototypes of this frame's exemplars, from every query of a text-only pass on its backbone
        outputs (an object the text scores low still has a query on it); returns what ``learn`` was given."""
        height, width = frame.image.shape[:2]
        no_boxes = prompt_from_boxes([[] for _ in session.class_names], self.model.device)
        with self._precision():
            outputs = run_frame(self.model, local, backbone_out, session.text_out, no_boxes)
        every_query = replace(self.config.detection, low_score_threshold=0.0,
                              max_detections=outputs["pred_logits"].shape[1])
        text_only = postprocess(outputs, (height, width), every_query, features)
        box_embeddings = {}
        for exemplar in session.exemplars.on_frame(frame.index):
            x0, y0, x1, y1 = (int(round(v)) for v in exemplar.box)
            box_mask = torch.zeros(1, height, width, dtype=torch.bool)
            box_mask[0, max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)] = True
            box_embeddings[exemplar.box] = pooled_embeddings(features, box_mask)[0]
        session.exemplars.learn(frame.index, text_only, box_embeddings)
        return text_only, box_embeddings

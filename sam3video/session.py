"""The interactive video session: the official video predictor's requests, from Python.

    session = VideoSession(model, "clip.mp4")          # video_checkpoint.load_video_model: sam3.pt or SAM 3.1
    first = session.add_prompt(0, text="dog")          # the detector on frame 0: every dog, official ids
    for frame in session.propagate():                  # "both": forward from frame 0, then backward
        ...                                            # SessionFrame(frame_index, Detections)
    session.add_prompt(12, points=[(310, 200)], point_labels=[1], obj_id=3)   # refine dog 3 on frame 12
    session.add_prompt(20, points=[(40, 60)], point_labels=[1], obj_id=9)     # a dog the detector missed
    session.remove_object(5)
    for frame in session.propagate():                  # only objects 3 and 9 are tracked again
        ...

What each request does is the official behaviour of the model's version (``notes/interactive_reading.md`` is the
reading of Meta's code it follows: sam3 0.1.4 for SAM 3, GitHub main @96914d2 for SAM 3.1):

- ``add_prompt(frame, text=..., boxes=...)``: the detector path. A new concept starts over (every object, click
  and cached frame is dropped), the detection + tracking loop runs on that frame, its output is returned.
- ``add_prompt(frame, points=..., point_labels=..., obj_id=...)``: the tracker path. A new ``obj_id`` starts an
  object from the clicks (SAM heads on that frame, no memory); an existing one is re-segmented from the clicks
  on that frame, which becomes its conditioning frame. SAM 3.1 first moves an object that shares its buckets
  into a state of its own; SAM 3 keeps it in its birth bucket and prompts its heads with the object's earlier mask
  there. The object's score becomes 1.0. Clicks replace the frame's earlier ones unless
  ``clear_old_points=False`` (sam3 0.1.4 always replaces them). Coordinates are pixels of the video unless
  ``rel_coordinates`` (official: [0, 1]).
- ``remove_object(obj_id)``: the object leaves its tracker state (its slot is marked removed) and every cached
  frame; ids are never re-issued by the detector.
- ``propagate(direction, start_frame, max_frames)``: the action history decides, as officially, between the full
  detect + track loop (the first propagation), a partial one (only the objects clicked since the last
  propagation are tracked again, merged into the cached frames; nothing new is born) and a fetch of the cached
  frames. "both" is forward from ``start_frame`` (default: the first prompted frame), then backward from the
  frame before it.
- ``reset()`` forgets prompts, objects and history; ``close()`` frees the frames.

Where the official code fails (an assertion, a KeyError, a click dropped on a frame not yet seen), the session
does what the request asks for instead; each such place is named below. Ids are the official ones (0-based).
"""

from __future__ import annotations

import enum
import functools
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .detections import Detections
from .errors import InputError
from .geometry import normalised_cxcywh
from .model.geometry_encoders import prompt_from_boxes
from .model.precision import autocast_context
from .model.multiplex_utils import new_multiplex_state
from .model.sam3_tracker_utils import MemoryBank, PointInputs, TrackStepOutput, apply_non_overlapping_constraints
from .model.sam3_video import Sam3VideoModel
from .model.sam31_tracker import MultiplexMemoryBank, MultiplexStepOutput
from .model.sam31_video import Sam31VideoModel
from .preprocess import preprocess_image
from .processor import VISUAL_PROMPT
from .sources.loader import MAX_WINDOW_SECONDS, open_video
from .thresholds import Sam3LoopConfig, Sam31LoopConfig
from .trackers.sam3.loop import (
    NO_OBJ_SCORE,
    HotstartBuffer,
    LoopFrame,
    LoopOutput,
    Sam3Loop,
    TrackerBucket,
    fill_holes_in_mask_scores,
    postprocess_frame,
)
from .trackers.sam3.propagation import FrameFeatures
from .trackers.sam3.tracking import exemplar_queries, frame_detections, tracker_features
from .trackers.sam31.loop import ConfirmationBuffer, MultiplexTrackerState, Sam31Features, Sam31Loop
from .trackers.sam31.tracking import sam31_features
from .video.detect import encode_prompts, run_frame

DIRECTIONS = ("both", "forward", "backward")
TEXT_PLACEHOLDER = "<text placeholder>"  # official: the text of a session prompted by boxes only
CLICK_SCORE = 1.0  # official: a clicked object's score, on every frame


class ActionKind(str, enum.Enum):
    ADD = "add"
    REFINE = "refine"
    REMOVE = "remove"
    FULL = "propagation_full"
    PARTIAL = "propagation_partial"
    FETCH = "propagation_fetch"


PROPAGATIONS = (ActionKind.FULL, ActionKind.PARTIAL, ActionKind.FETCH)


@dataclass(frozen=True)
class Action:
    """One entry of the action history (official ``action_history``)."""

    kind: ActionKind
    frame_index: int | None
    obj_ids: frozenset[int] = frozenset()


def _in_model_precision(method):
    """``method`` under the autocast of the detector's precision mode (``--precision bf16`` / ``fp16``: the detector
    and the tracker, as the official code runs the whole session under autocast); nothing in fp32."""

    @functools.wraps(method)
    def under_autocast(self, *args, **kwargs):
        with autocast_context(self.detector):
            return method(self, *args, **kwargs)

    return under_autocast


def next_propagation(history: Sequence[Action]) -> Action:
    """The kind of the next propagation from the history (official ``parse_action_history_for_propagation``):
    full first; after a propagation, the same again for the second half of "both", unless the last two were
    both propagations or the last one started at the first or last frame (then fetch); otherwise a partial run of
    the objects added or refined since the last propagation, or a fetch if there are none. ``frame_index`` of
    the returned action is unset (the caller records the start frame); -1 in a history entry means "last"."""
    if not history:
        return Action(ActionKind.FULL, None)
    last = history[-1]
    if last.kind in PROPAGATIONS:
        if last.kind == ActionKind.FETCH:
            return Action(ActionKind.FETCH, None)
        before_is_propagation = len(history) > 1 and history[-2].kind in (ActionKind.FULL, ActionKind.PARTIAL)
        if before_is_propagation or last.frame_index in (0, -1):
            return Action(ActionKind.FETCH, None)
        return Action(last.kind, None, last.obj_ids)
    changed: set[int] = set()
    for action in reversed(history):
        if action.kind in PROPAGATIONS:
            break
        if action.kind in (ActionKind.ADD, ActionKind.REFINE):
            changed |= action.obj_ids
    return Action(ActionKind.PARTIAL, None, frozenset(changed)) if changed else Action(ActionKind.FETCH, None)


class SessionFrame(NamedTuple):
    """One frame of a session's output: ``detections`` sorted by id, ``tracker_id`` the official (0-based) ids,
    ``confidence`` the objects' scores (the detection score at birth, 1.0 once clicked), ``mask`` (K, H, W) bool
    (no two overlap), ``xyxy`` the masks' extent in pixels, ``data["tracker_score"]`` this frame's tracker
    score."""

    frame_index: int
    detections: Detections


@dataclass
class CachedFrame:
    """A frame's outputs kept for partial propagation and fetch (official ``cached_frame_outputs``): id -> mask
    (packed bits of the (H, W) bool mask), and this frame's tracker scores."""

    masks: dict[int, np.ndarray] = field(default_factory=dict)
    tracker_scores: dict[int, float] = field(default_factory=dict)


@dataclass
class Clicks:
    """An object's clicks on one frame: (P, 2) xy in the model's input frame (image_size²), (P,) labels."""

    coords: np.ndarray
    labels: np.ndarray


def _pack(mask: Tensor) -> np.ndarray:
    return np.packbits(mask.cpu().numpy().astype(bool).ravel())


def _unpack(packed: np.ndarray, size: tuple[int, int]) -> Tensor:
    return torch.from_numpy(np.unpackbits(packed, count=size[0] * size[1]).reshape(size).astype(bool))


def _to_video(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) logits -> (N, H, W) logits at video size (bilinear)."""
    return F.interpolate(masks[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


class _Frames:
    """The session's frames as the detector's ``img_batch_all_stages``: preprocessed on demand."""

    def __init__(self, images: list[np.ndarray], resolution: int, half: bool = False):
        self.images, self.resolution, self.half = images, resolution, half

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1)
        x = preprocess_image(image, self.resolution)
        return x.half() if self.half else x


class VideoSession:
    """An interactive session on one clip (at most one window: 30 s). ``VideoSession(model, video)`` gives the
    session of the model's version: ``Sam31Session`` for a ``Sam31VideoModel``, ``Sam3Session`` for a
    ``Sam3VideoModel``; what differs between them is in their methods, the requests are here."""

    boxes_only_text = TEXT_PLACEHOLDER  # the text of a concept given by boxes only
    FEATURE_CACHE = 2  # frames whose tracker features are kept (a full-size frame's are 100-200 MB)

    def __new__(cls, model=None, *args, **kwargs):
        if cls is VideoSession:
            if isinstance(model, Sam31VideoModel):
                cls = Sam31Session
            elif isinstance(model, Sam3VideoModel):
                cls = Sam3Session
            else:
                raise InputError("VideoSession needs a video model with its tracker (load_video_model on sam3.pt or "
                                 f"sam3.1_multiplex.pt); got {type(model).__name__}")
        return super().__new__(cls)

    def __init__(self, model, video, *, config=None, memory_dtype: torch.dtype = torch.bfloat16,
                 backend: str = "auto", fps: float | None = None, start: float | None = None,
                 end: float | None = None, source_fps: float | None = None, frames_fp16: bool = False,
                 keep_all_memory: bool = False, exemplar_conditioning: bool = False):
        """``video``: anything ``open_video`` takes (a file, a folder of images, an array, frames); ``config``
        the loop's thresholds (``Sam31LoopConfig`` / ``Sam3LoopConfig``; default: the official ones);
        ``frames_fp16``: the preprocessed frames rounded to fp16, as ``track`` keeps them (``TrackingConfig``);
        ``keep_all_memory``: no memory map is ever dropped, as officially (else only those around each propagation's
        start and those the next frames read; ``track_back`` reads the maps after each object's first frame);
        ``exemplar_conditioning`` (not official, ``track``'s ``Sam3Options``): on a frame with positive boxes, the
        query each marks is kept whatever its score (SAM 3; SAM 3.1's loop takes no such queries)."""
        self.keep_all_memory, self.exemplar_conditioning = keep_all_memory, exemplar_conditioning
        # called with (frame index, the detector's outputs) each time the detector runs (``run.EditedClip`` keeps
        # the full pass's candidates for detections.npz); None: nothing is called
        self.on_detector_outputs = None
        self.detector = model.detector.eval()
        self.memory_dtype = memory_dtype
        self._setup(model, config)
        reader = open_video(video, backend=backend, fps=fps, start=start, end=end, source_fps=source_fps)
        frames = list(reader)
        if not frames:
            raise InputError("the video has no frames")
        if frames[-1].window > 0:
            raise InputError(f"a session takes one clip of at most {MAX_WINDOW_SECONDS:g} s; this one is "
                             f"{len(frames) / reader.info.fps:.1f} s: choose a part with start= and end=")
        self.images = [frame.image for frame in frames]
        self.video_size = tuple(self.images[0].shape[:2])
        self.frames = _Frames(self.images, self.detector.config.resolution, frames_fp16)
        self.reset()

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self.images)

    @property
    def obj_ids(self) -> list[int]:
        """The objects the session holds now, sorted."""
        return sorted({i for state in self._states() for i in state.obj_ids})

    def reset(self) -> None:
        """Forget the prompt, every object, click and cached frame (official ``reset_session``)."""
        self.text: str | None = None
        self.text_out: dict | None = None
        self.boxes: dict[int, list] = {}  # frame -> [(cxcywh normalised, positive)]
        self.positive_boxes: dict[int, list] = {}  # frame -> [xyxy normalised] of its positive boxes
        self.loop = None  # the detector + tracker loop of the prompt
        self.click_states: list = []  # tracker states made (or, SAM 3.1, split off) by clicks
        self.scores: dict[int, float] = {}  # id -> the score shown (birth detection score; 1.0 once clicked)
        self.cache: dict[int, CachedFrame] = {}
        self.clicks: dict[int, dict[int, Clicks]] = {}  # id -> frame -> its clicks there
        self.history: list[Action] = []
        self.prompted_frames: set[int] = set()  # frames the detector loop has run on (official previous_stages_out)
        self.max_obj_id = -1
        # frames no eviction drops: around each propagation's start (all of them with keep_all_memory)
        self.keep_frames: set[int] = set(range(self.num_frames)) if self.keep_all_memory else set()
        self._feature_cache: OrderedDict = OrderedDict()  # frame -> tracker features, most recent last

    def close(self) -> None:
        """Free the frames and every state; the session cannot be used afterwards."""
        self.reset()
        self.images = self.frames.images = []

    def _check_frame(self, frame_index: int, what: str = "frame") -> int:
        if isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)) or \
                not 0 <= frame_index < self.num_frames:
            raise InputError(f"{what} {frame_index!r} is not a frame of this clip (0..{self.num_frames - 1})")
        return int(frame_index)

    # -- requests ------------------------------------------------------------------------------------------------
    def add_prompt(self, frame_index: int, *, text: str | None = None, boxes: Sequence | None = None,
                   box_labels: Sequence | None = None, points: Sequence | None = None,
                   point_labels: Sequence | None = None, obj_id: int | None = None, clear_old_points: bool = True,
                   rel_coordinates: bool = False, box: Sequence | None = None) -> SessionFrame:
        """Text and / or boxes (xyxy, pixels or relative): the detector path. Points and / or one ``box`` with
        ``obj_id``: the tracker path (the box is SAM 2's tracker box, its two corners put before the points; the
        official SAM 3 requests take points only there). Returns the frame's output."""
        frame_index = self._check_frame(frame_index)
        if points is not None or box is not None:
            if text is not None or boxes is not None:
                raise InputError("give points (with obj_id) or text / boxes in one request, not both")
            if obj_id is None:
                raise InputError("points need the obj_id of the object they are on (a new id starts an object)")
            if box is not None and not clear_old_points:
                raise InputError("a box comes before any point: it replaces the object's clicks on its frame "
                                 "(clear_old_points=True)")
            return self._add_clicks(frame_index, points, point_labels, obj_id, clear_old_points, rel_coordinates,
                                    box)
        if text is None and boxes is None:
            raise InputError("add_prompt needs text, boxes or points")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InputError("empty text prompt: give a noun phrase such as text='dog'")
        self.reset()
        self.text = text if text is not None else self.boxes_only_text
        if boxes is not None:
            self._add_boxes(frame_index, boxes, box_labels, rel_coordinates)
        with autocast_context(self.detector):
            self.text_out = encode_prompts(self.detector, [self.text])
        self.loop = self._new_loop()
        frame = self._loop_step(frame_index)
        self._cache(frame, hidden=())
        return self._output(frame_index)

    def add_exemplars(self, frame_index: int, boxes: Sequence, box_labels: Sequence | None = None,
                      rel_coordinates: bool = False) -> None:
        """Not official (a detector request takes boxes on one frame and starts over): more boxes (xyxy) of the
        session's concept on any frame, as ``track --exemplar`` gives them. Nothing runs now: the frame's detector
        runs with them in the next full propagation (the first after ``add_prompt``)."""
        frame_index = self._check_frame(frame_index)
        if self.loop is None:
            raise InputError("add a text prompt (add_prompt) before exemplar boxes on other frames")
        self._add_boxes(frame_index, boxes, box_labels, rel_coordinates)

    def _add_boxes(self, frame_index: int, boxes, labels, relative: bool) -> None:
        parsed = self._parse_boxes(boxes, labels, relative)
        self.boxes.setdefault(frame_index, []).extend(parsed)
        height, width = self.video_size
        scale = np.array([1.0, 1.0, 1.0, 1.0]) if relative else np.array([width, height, width, height], float)
        self.positive_boxes.setdefault(frame_index, []).extend(
            tuple(float(v) for v in np.asarray(box, np.float64) / scale)
            for box, (_, positive) in zip(boxes, parsed) if positive)

    def _parse_boxes(self, boxes, labels, relative: bool) -> list:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) == 0 or not np.isfinite(boxes).all():
            raise InputError("boxes must be a non-empty list of x1, y1, x2, y2")
        labels = np.ones(len(boxes), bool) if labels is None else np.asarray(labels)
        if labels.shape != (len(boxes),):
            raise InputError(f"box_labels must give one label per box ({len(boxes)}), got {labels.shape}")
        height, width = self.video_size
        scale = np.array([width, height, width, height]) if relative else 1.0
        out = []
        for box, label in zip(boxes * scale, labels):
            if not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
                raise InputError(f"box {tuple(float(v) for v in box)} is empty or outside the {width}x{height} frame")
            out.append((normalised_cxcywh(box, width, height), bool(label)))
        return out

    def remove_object(self, obj_id: int, frame_index: int = 0) -> SessionFrame:
        """Remove an object from its state and every cached frame; returns ``frame_index``'s output. An id the
        session does not hold is refused (officially: a warning, then a KeyError on an uncached frame)."""
        frame_index = self._check_frame(frame_index)
        if obj_id not in self.obj_ids:
            raise InputError(f"no object {obj_id!r} in this session (objects: {self.obj_ids})")
        self._remove_from_states(obj_id)
        self.scores.pop(obj_id, None)
        self.clicks.pop(obj_id, None)
        for cached in self.cache.values():
            cached.masks.pop(obj_id, None)
        self.history.append(Action(ActionKind.REMOVE, None, frozenset({obj_id})))
        return self._output(frame_index)

    def propagate(self, direction: str = "both", start_frame: int | None = None, max_frames: int | None = None
                  ) -> Iterator[SessionFrame]:
        """Yield each frame's output in processing order: forward from ``start_frame`` (default: the first frame
        the detector ran on), then (``both``) backward from the frame before it, at most ``max_frames`` further
        frames each way."""
        if direction not in DIRECTIONS:
            raise InputError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or max_frames < 0):
            raise InputError(f"max_frames must be a whole number >= 0, got {max_frames!r}")
        # officially a RuntimeError without a start frame; with one, SAM 3.1 fails (a TypeError) and SAM 3 runs a
        # loop that has no prompt
        if start_frame is None and not self.prompted_frames or self.loop is None and not self.history:
            raise InputError("nothing to propagate: add a text or box prompt first")
        if start_frame is None:
            start_frame = min(self.prompted_frames)
        start_frame = self._check_frame(start_frame, "start_frame")
        reverses = {"forward": (False,), "backward": (True,), "both": (False, True)}[direction]
        return self._propagate(reverses, start_frame, max_frames)

    def _propagate(self, reverses, start: int, max_frames: int | None) -> Iterator[SessionFrame]:
        tracker = self.tracker
        reach = tracker.max_obj_ptrs_in_encoder + tracker.num_maskmem * tracker.memory_temporal_stride_for_eval + 2
        self.keep_frames |= set(range(start - reach, start + reach + 1))  # read by either direction from start
        for reverse in reverses:
            action = next_propagation(self.history)
            recorded = -1 if start == self.num_frames - 1 else start
            self.history.append(Action(action.kind, recorded, action.obj_ids))
            span = self.num_frames if max_frames is None else max_frames
            if reverse:
                frames = list(range(start - 1, max(start - span, 0) - 1, -1))
            else:
                frames = list(range(start, min(start + span, self.num_frames - 1) + 1))
            if action.kind == ActionKind.FULL:
                yield from self._propagate_full(frames, reverse)
            elif action.kind == ActionKind.PARTIAL:
                yield from self._propagate_partial(frames, action.obj_ids, reverse)
            else:
                for t in frames:
                    yield self._output(t)

    # -- the detector + tracker loop -----------------------------------------------------------------------------
    neck_paths: dict = {}  # which neck paths a tracker-only ViT pass computes (forward_image's need_* flags)

    def _run_detector(self, frame_index: int):
        """(the frame's ``FrameDetections``, its tracker features), from one ViT pass."""
        boxes = self.boxes.get(frame_index, [])
        with torch.inference_mode():
            outputs = run_frame(self.detector, frame_index, {"img_batch_all_stages": self.frames}, self.text_out,
                                prompt_from_boxes([boxes], self.detector.device))
        backbone = outputs["prev_encoder_out"]["backbone_out"]
        if self.on_detector_outputs is not None:
            self.on_detector_outputs(frame_index, outputs)
        return frame_detections(outputs)[0], self._features_of(backbone, int(backbone["id_mapping"][frame_index]))

    @_in_model_precision
    def _compute_features(self, frame_index: int):
        """The tracker's features of a frame (one ViT pass, without the detector's heads)."""
        dtype = next(self.detector.backbone.parameters()).dtype  # frames may be kept in fp16
        image = self.frames[frame_index][None].to(device=self.detector.device, dtype=dtype)
        with torch.inference_mode():
            return self._features_of(self.detector.backbone.forward_image(image, **self.neck_paths), 0)

    def _features(self, frame_index: int):
        """The tracker's features of a frame, kept for the last ``FEATURE_CACHE`` frames (clicks on one frame
        reuse them; the official code runs the whole detector again for each click)."""
        features = self._feature_cache.pop(frame_index, None)
        if features is None:
            features = self._compute_features(frame_index)
        self._remember(frame_index, features)
        return features

    def _remember(self, frame_index: int, features) -> None:
        self._feature_cache[frame_index] = features
        while len(self._feature_cache) > self.FEATURE_CACHE:
            self._feature_cache.popitem(last=False)

    @_in_model_precision
    def _loop_step(self, frame_index: int, reverse: bool = False) -> LoopFrame:
        detections, features = self._run_detector(frame_index)
        self._remember(frame_index, features)
        self.loop.keep_frames = self.keep_frames
        frame = self._step(frame_index, detections, features, reverse)
        self.prompted_frames.add(frame_index)
        for obj_id, score in frame.scores.items():
            self.scores.setdefault(obj_id, score)
        self.max_obj_id = max([self.max_obj_id, *frame.scores])
        return frame

    def _propagate_full(self, frames: list[int], reverse: bool) -> Iterator[SessionFrame]:
        """The detect + track loop over ``frames``; each frame is given out once the confirmation delay releases
        it (its unconfirmed objects hidden) and cached without the hidden objects (official)."""
        buffer = self._new_buffer(reverse)
        pending: dict[int, LoopFrame] = {}

        def given_out(outputs: list[LoopOutput]) -> Iterator[SessionFrame]:
            for out in outputs:
                frame = pending.pop(out.frame_idx)
                self._cache(frame, hidden=buffer.hidden(frame))
                yield SessionFrame(out.frame_idx, _detections(out))

        for t in frames:
            frame = self._loop_step(t, reverse)
            pending[t] = frame
            yield from given_out(buffer.push(frame))
        yield from given_out(buffer.flush())

    def _cache(self, frame: LoopFrame, hidden) -> None:
        hidden = set(hidden)
        self.cache[frame.frame_idx] = CachedFrame(
            masks={i: _pack(m) for i, m in frame.masks.items() if i not in hidden},
            tracker_scores=dict(frame.tracker_scores))

    # -- clicks --------------------------------------------------------------------------------------------------
    def _add_clicks(self, t: int, points, labels, obj_id: int, clear_old: bool, relative: bool,
                    box=None) -> SessionFrame:
        clicks = self._parse_points(points, labels, relative) if points is not None else None
        if box is not None:
            corners = self._parse_box_corners(box, relative)
            clicks = corners if clicks is None else Clicks(np.concatenate([corners.coords, clicks.coords]),
                                                            np.concatenate([corners.labels, clicks.labels]))
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or obj_id < 0:
            raise InputError(f"obj_id must be a whole number >= 0, got {obj_id!r}")
        obj_id = int(obj_id)
        per_frame = self.clicks.setdefault(obj_id, {})
        if not clear_old and t in per_frame:
            clicks = Clicks(np.concatenate([per_frame[t].coords, clicks.coords]),
                            np.concatenate([per_frame[t].labels, clicks.labels]))
        is_new = obj_id not in self.obj_ids
        state = self._state_for_click(obj_id, is_new)
        per_frame[t] = clicks
        self._click(state, t, obj_id, clicks, is_new)
        self.scores[obj_id] = CLICK_SCORE
        self.max_obj_id = max(self.max_obj_id, obj_id)
        kind = ActionKind.ADD if is_new else ActionKind.REFINE
        self.history.append(Action(kind, t, frozenset({obj_id})))
        return self._output(t)

    def _parse_points(self, points, labels, relative: bool) -> Clicks:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0 or not np.isfinite(points).all():
            raise InputError("points must be a non-empty list of x, y")
        if labels is None:
            raise InputError("points need point_labels (1 positive, 0 negative), one per point")
        labels = np.asarray(labels)
        if labels.shape != (len(points),) or not np.isin(labels, (0, 1)).all():
            raise InputError(f"point_labels must be 1 (positive) or 0 (negative), one per point ({len(points)})")
        height, width = self.video_size
        size = self.tracker.image_size
        scale = np.array([size, size]) if relative else np.array([size / width, size / height])
        if (points < 0).any() or (points > (1.0 if relative else np.array([width, height]))).any():
            raise InputError(f"a point is outside the frame ({'[0, 1]' if relative else f'{width}x{height}'})")
        return Clicks((points * scale).astype(np.float32), labels.astype(np.int32))

    def _parse_box_corners(self, box, relative: bool) -> Clicks:
        """A tracker box (x1, y1, x2, y2) -> its corners as SAM's box points (labels 2 and 3)."""
        box = np.asarray(box, dtype=np.float64)
        height, width = self.video_size
        if box.shape != (4,) or not np.isfinite(box).all():
            raise InputError("box must be x1, y1, x2, y2")
        limit = np.array([1.0, 1.0] if relative else [width, height])
        if not ((box[:2] >= 0).all() and (box[2:] <= limit).all() and (box[:2] < box[2:]).all()):
            raise InputError(f"box {tuple(float(v) for v in box)} is empty or outside the frame "
                             f"({'[0, 1]' if relative else f'{width}x{height}'})")
        size = self.tracker.image_size
        scale = np.array([size, size]) if relative else np.array([size / width, size / height])
        return Clicks((box.reshape(2, 2) * scale).astype(np.float32), np.array([2, 3], np.int32))

    # -- partial propagation ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _propagate_partial(self, frames: list[int], obj_ids: frozenset[int], reverse: bool
                           ) -> Iterator[SessionFrame]:
        """Official ``propagation_partial``: only the states holding ``obj_ids`` are tracked (their memory encoded
        at once, nothing born); those objects' masks and raw score logits replace theirs in the cached frames."""
        states = [s for s in self._states() if set(s.obj_ids) & obj_ids]
        for t in frames:
            features = self._features(t)
            cached = self.cache.setdefault(t, CachedFrame())
            for state in states:
                masks, scores = self._partial_frame(state, t, features, reverse)
                video = _to_video(masks, self.video_size)
                for row, obj_id in enumerate(state.obj_ids):
                    if obj_id in obj_ids:
                        cached.masks[obj_id] = _pack(video[row] > 0)
                        cached.tracker_scores[obj_id] = float(scores[row])  # a raw logit, as officially
            yield self._output(t)

    @_in_model_precision
    @torch.inference_mode()
    def track_back(self, stop_after_missing: int = 8) -> int:
        """Beyond the official requests (``track --direction both``; officially "both" covers only the frames before
        the prompted frame): each object first shown after the first prompted frame is tracked back from there to
        the clip's first frame, its state's memory read in reverse and nothing born; its masks fill the frames
        before (frames it has are kept). A state stops after ``stop_after_missing`` frames in a row without any of
        its objects. Returns the frames tracked, summed over states."""
        first_shown: dict[int, int] = {}
        for t in sorted(self.cache):
            for obj_id, packed in self.cache[t].masks.items():
                if packed.any():
                    first_shown.setdefault(obj_id, t)
        start = min(self.prompted_frames, default=0)
        late = {obj_id: t for obj_id, t in first_shown.items() if t > start}
        todo = {id(state): (state, {o: late[o] for o in state.obj_ids if o in late}) for state in self._states()}
        todo = {k: v for k, v in todo.items() if v[1]}
        missing = dict.fromkeys(todo, 0)
        tracked = 0
        for t in range(max((max(m.values()) for _, m in todo.values()), default=0) - 1, -1, -1):
            active = [k for k, (_, mine) in todo.items() if t < max(mine.values()) and missing[k] < stop_after_missing]
            if not active:
                continue
            features = self._features(t)
            cached = self.cache.setdefault(t, CachedFrame())
            for key in active:
                state, mine = todo[key]
                masks, scores = self._partial_frame(state, t, features, reverse=True)
                video = _to_video(masks, self.video_size) > 0
                seen = False
                for row, obj_id in enumerate(state.obj_ids):
                    if obj_id in mine and t < mine[obj_id] and bool(video[row].any()):
                        cached.masks[obj_id] = _pack(video[row])
                        cached.tracker_scores[obj_id] = float(scores[row])
                        seen = True
                missing[key] = 0 if seen else missing[key] + 1
                tracked += 1
        if late:
            self.history.append(Action(ActionKind.PARTIAL, 0, frozenset(late)))
        return tracked

    # -- what each version does its own way -------------------------------------------------------------------------
    def _setup(self, model, config) -> None:
        raise NotImplementedError

    def _new_loop(self):
        raise NotImplementedError

    def _features_of(self, backbone_out: dict, row: int):
        """The tracker's features of row ``row`` of the backbone's outputs."""
        raise NotImplementedError

    def _step(self, frame_index: int, detections, features, reverse: bool) -> LoopFrame:
        raise NotImplementedError

    def _new_buffer(self, reverse: bool):
        """The loop's output stage (``push``, ``flush``, ``hidden``)."""
        raise NotImplementedError

    def _states(self) -> list:
        """Every tracker state: the loop's, then those made by clicks."""
        raise NotImplementedError

    def _remove_from_states(self, obj_id: int) -> None:
        raise NotImplementedError

    def _state_for_click(self, obj_id: int, is_new: bool):
        raise NotImplementedError

    def _click(self, state, t: int, obj_id: int, clicks: Clicks, is_new: bool) -> None:
        raise NotImplementedError

    def _partial_frame(self, state, t: int, features, reverse: bool) -> tuple[Tensor, Tensor]:
        """One frame of a state in a partial propagation -> ((N, h, w) mask logits, (N,) score logits)."""
        raise NotImplementedError

    # -- outputs ---------------------------------------------------------------------------------------------------
    def output(self, frame_index: int) -> SessionFrame:
        """A frame's output as the session holds it now (cached; nothing is tracked): what a fetch gives."""
        return self._output(self._check_frame(frame_index))

    def _output(self, t: int) -> SessionFrame:
        """A cached frame through the official output stage (ids sorted, empty masks dropped, boxes, then each
        overlapped pixel to the object of the highest tracker score); an uncached frame is empty (officially a
        KeyError in SAM 3.1)."""
        cached = self.cache.get(t, CachedFrame())
        frame = LoopFrame(frame_idx=t, masks={i: _unpack(m, self.video_size) for i, m in cached.masks.items()},
                          scores={i: self.scores.get(i, CLICK_SCORE) for i in cached.masks},
                          tracker_scores=cached.tracker_scores, removed=frozenset(), suppressed=frozenset())
        return SessionFrame(t, _detections(postprocess_frame(frame, (), self.video_size)))


def _detections(out: LoopOutput) -> Detections:
    return Detections(xyxy=out.boxes_xyxy, confidence=out.probs, class_id=np.zeros(len(out.obj_ids), np.int64),
                      mask=out.masks, tracker_id=out.obj_ids, data={"tracker_score": out.tracker_probs})

class Sam31Session(VideoSession):
    """The session of a SAM 3.1 model: the multiplex loop; clicks by the interactive heads, an object that
    shares its buckets moved into a state of its own first."""

    def _setup(self, model, config) -> None:
        self.tracker = model.tracker.model.eval()
        self.config = config or Sam31LoopConfig()

    def _new_loop(self) -> Sam31Loop:
        return Sam31Loop(self.tracker, self.config, self.num_frames, self.video_size, self.memory_dtype)

    neck_paths = {"need_sam3_out": False}  # a click or a partial propagation needs the tracker's paths only

    def _features_of(self, backbone_out: dict, row: int) -> Sam31Features:
        return sam31_features(self.tracker, backbone_out, row)

    def _step(self, frame_index: int, detections, features, reverse: bool) -> LoopFrame:
        return self.loop.step(frame_index, detections.probs, detections.masks.float(), detections.boxes, features,
                              reverse=reverse)

    def _new_buffer(self, reverse: bool) -> ConfirmationBuffer:
        return ConfirmationBuffer(self.config.hotstart_delay, self.video_size, self.num_frames, reverse=reverse)

    def _states(self) -> list[MultiplexTrackerState]:
        return [*(self.loop.states if self.loop is not None else ()), *self.click_states]

    def _remove_from_states(self, obj_id: int) -> None:
        for state in self._states():
            state.remove({obj_id})
        if self.loop is not None:
            self.loop.states = [s for s in self.loop.states if len(s)]
        self.click_states = [s for s in self.click_states if len(s)]

    def _state_for_click(self, obj_id: int, is_new: bool) -> MultiplexTrackerState:
        """The state a click on ``obj_id`` acts on: a new one for a new object; an object sharing a state moves
        to its own first (official ``_extract_object_to_singleton_state``)."""
        if is_new:
            state = MultiplexTrackerState(self.tracker, self.num_frames, self.video_size, self.memory_dtype)
            self.click_states.append(state)
            return state
        for state in self.click_states:
            if obj_id in state.obj_ids:
                return state
        source = next(s for s in self.loop.states if obj_id in s.obj_ids)
        if len(source) == 1:
            return source
        single = extract_to_singleton(source, obj_id)
        source.remove({obj_id})
        self.loop.states = [s for s in self.loop.states if len(s)]
        self.click_states.append(single)
        return single

    @_in_model_precision
    @torch.inference_mode()
    def _click(self, state: MultiplexTrackerState, t: int, obj_id: int, clicks: Clicks, is_new: bool) -> None:
        """A fresh prediction from the clicks by the interactive heads (no memory), stored as the object's
        conditioning frame ``t``, its memory encoded (official gap fill / first refinement + preflight). OSS 3.1
        asserts on a second refinement of a frame it has propagated through; here every click is the first kind."""
        tracker = self.tracker
        features = self._features(t)
        if state.mplex is None:
            state.mplex = new_multiplex_state(1, tracker.multiplex_count, tracker.device, object_ids=[obj_id])
            state.obj_ids = [obj_id]
        index = state.obj_ids.index(obj_id)
        # official 3.1: the state's mask-only inputs (detector births, reconditions) stop being inputs
        for other in state.obj_ids:
            frames = state.input_frames.get(other, set())
            clicked = set(self.clicks.get(other, {}))
            for f in [f for f in frames if f not in clicked]:
                frames.discard(f)
                if not any(f in fs for fs in state.input_frames.values()):
                    state.consolidated.pop(f, None)
        coords = torch.as_tensor(clicks.coords, device=tracker.device)[None]
        labels = torch.as_tensor(clicks.labels, device=tracker.device)[None]
        points = PointInputs(point_coords=coords, point_labels=labels)
        out = tracker.track_step(t, True, features.interactive, features.propagation, points, None,
                                 MultiplexMemoryBank(), self.num_frames, state.mplex, run_mem_encoder=False,
                                 objects_to_interact=[index])
        video = _to_video(out.pred_masks[:, 0], self.video_size)
        state.input_frames.setdefault(obj_id, set()).add(t)
        consolidated = state._consolidate(t, out, out.pred_masks, {index: video[index:index + 1, None]}, features)
        state.bank.cond_frame_outputs[t] = consolidated
        state.bank.non_cond_frame_outputs.pop(t, None)
        state.consolidated[t] = True
        state.rows[t] = list(state.obj_ids)
        state.tracked_frames.add(t)
        cached = self.cache.setdefault(t, CachedFrame())
        cached.masks[obj_id] = _pack(video[index] > 0)
        cached.tracker_scores[obj_id] = CLICK_SCORE  # official: the frame score of a click

    @_in_model_precision
    def _partial_frame(self, state: MultiplexTrackerState, t: int, features: Sam31Features, reverse: bool
                       ) -> tuple[Tensor, Tensor]:
        masks, scores = state.propagate(t, features, reverse, encode_memory=True)
        state.evict(t, reverse, self.keep_frames)
        return masks, scores


class Sam3Session(VideoSession):
    """The session of a SAM 3 model (``sam3.pt``): the official SAM 3 loop; a click runs the tracker's SAM heads
    without memory, the object's earlier mask on that frame as the mask prompt; the object stays in its birth
    bucket, whose clicked frame becomes a conditioning frame (sam3 0.1.4)."""

    boxes_only_text = VISUAL_PROMPT
    DETECTOR_COND_WINDOW = 16  # official refinement_detector_cond_frame_removal_window
    MAX_CLICKS = 16  # official: more points keep the first 8 and the last 8

    def _setup(self, model, config) -> None:
        self.tracker = model.tracker.eval()
        self.config = config or Sam3LoopConfig()

    def _new_loop(self) -> Sam3Loop:
        return Sam3Loop(self.tracker, self.config, self.num_frames, self.video_size, self.memory_dtype,
                        keep_entries=True)

    def _features_of(self, backbone_out: dict, row: int) -> FrameFeatures:
        return tracker_features(self.tracker, backbone_out["sam2_backbone_out"], row)

    def _step(self, frame_index: int, detections, features, reverse: bool) -> LoopFrame:
        # officially, boxes without text start objects on their own frame only
        allow_new = self.text != VISUAL_PROMPT or frame_index in self.boxes
        queries = exemplar_queries(detections, self.positive_boxes.get(frame_index, [])) \
            if self.exemplar_conditioning else ()
        return self.loop.step(frame_index, detections, features, allow_new, queries, reverse=reverse)

    def _new_buffer(self, reverse: bool) -> HotstartBuffer:
        return HotstartBuffer(self.config.hotstart_delay, self.video_size)

    def _states(self) -> list[TrackerBucket]:
        return [*(self.loop.buckets if self.loop is not None else ()), *self.click_states]

    def _remove_from_states(self, obj_id: int) -> None:
        for bucket in self._states():
            bucket.remove(obj_id)
        if self.loop is not None:
            self.loop.buckets = [b for b in self.loop.buckets if len(b)]
        self.click_states = [b for b in self.click_states if len(b)]

    def _state_for_click(self, obj_id: int, is_new: bool) -> TrackerBucket:
        if not is_new:
            return next(b for b in self._states() if obj_id in b.obj_ids)
        bucket = TrackerBucket(self.tracker, self.num_frames, self.video_size, self.memory_dtype)
        bucket.keep_frames, bucket.keep_entries = self.keep_frames, True
        self.click_states.append(bucket)
        return bucket

    @staticmethod
    def _stored_for(bucket: TrackerBucket, t: int, row: int):
        """The object's official per-object output on frame ``t``: the conditioning one, else the tracked one
        (unless the official state has dropped it there); None if it has none."""
        for out in (bucket.bank.cond_frame_outputs.get(t),
                    None if t in bucket.per_object_cleared else bucket.bank.non_cond_frame_outputs.get(t)):
            if out is not None and row < out.pred_masks.shape[0]:
                return out
        return None

    @_in_model_precision
    @torch.inference_mode()
    def _click(self, bucket: TrackerBucket, t: int, obj_id: int, clicks: Clicks, is_new: bool) -> None:
        """Official ``add_tracker_new_points``: the SAM heads on the frame's features without memory, the clicks
        and (when the object has an output on ``t``) its mask logits there (clamped to +-32) as the prompt; the
        bucket's outputs at video size, holes filled, give the response; then the frame is consolidated for every
        object of the bucket into a conditioning frame with binarised memory (``propagate_in_video_preflight``),
        and the object's detector prompts within 16 frames stop conditioning (``clear_detector_added_cond_
        frame_in_tracker``)."""
        tracker, c = self.tracker, self.config
        features = self._features(t)
        if is_new:
            bucket.obj_ids.append(obj_id)
        row = bucket.obj_ids.index(obj_id)
        B, S = len(bucket.obj_ids), tracker.low_res_mask_size
        coords, labels = clicks.coords, clicks.labels
        if len(labels) > self.MAX_CLICKS:
            half = self.MAX_CLICKS // 2
            coords, labels = np.concatenate([coords[:half], coords[-half:]]), np.concatenate([labels[:half],
                                                                                              labels[-half:]])
        device = features.vision_feats[-1].device
        points = PointInputs(point_coords=torch.as_tensor(coords, device=device)[None],
                             point_labels=torch.as_tensor(labels, device=device)[None])
        earlier = [self._stored_for(bucket, t, r) for r in range(B)]
        prev = earlier[row].pred_masks[row:row + 1].clamp(-32.0, 32.0) if earlier[row] is not None else None
        out = tracker.track_step(
            frame_idx=t, is_init_cond_frame=t not in bucket.tracked_frames, current_vision_feats=features.vision_feats,
            current_vision_pos_embeds=features.vision_pos_embeds, feat_sizes=features.feat_sizes,
            point_inputs=points, mask_inputs=None, output_dict=bucket.bank, num_frames=self.num_frames,
            run_mem_encoder=False, prev_sam_mask_logits=prev, use_prev_mem_frame=False)
        # consolidation: the click's row, the others' outputs on t (missing: no object, an empty mask's pointer)
        pred_masks = torch.full((B, 1, S, S), NO_OBJ_SCORE, device=device)
        obj_ptr = torch.full((B, tracker.hidden_dim), NO_OBJ_SCORE, device=device)
        scores = torch.full((B, 1), 10.0, device=device)
        iou_score = torch.zeros((B, 1), device=device) if tracker.use_memory_selection else None
        empty_ptr = None
        for r in range(B):
            source, k = (out, 0) if r == row else (earlier[r], r)
            if source is None:
                empty_ptr = self._empty_mask_ptr(t, features) if empty_ptr is None else empty_ptr
                obj_ptr[r] = empty_ptr
                continue
            pred_masks[r], obj_ptr[r] = source.pred_masks[k], source.obj_ptr[k]
            scores[r] = source.object_score_logits[k]
            if iou_score is not None:
                iou_score[r] = source.iou_score.reshape(-1)[k]
        video = fill_holes_in_mask_scores(_to_video(pred_masks[:, 0], self.video_size)[:, None], c.fill_hole_area)
        high_res = apply_non_overlapping_constraints(F.interpolate(
            pred_masks, size=(tracker.image_size, tracker.image_size), mode="bilinear", align_corners=False))
        maskmem_features, maskmem_pos_enc = tracker._encode_new_memory(
            current_vision_feats=[x.expand(-1, B, -1) for x in features.vision_feats], feat_sizes=features.feat_sizes,
            pred_masks_high_res=high_res, object_score_logits=scores, is_mask_from_pts=True)
        bucket.bank.non_cond_frame_outputs.pop(t, None)
        bucket.bank.cond_frame_outputs[t] = TrackStepOutput(
            point_inputs=None, mask_inputs=None, pred_masks=pred_masks, pred_masks_high_res=None, obj_ptr=obj_ptr,
            object_score_logits=scores, ious=torch.ones_like(scores), iou_score=iou_score,
            maskmem_features=maskmem_features.to(self.memory_dtype), maskmem_pos_enc=maskmem_pos_enc)
        bucket.input_frames.setdefault(t, set()).add(obj_id)
        bucket.clear_around(t)
        if not is_new:  # the object's detector prompts near t stop conditioning (every object's inputs there go)
            clicked = set(self.clicks.get(obj_id, {}))
            for f in [f for f, ids in bucket.input_frames.items() if f != t and obj_id in ids and f not in clicked
                      and abs(f - t) <= self.DETECTOR_COND_WINDOW]:
                del bucket.input_frames[f]
                for other in bucket.obj_ids:
                    self.clicks.get(other, {}).pop(f, None)
                downgraded = bucket.bank.cond_frame_outputs.pop(f, None)
                if downgraded is not None:
                    bucket.bank.non_cond_frame_outputs[f] = downgraded
                bucket.tracked_frames.discard(f)
        cached = self.cache.setdefault(t, CachedFrame())
        cached.masks[obj_id] = _pack(video[row, 0] > 0)
        cached.tracker_scores[obj_id] = CLICK_SCORE

    @_in_model_precision
    def _empty_mask_ptr(self, t: int, features: FrameFeatures) -> Tensor:
        """Official ``_get_empty_mask_ptr``: the pointer of an empty mask taken as the output on frame ``t``."""
        size = self.tracker.image_size
        mask = torch.zeros(1, 1, size, size, device=features.vision_feats[-1].device)
        out = self.tracker.track_step(
            frame_idx=t, is_init_cond_frame=True, current_vision_feats=features.vision_feats,
            current_vision_pos_embeds=features.vision_pos_embeds, feat_sizes=features.feat_sizes, point_inputs=None,
            mask_inputs=mask, output_dict=MemoryBank(), num_frames=self.num_frames, run_mem_encoder=False)
        return out.obj_ptr[0]

    @_in_model_precision
    def _partial_frame(self, bucket: TrackerBucket, t: int, features: FrameFeatures, reverse: bool
                       ) -> tuple[Tensor, Tensor]:
        """The whole bucket tracked to ``t`` with its memory encoded at once (a conditioning frame gives its stored
        output); the mask logits hole-filled, as officially."""
        masks, scores = bucket.propagate(t, features, reverse, encode_memory=True)
        return fill_holes_in_mask_scores(masks[:, None], self.config.fill_hole_area)[:, 0], scores


def extract_to_singleton(source: MultiplexTrackerState, obj_id: int) -> MultiplexTrackerState:
    """Official ``_extract_object_to_singleton_state``: a one-object state holding ``obj_id``'s rows of every
    stored frame of ``source`` (mask and score logits, its pointer; image features shared) but no memory maps (the
    bucket's memory cannot be split per object), no consolidated or tracked frames. ``source`` is not changed."""
    tracker = source.tracker
    single = MultiplexTrackerState(tracker, source.num_frames, source.video_size, source.memory_dtype)
    single.obj_ids = [obj_id]
    single.mplex = new_multiplex_state(1, tracker.multiplex_count, tracker.device, object_ids=[obj_id])
    k = source.obj_ids.index(obj_id)
    for stored, target in ((source.bank.cond_frame_outputs, single.bank.cond_frame_outputs),
                           (source.bank.non_cond_frame_outputs, single.bank.non_cond_frame_outputs)):
        for t, out in stored.items():
            rows = source.rows.get(t, source.obj_ids)
            if obj_id not in rows:
                continue
            r = rows.index(obj_id)
            if r >= out.pred_masks.shape[0] or out.obj_ptr is None:
                continue
            pointer = source.mplex.demux(out.obj_ptr)[k:k + 1]
            target[t] = MultiplexStepOutput(
                pred_masks=out.pred_masks[r:r + 1].clone(), pred_masks_high_res=None,
                object_score_logits=out.object_score_logits[r:r + 1].clone(), obj_ptr=single.mplex.mux(pointer),
                conditioning_objects={0} if r in out.conditioning_objects else set(),
                image_features=out.image_features, image_pos_enc=out.image_pos_enc)
            single.rows[t] = [obj_id]
    return single


"""The interactive video session: the official video predictor's requests, from Python.

    session = VideoSession(model, "clip.mp4")          # a Sam31VideoModel (load_video_model)
    first = session.add_prompt(0, text="dog")          # the detector on frame 0: every dog, official ids
    for frame in session.propagate():                  # "both": forward from frame 0, then backward
        ...                                            # SessionFrame(frame_index, Detections)
    session.add_prompt(12, points=[(310, 200)], point_labels=[1], obj_id=3)   # refine dog 3 on frame 12
    session.add_prompt(20, points=[(40, 60)], point_labels=[1], obj_id=9)     # a dog the detector missed
    session.remove_object(5)
    for frame in session.propagate():                  # only objects 3 and 9 are tracked again
        ...

What each request does is the official behaviour (``notes/interactive_reading.md`` is the reading of Meta's
code it follows; SAM 3.1 main @96914d2):

- ``add_prompt(frame, text=..., boxes=...)``: the detector path. A new concept starts over (every object, click
  and cached frame is dropped), the detection + tracking loop runs on that frame, its output is returned.
- ``add_prompt(frame, points=..., point_labels=..., obj_id=...)``: the tracker path. A new ``obj_id`` starts an
  object from the clicks (the interactive SAM heads, no memory); an existing one is re-segmented from the clicks
  on that frame, which becomes its conditioning frame. SAM 3.1 first moves an object that shares its buckets
  into a state of its own. The object's score becomes 1.0. Clicks replace the frame's earlier ones unless
  ``clear_old_points=False``. Coordinates are pixels of the video unless ``rel_coordinates`` (official: [0, 1]).
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
from .model.sam3_tracker_utils import PointInputs
from .model.sam31_tracker import MultiplexMemoryBank, MultiplexStepOutput
from .model.sam31_video import Sam31VideoModel
from .model.multiplex_utils import new_multiplex_state
from .preprocess import preprocess_image
from .sources.loader import MAX_WINDOW_SECONDS, open_video
from .thresholds import Sam31LoopConfig
from .trackers.sam3.loop import LoopFrame, LoopOutput, postprocess_frame
from .trackers.sam3.tracking import frame_detections
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

    def __init__(self, images: list[np.ndarray], resolution: int):
        self.images, self.resolution = images, resolution

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index])).permute(2, 0, 1)
        return preprocess_image(image, self.resolution)


class VideoSession:
    """An interactive session on one clip (at most one window: 30 s) with a SAM 3.1 video model."""

    def __init__(self, model: Sam31VideoModel, video, *, config: Sam31LoopConfig | None = None,
                 memory_dtype: torch.dtype = torch.bfloat16, backend: str = "auto", fps: float | None = None,
                 start: float | None = None, end: float | None = None, source_fps: float | None = None):
        """``video``: anything ``open_video`` takes (a file, a folder of images, an array, frames)."""
        if not isinstance(model, Sam31VideoModel):
            raise InputError("VideoSession needs a SAM 3.1 video model (load_video_model on sam3.1_multiplex.pt); "
                             f"got {type(model).__name__}")
        self.detector = model.detector.eval()
        self.tracker = model.tracker.model.eval()
        self.config = config or Sam31LoopConfig()
        self.memory_dtype = memory_dtype
        reader = open_video(video, backend=backend, fps=fps, start=start, end=end, source_fps=source_fps)
        frames = list(reader)
        if not frames:
            raise InputError("the video has no frames")
        if frames[-1].window > 0:
            raise InputError(f"a session takes one clip of at most {MAX_WINDOW_SECONDS:g} s; this one is "
                             f"{len(frames) / reader.info.fps:.1f} s: choose a part with start= and end=")
        self.images = [frame.image for frame in frames]
        self.video_size = tuple(self.images[0].shape[:2])
        self.frames = _Frames(self.images, self.detector.config.resolution)
        self.reset()

    # -- state ---------------------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self.images)

    @property
    def obj_ids(self) -> list[int]:
        """The objects the session holds now, sorted."""
        ids = set(self.loop.obj_ids) if self.loop is not None else set()
        return sorted(ids | {i for state in self.click_states for i in state.obj_ids})

    def reset(self) -> None:
        """Forget the prompt, every object, click and cached frame (official ``reset_session``)."""
        self.text: str | None = None
        self.text_out: dict | None = None
        self.boxes: dict[int, list] = {}  # frame -> [(cxcywh normalised, positive)]
        self.loop: Sam31Loop | None = None
        self.click_states: list[MultiplexTrackerState] = []  # states made or split off by clicks
        self.scores: dict[int, float] = {}  # id -> the score shown (birth detection score; 1.0 once clicked)
        self.cache: dict[int, CachedFrame] = {}
        self.clicks: dict[int, dict[int, Clicks]] = {}  # id -> frame -> its clicks there
        self.history: list[Action] = []
        self.prompted_frames: set[int] = set()  # frames the detector loop has run on (official previous_stages_out)
        self.max_obj_id = -1
        self.keep_frames: set[int] = set()  # frames no eviction drops: around each propagation's start

    def close(self) -> None:
        """Free the frames and every state; the session cannot be used afterwards."""
        self.reset()
        self.images = []

    def _check_frame(self, frame_index: int, what: str = "frame") -> int:
        if isinstance(frame_index, bool) or not isinstance(frame_index, (int, np.integer)) or \
                not 0 <= frame_index < self.num_frames:
            raise InputError(f"{what} {frame_index!r} is not a frame of this clip (0..{self.num_frames - 1})")
        return int(frame_index)

    # -- the detector's outputs and the tracker's features of a frame -------------------------------------------
    def _run_detector(self, frame_index: int):
        boxes = self.boxes.get(frame_index, [])
        with torch.inference_mode():
            outputs = run_frame(self.detector, frame_index, {"img_batch_all_stages": self.frames}, self.text_out,
                                prompt_from_boxes([boxes], self.detector.device))
        backbone = outputs["prev_encoder_out"]["backbone_out"]
        row = int(backbone["id_mapping"][frame_index])
        return frame_detections(outputs)[0], sam31_features(self.tracker, backbone, row)

    def _features(self, frame_index: int) -> Sam31Features:
        """The tracker's features of a frame (one ViT pass, without the detector's heads)."""
        with torch.inference_mode():
            backbone = self.detector.backbone.forward_image(self.frames[frame_index][None].to(self.detector.device),
                                                            need_sam3_out=False)
        return sam31_features(self.tracker, backbone, 0)

    # -- requests ------------------------------------------------------------------------------------------------
    def add_prompt(self, frame_index: int, *, text: str | None = None, boxes: Sequence | None = None,
                   box_labels: Sequence | None = None, points: Sequence | None = None,
                   point_labels: Sequence | None = None, obj_id: int | None = None, clear_old_points: bool = True,
                   rel_coordinates: bool = False) -> SessionFrame:
        """Text and / or boxes (xyxy, pixels or relative): the detector path. Points with ``obj_id``: the tracker
        path. Returns the frame's output."""
        frame_index = self._check_frame(frame_index)
        if points is not None:
            if text is not None or boxes is not None:
                raise InputError("give points (with obj_id) or text / boxes in one request, not both")
            if obj_id is None:
                raise InputError("points need the obj_id of the object they are on (a new id starts an object)")
            return self._add_clicks(frame_index, points, point_labels, obj_id, clear_old_points, rel_coordinates)
        if text is None and boxes is None:
            raise InputError("add_prompt needs text, boxes or points")
        if text is not None and (not isinstance(text, str) or not text.strip()):
            raise InputError("empty text prompt: give a noun phrase such as text='dog'")
        self.reset()
        self.text = text if text is not None else TEXT_PLACEHOLDER
        if boxes is not None:
            self.boxes[frame_index] = self._parse_boxes(boxes, box_labels, rel_coordinates)
        self.text_out = encode_prompts(self.detector, [self.text])
        self.loop = Sam31Loop(self.tracker, self.config, self.num_frames, self.video_size, self.memory_dtype)
        frame = self._loop_step(frame_index)
        self._cache(frame, hidden=())
        return self._output(frame_index)

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
        for state in (*(self.loop.states if self.loop else ()), *self.click_states):
            state.remove({obj_id})
        if self.loop is not None:
            self.loop.states = [s for s in self.loop.states if len(s)]
        self.click_states = [s for s in self.click_states if len(s)]
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
        if start_frame is None:
            if not self.prompted_frames:
                raise InputError("nothing to propagate: add a text or box prompt first")
            start_frame = min(self.prompted_frames)
        start_frame = self._check_frame(start_frame, "start_frame")
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or max_frames < 0):
            raise InputError(f"max_frames must be a whole number >= 0, got {max_frames!r}")
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
    def _loop_step(self, frame_index: int, reverse: bool = False) -> LoopFrame:
        detections, features = self._run_detector(frame_index)
        self.loop.keep_frames = self.keep_frames
        frame = self.loop.step(frame_index, detections.probs, detections.masks.float(), detections.boxes, features,
                               reverse=reverse)
        self.prompted_frames.add(frame_index)
        for obj_id, score in frame.scores.items():
            self.scores.setdefault(obj_id, score)
        self.max_obj_id = max([self.max_obj_id, *frame.scores])
        return frame

    def _propagate_full(self, frames: list[int], reverse: bool) -> Iterator[SessionFrame]:
        """The detect + track loop over ``frames``; each frame is given out once the confirmation delay releases
        it (its unconfirmed objects hidden) and cached without the hidden objects (official)."""
        buffer = ConfirmationBuffer(self.config.hotstart_delay, self.video_size, self.num_frames, reverse=reverse)
        pending: dict[int, LoopFrame] = {}

        def given_out(outputs: list[LoopOutput]) -> Iterator[SessionFrame]:
            for out in outputs:
                frame = pending.pop(out.frame_idx)
                later = max(0, min(out.frame_idx + buffer.look_ahead, self.num_frames - 1))
                self._cache(frame, hidden=buffer.unconfirmed.get(later, frozenset()))
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
    def _add_clicks(self, t: int, points, labels, obj_id: int, clear_old: bool, relative: bool) -> SessionFrame:
        clicks = self._parse_points(points, labels, relative)
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
        self._click(state, t, obj_id, clicks)
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

    @torch.inference_mode()
    def _click(self, state: MultiplexTrackerState, t: int, obj_id: int, clicks: Clicks) -> None:
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

    # -- partial propagation ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _propagate_partial(self, frames: list[int], obj_ids: frozenset[int], reverse: bool
                           ) -> Iterator[SessionFrame]:
        states = [s for s in (*self.click_states, *(self.loop.states if self.loop else ()))
                  if set(s.obj_ids) & obj_ids]
        for t in frames:
            features = self._features(t)
            cached = self.cache.setdefault(t, CachedFrame())
            for state in states:
                if t in state.consolidated:
                    out = state._stored(t)
                else:
                    out = self.tracker.track_step(t, False, None, features.propagation, None, None, state.bank,
                                                  self.num_frames, state.mplex, track_in_reverse=reverse,
                                                  run_mem_encoder=True)
                    out.pred_masks_high_res = None
                    out.maskmem_features = out.maskmem_features.to(self.memory_dtype)
                    state.bank.non_cond_frame_outputs[t] = out
                    state.rows[t] = list(state.obj_ids)
                    state.tracked_frames.add(t)
                video = _to_video(out.pred_masks[:, 0], self.video_size)
                for row, obj_id in enumerate(state.obj_ids):
                    if obj_id in obj_ids:
                        cached.masks[obj_id] = _pack(video[row] > 0)
                        cached.tracker_scores[obj_id] = float(out.object_score_logits[row, 0])  # a raw logit
                state.evict(t, reverse, self.keep_frames)
            yield self._output(t)

    # -- outputs ---------------------------------------------------------------------------------------------------
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


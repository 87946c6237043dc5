"""The torch-free parts of a run: its configs, its per-run state and the per-frame result stream.

``VideoPredictor`` (model in, ``FrameResult`` out) and ``sam3video.replay`` (saved detections in) both
produce ``FrameResult``s through ``track_candidates`` and ``complete`` (our tracker's outputs held a few frames
to back-fill and fill gaps); ``sam3video.run`` consumes them. Nothing here
imports torch, so re-tracking saved detections starts in a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from ..detections import Detections
from ..errors import InputError
from ..sources.backends import VideoInfo
from ..thresholds import (
    LOW_SCORE_THRESHOLD,
    NMS_IOU,
    SCORE_THRESHOLD,
    Sam3LoopConfig,
    Sam31LoopConfig,
    Thresholds,
    new_track_threshold,
)
from ..trackers.association.completion import TrackCompletion
from ..trackers.association.exemplars import ExemplarConfig, ExemplarMemory
from ..trackers.association.peers import PEERS, TRACKER_NAMES, PeerTracker
from ..trackers.association.tracker import Tracker, TrackerConfig
from ..trackers.sam3.options import Sam3Options


@dataclass(frozen=True)
class DetectionConfig:
    score_threshold: float = SCORE_THRESHOLD  # a detection is "confident" (reported / may start a track)
    low_score_threshold: float = LOW_SCORE_THRESHOLD  # below this a detection is dropped before tracking
    nms_iou_threshold: float = NMS_IOU  # mask IoU above which the lower-scoring detection of a prompt goes
    min_component_area: float = 2e-4  # connected components smaller than this fraction of the frame go
    max_hole_area: float = 2e-4  # holes smaller than this fraction of the frame are filled
    max_detections: int = 50  # per prompt and frame, highest scores first
    # Boxes from the mask extent instead of the box head. Measured with the demo model on 12 validation
    # clips (its masks are 64x64): head boxes HOTA 68.7, mask-extent boxes 58.9 (LocA 0.83).
    box_from_mask: bool = False
    # Backbone level (index into ``backbone_fpn``, finest first) mask-pooled into ``data["embedding"]``
    # (re-identification, exemplar prototypes). Measured with the demo model on 12 ambiguous validation
    # clips: the cosine between a red and a blue circle is 0.98-0.99 at level 0 (stride 4 of the ViT
    # grid's upsampling), -0.1 on average at level 1; level 1 separates the colours better (AUC 0.96 vs
    # 0.90 for "intended or not" by prototype similarity).
    embedding_level: int = 1


PRECISIONS = ("fp32", "bf16", "fp16", "int8", "auto")  # fp32 exact; the others: sam3video.model.precision
RUNTIMES = ("auto", "torch", "openvino")  # what runs the vision trunk (sam3video.model.precision.resolve_runtime)
SAM3_TRACKER = "sam3"  # the official SAM 3 loop (memory tracker + detector), needs the checkpoint's tracker.*
TRACK_TRACKERS = (SAM3_TRACKER, *TRACKER_NAMES)  # what `track --tracker` takes (retrack: TRACKER_NAMES)


@dataclass(frozen=True)
class TrackingConfig:
    """Everything tunable in a run; every threshold lives in one of the nested configs."""

    detection: DetectionConfig = field(default_factory=DetectionConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    exemplar: ExemplarConfig = field(default_factory=ExemplarConfig)
    frame_cache: int = 4  # preprocessed frames kept per window (at least one batch)
    lookahead: int = 4  # frames decoded ahead in a background thread
    frames_fp16: bool = True  # keep preprocessed frames as fp16 on the CPU (the model casts back)
    precision: str = "fp32"  # one of PRECISIONS (sam3video.model.precision); the model is converted once
    runtime: str = "auto"  # one of RUNTIMES: what runs the vision trunk (auto: OpenVINO for bf16 where it pays)
    frame_batch: int | None = None  # frames per model call (None: 4 on a GPU or up to 512 px, else 1; 1 if boxes carried)
    overlap: bool = True  # run the model on the next frames while these are post-processed (not if boxes carried)
    camera_motion: bool = False  # give the association trackers the frames (ours, BoT-SORT, McByte compensate)
    tracker_name: str = "sam3video"  # or "sam3" (official loop), or a peer of `trackers`: sort, bytetrack, ocsort, botsort, cbiou, mcbyte
    sam3: Sam3LoopConfig = field(default_factory=Sam3LoopConfig)  # the official loop's thresholds (tracker "sam3")
    sam31: Sam31LoopConfig = field(default_factory=Sam31LoopConfig)  # the same, with a SAM 3.1 checkpoint
    sam3_options: Sam3Options = field(default_factory=Sam3Options)
    model_version: str = "sam3"  # "sam3.1": "sam3" runs the multiplex loop (set by VideoPredictor)

    @classmethod
    def at_score_threshold(cls, score_threshold: float, low_score_threshold: float = 0.1, **kwargs
                           ) -> "TrackingConfig":
        """Detection and tracker thresholds from one operating point: tracks start, and our tracker's
        first pass begins, at ``score_threshold + 0.1`` (0.6 by default); weaker detections down to
        ``low_score_threshold`` only continue tracks (its second pass), box-only ones down to
        ``score_threshold`` (0.5) only."""
        if not 0 <= low_score_threshold <= score_threshold <= 1:
            raise InputError(f"need 0 <= low score threshold ({low_score_threshold}) <= score threshold "
                             f"({score_threshold}) <= 1")
        detection = DetectionConfig(score_threshold=score_threshold, low_score_threshold=low_score_threshold)
        start = new_track_threshold(score_threshold)
        tracker = TrackerConfig(high_score_threshold=start, low_score_threshold=low_score_threshold,
                                box_only_low_score=score_threshold, new_track_threshold=start)
        return cls(detection=detection, tracker=tracker, **kwargs)

    @classmethod
    def from_thresholds(cls, thresholds: Thresholds, model_score_threshold: float, carry_exemplar_boxes: bool = False,
                        **kwargs) -> "TrackingConfig":
        """The config of a run from the user's ``thresholds`` (the CLI flags); a score threshold of None
        is the model's calibrated ``model_score_threshold``, a new-track threshold of None is derived
        from it (and never below it)."""
        score = model_score_threshold if thresholds.score_threshold is None else thresholds.score_threshold
        if thresholds.low_score_threshold > score:
            raise InputError(f"the low score threshold ({thresholds.low_score_threshold}) must not exceed the "
                             f"score threshold ({score})")
        config = cls.at_score_threshold(score, thresholds.low_score_threshold, **kwargs)
        new_track = config.tracker.new_track_threshold
        if thresholds.new_track_threshold is not None:
            new_track = max(thresholds.new_track_threshold, score)
        return replace(
            config,
            detection=replace(config.detection, nms_iou_threshold=thresholds.nms_iou),
            tracker=replace(config.tracker, high_score_threshold=new_track, new_track_threshold=new_track,
                            min_hits=thresholds.min_hits,
                            lost_track_buffer_s=thresholds.lost_buffer_s),
            exemplar=replace(config.exemplar, carry_boxes=carry_exemplar_boxes),
        )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.runtime not in RUNTIMES:
            raise InputError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if self.frame_batch is not None and self.frame_batch < 1:
            raise InputError(f"frame_batch must be at least 1, got {self.frame_batch}")
        if self.tracker_name not in TRACK_TRACKERS:
            raise InputError(f"unknown tracker {self.tracker_name!r}; choose one of {', '.join(TRACK_TRACKERS)}")
        if self.tracker_name != "sam3video" and self.exemplar.carry_boxes:
            raise InputError(f"carrying exemplar boxes needs the sam3video tracker, not {self.tracker_name}")

    def make_tracker(self, fps: float):
        """A fresh tracker of this config at ``fps``: ours, or a peer (``trackers.association.peers``) with its defaults;
        None for "sam3" (``VideoPredictor`` starts the official loop once the video is open)."""
        if self.tracker_name == "sam3video":
            return Tracker(self.tracker, fps=fps)
        if self.tracker_name == SAM3_TRACKER:
            return None
        return PeerTracker(self.tracker_name, fps=fps)

    def describe_tracker(self) -> dict:
        """The tracker and its settings, for ``summary.json``."""
        if self.tracker_name == "sam3video":
            return {"name": "sam3video", "settings": asdict(self.tracker)}
        if self.tracker_name == SAM3_TRACKER and self.model_version == "sam3.1":
            return {"name": SAM3_TRACKER, "implementation": "sam3video.trackers.sam31.loop (the official SAM 3.1 "
                    "multiplex loop)", "settings": asdict(self.sam31), "options": asdict(self.sam3_options)}
        if self.tracker_name == SAM3_TRACKER:
            return {"name": SAM3_TRACKER, "implementation": "sam3video.trackers.sam3.loop (the official SAM 3 loop)",
                    "settings": asdict(self.sam3), "options": asdict(self.sam3_options)}
        return {"name": self.tracker_name, "implementation": f"trackers.{PEERS[self.tracker_name]}",
                "settings": "the package's defaults (frame_rate = the run's fps; BoT-SORT and McByte compensate camera "
                            "motion with --camera-motion only; McByte without its mask manager)"}


@dataclass
class FrameResult:
    """One frame of the output stream. ``frame_index`` 0-based; ``image`` (H, W, 3) uint8 RGB;
    ``detections`` the reported, tracked instances; ``candidates`` what the tracker was given (every
    detection above the low score threshold, before association) — for baselines, debugging and
    ``detections.npz``; ``learned``, on a frame with exemplars, what ``ExemplarMemory.learn`` was given
    there: (the text-only pass's candidates, {exemplar box: (D,) embedding of the box region})."""

    frame_index: int
    timestamp: float
    window: int
    detections: Detections
    image: np.ndarray
    candidates: Detections
    learned: tuple[Detections, dict] | None = None


@dataclass
class TrackingSession:
    """Per-run state, created by ``VideoPredictor.start_session``."""

    class_names: list[str]
    text_out: dict
    exemplars: ExemplarMemory
    tracker: Tracker | PeerTracker | None  # None under the official loop, which is ``sam3`` below
    info: VideoInfo | None = None
    sam3: object | None = None  # trackers.sam3.tracking.Sam3Tracking (Sam31Tracking), started by VideoPredictor.track
    held: dict = field(default_factory=dict)  # frame index -> (Frame, candidates, learned) the loop holds back
    frames_done: int = 0
    timings: dict[str, float] = field(default_factory=lambda: {"detect": 0.0, "postprocess": 0.0, "track": 0.0})
    completion: TrackCompletion | None = None  # our tracker's held frames (``complete``), made on the first


def track_candidates(session: TrackingSession, frame_index: int, candidates: Detections,
                     image: np.ndarray | None = None) -> Detections:
    """One frame's association: the session's tracker, then the exemplars' choice of tracks (the same
    step for detections from the model and for saved ones, ``sam3video.replay``, which has no ``image``:
    the frame, (H, W, 3) uint8 RGB, for camera motion compensation)."""
    tracked = session.tracker.update(candidates, frame_index, image)
    session.exemplars.attach_tracks(frame_index, tracked)
    return session.exemplars.select(tracked)


def complete(session: TrackingSession, result: FrameResult) -> list[FrameResult]:
    """``result`` (just tracked) through the session's track completion: the frames released, each
    ``Tracker.report_delay`` frames late, back-filled and with gaps filled (``trackers.association.completion``);
    ``[result]`` at once for the peers. Only tracks ``result`` reports (the exemplars kept) are back-filled."""
    tracker = session.tracker
    if session.completion is None:
        session.completion = TrackCompletion.for_tracker(tracker)
        if session.completion is None:
            return [result]
    reported = result.detections.tracker_id
    kept = set() if reported is None else set(reported.tolist())
    return session.completion.push(result, [row for row in tracker.early_rows if row.track_id in kept])


def flush_completion(session: TrackingSession) -> list[FrameResult]:
    """The frames the session's track completion still holds (at the end of a window: a window's state is
    saved with nothing held, so a resumed run writes what an uninterrupted one does)."""
    return session.completion.flush() if session.completion is not None else []

"""Every default threshold of a run, in one place: the configs, the processor and the CLI read them here.

Scores are sigmoid(logit) x sigmoid(presence) in [0, 1]; IoUs in [0, 1]. Comparisons: a score *at or
above* a threshold passes (``score >= threshold``) everywhere in the video path (detection, tracker,
baselines); ``Sam3Processor`` keeps the official image API's strict ``score > confidence_threshold``
(parity with the official code).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

SCORE_THRESHOLD = 0.5  # the operating point (official of sam3.pt); box-only detections below it are not tracked
LOW_SCORE_THRESHOLD = 0.1  # [low, score): mask detections only continue tracks (second pass); below: dropped
NEW_TRACK_MARGIN = 0.1  # a track starts, and our tracker's first pass begins, at score_threshold + this (0.6)
NMS_IOU = 0.5  # mask IoU above which the lower-scoring detection of a prompt is dropped
MIN_HITS = 9  # matched frames in a row before a track is confirmed (then reported from its first)
LOST_BUFFER_S = 2.0  # seconds a lost track waits to be re-identified
VEVAL_SCORE_THRESHOLD = 0.5  # SA-Co/VEval: a masklet counts at >= this for cgF1, above it for phrase HOTA


def new_track_threshold(score_threshold: float) -> float:
    """The score that starts a track at operating point ``score_threshold`` (capped at 1)."""
    return min(1.0, score_threshold + NEW_TRACK_MARGIN)


@dataclass(frozen=True)
class Thresholds:
    """The thresholds a user sets (the ``track`` flags). ``score_threshold`` None: the checkpoint's
    calibrated one; ``new_track_threshold`` None: ``score_threshold + NEW_TRACK_MARGIN``."""

    score_threshold: float | None = None
    low_score_threshold: float = LOW_SCORE_THRESHOLD
    new_track_threshold: float | None = None
    nms_iou: float = NMS_IOU
    min_hits: int = MIN_HITS
    lost_buffer_s: float = LOST_BUFFER_S

    def __post_init__(self) -> None:
        for name in ("score_threshold", "low_score_threshold", "new_track_threshold", "nms_iou"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise InputError(f"{name} must be in [0, 1], got {value}")
        if self.min_hits < 1:
            raise InputError(f"min_hits must be >= 1, got {self.min_hits}")
        if not self.lost_buffer_s >= 0:
            raise InputError(f"lost_buffer_s must be >= 0, got {self.lost_buffer_s}")


# The official SAM 3 video loop (``--tracker sam3``): sam3 0.1.4 ``sam3_video_base.py`` ("VB") and the
# values ``sam3.model_builder.build_sam3_video_model`` passes (model_builder.py:716-740).
HIGH_CONF_THRESH = 0.8  # VB:1281 (det score) and VB:440 (tracker object-score *logit*) for recondition
HIGH_IOU_THRESH = 0.8  # VB:1282
NO_LIMIT_MAX_NUM_OBJECTS = 10000  # VB:125


class _OfficialLoopRules:
    """What the SAM 3 and SAM 3.1 loop configs share: the hot-start check and the object cap."""

    def __post_init__(self):  # VB:93-95
        if self.hotstart_delay > 0 and max(self.hotstart_unmatch_thresh, self.hotstart_dup_thresh) > self.hotstart_delay:
            raise InputError(f"hotstart_unmatch_thresh ({self.hotstart_unmatch_thresh}) and hotstart_dup_thresh "
                             f"({self.hotstart_dup_thresh}) must not exceed hotstart_delay ({self.hotstart_delay})")

    @property
    def effective_max_num_objects(self) -> int:
        """VB:121-126: a non-positive ``max_num_objects`` means no limit (10000)."""
        return self.max_num_objects if self.max_num_objects > 0 else NO_LIMIT_MAX_NUM_OBJECTS


@dataclass(frozen=True)
class Sam3LoopConfig(_OfficialLoopRules):
    """Every threshold of the official per-frame loop (builder value, else VB class default)."""

    score_threshold_detection: float = 0.5  # builder (VB default 0.5)
    det_nms_thresh: float = 0.1  # builder (VB default 0.0 = NMS off)
    assoc_iou_thresh: float = 0.1  # builder (VB default 0.5): det "matches" a track / is not new
    trk_assoc_iou_thresh: float = 0.5  # VB default (builder leaves it): track counts as matched
    new_det_thresh: float = 0.7  # builder (VB default 0.0)
    hotstart_delay: int = 15  # builder (VB default 0)
    hotstart_unmatch_thresh: int = 8  # builder (VB default 3)
    hotstart_dup_thresh: int = 8  # builder (VB default 3)
    suppress_unmatched_only_within_hotstart: bool = True  # builder (VB default True)
    init_trk_keep_alive: int = 30  # builder (VB default 0)
    max_trk_keep_alive: int = 30  # builder (VB default 8)
    min_trk_keep_alive: int = -1  # builder (VB default -4)
    suppress_overlapping_based_on_recent_occlusion_threshold: float = 0.7  # builder (VB 0.0)
    decrease_trk_keep_alive_for_empty_masklets: bool = False  # builder (VB default False)
    o2o_matching_masklets_enable: bool = False  # VB default (builder leaves it)
    suppress_det_close_to_boundary: bool = False  # builder (VB default False)
    fill_hole_area: int = 16  # builder (VB default 16); used by propagation/outputs, not here
    max_num_objects: int = -1  # VB default; -1 means NO_LIMIT_MAX_NUM_OBJECTS (VB:121-126)
    recondition_every_nth_frame: int = 16  # builder (VB default -1)
    masklet_confirmation_enable: bool = False  # builder (VB default False); not implemented here
    masklet_confirmation_consecutive_det_thresh: int = 3  # VB default
    reconstruction_bbox_iou_thresh: float = 0.0  # VB default (off)
    reconstruction_bbox_det_score: float = 0.0  # VB default
    recondition_det_score_thresh: float = HIGH_CONF_THRESH  # VB:1281, hard-coded
    recondition_iou_thresh: float = HIGH_IOU_THRESH  # VB:1282, hard-coded
    recondition_obj_score_logit_thresh: float = HIGH_CONF_THRESH  # VB:440, hard-coded


# The official SAM 3.1 multiplex loop (``--tracker sam3`` with sam3.1_multiplex.pt): GitHub main @96914d2,
# ``sam3_multiplex_base.py`` ("MB") and the values ``build_sam3_multiplex_video_predictor`` passes
# (model_builder.py:1167-1199; notes/sam31_loop_reading.md).
MULTIPLEX_MAX_NUM_OBJECTS = 16  # the official builder's silent cap (one bucket)


@dataclass(frozen=True)
class Sam31LoopConfig(_OfficialLoopRules):
    """Every threshold of the SAM 3.1 per-frame loop (builder value, else the class default).

    ``max_num_objects`` -1 means no cap (ours by default: objects beyond 16 open new buckets); the official
    builder caps at 16 (``MULTIPLEX_MAX_NUM_OBJECTS``) and drops the lowest-scoring new detections silently.
    """

    score_threshold_detection: float = 0.4  # builder: keep (strict >) and NMS pre-filter
    det_nms_thresh: float = 0.1  # builder, mask IoM (det_nms_use_iom)
    assoc_iou_thresh: float = 0.1  # builder: IoM at which a detection "matches" a track / is not new
    trk_assoc_iou_thresh: float = 0.5  # class default: IoM at which a track counts as matched
    new_det_thresh: float = 0.65  # builder (>=)
    hotstart_delay: int = 15  # builder
    hotstart_unmatch_thresh: int = 8  # builder: total unmatched frames within the hot-start window
    hotstart_dup_thresh: int = 8  # builder
    init_trk_keep_alive: int = 0  # class default (kept for the record: keep-alive hides nothing in 3.1)
    max_trk_keep_alive: int = 8  # class default
    min_trk_keep_alive: int = -4  # class default
    suppress_overlapping_based_on_recent_occlusion_threshold: float = 0.7  # builder, mask IoU
    suppress_det_close_to_boundary: bool = True  # builder: box centre within 2.5% of an edge
    boundary_margin: float = 0.025  # VB:527
    masklet_confirmation_enable: bool = True  # builder
    masklet_confirmation_consecutive_det_thresh: int = 3  # class default
    recondition_every_nth_frame: int = 16  # builder
    iom_thresh_recondition: float = 0.5  # builder (use_iom_recondition)
    recondition_det_score_thresh: float = HIGH_CONF_THRESH  # MB:1925, hard-coded
    recondition_obj_score_thresh: float = HIGH_CONF_THRESH  # MB:885, on sigmoid(tracker logit)
    max_num_objects: int = -1  # ours: no cap; the official builder: 16

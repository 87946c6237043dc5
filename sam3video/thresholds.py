"""Every default threshold of a run, in one place: the configs, the processor and the CLI read them here.

Scores are sigmoid(logit) x sigmoid(presence) in [0, 1]; IoUs in [0, 1]. Comparisons: a score *at or
above* a threshold passes (``score >= threshold``) everywhere in the video path (detection, tracker,
baselines); ``Sam3Processor`` keeps the official image API's strict ``score > confidence_threshold``
(parity with the official code).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InputError

SCORE_THRESHOLD = 0.5  # confident: reported, may start a track (official operating point of sam3.pt)
LOW_SCORE_THRESHOLD = 0.1  # [low, score): only continues tracks (ByteTrack's second pass); below: dropped
NEW_TRACK_MARGIN = 0.1  # a track starts at score_threshold + this (0.6 by default)
NMS_IOU = 0.5  # mask IoU above which the lower-scoring detection of a prompt is dropped
MIN_HITS = 2  # matched frames before a track is reported
LOST_BUFFER_S = 2.0  # seconds a lost track waits to be re-identified


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

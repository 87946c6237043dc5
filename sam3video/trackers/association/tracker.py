"""Multi-object tracker: a Kalman filter per track, two score passes, re-identification.

Per frame (``Tracker.update``):
1. each track's Kalman state (``video.motion``: centre, size and their velocities) is predicted to
   the frame; its last mask is shifted by the predicted centre motion;
2. confident detections (score >= ``high_score_threshold``, the new-track threshold by default) are
   matched to the confirmed and lost tracks, then to the tentative ones, on ``1 - score x overlap``;
   overlap = weighted mask IoU (shifted last mask) and box IoU (predicted box), box IoU alone for
   box-only detections. Weighting by the detection score (BoT-SORT, Aharon et al. 2022) lets a
   confident detection win a contested track;
3. the confirmed/lost tracks left are matched to weaker detections (score in [``low_score_threshold``,
   ``high_score_threshold``)) on box IoU (ByteTrack's second pass, Zhang et al. ECCV 2022); box-only
   detections (no masks: another detector's boxes) need ``box_only_low_score`` at least (by default the
   operating point): below it their scores are noise (measured on KITTI and MOT20-01), while a SAM 3
   mask detection below it is mostly the tracked object partly hidden (the demo clip, docs/benchmarks.md);
4. the confirmed/lost tracks still left are re-identified among the confident detections left, on
   embedding cosine distance (``data["embedding"]``; without embeddings there is no re-identification)
   and distance to the predicted centre inside a gate that grows with the time lost;
5. unmatched detections with score >= ``new_track_threshold`` start tentative tracks, confirmed after
   ``min_hits`` matched frames in a row (a tentative track that misses a frame is dropped, unless
   ``tentative_max_misses`` allows more); a lost one is dropped after the lost buffer (seconds,
   converted with the fps).
With the frames (``update(..., image=)``, as ``track --camera-motion`` gives them), the camera motion between
frames is estimated first (the ``trackers`` package's ``CMC``: sparse optical flow on a downscaled grey
frame, an affine transform, as BoT-SORT does) and every track's Kalman state is warped by it, so a pan
or a shake does not move the predictions off their objects. ``retrack`` of saved detections has no
frames: no compensation there.
Every pass is one optimal assignment (``association.associate``) where leaving a pair unmatched costs
half the pass's limit. Only same-class pairs match. ``update`` reports only detections of confirmed tracks,
from the frame of confirmation on; ``early_rows`` then names the detections of the frames before, which
``completion.TrackCompletion`` back-fills (as ``track`` and ``retrack`` run it: outputs held
``report_delay`` frames). Ids are 1-based, counted per tracker, and given at confirmation, so reported ids
have no gaps. Frame indices are 0-based.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from sam3video.detections import Detections
from sam3video.errors import InputError
from sam3video.geometry import box_centre, cxcywh_to_xyxy, xyxy_to_cxcywh
from sam3video.thresholds import LOST_BUFFER_S, LOW_SCORE_THRESHOLD, MIN_HITS, SCORE_THRESHOLD, new_track_threshold

from . import motion
from .matching import associate, box_iou, mask_iou


@dataclass(frozen=True)
class TrackerConfig:
    """Thresholds of :class:`Tracker`: one set for 7 to 30 fps (times are in seconds; measured on MOT15,
    KITTI, MOT20-01 and the synthetic benchmark, docs/benchmarks.md). Scores and IoUs are in [0, 1]."""

    high_score_threshold: float = new_track_threshold(SCORE_THRESHOLD)  # at or above: first pass, re-id
    low_score_threshold: float = LOW_SCORE_THRESHOLD  # in [low, high): second pass only; below low: ignored
    box_only_low_score: float = SCORE_THRESHOLD  # the second pass's floor for detections without masks
    new_track_threshold: float = new_track_threshold(SCORE_THRESHOLD)  # minimum score that starts a track
    mask_weight: float = 0.5  # weight of mask IoU in the first-pass overlap (box-only: box IoU only)
    box_weight: float = 0.5  # weight of predicted-box IoU in the first-pass overlap
    min_match_iou: float = 0.25  # first pass: pairs with a smaller score x overlap never match
    match_fps: float = 10.0  # below this frame rate min_match_iou scales by fps / match_fps (objects move further)
    min_low_match_iou: float = 0.5  # second pass: pairs with a smaller box IoU never match
    min_hits: int = MIN_HITS  # matched frames before a track is confirmed (1: at once)
    lost_track_buffer_s: float = LOST_BUFFER_S  # how long a lost track is kept (converted with the fps)
    reid_max_cost: float = 0.5  # re-identification: pairs costing more never match
    reid_appearance_weight: float = 0.7  # cost = w * (1 - cos) + (1 - w) * distance / gate
    reid_max_embedding_distance: float = 0.4  # pairs with 1 - cosine similarity above never match
    reid_gate_diagonals: float = 1.0  # gate radius, in track box diagonals, after one lost frame
    reid_gate_growth_per_s: float = 10.0  # gate growth, in box diagonals per second lost
    tentative_max_misses: int = 0  # a tentative track survives this many missed frames in a row
    backfill: bool = True  # once confirmed, a track is reported from its first frame (TrackCompletion)
    fill_gaps_s: float = 0.5  # a confirmed track missed at most this long is filled in (TrackCompletion)
    motion_noise: motion.MotionNoise = field(default_factory=motion.MotionNoise)  # of the Kalman filter
    embedding_momentum: float = 0.9  # EMA weight of the previous embedding
    camera_motion_side: int = 640  # frames are downscaled to about this long side for the estimate

    def __post_init__(self) -> None:
        if not 0 <= self.low_score_threshold <= self.high_score_threshold <= 1:
            raise InputError("tracker thresholds need 0 <= low_score_threshold <= high_score_threshold <= 1")
        if self.new_track_threshold < self.high_score_threshold:
            raise InputError("tracker new_track_threshold must be >= high_score_threshold")
        if (self.min_hits < 1 or self.tentative_max_misses < 0 or self.lost_track_buffer_s < 0
                or self.fill_gaps_s < 0 or not self.match_fps > 0 or self.mask_weight + self.box_weight <= 0):
            raise InputError("tracker needs min_hits >= 1, tentative_max_misses >= 0, lost_track_buffer_s >= 0, "
                             "fill_gaps_s >= 0, match_fps > 0 and mask_weight + box_weight > 0")


@dataclass(frozen=True)
class EarlyRow:
    """A detection of a track from before its confirmation: ``row`` of frame ``frame_index``'s detections
    (what ``Tracker.update`` was given there), reported as ``track_id``."""

    frame_index: int
    row: int
    track_id: int


class TrackState(str, enum.Enum):
    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"


@dataclass
class Track:
    """One tracked object. ``id`` is -1 until confirmed; ``box`` (4,) xyxy and ``mask`` (H, W) bool|None
    are the last observed; ``mean`` (8,) and ``cov`` (8, 8) are its Kalman state at ``state_frame``."""

    id: int
    class_id: int
    box: np.ndarray
    mask: np.ndarray | None
    embedding: np.ndarray | None
    first_frame: int
    last_frame: int
    hits: int = 1
    age: int = 0  # frames since the track started
    frames_since_seen: int = 0
    state: TrackState = TrackState.TENTATIVE
    mean: np.ndarray = field(default=None)  # cx, cy, w, h and their change per frame
    cov: np.ndarray = field(default=None)
    state_frame: int = -1
    tentative_rows: list[tuple[int, int]] = field(default_factory=list)  # (frame, row) matched before confirmation

    def predicted_box(self) -> np.ndarray:
        """(4,) xyxy box of the Kalman state (sizes at least 1 pixel)."""
        c = self.mean[:4]
        return cxcywh_to_xyxy(np.concatenate([c[:2], np.maximum(c[2:], 1.0)])).astype(np.float32)


class Tracker:
    """``update(detections, frame_index) -> reported detections with tracker_id``; ``reset()``. After each
    update, ``early_rows`` lists the detections of the tracks it confirmed from the frames before (what
    ``TrackCompletion`` back-fills, ``report_delay`` frames held)."""

    def __init__(self, config: TrackerConfig | None = None, fps: float = 30.0) -> None:
        if not fps > 0:
            raise InputError(f"tracker fps must be > 0, got {fps}")
        self.config = config or TrackerConfig()
        self.fps = float(fps)
        self.lost_buffer_frames = max(1, round(self.config.lost_track_buffer_s * self.fps))
        self.max_gap = round(self.config.fill_gaps_s * self.fps)  # frames
        # the first pass's limit: at low frame rates an object moves further between frames, its IoU with
        # the prediction falls (measured on MOT15's 7 fps PETS09-S2L1: HOTA 39.7 -> 43.4, docs/benchmarks.md)
        self.min_match_iou = self.config.min_match_iou * min(1.0, self.fps / self.config.match_fps)
        self.reset()

    @property
    def report_delay(self) -> int:
        """Frames the output is held to complete the tracks (``TrackCompletion``): the back-fill's
        ``min_hits - 1`` and the gaps filled."""
        return max(self.config.min_hits - 1 if self.config.backfill else 0, self.max_gap)

    def reset(self) -> None:
        """Forget all tracks; the next confirmed track gets id 1."""
        self._tracks: list[Track] = []
        self._next_id = 1
        self._frame: int | None = None
        self._camera = None  # trackers.CMC, made on the first frame given
        self.early_rows: list[EarlyRow] = []

    @property
    def tracks(self) -> tuple[Track, ...]:
        """The live tracks (tentative, confirmed, lost), oldest first. Read only."""
        return tuple(self._tracks)

    def update(self, detections: Detections, frame_index: int, image: np.ndarray | None = None) -> Detections:
        """Track one frame (0-based ``frame_index``, increasing); returns the detections of confirmed
        tracks, rows of ``detections`` in input order, with ``tracker_id`` set. ``image`` (H, W, 3) uint8
        RGB: the frame, for camera motion compensation (none without it)."""
        if self._frame is not None and frame_index <= self._frame:
            raise InputError(f"frame_index must increase: got {frame_index} after {self._frame}; "
                             "call reset() between videos")
        self._frame = frame_index
        self.early_rows = []
        cfg, dets, tracks = self.config, detections, self._tracks
        score = dets.confidence
        high = np.flatnonzero(score >= cfg.high_score_threshold)
        floor = cfg.low_score_threshold if dets.mask is not None else max(cfg.low_score_threshold, cfg.box_only_low_score)
        low = np.flatnonzero((score >= floor) & (score < cfg.high_score_threshold))
        emb = _normalize(dets.data["embedding"]) if "embedding" in dets.data else None
        for track in tracks:
            while track.state_frame < frame_index:
                track.mean, track.cov = motion.predict(track.mean, track.cov, cfg.motion_noise)
                track.state_frame += 1
        if image is not None:
            self._compensate_camera(image)
        boxes = np.stack([t.predicted_box() for t in tracks]) if tracks else np.zeros((0, 4), np.float32)
        biou = box_iou(boxes, dets.xyxy)
        overlap = self._overlap(dets, boxes, biou)
        first, limit = 1 - overlap * self._score_weight(score)[None, :], 1 - self.min_match_iou
        same = np.array([t.class_id for t in tracks], np.int64)[:, None] == dets.class_id[None, :]
        tentative = np.array([t.state == TrackState.TENTATIVE for t in tracks], bool)

        # Established (confirmed, lost) tracks pick first among confident detections, then tentative ones.
        pairs, left, free = _match(np.flatnonzero(~tentative), high, first, same, limit)
        pairs_t, _, free = _match(np.flatnonzero(tentative), free, first, same, limit)
        pairs_low, left, _ = _match(left, low, 1 - biou, same, 1 - cfg.min_low_match_iou)
        reid = self._reid_cost(left, free, dets, emb, boxes, frame_index)
        pairs_reid, _, free = _match(left, free, reid, same, cfg.reid_max_cost)

        matched = dict(pairs + pairs_t + pairs_low + pairs_reid)
        for ti, di in matched.items():
            self._hit(tracks[ti], dets, di, emb, frame_index)
        for ti, track in enumerate(tracks):
            track.age = frame_index - track.first_frame
            if ti not in matched:
                track.frames_since_seen = frame_index - track.last_frame
                if track.state == TrackState.CONFIRMED:
                    track.state = TrackState.LOST
        self._tracks = [t for t in tracks if t.frames_since_seen <= (
            self.lost_buffer_frames if t.state == TrackState.LOST else cfg.tentative_max_misses)]
        born = self._start_tracks(dets, free, emb, frame_index)

        report = {di: tracks[ti].id for ti, di in matched.items() if tracks[ti].state == TrackState.CONFIRMED}
        report.update({di: t.id for t, di in born if t.state == TrackState.CONFIRMED})
        rows = np.array(sorted(report), np.int64)
        out = dets[rows]
        out.tracker_id = np.array([report[r] for r in rows], np.int64)
        return out

    def _compensate_camera(self, image: np.ndarray) -> None:
        """Warp every track's Kalman state by the camera motion from the previous frame given to this
        one: centres by the affine transform, velocities by its linear part, sizes by its scale."""
        if self._camera is None:
            from trackers import CMC, CMCConfig

            side = max(image.shape[:2])
            self._camera = CMC(CMCConfig(method="sparseOptFlow",
                                         downscale=max(1, round(side / self.config.camera_motion_side))))
        warp = self._camera.estimate(np.ascontiguousarray(image[..., ::-1]))  # (2, 3), BGR in
        linear, shift = warp[:, :2].astype(np.float64), warp[:, 2].astype(np.float64)
        if not self._tracks or np.allclose(warp, np.eye(2, 3)):
            return
        scale = np.sqrt(abs(np.linalg.det(linear))) * np.eye(2)
        transform = np.zeros((8, 8))
        for block, part in enumerate((linear, scale, linear, scale)):
            transform[2 * block:2 * block + 2, 2 * block:2 * block + 2] = part
        for track in self._tracks:
            track.mean = transform @ track.mean + np.concatenate([shift, np.zeros(6)])
            track.cov = transform @ track.cov @ transform.T

    def _score_weight(self, score: np.ndarray) -> np.ndarray:
        """(N,) weight of the first-pass overlap: the score relative to the first pass's threshold, so
        that a detection at ``high_score_threshold`` counts half and one at twice it fully (BoT-SORT's
        score fusion, scaled; at the default 0.6 a score of 1 counts 0.83: measured better on MOT15 and
        MOT20-01 than the score itself, docs/benchmarks.md)."""
        return np.minimum(1.0, score / max(2 * self.config.high_score_threshold, 1e-6))

    def _overlap(self, dets: Detections, boxes: np.ndarray, biou: np.ndarray) -> np.ndarray:
        """(T, N) first-pass overlap: weighted mask and box IoU, or box IoU where a mask is missing."""
        cfg, tracks = self.config, self._tracks
        if dets.mask is None or not tracks or any(t.mask is None for t in tracks):
            return biou
        if tracks[0].mask.shape != dets.mask.shape[1:]:
            raise InputError(f"mask size changed from {tracks[0].mask.shape} to {dets.mask.shape[1:]}")
        moved = np.zeros((len(tracks), *dets.mask.shape[1:]), bool)
        for out, track, box in zip(moved, tracks, boxes):
            shifted_mask(track.mask, *(box_centre(box) - box_centre(track.box)), out=out)
        miou = mask_iou(moved, dets.mask)
        return (cfg.mask_weight * miou + cfg.box_weight * biou) / (cfg.mask_weight + cfg.box_weight)

    def _reid_cost(self, ti: np.ndarray, di: np.ndarray, dets: Detections, emb: np.ndarray | None,
                   boxes: np.ndarray, frame_index: int) -> np.ndarray:
        """(T, N) re-identification cost, inf outside the motion gate or the embedding limit, and
        everywhere when the detections or the track carry no appearance: by motion alone a lost track
        takes whoever walks by (measured on MOT15's box-only public detections: HOTA 29.0 with motion-only
        re-identification, 34.8 without; IDF1 37.5 -> 45.6). Box-only lost tracks come back through the
        IoU passes alone, as in SORT."""
        cfg = self.config
        cost = np.full((len(self._tracks), len(dets)), np.inf, np.float32)
        if emb is None:
            return cost
        for t in ti:
            track = self._tracks[t]
            if track.embedding is None:
                continue
            lost = frame_index - track.last_frame
            diag = float(np.hypot(*(track.box[2:] - track.box[:2])))
            growth = cfg.reid_gate_growth_per_s * (lost - 1) / self.fps
            gate = max(diag, 1.0) * (cfg.reid_gate_diagonals + growth)
            motion = np.linalg.norm(box_centre(dets.xyxy[di]) - box_centre(boxes[t]), axis=-1) / gate
            row = np.where(motion <= 1, motion, np.inf)
            dist = 1 - emb[di] @ track.embedding
            w = cfg.reid_appearance_weight
            cost[t, di] = np.where(dist <= cfg.reid_max_embedding_distance, w * dist + (1 - w) * row, np.inf)
        return cost

    def _hit(self, track: Track, dets: Detections, di: int, emb, frame_index: int) -> None:
        """Update ``track`` with detection ``di`` seen at ``frame_index``."""
        cfg = self.config
        track.mean, track.cov = motion.update(track.mean, track.cov, xyxy_to_cxcywh(dets.xyxy[di]),
                                              cfg.motion_noise)
        track.box = dets.xyxy[di].copy()
        track.mask = None if dets.mask is None else dets.mask[di].copy()
        if emb is not None:
            e = emb[di] if track.embedding is None else (
                cfg.embedding_momentum * track.embedding + (1 - cfg.embedding_momentum) * emb[di])
            track.embedding = _normalize(e)
        track.hits += 1
        track.last_frame, track.frames_since_seen = frame_index, 0
        if track.id < 0:
            track.tentative_rows.append((frame_index, int(di)))
        if track.state == TrackState.LOST or track.hits >= cfg.min_hits:
            self._confirm(track)

    def _confirm(self, track: Track) -> None:
        """Confirm ``track``; a new one gets the next id, and its earlier rows go to ``early_rows``."""
        if track.id < 0:
            track.id, self._next_id = self._next_id, self._next_id + 1
            if self.config.backfill:
                self.early_rows.extend(EarlyRow(f, r, track.id) for f, r in track.tentative_rows[:-1])
            track.tentative_rows = []
        track.state = TrackState.CONFIRMED

    def _start_tracks(self, dets, free, emb, frame_index: int) -> list[tuple[Track, int]]:
        """Start tentative tracks from the detections ``free`` scoring at least the new-track threshold.
        A detection overlapping a track may start one: in crowds most do (measured, docs/benchmarks.md).
        Returns [(track, detection index)]."""
        cfg, born = self.config, []
        for di in free:
            if dets.confidence[di] < cfg.new_track_threshold:
                continue
            track = Track(
                id=-1, class_id=int(dets.class_id[di]), box=dets.xyxy[di].copy(),
                mask=None if dets.mask is None else dets.mask[di].copy(),
                embedding=None if emb is None else emb[di].copy(),
                first_frame=frame_index, last_frame=frame_index, state_frame=frame_index,
                tentative_rows=[(frame_index, int(di))])
            track.mean, track.cov = motion.initiate(xyxy_to_cxcywh(track.box), cfg.motion_noise)
            if cfg.min_hits <= 1:
                self._confirm(track)
            self._tracks.append(track)
            born.append((track, int(di)))
        return born


def _match(ti: np.ndarray, di: np.ndarray, cost: np.ndarray, same: np.ndarray, max_cost: float):
    """Associate tracks ``ti`` with detections ``di`` on rows/columns of (T, N) ``cost`` (same class only).
    Returns ([(track, det)], unmatched tracks, unmatched detections) in full-matrix indices."""
    ti, di = np.asarray(ti, np.int64), np.asarray(di, np.int64)
    sub = np.where(same[np.ix_(ti, di)], cost[np.ix_(ti, di)], np.inf)
    matches, left_t, left_d = associate(sub, max_cost)
    pairs = [(int(ti[a]), int(di[b])) for a, b in matches]
    return pairs, ti[left_t], di[left_d]


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def shifted_mask(mask: np.ndarray, dx: float, dy: float, out: np.ndarray | None = None) -> np.ndarray:
    """``mask`` (H, W) bool moved by (dx, dy) pixels, rounded (what leaves the frame is cut), written into the
    all-False ``out`` (H, W) if given."""
    out = np.zeros_like(mask) if out is None else out
    dx, dy = int(round(float(dx))), int(round(float(dy)))
    h, w = mask.shape
    if abs(dx) < w and abs(dy) < h:
        out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out

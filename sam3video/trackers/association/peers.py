"""The peer trackers of the ``trackers`` package (Roboflow: SORT, ByteTrack, OC-SORT, BoT-SORT, C-BIoU,
McByte) behind
our tracker's interface, so ``track --tracker bytetrack`` gives the same outputs as our own tracker.

``PeerTracker(name, fps).update(detections, frame_index) -> Detections`` like ``Tracker.update``:
class-aware (one peer tracker per class id: a track never changes prompt), only the detections of
confirmed tracks are returned, with our ids (1-based, counted over all classes in the order tracks are
first reported, so there are no gaps). Masks, embeddings and other data travel with their detection.
The peers run with their own defaults (``settings`` overrides them) and ``frame_rate=fps``; BoT-SORT and
McByte compensate camera motion (their default) on the frames ``update`` is given (``track`` gives them;
saved detections and box files have none: no compensation there). McByte's mask manager, which needs its
own SAM, is off: it associates on the detections' masks where they have them.
"""

from __future__ import annotations

import importlib

import numpy as np

from sam3video.detections import Detections
from sam3video.errors import InputError, MissingDependencyError

ROW = "sam3video_row"  # data key: a detection's row in what we gave the peer
PEERS = {"sort": "SORTTracker", "bytetrack": "ByteTrackTracker", "ocsort": "OCSORTTracker",
         "botsort": "BoTSORTTracker", "cbiou": "CBIoUTracker", "mcbyte": "McByteTracker"}
WITH_FRAMES = ("botsort", "mcbyte")  # peers that take the frame (camera motion compensation)
TRACKER_NAMES = ("sam3video", *PEERS)  # what `track --tracker` takes: ours, then the peers


def peer_class(name: str):
    """The ``trackers`` class of peer ``name`` (``MissingDependencyError`` if the package is missing)."""
    if name not in PEERS:
        raise InputError(f"unknown tracker {name!r}; choose sam3video or one of {', '.join(PEERS)}")
    try:
        module = importlib.import_module("trackers")
    except ImportError:
        raise MissingDependencyError("the peer trackers need the `trackers` package: pip install 'trackers>=2.6,<3'"
                                     ) from None
    return getattr(module, PEERS[name])


class PeerTracker:
    """A ``trackers`` peer per class id, with our ids; see the module docstring."""

    def __init__(self, name: str, fps: float = 30.0, settings: dict | None = None):
        self.name, self.fps = name, float(fps)
        self._cls = peer_class(name)
        self.settings = {"frame_rate": self.fps, **(settings or {})}
        self._peers: dict[int, object] = {}
        self._ids: dict[tuple[int, int], int] = {}  # (class id, peer id) -> our id

    def update(self, detections: Detections, frame_index: int, image: np.ndarray | None = None) -> Detections:
        """One frame's detections (any classes) -> the confirmed ones, ``tracker_id`` set (our ids);
        ``image`` (H, W, 3) uint8 RGB, the frame, for the peers that compensate camera motion."""
        frame = None
        if image is not None and self.name in WITH_FRAMES:
            frame = np.ascontiguousarray(image if self.name == "mcbyte" else image[..., ::-1])  # McByte: RGB
        classes = sorted(set(int(c) for c in detections.class_id) | set(self._peers))
        parts = []
        for class_id in classes:
            peer = self._peers.get(class_id)
            if peer is None:
                peer = self._peers[class_id] = self._cls(**self.settings)
            own = detections[detections.class_id == class_id]
            own.tracker_id = None
            given = own.to_supervision()
            given.data = {ROW: np.arange(len(own))}  # peers return the rows reordered: find ours again
            result = peer.update(given, frame) if self.name in WITH_FRAMES else peer.update(given)
            peer_ids = np.asarray(result.tracker_id if result.tracker_id is not None else [], np.int64)
            confirmed = np.flatnonzero(peer_ids >= 0)  # unconfirmed: -1; peer ids start at 0 or 1
            if len(confirmed) == 0:
                continue
            kept = own[np.asarray(result.data[ROW])[confirmed]]
            kept.tracker_id = np.array([self._our_id(class_id, int(i)) for i in peer_ids[confirmed]], np.int64)
            parts.append(kept)
        if not parts:
            empty = detections[np.zeros(len(detections), bool)]
            empty.tracker_id = np.zeros(0, np.int64)
            return empty
        return Detections.merge(parts)

    def _our_id(self, class_id: int, peer_id: int) -> int:
        key = (class_id, peer_id)
        if key not in self._ids:
            self._ids[key] = len(self._ids) + 1
        return self._ids[key]


"""The `trackers` peers behind our interface: the frames reach the ones that compensate camera motion."""

import pytest

from sam3video.trackers.association.peers import PeerTracker

from .test_tracker import _panned_frames


@pytest.mark.parametrize("name", ["botsort", "mcbyte"])
def test_peers_that_compensate_camera_motion_get_the_frames(name):
    """BoT-SORT and McByte with the frames hold both ids through a sudden 34 px/frame pan of 40 px boxes
    that breaks them without (their own CMC; without frames it is skipped, as for box files)."""
    reported = {}
    for with_frames in (True, False):
        tracker, ids = PeerTracker(name, fps=30.0), []
        for i, (image, dets) in enumerate(_panned_frames(step=34)):
            result = tracker.update(dets, i, image if with_frames else None)
            ids.append(dict(zip(result.data["gt"].tolist(), result.tracker_id.tolist())))
        reported[with_frames] = {tid for frame in ids[9:] for tid in frame.values()}
        assert ids[3] == {0: 1, 1: 2}
    assert reported[True] == {1, 2} and not reported[False] & {1, 2}

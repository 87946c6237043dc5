"""Trackers of detections: ours (``tracker``: Kalman motion, two score passes, re-identification; ``matching``
is the pure assignment) and the ``trackers`` package's peers (``peers``), one ``update`` interface."""

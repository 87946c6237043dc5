"""The tracker families, a room each; what a run (``video.predictor``) talks to.

- ``association/``: trackers of detections. ``Tracker`` (ours) and ``PeerTracker`` (the ``trackers``
  package) share one interface: ``update(detections: Detections, frame_index) -> Detections`` of the
  reported tracks, ids 1-based in ``tracker_id``; no features, no delay. Exemplar prototypes sit beside them.
- ``sam3/``: the official SAM 3 loop (detector + memory tracker); ``sam31/``: the official SAM 3.1 multiplex
  loop, importing what is the same from ``sam3/``. ``Sam3Tracking`` and ``Sam31Tracking`` share one interface:
  ``step(frame_idx, detections: [FrameDetections per prompt], features) -> [(frame index, Detections)]`` of the
  frames now ready (the hot-start delay holds some back), ``flush()`` for the rest at the end; ids 1-based,
  run-wide, in the order objects are first shown.

Every tracker's state is plain attributes, saved and restored by ``export.run_state`` (resume).
"""

"""Video side of sam3video: frame loading, per-video sessions, association, tracking and the frame loop."""

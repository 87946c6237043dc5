"""Many videos in one command: ``sam3video batch`` on Ray, a local instance or a cluster.

    videos = collect_videos(["clips/", "more.txt"], out_dir="runs/day")
    report = run_batch(BatchJob(base=TrackJob(None, "", prompts=("person",)), videos=videos, out_dir="runs/day"))

Each video is the base ``run.TrackJob`` with its own source, folder ``OUT/<name>/`` and exemplars, run by
``run.prepare(job, model).execute()`` inside a Ray actor (``TrackWorker``) that loaded the model once.
One video is one task: its windows carry identities through the tracker's state, so they run in order
on one worker, and the parallelism is across videos. A video whose worker was killed, or that a
Ctrl-C stopped, goes on from its last complete window (``resume=True``); every other one starts over.

``OUT/manifest.json`` holds every video's state: ``done`` (with each output's size and sha256),
``failed`` (the one-line reason), ``running`` or ``interrupted``. Running the same command again skips
the done videos whose outputs are unchanged and runs every other one again. ``OUT/index.json`` and
``OUT/index.csv`` list every video, its outputs, track counts and timings.

On a cluster (``address``) the inputs and ``OUT`` must be on a filesystem every node sees: workers read
the videos and write the outputs themselves; only settings, progress counts and summaries travel
through Ray.
"""

from .driver import BatchJob, BatchReport, run_batch
from .inputs import BatchVideo, collect_videos
from .manifest import Manifest, settings_of

__all__ = ["BatchJob", "BatchReport", "BatchVideo", "Manifest", "collect_videos", "run_batch", "settings_of"]

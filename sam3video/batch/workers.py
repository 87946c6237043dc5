"""What runs in the Ray actors: ``TrackWorker`` (the model loaded once, a video per call) and
``FrameCounter`` (frames done per video, for the driver's progress bar). Plain classes: the driver
makes them Ray actors with the resources it chose."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from ..errors import InputError, Sam3VideoError
from ..run import TrackJob, make_predictor, prepare
from .manifest import output_checksums

REPORT_S = 0.25  # how often a worker reports its frame count


class TrackWorker:
    """The body of a Ray actor: loads the model once, then tracks one video per ``track`` call."""

    def __init__(self, checkpoint: str | None, model_config: str | None, device: str, threads: int,
                 tracker: str | None = None, resolution: int | None = None):
        """``tracker``: the jobs' (None: "sam3" if the checkpoint has tracker weights, as ``track``); ``resolution``:
        the model's input size (None: the config's)."""
        import torch

        from ..model.video_checkpoint import load_for_tracker

        torch.set_num_threads(threads)
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.model, self.tracker, self.error, start = None, tracker, None, time.perf_counter()
        try:
            self.model, self.tracker = load_for_tracker(checkpoint, model_config, device, tracker, resolution)
        except Sam3VideoError as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - a bug: reported by ``ready``, in one line
            self.error = f"cannot load the model: internal error: {type(e).__name__}: {e}"
        self.load_s = time.perf_counter() - start

    def ready(self, base: TrackJob) -> dict:
        """``{"error": one line or None, "load_s", "where"}``: the model loaded and the settings valid."""
        error = self.error
        if error is None and base.prompts:
            try:
                make_predictor(replace(base, tracker=self.tracker), self.model).start_session(base.prompts)
            except Sam3VideoError as e:
                error = str(e)
        return {"error": error, "load_s": self.load_s, "where": self.where}

    def track(self, job: TrackJob, name: str, counter) -> dict:
        """Track one video into ``job.out_dir``; a manifest entry (``state`` done or failed), never raises
        for a bad video."""
        start = time.perf_counter()
        try:
            if self.model is None:
                raise InputError(self.error)
            # the official loop cannot resume (its state holds memory banks): a stopped video starts over
            job = replace(job, tracker=self.tracker, resume=job.resume and self.tracker != "sam3")
            run = prepare(job, self.model)
            summary = run.execute(progress=_reporter(counter, name, run.source.num_output_frames))
        except Sam3VideoError as e:
            return {"state": "failed", "reason": str(e), "worker": self.where}
        except Exception as e:  # noqa: BLE001 - a bug shows in this video's entry; the others go on
            return {"state": "failed", "reason": f"internal error: {type(e).__name__}: {e}", "worker": self.where}
        counter.set.remote(name, summary["frames"])
        by_prompt = Counter(row["class_name"] for row in summary["tracks"])
        return {"state": "done", "frames": summary["frames"], "tracks": len(summary["tracks"]),
                "tracks_by_prompt": dict(by_prompt), "outputs": output_checksums(Path(job.out_dir)),
                "seconds": round(time.perf_counter() - start, 3), "timings": summary["timings"],
                "notes": run.notes, "worker": self.where}


class FrameCounter:
    """The body of a small Ray actor: frames done per video, set by the workers, read by the driver."""

    def __init__(self):
        self.frames: dict[str, int] = {}

    def set(self, name: str, frames: int) -> None:
        self.frames[name] = frames

    def total(self) -> int:
        return sum(self.frames.values())


def _reporter(counter, name: str, num_frames: int | None):
    """A ``run.Progress`` that tells ``counter`` the video's frames done, every ``REPORT_S``."""

    def progress(results, remaining):
        done = (num_frames - remaining) if num_frames is not None and remaining is not None else 0
        last = 0.0
        for result in results:
            done += 1
            if time.monotonic() - last >= REPORT_S:
                counter.set.remote(name, done)
                last = time.monotonic()
            yield result
        counter.set.remote(name, done)

    return progress



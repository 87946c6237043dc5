"""The driver of ``sam3video batch``: Ray up (local or a cluster), workers sized to it, videos queued
to them, the manifest and progress kept, a dead worker's video retried, Ctrl-C handled."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import InputError
from ..export.atomic import remove_temp_files
from ..export.outputs import PARTIAL_DIR, prepare_out_dir
from ..run import TrackJob
from ..sources.loader import open_video
from .inputs import BatchVideo
from .manifest import Manifest, settings_of, write_index
from .workers import FrameCounter, TrackWorker

MAX_ATTEMPTS = 2  # a video whose worker dies (killed, out of memory, node lost) is run once more
WORKER_BASE_MEMORY = 1.5 * 2**30  # a worker besides its weights: torch, decoded frames, activations (bytes)
FULL_CHECKPOINT_BYTES = 3.45e9  # sam3.pt, for a checkpoint not on this machine (a hub id not yet cached)
POLL_S = 0.25  # how often the driver refreshes the progress bar
READY_TIMEOUT_S = 900.0  # the workers' start (model load, a first download) before giving up


@dataclass(frozen=True)
class BatchJob:
    """What ``sam3video batch`` takes: the shared settings (``base``: every ``track`` option; its source and
    out_dir are unused), the videos, and how to run them on Ray."""

    base: TrackJob
    videos: tuple[BatchVideo, ...]
    out_dir: str | Path
    workers: int | None = None  # None: as many as fit (GPUs, or CPUs / threads), at most one per video
    threads: int | None = None  # torch threads per worker; None: the cluster's CPUs / workers
    address: str | None = None  # a Ray cluster ("HOST:PORT", "auto"); None: a local instance
    gpus_per_worker: float | None = None  # None: 1 with --device cuda (or auto with GPUs), else 0


@dataclass
class BatchReport:
    """How a batch went: ``entries`` (manifest entries by video name), the videos this call ran, and time."""

    entries: dict[str, dict]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    interrupted: bool = False
    workers: int = 0
    threads: int = 0
    startup_s: float = 0.0  # Ray and the workers (model loads) until the first video could start
    model_load_s: float = 0.0  # one worker's model load (mean), done once per worker instead of per video
    wall_s: float = 0.0

    @property
    def failed(self) -> list[str]:
        return [name for name in self.ran if self.entries[name]["state"] == "failed"]

    @property
    def frames(self) -> int:
        """Frames tracked by this call (done videos it ran)."""
        return sum(self.entries[name].get("frames", 0) for name in self.ran if self.entries[name]["state"] == "done")


def run_batch(job: BatchJob, show_progress: bool = True) -> BatchReport:
    """Run every video of ``job`` not done yet; the manifest and the index are written as it goes.

    ``InputError`` for bad settings (before any video runs). ``KeyboardInterrupt`` is re-raised after
    the workers are stopped, the videos they were on marked ``interrupted`` and their temp files removed.
    """
    out_dir = prepare_out_dir(Path(job.out_dir).resolve())
    manifest = Manifest.load(out_dir, settings_of(job.base))
    report = BatchReport(manifest.entries)
    done = {v.name for v in job.videos if manifest.is_done(v)}
    todo = [v for v in job.videos if v.name not in done]
    report.skipped = [v.name for v in job.videos if v.name in done]
    start = time.perf_counter()
    try:
        if todo:
            with _ray(job.address) as ray:
                _run_on_ray(ray, job, todo, out_dir, manifest, report, show_progress)
    finally:
        report.wall_s = time.perf_counter() - start
        write_index(out_dir, job.videos, manifest.entries)
    return report


@contextlib.contextmanager
def _ray(address: str | None) -> Iterator:
    """Ray, connected: to ``address``, else a new local instance (or the caller's, if already initialised)."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats notice on stderr
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR, configure_logging=True)
    except (ConnectionError, ValueError, RuntimeError) as e:
        hint = ("; a cluster with token authentication (the default of `ray start` since Ray 2.59 when "
                "~/.ray/auth_token exists) needs RAY_AUTH_MODE=token here as well" if address else "")
        raise InputError(f"cannot connect to the Ray cluster at {address or 'a new local instance'}: "
                         f"{' '.join(str(e).split())}{hint}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _plan(ray, job: BatchJob, num_videos: int, worker_memory: float) -> tuple[int, int, float]:
    """(workers, torch threads each, GPUs each) for this cluster. CPU workers by default: one per CPU
    (one thread each: the most frames/s on 2 cores, README), as many as its memory holds at
    ``worker_memory`` bytes each; GPU workers: ``gpus_per_worker`` each. Never more than the videos;
    the CPUs are shared among the workers, and a worker fits on one node."""
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    memory = float(resources.get("memory", float("inf")))
    node_cpus = max([int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")] or [cpus])
    device = job.base.device
    per_gpu = job.gpus_per_worker
    if per_gpu is None:
        per_gpu = 1.0 if device == "cuda" or (device == "auto" and gpus > 0) else 0.0
    if per_gpu > 0 and gpus < per_gpu:
        raise InputError(f"--device {device} needs {per_gpu:g} GPU per worker; the Ray cluster has {gpus:g}")
    if job.workers:
        workers = job.workers
    elif per_gpu > 0:
        workers = int(gpus // per_gpu)
    else:
        workers = min(cpus // (job.threads or 1), int(memory // worker_memory))
    workers = max(1, min(workers, num_videos))
    threads = max(1, min(job.threads or cpus // workers, node_cpus))
    return workers, threads, per_gpu


def worker_memory(checkpoint: str | None) -> float:
    """Bytes one worker is expected to hold: its weights in fp32 (twice the file, for fp16 files, at
    most) and ``WORKER_BASE_MEMORY``. A checkpoint not on this machine counts as the full model."""
    from ..model.checkpoint import is_demo

    if is_demo(checkpoint):  # the demo tracker adds 1.5 MB
        from importlib import resources

        path = Path(str(resources.files("sam3video") / "assets" / "demo.pt"))
    else:
        path = Path(checkpoint)
        if path.is_dir():  # a folder holding sam3.pt or the transformers model.safetensors
            from ..model.checkpoint import resolve_checkpoint

            path = resolve_checkpoint(path)
    size = path.stat().st_size if path.is_file() else FULL_CHECKPOINT_BYTES
    return 2 * size + WORKER_BASE_MEMORY


def _run_on_ray(ray, job: BatchJob, todo: list[BatchVideo], out_dir: Path, manifest: Manifest,
                report: BatchReport, show_progress: bool) -> None:
    from tqdm import tqdm

    workers, threads, per_gpu = _plan(ray, job, len(todo), worker_memory(job.base.checkpoint))
    report.workers, report.threads = workers, threads
    base = job.base
    worker_class = ray.remote(num_cpus=threads, num_gpus=per_gpu, max_restarts=0)(TrackWorker)
    actors = []

    def spawn():
        actors.append(worker_class.remote(base.checkpoint, base.model_config, base.device, threads, base.tracker,
                                          base.resolution))
        return actors[-1]

    counter = ray.remote(num_cpus=0)(FrameCounter).remote()
    started = time.perf_counter()
    idle = [spawn() for _ in range(workers)]
    answers = _wait_ready(ray, idle, base)
    report.startup_s = time.perf_counter() - started
    report.model_load_s = sum(a["load_s"] for a in answers) / len(answers)
    total = sum(_count_frames(video, base) for video in todo)
    attempts: Counter[str] = Counter()
    queue, pending = deque(todo), {}
    bar = tqdm(total=total or None, unit="frame", dynamic_ncols=True, disable=not show_progress)
    try:
        while queue or pending:
            if idle and queue:
                while idle and queue:
                    actor, video = idle.pop(), queue.popleft()
                    attempts[video.name] += 1
                    resume = manifest.was_stopped(video)
                    manifest.record(video, state="running", attempts=attempts[video.name])
                    video_job = replace(base, source=video.source, out_dir=str(out_dir / video.name),
                                        exemplars=video.exemplars, source_name=video.source, resume=resume,
                                        prompts=video.prompts or base.prompts, veval_ids=video.veval_ids)
                    pending[actor.track.remote(video_job, video.name, counter)] = (actor, video)
                manifest.save()
            finished, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in finished:
                actor, video = pending.pop(ref)
                try:
                    entry = ray.get(ref)
                    idle.append(actor)
                except ray.exceptions.RayError as error:  # the worker died: killed, out of memory, node lost
                    _stop(ray, [actor], [])
                    idle.append(spawn())
                    if attempts[video.name] < MAX_ATTEMPTS:
                        queue.appendleft(video)
                        continue
                    reason = _one_line(error)
                    entry = {"state": "failed", "reason": f"its worker died {MAX_ATTEMPTS} times (killed or out "
                                                          f"of memory?): {reason}"}
                manifest.record(video, **entry, attempts=attempts[video.name])
                report.ran.append(video.name)
            if finished:
                manifest.save()
            bar.n = ray.get(counter.total.remote())
            bar.set_postfix(done=len(report.ran) - len(report.failed), failed=len(report.failed), refresh=False)
            bar.refresh()
    except KeyboardInterrupt:
        report.interrupted = True
        _stop(ray, actors, list(pending))
        for _, video in pending.values():
            manifest.record(video, state="interrupted", attempts=attempts[video.name])
            for folder in (out_dir / video.name / PARTIAL_DIR, out_dir / video.name):
                remove_temp_files(folder)  # the killed workers could not remove theirs
        manifest.save()
        raise
    finally:
        bar.close()


def _wait_ready(ray, pool, base: TrackJob) -> list[dict]:
    """Every worker's ``ready`` answer; ``InputError`` with the first worker's error, or on a timeout."""
    refs = [actor.ready.remote(base) for actor in pool]
    done, _ = ray.wait(refs, num_returns=len(refs), timeout=READY_TIMEOUT_S)
    if len(done) < len(refs):
        raise InputError(f"the Ray workers did not start within {READY_TIMEOUT_S:g} s (not enough free CPUs or "
                         f"GPUs on the cluster?)")
    try:
        answers = ray.get(refs)
    except ray.exceptions.RayError as e:
        raise InputError(f"a Ray worker could not start (is sam3video installed on every node?): "
                         f"{_one_line(e)}") from None
    for answer in answers:
        if answer["error"]:
            raise InputError(answer["error"])
    return answers


def _one_line(error: BaseException, limit: int = 300) -> str:
    """A Ray error's message in one line: colour codes removed, whitespace collapsed, cut at ``limit``."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _stop(ray, actors, refs) -> None:
    """Kill ``actors`` and wait (briefly) until their tasks ``refs`` have ended."""
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
    if refs:
        with contextlib.suppress(Exception):
            ray.wait(refs, num_returns=len(refs), timeout=10)


def _count_frames(video: BatchVideo, base: TrackJob) -> int:
    """Frames the video will give (0 if it cannot be opened here: its worker reports why)."""
    try:
        source = video.source
        if source.endswith(".npy"):
            import numpy as np

            return len(np.load(source, mmap_mode="r"))
        reader = open_video(source, backend=base.backend, fps=base.fps, start=base.start, end=base.end,
                            window_seconds=base.window_seconds)
        return reader.num_output_frames or 0
    except Exception:  # noqa: BLE001 - only the progress bar's total
        return 0


# ---- the index -----------------------------------------------------------------------------------------


"""The batch manifest, index and resource plan (no Ray, no model)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from sam3video.batch import BatchJob, BatchVideo, Manifest, settings_of
from sam3video.batch.driver import _plan, worker_memory
from sam3video.batch.inputs import collect_videos, is_plain_name
from sam3video.batch.manifest import output_checksums, write_index
from sam3video.errors import InputError
from sam3video.run import TrackJob
from sam3video.thresholds import Thresholds
from sam3video.trackers.association.exemplars import Exemplar

BASE = TrackJob(source=None, out_dir="", prompts=("dog",))


def _done(tmp_path: Path, name: str = "a") -> tuple[Manifest, BatchVideo]:
    """A manifest where ``name`` is done with two outputs."""
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "tracks.txt").write_text("1,1,0,0,5,5,0.9,-1,-1,-1\n")
    (folder / "summary.json").write_text("{}")
    (folder / ".partial").mkdir()  # hidden: not an output
    video = BatchVideo(name, str(tmp_path / f"{name}.mp4"))
    manifest = Manifest(tmp_path, settings_of(BASE), {})
    manifest.record(video, state="done", frames=3, tracks=1, outputs=output_checksums(folder))
    return manifest, video


def test_settings_must_match(tmp_path):
    manifest, _ = _done(tmp_path)
    manifest.save()
    assert Manifest.load(tmp_path, settings_of(BASE)).entries.keys() == {"a"}
    other = replace(BASE, thresholds=Thresholds(min_hits=5), render=False)
    with pytest.raises(InputError, match=r"other settings \(render, thresholds differ\)"):
        Manifest.load(tmp_path, settings_of(other))
    # what is set per video is not a batch setting
    assert settings_of(replace(BASE, source="x.mp4", out_dir="o", resume=True)) == settings_of(BASE)


def test_an_unreadable_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest.json is unreadable"):
        Manifest.load(tmp_path, settings_of(BASE))


def test_names_read_back_are_plain_folders_inside_out(tmp_path):
    """A manifest someone else wrote: ``../x``, absolute paths, empty or hidden names, non-string names and a link
    inside OUT leading out are never used as folders; those videos are named again as new ones."""
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (out / "linked").symlink_to(outside, target_is_directory=True)
    sources = {name: str(tmp_path / f"v{i}.mp4") for i, name in enumerate(
        ["../x", "/abs/path", "", ".hidden", "a/b", "..", "linked", "fine-1.ok"])}
    for source in sources.values():
        Path(source).write_bytes(b"")
    videos = {name: {"source": source, "state": "running"} for name, source in sources.items()}
    videos["7"] = {"source": 7}  # not a string: ignored
    (out / "manifest.json").write_text(json.dumps({"version": 1, "settings": settings_of(BASE), "videos": videos}))
    manifest = Manifest.load(out, settings_of(BASE))
    assert set(manifest.entries) == {"linked", "fine-1.ok", "7"}  # the rest are dropped on load
    assert manifest.known_names() == {sources["fine-1.ok"]: "fine-1.ok"}
    named = collect_videos(list(sources.values()), out, known=manifest.known_names())
    for video in named:
        folder = (out / video.name)
        assert is_plain_name(video.name) and not folder.is_symlink() and folder.resolve().parent == out.resolve()
    assert {v.name for v in named} >= {"fine-1.ok"} and "linked" not in {v.name for v in named}
    assert len({v.name for v in named}) == len(named)


@pytest.mark.parametrize("payload", ['{"version": 1, "settings": {}, "videos": []}',
                                     '{"version": 1, "settings": [], "videos": {}}'])
def test_a_manifest_of_the_wrong_shape_is_refused(tmp_path, payload):
    (tmp_path / "manifest.json").write_text(payload)
    with pytest.raises(InputError, match="manifest.json is unreadable"):
        Manifest.load(tmp_path, {})


def test_done_means_outputs_unchanged(tmp_path):
    """Done while every output keeps its size and sha256: touching a file is not a change, editing it
    (same size) is, deleting it is; other exemplars or another source make it another job."""
    manifest, video = _done(tmp_path)
    tracks = tmp_path / "a" / "tracks.txt"
    assert manifest.is_done(video)
    os.utime(tracks, ns=(1, 1))
    assert manifest.is_done(video)
    tracks.write_text(tracks.read_text().replace("0.9", "0.8"))
    assert not manifest.is_done(video)
    manifest, video = _done(tmp_path / "again")
    assert not manifest.is_done(replace(video, exemplars=(Exemplar(0, (1, 2, 3, 4)),)))
    assert not manifest.is_done(replace(video, source="/elsewhere/a.mp4"))
    (tmp_path / "again" / "a" / "summary.json").unlink()
    assert not manifest.is_done(video)


def test_only_stopped_videos_resume(tmp_path):
    manifest, video = _done(tmp_path)
    assert not manifest.was_stopped(video)
    for state, resumes in (("running", True), ("interrupted", True), ("failed", False)):
        manifest.record(video, state=state, attempts=1)
        assert manifest.was_stopped(video) is resumes
    assert not manifest.was_stopped(replace(video, exemplars=(Exemplar(0, (1, 2, 3, 4)),)))


def test_index(tmp_path):
    manifest, video = _done(tmp_path)
    manifest.entries["a"] |= {"seconds": 1.5, "attempts": 1, "worker": "host:1"}
    failed = BatchVideo("b", str(tmp_path / "b.mp4"))
    manifest.record(failed, state="failed", reason="not a readable video: b.mp4", attempts=2)
    write_index(tmp_path, [video, failed, BatchVideo("c", "/c.mp4")], manifest.entries)
    index = json.loads((tmp_path / "index.json").read_text())
    assert [row["state"] for row in index["videos"]] == ["done", "failed", "pending"]
    assert index["videos"][0]["frames_per_s"] == 2.0
    assert index["videos"][0]["outputs"] == ["a/summary.json", "a/tracks.txt"]
    assert index["totals"] == {"videos": 3, "done": 1, "failed": 1, "pending": 1, "frames": 3, "tracks": 1}
    lines = (tmp_path / "index.csv").read_text().splitlines()
    assert lines[0] == "name,source,state,frames,tracks,seconds,frames_per_s,attempts,worker,folder,reason"
    assert lines[2].endswith(",not a readable video: b.mp4") and len(lines) == 4
    # a later command on c alone still lists a and b (done and failed by the first one)
    write_index(tmp_path, [BatchVideo("c", "/c.mp4")], manifest.entries)
    rows = json.loads((tmp_path / "index.json").read_text())["videos"]
    assert [(row["name"], row["state"]) for row in rows] == [("c", "pending"), ("a", "done"), ("b", "failed")]


class _Cluster:
    """What ``_plan`` reads of Ray: the cluster's resources and its nodes."""

    def __init__(self, cpus: int, gpus: int = 0, nodes: int = 1, memory_gib: float = 64):
        self.cpus, self.gpus, self.num_nodes, self.memory = cpus, gpus, nodes, memory_gib * 2**30

    def cluster_resources(self) -> dict:
        return {"CPU": float(self.cpus), "memory": self.memory, **({"GPU": float(self.gpus)} if self.gpus else {})}

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": float(self.cpus // self.num_nodes)}}] * self.num_nodes


GIB = 2**30


@pytest.mark.parametrize("cluster, options, device, videos, memory, expected", [
    (_Cluster(2), {}, "cpu", 8, GIB, (2, 1, 0.0)),                       # 2 cores: two workers, 1 thread
    (_Cluster(2), {"workers": 1}, "cpu", 8, GIB, (1, 2, 0.0)),           # threads follow --workers
    (_Cluster(16), {}, "auto", 3, GIB, (3, 5, 0.0)),                     # never more workers than videos
    (_Cluster(16, memory_gib=24), {}, "cpu", 8, 8.4 * GIB, (2, 8, 0.0)),  # sam3.pt: as many as memory holds
    (_Cluster(64, nodes=4), {"workers": 2}, "cpu", 8, GIB, (2, 16, 0.0)),  # an actor fits on one node
    (_Cluster(16, gpus=4), {}, "auto", 8, GIB, (4, 4, 1.0)),             # auto on GPUs: one per GPU
    (_Cluster(16, gpus=2), {"gpus_per_worker": 0.5}, "cuda", 8, GIB, (4, 4, 0.5)),
    (_Cluster(8), {"threads": 3}, "cpu", 8, GIB, (2, 3, 0.0)),
    (_Cluster(4, memory_gib=4), {}, "cpu", 8, 8.4 * GIB, (1, 4, 0.0)),   # too little memory: still one
])
def test_plan(cluster, options, device, videos, memory, expected):
    job = BatchJob(base=replace(BASE, device=device), videos=(), out_dir="o", **options)
    assert _plan(cluster, job, videos, memory) == expected


def test_plan_needs_gpus_for_cuda():
    with pytest.raises(InputError, match="needs 1 GPU per worker; the Ray cluster has 0"):
        _plan(_Cluster(4), BatchJob(base=replace(BASE, device="cuda"), videos=(), out_dir="o"), 2, GIB)


def test_worker_memory(tmp_path):
    """The demo model's file is small (about 1.5 GiB a worker); an absent checkpoint counts as sam3.pt."""
    assert 1.5 * GIB < worker_memory(None) < 1.6 * GIB
    assert worker_memory(str(tmp_path / "not-here.pt")) == pytest.approx(2 * 3.45e9 + 1.5 * GIB)

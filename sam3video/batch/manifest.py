"""``OUT/manifest.json`` (each video's state, for reruns) and ``OUT/index.json`` / ``index.csv`` (the listing)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..errors import InputError
from ..export.atomic import atomic_open
from ..run import TrackJob
from ..trackers.association.exemplars import Exemplar, exemplar_record
from .inputs import BatchVideo, is_plain_name

MANIFEST_NAME, INDEX_JSON, INDEX_CSV = "manifest.json", "index.json", "index.csv"
MANIFEST_VERSION = 1
NOT_SETTINGS = ("source", "out_dir", "exemplars", "resume", "source_name", "veval_ids")  # TrackJob fields set per video

def settings_of(base: TrackJob) -> dict:
    """The settings that decide every video's outputs (JSON values), as the manifest keeps them."""
    settings = {k: v for k, v in asdict(base).items() if k not in NOT_SETTINGS}
    return json.loads(json.dumps(settings, default=str))


class Manifest:
    """``OUT/manifest.json``: the batch's settings and one entry per video (its state and results)."""

    def __init__(self, out_dir: Path, settings: dict, entries: dict[str, dict]):
        self.out_dir, self.settings, self.entries = out_dir, settings, entries

    @classmethod
    def load(cls, out_dir: Path, settings: dict) -> Manifest:
        """The manifest in ``out_dir`` (a new one if there is none). ``InputError`` if it is unreadable
        or was made with other settings."""
        path = out_dir / MANIFEST_NAME
        if not path.is_file():
            return cls(out_dir, settings, {})
        try:
            data = json.loads(path.read_text())
            version, saved, entries = data["version"], data["settings"], data["videos"]
            if not isinstance(saved, dict) or not isinstance(entries, dict):
                raise TypeError("settings and videos must be objects")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path} is unreadable ({type(e).__name__}): remove it or give another --out") from None
        if version != MANIFEST_VERSION:
            raise InputError(f"{path} is from another version of sam3video: give another --out")
        changed = sorted(k for k in set(settings) | set(saved) if settings.get(k) != saved.get(k))
        if changed:
            raise InputError(f"{out_dir} holds a batch made with other settings ({', '.join(changed)} differ): "
                             f"give another --out, or the same settings")
        # a name that is not a plain folder name (``../x``, ``/abs``, empty) is never used as a folder: dropped
        entries = {name: entry for name, entry in entries.items() if is_plain_name(name) and isinstance(entry, dict)}
        return cls(out_dir, settings, entries)

    def known_names(self) -> dict[str, str]:
        """source -> folder name of the videos the manifest knows, keeping only names that are a plain folder
        inside OUT (``is_plain_name``, and not a link leading elsewhere): a video with any other name read back
        from the manifest is named again, as a new one."""
        return {entry["source"]: name for name, entry in self.entries.items()
                if isinstance(entry, dict) and isinstance(entry.get("source"), str) and is_folder_in(self.out_dir, name)}

    def is_done(self, video: BatchVideo) -> bool:
        """Done with the same source and exemplars, and every output still as it was written."""
        entry = self.entries.get(video.name)
        if not entry or entry["state"] != "done" or entry["source"] != video.source:
            return False
        if entry.get("exemplars", []) != _exemplars_json(video.exemplars) or entry.get("prompts", []) != list(
                video.prompts):
            return False
        folder = self.out_dir / video.name
        return all(_unchanged(folder / name, saved) for name, saved in entry["outputs"].items())

    def was_stopped(self, video: BatchVideo) -> bool:
        """Whether ``video``, as it is now, was stopped part way (running when its worker died or the
        driver was killed, or interrupted): it can go on from its last complete window."""
        entry = self.entries.get(video.name)
        return bool(entry) and entry["state"] in ("running", "interrupted") and entry["source"] == video.source \
            and entry.get("exemplars", []) == _exemplars_json(video.exemplars)

    def record(self, video: BatchVideo, **entry) -> None:
        self.entries[video.name] = {"source": video.source, "exemplars": _exemplars_json(video.exemplars),
                                    **({"prompts": list(video.prompts)} if video.prompts else {}), **entry}

    def save(self) -> None:
        data = {"version": MANIFEST_VERSION, "settings": self.settings,
                "videos": dict(sorted(self.entries.items()))}
        with atomic_open(self.out_dir / MANIFEST_NAME, "w") as f:
            json.dump(data, f, indent=1)


def is_folder_in(out_dir: Path, name: object) -> bool:
    """Whether ``name`` (read from a file) is a plain folder name whose folder stays inside ``out_dir``:
    ``is_plain_name``, and if ``out_dir / name`` exists, a real folder (not a link) resolving inside it."""
    if not is_plain_name(name):
        return False
    folder = out_dir / name
    if folder.is_symlink():
        return False
    return not folder.exists() or (folder.is_dir() and folder.resolve().parent == out_dir.resolve())


def _exemplars_json(exemplars: Sequence[Exemplar]) -> list[dict]:
    return [exemplar_record(e) for e in exemplars]


def output_checksums(folder: Path) -> dict[str, dict]:
    """Every visible file in ``folder``: ``{name: {"bytes", "mtime_ns", "sha256"}}``."""
    return {p.name: _file_record(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _file_record(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def _unchanged(path: Path, saved: dict) -> bool:
    """Same size and sha256 (hashed again only when the modification time moved)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != saved["bytes"]:
        return False
    return stat.st_mtime_ns == saved["mtime_ns"] or _file_record(path)["sha256"] == saved["sha256"]


INDEX_COLUMNS = ("name", "source", "state", "frames", "tracks", "seconds", "frames_per_s", "attempts", "worker",
                 "folder", "reason")


def index_rows(videos: Sequence[BatchVideo], entries: dict[str, dict]) -> list[dict]:
    """One row per video of OUT: ``videos`` (this command's, in order), then the others of the manifest
    (earlier commands into the same OUT), by name: ``INDEX_COLUMNS`` plus ``outputs`` (paths relative to OUT)."""
    given = {video.name for video in videos}
    videos = list(videos) + [BatchVideo(name, entry["source"]) for name, entry in sorted(entries.items())
                             if name not in given]
    rows = []
    for video in videos:
        entry = entries.get(video.name, {"state": "pending"})
        seconds = entry.get("seconds")
        frames = entry.get("frames")
        rows.append({
            "name": video.name, "source": video.source, "state": entry["state"], "frames": frames,
            "tracks": entry.get("tracks"), "seconds": seconds,
            "frames_per_s": round(frames / seconds, 2) if frames and seconds else None,
            "attempts": entry.get("attempts"), "worker": entry.get("worker"), "folder": video.name,
            "reason": entry.get("reason"),
            "tracks_by_prompt": entry.get("tracks_by_prompt"),
            "outputs": [f"{video.name}/{name}" for name in entry.get("outputs", {})],
        })
    return rows


def write_index(out_dir: Path, videos: Sequence[BatchVideo], entries: dict[str, dict]) -> None:
    """``OUT/index.json`` and ``OUT/index.csv`` (atomically)."""
    rows = index_rows(videos, entries)
    states = Counter(row["state"] for row in rows)
    totals = {"videos": len(rows), **{state: states[state] for state in sorted(states)},
              "frames": sum(row["frames"] or 0 for row in rows if row["state"] == "done"),
              "tracks": sum(row["tracks"] or 0 for row in rows if row["state"] == "done")}
    with atomic_open(out_dir / INDEX_JSON, "w") as f:
        json.dump({"videos": rows, "totals": totals}, f, indent=1)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=INDEX_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    with atomic_open(out_dir / INDEX_CSV, "w") as f:
        f.write(text.getvalue())

"""The videos of ``sam3video batch``'s INPUTS: files, folders searched recursively, ``.txt`` lists."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..sources.loader import IMAGE_SUFFIXES
from ..export.veval import VevalIds
from ..trackers.association.exemplars import Exemplar, load_exemplars

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".wmv",
                            ".flv", ".npy"})
LIST_SUFFIXES = frozenset({".txt", ".list"})  # a text file of videos, one path per line


@dataclass(frozen=True)
class BatchVideo:
    """One input: ``source`` (absolute path of a video file or frame folder), written to ``OUT/<name>/``;
    ``prompts`` its own (empty: the batch's), ``veval_ids`` how its ``predictions.veval.json`` names it."""

    name: str
    source: str
    exemplars: tuple[Exemplar, ...] = ()
    prompts: tuple[str, ...] = ()
    veval_ids: VevalIds | None = None



def collect_videos(inputs: Sequence[str | Path], out_dir: str | Path, exemplars_dir: str | Path | None = None,
                   known: dict[str, str] | None = None) -> tuple[BatchVideo, ...]:
    """The videos of ``inputs`` (video files; folders, searched recursively for video files and for
    folders of JPEG/PNG frames; ``.txt`` lists of such paths, relative to the list), in order, each
    once. Names are file stems (a frame folder's name), made unique with ``-2``, ``-3``...; ``known``
    (source -> name, from a manifest) keeps earlier names. ``exemplars_dir``: ``<name>.json`` there,
    if present, holds a video's exemplars. ``out_dir`` is never searched. ``InputError`` if an input
    does not exist or is of no known kind, or nothing is found."""
    out = Path(out_dir).resolve()
    sources: list[Path] = []
    for item in inputs:
        sources += _expand(Path(item), out)
    sources = list(dict.fromkeys(sources))
    if not sources:
        raise InputError(f"no videos in {', '.join(map(str, inputs))} (video files: "
                         f"{', '.join(sorted(VIDEO_SUFFIXES))}, or folders of JPEG/PNG frames)")
    links = {p.name for p in out.iterdir() if p.is_symlink()} if out.is_dir() else set()
    names = _unique_names(sources, known or {}, links)
    videos = []
    for source in sources:
        name = names[str(source)]
        exemplars = ()
        if exemplars_dir is not None and (Path(exemplars_dir) / f"{name}.json").is_file():
            exemplars = tuple(load_exemplars(Path(exemplars_dir) / f"{name}.json"))
        videos.append(BatchVideo(name, str(source), exemplars))
    return tuple(videos)


def _expand(path: Path, out: Path) -> list[Path]:
    """The absolute sources of one input."""
    if not path.exists():
        raise InputError(f"no such file or folder: {path}")
    path = path.resolve()
    if path.is_dir():
        return _search(path, out)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return [path]
    if suffix in LIST_SUFFIXES:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
        # a listed path that is missing fails as that video alone (the others run)
        return [(path.parent / line).resolve() for line in lines if line and not line.startswith("#")]
    raise InputError(f"{path}: not a video file ({', '.join(sorted(VIDEO_SUFFIXES))}), a folder, or a list "
                     f"of videos ({', '.join(sorted(LIST_SUFFIXES))})")


def _search(folder: Path, out: Path) -> list[Path]:
    """Video files and frame folders under ``folder`` (hidden entries and ``out`` skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (root_path / d).resolve() != out)
        visible = [f for f in files if not f.startswith(".")]
        if any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in visible):
            found.append(root_path)
        found += [root_path / f for f in sorted(visible) if Path(f).suffix.lower() in VIDEO_SUFFIXES]
    return found


PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,254}")


def is_plain_name(name: object) -> bool:
    """A folder name made of letters, digits, ``.``, ``_`` and ``-`` only, not starting with a dot (so not
    ``.``, ``..`` or hidden), at most 255 characters: what ``_unique_names`` makes."""
    return isinstance(name, str) and PLAIN_NAME.fullmatch(name) is not None


def _unique_names(sources: Sequence[Path], known: dict[str, str], avoid: set[str] = frozenset()) -> dict[str, str]:
    """source -> output folder name: ``known`` ones kept (plain names only), new ones the stem, made unique
    and none of ``avoid`` (links inside OUT, which could lead out of it)."""
    names = {str(s): known[str(s)] for s in sources if str(s) in known and is_plain_name(known[str(s)])
             and known[str(s)] not in avoid}
    taken = set(names.values()) | set(avoid)
    for source in sources:
        if str(source) in names:
            continue
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source.stem if source.suffix.lower() in VIDEO_SUFFIXES else source.name).lstrip(".")[:240]
        name, n = stem or "video", 1
        while name in taken:
            n += 1
            name = f"{stem or 'video'}-{n}"
        names[str(source)] = name
        taken.add(name)
    return names



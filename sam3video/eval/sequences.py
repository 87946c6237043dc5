"""Which ground-truth file goes with which prediction file.

Either files, paired by position (``--gt a.txt b.txt --pred a_pred.txt b_pred.txt``), or one directory
on each side holding one entry per sequence, found in this order:

* ``<dir>/<seq>.txt`` — files with matching names on both sides (TrackEval's tracker ``data/`` layout);
* ``<dir>/<seq>/gt.txt`` or ``<dir>/<seq>/gt/gt.txt`` for ground truth (MOTChallenge's layout);
* ``<dir>/<seq>/<name>`` with ``name`` in ``PRED_FILE_NAMES`` for predictions.

Sequence names are the file stems (or folder names); ``names`` renames paired files, or selects
sequences out of the directories. Every ground-truth sequence needs a prediction and vice versa.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sam3video.errors import InputError

GT_FILE_NAMES = ("gt.txt", "gt/gt.txt")
PRED_FILE_NAMES = ("tracks.txt", "mot.txt", "mots.txt")

PathLike = str | Path


@dataclass(frozen=True)
class SequencePair:
    """One sequence: its name, its ground-truth file and its prediction file."""

    name: str
    gt: Path
    pred: Path


def _as_paths(paths: PathLike | Sequence[PathLike], side: str) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise InputError(f"no {side} path given")
    out = [Path(p) for p in items]
    for p in out:
        if not p.exists():
            raise InputError(f"{side} path {p} does not exist")
    return out


def find_sequences(directory: Path, file_names: Sequence[str]) -> dict[str, Path]:
    """The sequences in ``directory``: ``<seq>.txt`` files and ``<seq>/<one of file_names>``."""
    found: dict[str, Path] = {}
    for entry in sorted(directory.iterdir()):
        if entry.is_file() and entry.suffix == ".txt":
            path, name = entry, entry.stem
        elif entry.is_dir():
            path = next((entry / n for n in file_names if (entry / n).is_file()), None)
            if path is None:
                continue
            name = entry.name
        else:
            continue
        if name in found:
            raise InputError(f"sequence {name!r} is both {found[name]} and {path}; keep one")
        found[name] = path
    return found


def _unique_names(paths: list[Path]) -> list[str] | None:
    """File stems, or parent-folder names where stems repeat; None if neither is unique."""
    for names in ([p.stem for p in paths], [p.resolve().parent.name for p in paths]):
        if len(set(names)) == len(names):
            return names
    return None


def _pair_files(gts: list[Path], preds: list[Path], names: Sequence[str] | None) -> list[SequencePair]:
    if len(gts) != len(preds):
        raise InputError(f"{len(gts)} ground-truth files but {len(preds)} prediction files; "
                         "files are paired by position")
    if names is None:
        names = _unique_names(gts) or _unique_names(preds)
        if names is None:
            raise InputError("cannot name the sequences from the file names; pass names")
    if len(names) != len(gts) or len(set(names)) != len(names):
        raise InputError(f"need {len(gts)} distinct sequence names, got {list(names)}")
    return [SequencePair(n, g, p) for n, g, p in zip(names, gts, preds)]


def _pair_dirs(gt_dir: Path, pred_dir: Path, names: Sequence[str] | None) -> list[SequencePair]:
    gts = find_sequences(gt_dir, GT_FILE_NAMES)
    preds = find_sequences(pred_dir, PRED_FILE_NAMES)
    if not gts:
        raise InputError(f"no sequences in {gt_dir}: expected <seq>.txt, "
                         + " or ".join(f"<seq>/{n}" for n in GT_FILE_NAMES))
    wanted = list(names) if names is not None else sorted(set(gts) | set(preds))
    no_gt = [n for n in wanted if n not in gts]
    if no_gt:
        raise InputError(f"no ground truth in {gt_dir} for sequences {no_gt}")
    no_pred = [n for n in wanted if n not in preds]
    if no_pred:
        raise InputError(f"no predictions in {pred_dir} for sequences {no_pred}: expected <seq>.txt or "
                         + " or ".join(f"<seq>/{n}" for n in PRED_FILE_NAMES))
    return [SequencePair(n, gts[n], preds[n]) for n in wanted]


def pair_sequences(
    gt_paths: PathLike | Sequence[PathLike],
    pred_paths: PathLike | Sequence[PathLike],
    names: Sequence[str] | None = None,
) -> list[SequencePair]:
    """Pair ground truth with predictions: files by position, or one directory on each side."""
    gts, preds = _as_paths(gt_paths, "ground-truth"), _as_paths(pred_paths, "prediction")
    if all(p.is_file() for p in gts + preds):
        return _pair_files(gts, preds, names)
    if len(gts) == 1 and len(preds) == 1 and gts[0].is_dir() and preds[0].is_dir():
        return _pair_dirs(gts[0], preds[0], names)
    raise InputError("pass either files on both sides (paired by position) or one directory on each side")

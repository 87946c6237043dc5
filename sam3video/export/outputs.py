"""The files of a run folder: their names, one window's segments, and the final files assembled from them.

``OUT/tracks.txt`` (MOTChallenge boxes), ``OUT/tracks.mots.txt`` (MOTS masks, COCO RLE),
``OUT/detections.npz`` (every frame's candidates, ``detections_store``), ``OUT/overlay.mp4`` (unless
not rendered) and ``OUT/summary.json``; with several prompts also ``OUT/tracks.<prompt>.txt``, the MOT
file of each prompt alone (MOT lines carry no class). Tracking a detection file (boxes only) writes
``tracks.txt`` and ``summary.json``.

While a run goes, each window's outputs are written to ``OUT/.partial/`` as segments
(``window-0003.tracks.txt`` ...), each complete once its window is; at the end the final files are
assembled from the segments (text concatenated, video remuxed without re-encoding, detections
concatenated array by array), each atomically.
A final name therefore never holds a half-written file, and an interrupted run can go on from its
last complete window.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from ..detections import Detections
from ..errors import InputError
from .atomic import atomic_open, atomic_path
from .detections_store import DetectionsWriter, SavedFrame, StoreMeta, concatenate_segments
from .mot import MOTWriter
from .mots import MOTSWriter
from .summary import summary_text
from .veval import PREDICTIONS_NAME, VevalIds, run_masklets, write_masklets

OUTPUT_NAMES = {"mot": "tracks.txt", "mots": "tracks.mots.txt", "overlay": "overlay.mp4", "detections": "detections.npz",
                "summary": "summary.json"}
PARTIAL_DIR = ".partial"  # inside OUT: the segments and state of a run that has not finished


def prompt_slug(prompt: str) -> str:
    """A file-safe name for a prompt: ``"red circle"`` -> ``"red_circle"``."""
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")
    return slug or "prompt"


def per_prompt_names(class_names: Sequence[str]) -> list[str]:
    """``tracks.<slug>.txt`` for each prompt (``_2``, ``_3`` ... where slugs collide)."""
    names: list[str] = []
    for name in class_names:
        slug, n = prompt_slug(name), 2
        candidate = f"tracks.{slug}.txt"
        while candidate in names:
            candidate, n = f"tracks.{slug}_{n}.txt", n + 1
        names.append(candidate)
    return names


def prepare_out_dir(out_dir: "str | Path") -> Path:
    """Create ``out_dir`` if needed and check that files can be written there (``InputError`` if not)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"cannot write to output directory {out_dir}: {e.strerror or e}") from None
    return out_dir


def output_files(class_names: Sequence[str], render: bool, masks: bool = True, detections: bool = True) -> list[str]:
    """Names of the files written per frame (not the summary), in a fixed order: ``masks`` False
    (box-only detections) leaves out the MOTS file, ``detections`` False ``detections.npz``."""
    names = [OUTPUT_NAMES["mot"]]
    if masks:
        names.append(OUTPUT_NAMES["mots"])
    if len(class_names) > 1:
        names += per_prompt_names(class_names)
    if detections:
        names.append(OUTPUT_NAMES["detections"])
    if render:
        names.append(OUTPUT_NAMES["overlay"])
    return names


def segment_path(partial: Path, window: int, name: str) -> Path:
    return partial / f"window-{window:04d}.{name}"


class WindowFiles:
    """One window's segments of the files ``names`` (``output_files``): ``write(frame_index, detections,
    overlay_frame, saved)`` per frame, in order (``saved``: the frame for ``detections.npz``, described
    by ``store``).

    A context manager: on normal exit every segment is complete under its name; on an exception none is
    left (the writers' temp files are removed)."""

    def __init__(self, partial: Path, window: int, names: Sequence[str], class_names: Sequence[str], fps: float,
                 frame_size: "tuple[int, int] | None", store: StoreMeta | None = None):
        self.partial, self.window, self.names = partial, window, list(names)
        self.class_names, self.fps, self.frame_size, self.store = list(class_names), fps, frame_size, store
        self._stack = ExitStack()
        self.mots = self.detections = self.overlay = None

    def __enter__(self) -> "WindowFiles":
        path = lambda name: segment_path(self.partial, self.window, name)  # noqa: E731
        with ExitStack() as stack:
            self.mot = stack.enter_context(MOTWriter(path(OUTPUT_NAMES["mot"])))
            if OUTPUT_NAMES["mots"] in self.names:
                self.mots = stack.enter_context(MOTSWriter(path(OUTPUT_NAMES["mots"])))
            self.per_prompt = []
            if len(self.class_names) > 1:
                self.per_prompt = [stack.enter_context(MOTWriter(path(name)))
                                   for name in per_prompt_names(self.class_names)]
            if OUTPUT_NAMES["detections"] in self.names:
                self.detections = stack.enter_context(DetectionsWriter(path(OUTPUT_NAMES["detections"]), self.store))
            if OUTPUT_NAMES["overlay"] in self.names:
                from .overlay import OverlayWriter

                height, width = self.frame_size
                self.overlay = stack.enter_context(OverlayWriter(path(OUTPUT_NAMES["overlay"]), self.fps, width, height))
            self._stack = stack.pop_all()
        return self

    def write(self, frame_index: int, detections: Detections, overlay_frame=None, saved: SavedFrame | None = None
              ) -> None:
        self.mot.write(frame_index, detections)
        if self.mots is not None:
            self.mots.write(frame_index, detections)
        for class_id, writer in enumerate(self.per_prompt):
            writer.write(frame_index, detections[detections.class_id == class_id])
        if self.detections is not None:
            self.detections.write(saved)
        if self.overlay is not None:
            self.overlay.write(overlay_frame)

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._stack.__exit__(exc_type, exc, tb)


def publish_outputs(out_dir: Path, windows: Sequence[int], names: Sequence[str], summary: dict,
                    veval: "VevalIds | None" = None) -> None:
    """The final files of ``names``, each from the segments of ``windows`` in ``OUT/.partial``,
    ``predictions.veval.json`` (the MOTS masks as SA-Co/VEval masklets named by ``veval``; runs with masks),
    and ``summary.json``: all of them or none. Every file is complete under a temp name before any is
    renamed; ``summary.json`` (an older run's removed first) is renamed last, so a folder with a
    summary holds a whole run. On any error the files this call already renamed are removed again."""
    partial = out_dir / PARTIAL_DIR
    placed: list[Path] = []
    (out_dir / OUTPUT_NAMES["summary"]).unlink(missing_ok=True)
    try:
        with ExitStack() as stack:  # exits last-in first-out: summary.json, entered first, goes last
            summary_file = stack.enter_context(_recorded(atomic_open(out_dir / OUTPUT_NAMES["summary"], "w"),
                                                         out_dir / OUTPUT_NAMES["summary"], placed))
            for name in names:
                segments = [segment_path(partial, w, name) for w in windows]
                final = out_dir / name
                if name.endswith(".mp4"):
                    temp = stack.enter_context(_recorded(atomic_path(final), final, placed))
                    _concatenate_videos(segments, temp)
                elif name.endswith(".npz"):
                    temp = stack.enter_context(_recorded(atomic_path(final), final, placed))
                    concatenate_segments(segments, temp)
                else:
                    out = stack.enter_context(_recorded(atomic_open(final, "wb"), final, placed))
                    for segment in segments:
                        with open(segment, "rb") as f:
                            shutil.copyfileobj(f, out)
            if veval is not None and OUTPUT_NAMES["mots"] in names:
                final = out_dir / PREDICTIONS_NAME
                masklets = run_masklets([segment_path(partial, w, OUTPUT_NAMES["mots"]) for w in windows],
                                        [segment_path(partial, w, OUTPUT_NAMES["mot"]) for w in windows],
                                        summary["frames"], summary["prompts"], veval)
                with _recorded(atomic_open(final, "w"), final, placed) as out:
                    write_masklets(out, masklets)
            summary_file.write(summary_text(summary))
    except BaseException:
        for path in placed:
            path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _recorded(context, path: Path, placed: list[Path]):
    """``context``, and ``path`` added to ``placed`` once it has exited cleanly (the file is final)."""
    with context as value:
        yield value
    placed.append(path)


def _concatenate_videos(segments: Sequence[Path], temp: Path) -> None:
    """Remux the packets of ``segments`` (same encoder settings: one stream layout) into ``temp``,
    shifting each segment's timestamps to follow the previous one; nothing is re-encoded."""
    import av

    if len(segments) == 1:
        shutil.copyfile(segments[0], temp)
        return
    with av.open(str(temp), "w", format="mp4") as out:
        stream, offset = None, 0
        for segment in segments:
            with av.open(str(segment)) as source:
                video = source.streams.video[0]
                if stream is None:
                    stream = out.add_stream_from_template(video)
                end = offset
                for packet in source.demux(video):
                    if packet.dts is None:  # the demuxer's final empty packet
                        continue
                    packet.pts += offset
                    packet.dts += offset
                    end = max(end, packet.pts + (packet.duration or 0))
                    packet.stream = stream
                    out.mux(packet)
                offset = end


def remove_partial(out_dir: Path) -> None:
    """Delete ``OUT/.partial`` (the run is complete, or starts again from the beginning)."""
    shutil.rmtree(out_dir / PARTIAL_DIR, ignore_errors=True)


"""What one browser tab of ``sam3video app`` works on, without the page: a video, its prompts, the tracked clip
(``run.EditedClip``) and the clicks and removals made on it, recorded as the edits of ``track --edits``.

Exemplar boxes (``add_exemplar``) are the concept's, as ``track --exemplar`` takes them: they act at the next
``track()``, which starts over (a new concept, as officially). Every other change is an edit applied to the clip: a
click or an object box is a ``ClickEdit`` that waits (``propagate=False``, clicks accumulate on their frame),
``propagate()`` tracks every clicked object again both ways from the last click's frame (the recorded click then
propagates), a removal first propagates what waits. So ``export()`` writes the run folder ``track`` would write for
the same video, prompts, ``exemplars.json`` and ``edits.json`` (saved beside it), without tracking again.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from ..export.atomic import atomic_path
from ..export.edits import ClickEdit, Edit, RemoveEdit
from ..export.overlay import annotate
from ..sources.loader import MAX_WINDOW_SECONDS, open_video
from ..thresholds import Thresholds
from ..trackers.association.exemplars import Exemplar, check_exemplar, exemplar_file_item
from .. import run as runs

POSITIVE, NEGATIVE = (0, 200, 0), (220, 0, 0)  # RGB of the click markers and exemplar boxes
OBJECT_BOX = (255, 200, 0)  # RGB of an object's box prompt


@dataclass(frozen=True)
class TrackRow:
    """One line of the page's table of tracks."""

    track_id: int
    prompt: str
    first_frame: int
    last_frame: int
    frames: int
    mean_score: float


class AppWork:
    """One tab's work: ``open(video)``, ``track(prompts)``, then ``click`` / ``propagate`` / ``remove``, ``view(t)``,
    ``tracks()``, ``export()``. Frames are 0-based, points pixels of the video."""

    def __init__(self, model, checkpoint_name: str, workdir: "str | Path", thresholds: Thresholds | None = None):
        """``model``: a video model (detector + tracker); ``checkpoint_name`` how summaries name it; ``thresholds``
        those of ``track`` (default: the official loop's)."""
        self.model, self.checkpoint_name = model, checkpoint_name
        self.thresholds = thresholds or Thresholds()
        self.workdir = Path(workdir)
        self.video: Path | None = None
        self.video_name = ""
        self.first_image: np.ndarray | None = None  # frame 0, shown before the first track()
        self.num_video_frames: int | None = None
        self.exemplars: list[Exemplar] = []  # the concept's boxes, for the next track()
        self.clip: runs.EditedClip | None = None
        self.job: runs.TrackJob | None = None
        self.edits: list[Edit] = []
        self._rows: list[TrackRow] | None = None

    # -- the video and the run ----------------------------------------------------------------------------------
    def open(self, video: "str | Path", name: str | None = None) -> str:
        """Probe ``video`` (one clip of at most 30 s); forgets the previous run. Returns a line describing it."""
        reader = open_video(str(video))
        info, frames = reader.info, reader.num_output_frames
        if frames is not None and frames / info.fps > MAX_WINDOW_SECONDS + 1e-6:
            raise InputError(f"{name or Path(video).name} is {frames / info.fps:.1f} s: the app takes clips of at most "
                             f"{MAX_WINDOW_SECONDS:g} s (cut it, or use sam3video track)")
        first = next(iter(reader), None)
        if first is None:
            raise InputError(f"{name or Path(video).name} has no frames")
        self.close()
        self.video, self.video_name = Path(video), name or Path(video).name
        self.first_image, self.num_video_frames = first.image, frames
        length = f"{frames} frames, {frames / info.fps:.1f} s" if frames is not None else "length unknown"
        return f"{self.video_name}: {info.width}x{info.height}, {info.fps:g} fps, {length}"

    def track(self, prompts: list[str], direction: str = "forward", progress=None) -> str:
        """Track ``prompts`` (noun phrases) through the whole clip; ``progress(done, total)`` after each frame."""
        if self.video is None:
            raise InputError("choose or upload a video first")
        prompts = [p.strip() for p in prompts if p.strip()]
        if not prompts:
            raise InputError("type a prompt (a noun phrase such as \"yellow circle\"), one per line")
        if len(set(prompts)) != len(prompts):
            raise InputError("a prompt is given twice")
        unused = [e for e in self.exemplars if e.prompt not in prompts]
        if unused:
            raise InputError(f"exemplar box {self.exemplars.index(unused[0]) + 1} is for {unused[0].prompt!r}, not a "
                             f"prompt now: type it again, or clear the exemplars")
        job = runs.TrackJob(source=str(self.video), out_dir=self.workdir / "run", prompts=tuple(prompts),
                            checkpoint=self.checkpoint_name, thresholds=self.thresholds, edits=(), direction=direction,
                            source_name=self.video_name, exemplars=tuple(self.exemplars))
        source = runs.prepare(job, self.model).source
        clip = source.open_clip()
        total = len(prompts) * clip.num_frames
        for done in clip.track():
            if progress is not None:
                progress(done, total)
        self.close_clip()
        self.job, self.clip = job, clip
        boxes = f" with {len(self.exemplars)} exemplar boxes" if self.exemplars else ""
        return f"tracked {len(clip.track_ids())} objects of {', '.join(prompts)}{boxes} in {clip.num_frames} frames"

    def add_exemplar(self, frame: int, box: tuple[float, float, float, float], positive: bool, prompt: str) -> str:
        """A box (x1, y1, x2, y2, pixels) marking an instance of ``prompt`` (or, negative, what it is not) on
        ``frame``: it acts at the next ``track()``. Returns a line saying so."""
        if self.video is None:
            raise InputError("choose or upload a video first")
        if self.clip is None and frame != 0:
            raise InputError("before the first Track only frame 0 is shown: draw exemplar boxes there")
        exemplar = Exemplar(int(frame), tuple(float(v) for v in box), bool(positive), prompt)
        height, width = self.first_image.shape[:2]
        check_exemplar(exemplar, self.num_frames or self.num_video_frames, width, height)
        self.exemplars.append(exemplar)
        kind = "positive" if positive else "negative"
        return (f"{kind} exemplar box {len(self.exemplars)} for {prompt!r} on frame {frame}: press Track to track "
                f"with it")

    def clear_exemplars(self) -> None:
        self.exemplars = []

    # -- edits ----------------------------------------------------------------------------------------------------
    def click(self, frame: int, x: float, y: float, positive: bool, target: "int | str") -> int:
        """A click on ``target``: a track id, or a prompt (a new object of it). Returns the clicked track's id; the
        click waits for ``propagate()`` (its frame shows the new mask at once)."""
        clip = self._clip()
        height, width = clip.images.shape[1:3]
        if not (0 <= x <= width and 0 <= y <= height):
            raise InputError(f"point ({x:g}, {y:g}) is outside the {width}x{height} frame")
        if isinstance(target, str):
            edit = ClickEdit(int(frame), clip.new_track_id(), ((float(x), float(y)),), (int(positive),),
                             prompt=target, keep_old_points=True, propagate=False)
        else:
            edit = ClickEdit(int(frame), self._known(target), ((float(x), float(y)),), (int(positive),),
                             keep_old_points=True, propagate=False)
        return self._wait(edit)

    def box(self, frame: int, box: tuple[float, float, float, float], target: "int | str") -> int:
        """A box prompt (x1, y1, x2, y2, pixels) on ``target`` (a track id, or a prompt: a new object of it) on
        ``frame``: SAM's tracker box, which replaces the object's clicks there (later clicks add to it). Returns the
        track's id; it waits for ``propagate()`` as a click does."""
        clip = self._clip()
        height, width = clip.images.shape[1:3]
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise InputError(f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is empty or outside the {width}x{height} frame")
        if isinstance(target, str):
            obj_id, prompt = clip.new_track_id(), target
        else:
            obj_id, prompt = self._known(target), None
        return self._wait(ClickEdit(int(frame), obj_id, (), (), (x1, y1, x2, y2), prompt=prompt, propagate=False))

    def _known(self, track_id: int) -> int:
        if track_id not in self._clip().track_ids():
            raise InputError(f"no track {track_id} (tracks: {', '.join(map(str, self.clip.track_ids())) or 'none'})")
        return int(track_id)

    def _wait(self, edit: ClickEdit) -> int:
        self._clip().apply(edit, len(self.edits))
        self.edits.append(edit)
        self._rows = None
        return edit.obj_id

    def propagate(self) -> int:
        """Track the clicked objects again, both ways from the last click's frame; the frames tracked."""
        clip = self._clip()
        if clip.waiting is None:
            return 0
        last = next(i for i, entry in enumerate(clip.applied) if entry is clip.waiting)  # one entry per edit
        self.edits[last] = replace(self.edits[last], propagate=True)
        self._rows = None
        return clip.finish()

    def remove(self, track_id: int) -> None:
        """Remove a track from every frame (clicks waiting are propagated first)."""
        clip = self._clip()
        self.propagate()
        clip.apply(RemoveEdit(int(track_id)), len(self.edits))
        self.edits.append(RemoveEdit(int(track_id)))
        self._rows = None

    # -- what the page shows ------------------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return 0 if self.clip is None else self.clip.num_frames

    def targets(self, prompts: list[str] | None = None) -> list[tuple[str, "int | str"]]:
        """What a click, a box or an exemplar can be on: (label, target) for each track, then a new object of each
        prompt (before the first track: of ``prompts``, those typed)."""
        if self.clip is None:
            return [(f"new {p}", p) for p in dict.fromkeys(p.strip() for p in prompts or () if p.strip())]
        tracks = [(f"#{i} {prompt}", i) for i, prompt in self.clip.track_ids().items()]
        return tracks + [(f"new {prompt}", prompt) for prompt in self.clip.prompts]

    def prompt_of(self, target: "int | str") -> str:
        """The prompt of a click target (a track id, or a prompt)."""
        return target if isinstance(target, str) else self._clip().track_ids()[self._known(target)]

    def view(self, frame: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB: frame ``frame`` with masks, boxes, ``prompt #id score``, its clicks, object boxes and
        exemplar boxes drawn (before the first track: frame 0 and its exemplar boxes)."""
        if self.clip is None:
            if self.first_image is None:
                raise InputError("choose or upload a video first")
            frame, image = 0, self.first_image.copy()
        else:
            frame = int(np.clip(frame, 0, self.clip.num_frames - 1))
            image = annotate(self.clip.images[frame], self.clip.detections(frame), self.clip.prompts)
        thickness = max(2, min(image.shape[:2]) // 160)
        for exemplar in self.exemplars:
            if exemplar.frame == frame:
                x1, y1, x2, y2 = (int(round(v)) for v in exemplar.box)
                cv2.rectangle(image, (x1, y1), (x2, y2), POSITIVE if exemplar.positive else NEGATIVE, thickness)
        radius = max(3, min(image.shape[:2]) // 80)
        for edit in self.edits:
            if isinstance(edit, ClickEdit) and edit.frame == frame:
                if edit.box is not None:
                    x1, y1, x2, y2 = (int(round(v)) for v in edit.box)
                    cv2.rectangle(image, (x1, y1), (x2, y2), OBJECT_BOX, thickness)
                for (x, y), label in zip(edit.points, edit.labels):
                    centre = (int(round(x)), int(round(y)))
                    cv2.circle(image, centre, radius, POSITIVE if label else NEGATIVE, cv2.FILLED, cv2.LINE_AA)
                    cv2.circle(image, centre, radius, (255, 255, 255), 1, cv2.LINE_AA)
        return image

    def tracks(self) -> list[TrackRow]:
        """The tracks as the clip holds them now, by id."""
        if self.clip is None:
            return []
        if self._rows is None:
            seen: dict[int, list] = {}
            for t in range(self.clip.num_frames):
                found = self.clip.detections(t)
                for track_id, class_id, score in zip(found.tracker_id, found.class_id, found.confidence):
                    row = seen.setdefault(int(track_id), [int(class_id), t, t, 0, 0.0])
                    row[2], row[3], row[4] = t, row[3] + 1, row[4] + float(score)
            self._rows = [TrackRow(i, self.clip.prompts[c], first, last, n, round(total / n, 3))
                          for i, (c, first, last, n, total) in sorted(seen.items())]
        return self._rows

    # -- export ---------------------------------------------------------------------------------------------------
    def export(self, out_dir: "str | Path | None" = None, render: bool = True) -> tuple[Path, Path]:
        """Write the run folder (``track``'s files and ``edits.json``) and a zip of it; returns both paths."""
        clip = self._clip()
        self.propagate()
        if out_dir is None:
            out_dir = self.workdir / "run"
            shutil.rmtree(out_dir, ignore_errors=True)  # the page's own folder: no file of an earlier export stays
        job = replace(self.job, out_dir=out_dir, edits=tuple(self.edits), render=render)
        runs.prepare(job, self.model, clip=clip).execute()
        with atomic_path(out_dir / "edits.json") as tmp:
            Path(tmp).write_text(json.dumps([e.describe() for e in self.edits], indent=1) + "\n", encoding="utf-8")
        if self.job.exemplars:  # track --exemplars's format
            boxes = [exemplar_file_item(e) for e in self.job.exemplars]
            with atomic_path(out_dir / "exemplars.json") as tmp:
                Path(tmp).write_text(json.dumps(boxes, indent=1) + "\n", encoding="utf-8")
        archive = out_dir.with_suffix(".zip")
        with atomic_path(archive) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in sorted(out_dir.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    zipped.write(path, f"{out_dir.name}/{path.name}")
        return out_dir, archive

    # -- lifetime -------------------------------------------------------------------------------------------------
    def _clip(self) -> "runs.EditedClip":
        if self.clip is None:
            raise InputError("track a prompt first")
        return self.clip

    def close_clip(self) -> None:
        if self.clip is not None:
            self.clip.close()
        self.clip, self.job, self.edits, self._rows = None, None, [], None

    def close(self) -> None:
        """Free the clip (a closed tab); the work folder goes too."""
        self.close_clip()
        self.video, self.first_image, self.num_video_frames, self.exemplars = None, None, None, []
        shutil.rmtree(self.workdir, ignore_errors=True)

"""Synthetic clips on disk: the video, per-prompt MOT/MOTS ground truth and ``meta.json``.

Layout of a clip folder::

    video.mp4                      H.264 (libx264, yuv420p, crf 18) when available, else MPEG-4 Part 2
    gt/<prompt_slug>/gt.txt        MOTChallenge: frame,id,x,y,w,h,1,1,visibility
    gt/<prompt_slug>/gt.mots.txt   MOTS: frame id class_id height width rle
    meta.json                      seed, config, objects, prompts (+ style, object_styles when randomised);
                                   written last: marks a complete folder

Frames and ids are 1-based in the files. Boxes: x, y = top-left pixel (0-based, like ``Detections``),
w, h in pixels, the tight box of the visible mask. ``visibility`` in (0, 1] is the visible fraction
(the 9th column of MOT17). RLE: COCO compressed RLE (pycocotools) of the visible mask; masks of one
frame never overlap. Every file is written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable


from sam3video.data.concepts import PROMPTS
from sam3video.export.outputs import prompt_slug
from sam3video.data.styled import StyledClip
from sam3video.data.synthetic import Clip, FrameTruth, WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.errors import InputError
from sam3video.export.atomic import atomic_open
from sam3video.export.mots import encode_rle
from sam3video.export.overlay import OverlayWriter

VIDEO_NAME = "video.mp4"
META_NAME = "meta.json"
MOT_NAME = "gt.txt"
MOTS_NAME = "gt.mots.txt"


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def mot_lines(truth: FrameTruth, prompt: str) -> list[str]:
    """MOTChallenge lines of the objects of one frame that match ``prompt``."""
    lines = []
    for o in truth.matching(prompt):
        x0, y0, x1, y1 = o.box
        lines.append(f"{truth.frame_index + 1},{o.object_id},{x0},{y0},{x1 - x0},{y1 - y0},1,1,{o.visibility:.4f}")
    return lines


def mots_lines(truth: FrameTruth, prompt: str, class_id: int = 1, rles: dict[int, str] | None = None) -> list[str]:
    """MOTS lines (COCO RLE of the visible masks) of the objects of one frame that match ``prompt``;
    ``rles`` caches object id -> RLE string across prompts of the same frame (filled in place)."""
    rles = {} if rles is None else rles
    height, width = truth.label_map.shape
    lines = []
    for o in truth.matching(prompt):
        if o.object_id not in rles:
            rles[o.object_id] = encode_rle(o.mask[None])[0]
        lines.append(f"{truth.frame_index + 1} {o.object_id} {class_id} {height} {width} {rles[o.object_id]}")
    return lines


def clip_meta(clip: Clip, prompts: Iterable[str]) -> dict[str, Any]:
    """What ``meta.json`` holds: enough to regenerate the clip (seed + config) and to read the GT; for
    a randomised clip also its sampled ``style`` and ``object_styles`` (informative only)."""
    width, height = clip.size
    meta = {
        "seed": clip.seed,
        "config": clip.config.to_dict(),
        "num_frames": clip.num_frames,
        "fps": clip.fps,
        "width": width,
        "height": height,
        "background_kind": clip.background_kind,
        "blur_sigma": clip.blur_sigma,
        "objects": [o.to_dict() for o in clip.objects],
        "prompts": {p: {"slug": prompt_slug(p), "object_ids": [o.object_id for o in clip.objects_matching(p)]}
                    for p in prompts},
        "conventions": "frames and ids 1-based in gt files; x,y = 0-based top-left pixel; "
                       "masks = visible parts; see sam3video.data.dataset",
    }
    if isinstance(clip, StyledClip):
        meta["style"] = clip.style.to_dict()
        meta["object_styles"] = [s.to_dict() for s in clip.object_styles]
    return meta


def write_clip(
    clip: Clip,
    out_dir: str | os.PathLike,
    prompts: Iterable[str] = PROMPTS,
    crf: int = 18,
    mots_class_id: int = 1,
    video: bool = True,
) -> Path:
    """Write ``clip`` into ``out_dir`` (see the module docstring for the layout); returns the folder."""
    out = Path(out_dir)
    prompts = list(dict.fromkeys(prompts))
    slugs = [prompt_slug(p) for p in prompts]
    if len(set(slugs)) != len(slugs):
        raise InputError(f"prompts {prompts} give clashing folder names {slugs}")
    mot: dict[str, list[str]] = {p: [] for p in prompts}
    mots: dict[str, list[str]] = {p: [] for p in prompts}
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        writer = None
        if video:
            writer = stack.enter_context(OverlayWriter(out / VIDEO_NAME, clip.fps, *clip.size, crf=crf))
        for _, image, truth in clip.frames():
            if writer is not None:
                writer.write(image)
            rles: dict[int, str] = {}
            for p in prompts:
                mot[p] += mot_lines(truth, p)
                mots[p] += mots_lines(truth, p, mots_class_id, rles)
    for p, slug in zip(prompts, slugs):
        _write_text(out / "gt" / slug / MOT_NAME, "".join(line + "\n" for line in mot[p]))
        _write_text(out / "gt" / slug / MOTS_NAME, "".join(line + "\n" for line in mots[p]))
    _write_text(out / META_NAME, json.dumps(clip_meta(clip, prompts), indent=1))
    return out


def write_benchmark(
    out_root: str | os.PathLike,
    seeds: Iterable[int],
    config: WorldConfig | None = None,
    prompts: Iterable[str] = PROMPTS,
    crf: int = 18,
) -> list[Path]:
    """Write one clip per seed into ``out_root/clip_<seed>``; returns the clip folders."""
    root = Path(out_root)
    prompts = list(prompts)
    return [write_clip(generate_clip(seed, config), root / f"clip_{seed:05d}", prompts, crf) for seed in seeds]


def load_clip(clip_dir: str | os.PathLike) -> Clip:
    """Regenerate the ``Clip`` written in ``clip_dir`` from its ``meta.json`` (seed + config)."""
    path = Path(clip_dir) / META_NAME
    if not path.is_file():
        raise InputError(f"{path} not found: not a synthetic clip folder")
    meta = json.loads(path.read_text(encoding="utf-8"))
    return generate_clip(int(meta["seed"]), WorldConfig.from_dict(meta["config"]))

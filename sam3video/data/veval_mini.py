"""A miniature SA-Co/VEval set from the synthetic world: frames on disk and a ground truth in the official layout.

    python -m sam3video.data.veval_mini runs/veval-mini                 # 3 clips of 1 s
    sam3video benchmark veval runs/veval-mini/gt.json runs/veval-mini/frames --out runs/veval-mini/bench

Each clip is a video ``clipNNN`` (JPEG frames ``frames/clipNNN/00000.jpg`` ...); its (video, noun phrase) pairs
are every colour + shape prompt of the clip's objects (positives: one masklet per matching object, its
visible mask on each frame, null where hidden or out of the frame) and as many prompts of the vocabulary
that match nothing in it (negatives, ``num_masklets`` 0). Category ids are the prompts' places in
``PROMPTS`` (1-based). For tests and the demo: the real sets are SA-V, YT-Temporal-1B and SmartGlasses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..export.mots import encode_rle
from ..geometry import mask_box
from .clips import generate_clip
from .concepts import PROMPTS, TARGET_SHAPES
from .synthetic import WorldConfig


def _box(mask: np.ndarray) -> list[float]:
    """COCO ``xywh`` of a non-empty mask (its pixel extent)."""
    x0, y0, x1, y1 = mask_box(mask)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def write_mini_veval(root: str | Path, seeds=(0, 1, 2), seconds: float = 1.0) -> Path:
    """Write ``root/frames/clipNNN/*.jpg`` and ``root/gt.json`` for clips ``seeds``; returns the ground truth's path."""
    from PIL import Image

    root = Path(root)
    frames_root = root / "frames"
    videos, annotations, pairs = [], [], []
    phrases = [p for p in PROMPTS if p not in TARGET_SHAPES]  # colour + shape: one concept each
    for video_id, seed in enumerate(seeds):
        clip = generate_clip(seed, WorldConfig(duration_s=seconds))
        name = f"clip{seed:03d}"
        folder = frames_root / name
        folder.mkdir(parents=True, exist_ok=True)
        labels = []
        for t in range(clip.num_frames):
            image, _ = clip.frame(t)
            Image.fromarray(image).save(folder / f"{t:05d}.jpg", quality=95)
            labels.append(clip.label_map(t))
        width, height = clip.size
        videos.append({"id": video_id, "video_name": name, "height": height, "width": width,
                       "length": clip.num_frames, "file_names": [f"{name}/{t:05d}.jpg" for t in range(clip.num_frames)]})
        positives = [p for p in phrases if clip.objects_matching(p)]
        negatives = [p for p in phrases if not clip.objects_matching(p)]
        rng = np.random.default_rng(seed)
        negatives = [negatives[i] for i in sorted(rng.choice(len(negatives), min(len(positives), len(negatives)),
                                                             replace=False))]
        for phrase in positives + negatives:
            category_id = PROMPTS.index(phrase) + 1
            matching = clip.objects_matching(phrase)
            pairs.append({"id": len(pairs) + 1, "video_id": video_id, "category_id": category_id,
                          "noun_phrase": phrase, "num_masklets": len(matching)})
            for spec in matching:
                masks = [label == spec.object_id for label in labels]
                annotations.append({
                    "id": len(annotations) + 1, "video_id": video_id, "category_id": category_id,
                    "noun_phrase": phrase, "iscrowd": 0, "height": height, "width": width,
                    "segmentations": [{"size": [height, width], "counts": encode_rle(m[None])[0]} if m.any() else None
                                      for m in masks],
                    "bboxes": [_box(m) if m.any() else None for m in masks],
                    "areas": [int(m.sum()) if m.any() else None for m in masks]})
    gt = {"info": {"description": f"sam3video miniature VEval (synthetic clips {list(seeds)})"}, "videos": videos,
          "annotations": annotations, "video_np_pairs": pairs,
          "categories": [{"id": i + 1, "name": p} for i, p in enumerate(PROMPTS)]}
    path = root / "gt.json"
    path.write_text(json.dumps(gt, separators=(",", ":")))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for frames/ and gt.json")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    path = write_mini_veval(args.out, seeds=tuple(range(args.clips)), seconds=args.seconds)
    print(f"wrote {path} and {Path(args.out) / 'frames'}")


if __name__ == "__main__":
    main()

"""Shared helpers of the domain randomisation tests: a style with every option off, and truth checks."""

from __future__ import annotations

import numpy as np

from sam3video.data.styles import VISIBLE_OPACITY, StyleConfig
from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.data.truth import FrameTruth

#: Every randomisation off, 160x120 frames: the base each test switches one option on against.
OFF = StyleConfig(long_side_px=(160, 160), aspect=(4 / 3, 4 / 3), portrait_prob=0.0, train_fills=("flat",),
                  outline_prob=0.0, soft_edge_prob=0.0, transparent_prob=0.0, deform_prob=0.0, blur_prob=0.0,
                  noise_sigma=(0.0, 0.0), jpeg_prob=0.0, gray_prob=0.0, lighting_prob=0.0, shake_prob=0.0)
SEEDS = (0, 1, 2)


def world(style: StyleConfig | str, **kwargs) -> WorldConfig:
    return WorldConfig(duration_s=kwargs.pop("duration_s", 1.0), fps=kwargs.pop("fps", 10.0), style=style, **kwargs)


def _frames(config: WorldConfig, seeds=SEEDS, ts=(0, 5, 9)):
    return [generate_clip(seed, config).frame(t) for seed in seeds for t in ts]


def _same_truth(a: FrameTruth, b: FrameTruth) -> bool:
    return np.array_equal(a.label_map, b.label_map) and \
        [(o.object_id, o.box, o.area, o.visibility) for o in a.objects] == \
        [(o.object_id, o.box, o.area, o.visibility) for o in b.objects]


def _painted(clip, t: int) -> np.ndarray:
    """The label map painted from scratch: seen objects' full masks, back to front."""
    width, height = clip.size
    labels = np.zeros((height, width), np.int32)
    for oid in clip.draw_order:
        if clip.object_styles[oid - 1].opacity >= VISIBLE_OPACITY:
            labels[clip.full_mask(oid, t)] = oid
    return labels


def _within(values, bounds, slack: float = 1e-9) -> bool:
    values = np.asarray(values, float)
    return bool(values.min() >= bounds[0] - slack and values.max() <= bounds[1] + slack)


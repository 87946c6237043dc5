"""Backgrounds of randomised clips: the classic patterns with wider colours, plus fractal noise, grain
textures, clutter, photo-like blobs and (held out from training) a Voronoi mosaic.

``make_styled_background(kind, height, width, rng, config)`` returns (H, W, 3) float32 RGB in
[0, 255]. Colours come from ``backgrounds.background_colours`` with the ranges of ``StyleConfig``
(``background_contrast``, ``background_saturation``, ``background_value``). Sizes of pattern
features are relative to the frame's short side, so a pattern looks alike at every frame size.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from sam3video.data.backgrounds import BACKGROUND_KINDS, background_colours, make_pattern
from sam3video.data.concepts import hsv_to_rgb255
from sam3video.data.styles import HELDOUT_BACKGROUNDS, TRAIN_BACKGROUNDS, StyleConfig

FRACTAL_OCTAVES = (3, 5)  # inclusive count of octaves of value noise
FRACTAL_CELLS = (2, 5)  # cells across the coarsest octave
GRAIN_PERIOD = (0.03, 0.12)  # texture: period of the grain lines, in short sides
GRAIN_WARP = (0.5, 3.0)  # texture: how far the grain lines wander, in periods
GRAIN_FINE = (0.05, 0.2)  # texture: amplitude of the fine speckle on top, in mix units
CLUTTER_ITEMS = (8, 30)  # inclusive: strokes, elongated ellipses and thin bars over a base pattern
CLUTTER_SIZE = (0.03, 0.25)  # their length, in short sides
CLUTTER_SATURATION = 0.9  # clutter may be as saturated as objects; its shapes are never vocabulary
PHOTO_BLOBS = (4, 14)  # inclusive: soft colour blobs of a photo-like background
PHOTO_BLOB_SIZE = (0.1, 0.45)  # their standard deviation, in short sides
PHOTO_GRAIN = (1.0, 6.0)  # fine static grain, 0-255 units
VORONOI_CELLS = (12, 60)  # inclusive: cells of the held-out mosaic
_LOW_RES = 96  # photo-like and Voronoi backgrounds are drawn with this short side and resized


def _mix(first: np.ndarray, second: np.ndarray, mix: np.ndarray) -> np.ndarray:
    out = np.empty(mix.shape + (3,), np.float32)
    for channel in range(3):
        out[..., channel] = first[channel] + (second[channel] - first[channel]) * mix
    return out


def _colours(rng: np.random.Generator, config: StyleConfig) -> tuple[np.ndarray, np.ndarray]:
    return background_colours(rng, config.background_contrast, config.background_saturation, config.background_value)


def _value_noise(height: int, width: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 smooth noise in about [0, 1] with ``cells`` cells across the short side."""
    short = min(height, width)
    grid = rng.random((max(2, round(cells * height / short)), max(2, round(cells * width / short)))).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def _normalise(field: np.ndarray) -> np.ndarray:
    low, high = float(field.min()), float(field.max())
    return ((field - low) / max(high - low, 1e-6)).astype(np.float32)


def _fractal(height: int, width: int, rng: np.random.Generator, config: StyleConfig) -> np.ndarray:
    first, second = _colours(rng, config)
    octaves = int(rng.integers(FRACTAL_OCTAVES[0], FRACTAL_OCTAVES[1] + 1))
    cells = int(rng.integers(FRACTAL_CELLS[0], FRACTAL_CELLS[1] + 1))
    field = np.zeros((height, width), np.float32)
    for k in range(octaves):
        field += np.float32(0.55 ** k) * _value_noise(height, width, cells * 2 ** k, rng)
    return _mix(first, second, _normalise(field))


def _texture(height: int, width: int, rng: np.random.Generator, config: StyleConfig) -> np.ndarray:
    """Wood-like grain: wandering parallel lines plus a fine speckle."""
    first, second = _colours(rng, config)
    short = min(height, width)
    period = rng.uniform(*GRAIN_PERIOD) * short
    theta = rng.uniform(0.0, np.pi)
    u = (np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(theta))
         + np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(theta)))
    warp = np.float32(rng.uniform(*GRAIN_WARP) * period) * _value_noise(height, width, 3, rng)
    mix = 0.5 + 0.5 * np.sin((u + warp) * np.float32(2 * np.pi / period))
    fine = rng.random((max(2, height // 2), max(2, width // 2))).astype(np.float32) - 0.5
    mix += np.float32(rng.uniform(*GRAIN_FINE)) * cv2.resize(fine, (width, height), interpolation=cv2.INTER_LINEAR)
    return _mix(first, second, np.clip(mix, 0.0, 1.0))


def _random_colour(rng: np.random.Generator, config: StyleConfig, max_saturation: float) -> tuple[float, float, float]:
    rgb = hsv_to_rgb255(rng.uniform(0.0, 360.0), rng.uniform(0.0, max_saturation), rng.uniform(*config.background_value))
    return tuple(float(v) for v in rgb)


def _clutter(height: int, width: int, rng: np.random.Generator, config: StyleConfig) -> np.ndarray:
    """A classic pattern under strokes, ellipses of aspect >= 2.5 and bars of aspect >= 4 (never a
    circle, square, triangle or star)."""
    base_kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    first, second = _colours(rng, config)
    image = _mix(first, second, make_pattern(base_kind, height, width, rng))
    short = min(height, width)
    for _ in range(int(rng.integers(CLUTTER_ITEMS[0], CLUTTER_ITEMS[1] + 1))):
        colour = _random_colour(rng, config, CLUTTER_SATURATION)
        length = rng.uniform(*CLUTTER_SIZE) * short
        cx, cy, angle = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.0, 180.0)
        item = int(rng.integers(3))
        if item == 0:  # stroke
            dx, dy = length / 2 * np.cos(np.deg2rad(angle)), length / 2 * np.sin(np.deg2rad(angle))
            thickness = max(1, int(round(rng.uniform(0.003, 0.012) * short)))
            cv2.line(image, (int(cx - dx), int(cy - dy)), (int(cx + dx), int(cy + dy)), colour, thickness, cv2.LINE_AA)
        elif item == 1:  # elongated ellipse
            axes = (max(2, int(length / 2)), max(1, int(length / 2 / rng.uniform(2.5, 5.0))))
            cv2.ellipse(image, (int(cx), int(cy)), axes, angle, 0.0, 360.0, colour, -1, cv2.LINE_AA)
        else:  # thin bar
            box = cv2.boxPoints(((cx, cy), (length, length / rng.uniform(4.0, 10.0)), angle))
            cv2.fillPoly(image, [np.round(box).astype(np.int32)], colour, cv2.LINE_AA)
    return image


def _low_res_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, _LOW_RES / min(height, width))
    return max(2, round(height * scale)), max(2, round(width * scale))


def _photo(height: int, width: int, rng: np.random.Generator, config: StyleConfig) -> np.ndarray:
    """An out-of-focus photo: a gradient under soft colour blobs, with a fine grain."""
    lh, lw = _low_res_size(height, width)
    first, second = _colours(rng, config)
    image = _mix(first, second, make_pattern("gradient", lh, lw, rng))
    ys, xs = np.mgrid[0:lh, 0:lw].astype(np.float32)
    for _ in range(int(rng.integers(PHOTO_BLOBS[0], PHOTO_BLOBS[1] + 1))):
        colour = np.array(_random_colour(rng, config, config.background_saturation), np.float32)
        sigma = rng.uniform(*PHOTO_BLOB_SIZE) * min(lh, lw)
        cx, cy, weight = rng.uniform(0, lw), rng.uniform(0, lh), rng.uniform(0.4, 0.9)
        alpha = np.float32(weight) * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / np.float32(2 * sigma ** 2))
        image += alpha[..., None] * (colour - image)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.standard_normal((height, width), dtype=np.float32) * np.float32(rng.uniform(*PHOTO_GRAIN))
    image += grain[..., None]
    return np.clip(image, 0.0, 255.0)


def _voronoi(height: int, width: int, rng: np.random.Generator, config: StyleConfig) -> np.ndarray:
    """Held-out mosaic: Voronoi cells, each of one muted colour around two base colours."""
    lh, lw = _low_res_size(height, width)
    count = int(rng.integers(VORONOI_CELLS[0], VORONOI_CELLS[1] + 1))
    seeds = rng.random((count, 2)) * np.array([lw, lh])
    first, second = _colours(rng, config)
    palette = first + (second - first) * rng.random((count, 1)).astype(np.float32)
    palette += rng.uniform(-12.0, 12.0, size=(count, 3)).astype(np.float32)
    ys, xs = np.mgrid[0:lh, 0:lw].astype(np.float32) + np.float32(0.5)
    dist = (xs[None] - seeds[:, 0, None, None].astype(np.float32)) ** 2 + \
           (ys[None] - seeds[:, 1, None, None].astype(np.float32)) ** 2
    mosaic = np.clip(palette[np.argmin(dist, axis=0)], 0.0, 255.0).astype(np.float32)
    return cv2.resize(mosaic, (width, height), interpolation=cv2.INTER_LINEAR)


def _classic(kind: str) -> Callable[[int, int, np.random.Generator, StyleConfig], np.ndarray]:
    def draw(height: int, width: int, rng: np.random.Generator, config: StyleConfig) -> np.ndarray:
        first, second = _colours(rng, config)
        return _mix(first, second, make_pattern(kind, height, width, rng))
    return draw


_FAMILIES: dict[str, Callable[[int, int, np.random.Generator, StyleConfig], np.ndarray]] = {
    **{kind: _classic(kind) for kind in BACKGROUND_KINDS},
    "fractal": _fractal, "texture": _texture, "clutter": _clutter, "photo": _photo, "voronoi": _voronoi,
}
assert set(_FAMILIES) == set(TRAIN_BACKGROUNDS + HELDOUT_BACKGROUNDS)


def make_styled_background(kind: str, height: int, width: int, rng: np.random.Generator,
                           config: StyleConfig) -> np.ndarray:
    """(H, W, 3) float32 RGB in [0, 255] background of family ``kind``."""
    if kind not in _FAMILIES:
        raise ValueError(f"unknown background family {kind!r}; expected one of {sorted(_FAMILIES)}")
    return np.ascontiguousarray(_FAMILIES[kind](height, width, rng, config), dtype=np.float32)

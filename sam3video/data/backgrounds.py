"""Static backgrounds: flat colour, gradient, smooth noise, stripes, checker.

Two colours of moderate saturation and a moderate brightness difference are mixed by a pattern in
[0, 1]. All functions return (H, W, 3) float32 RGB in [0, 255] and take their randomness from ``rng``.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from sam3video.data.concepts import hsv_to_rgb255

BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noise", "stripes", "checker")


def background_colours(
    rng: np.random.Generator,
    contrast: tuple[float, float] = (0.08, 0.25),
    max_saturation: float = 0.35,
    value_range: tuple[float, float] = (0.25, 0.75),
) -> tuple[np.ndarray, np.ndarray]:
    """Two (3,) float32 RGB colours: a muted base and a second one ``contrast`` brighter or darker."""
    hue = rng.uniform(0.0, 360.0)
    sat = rng.uniform(0.0, max_saturation)
    val = rng.uniform(*value_range)
    delta = rng.uniform(*contrast) * rng.choice([-1.0, 1.0])
    if not 0.0 <= val + delta <= 1.0:
        delta = -delta
    hue2 = hue + rng.uniform(-40.0, 40.0)
    sat2 = float(np.clip(sat + rng.uniform(-0.1, 0.1), 0.0, max_saturation))
    first = np.array(hsv_to_rgb255(hue, sat, val), np.float32)
    second = np.array(hsv_to_rgb255(hue2, sat2, float(np.clip(val + delta, 0.0, 1.0))), np.float32)
    return first, second


def _coords(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 pixel coordinate along a random direction."""
    theta = rng.uniform(0.0, np.pi)
    xs = np.arange(width, dtype=np.float32) * np.float32(np.cos(theta))
    ys = np.arange(height, dtype=np.float32) * np.float32(np.sin(theta))
    return ys[:, None] + xs[None, :]


def _flat(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    return np.zeros((height, width), np.float32)


def _gradient(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    u = _coords(height, width, rng)
    return (u - u.min()) / max(float(u.max() - u.min()), 1e-6)


def _noise(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    cells = int(rng.integers(3, 9))
    grid = rng.random((cells, cells)).astype(np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(field, 0.0, 1.0)


def _stripes(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    period = rng.uniform(8.0, 40.0)
    wave = 0.5 + 0.5 * np.sin(_coords(height, width, rng) * np.float32(2 * np.pi / period))
    if rng.random() < 0.5:  # hard-edged stripes
        wave = (wave > 0.5).astype(np.float32)
    return wave.astype(np.float32)


def _checker(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    cell = int(rng.integers(8, 41))
    oy, ox = rng.integers(0, cell, size=2)
    rows = (np.arange(height) + oy) // cell
    cols = (np.arange(width) + ox) // cell
    return ((rows[:, None] + cols[None, :]) % 2).astype(np.float32)


_PATTERNS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "flat": _flat, "gradient": _gradient, "noise": _noise, "stripes": _stripes, "checker": _checker,
}


def make_pattern(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) float32 mixing pattern in [0, 1] of ``kind`` (one of ``BACKGROUND_KINDS``)."""
    if kind not in _PATTERNS:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUND_KINDS}")
    return _PATTERNS[kind](height, width, rng)


def make_background(
    kind: str,
    height: int,
    width: int,
    rng: np.random.Generator,
    contrast: tuple[float, float] = (0.08, 0.25),
) -> np.ndarray:
    """(H, W, 3) float32 RGB background of ``kind`` (one of ``BACKGROUND_KINDS``)."""
    if kind not in _PATTERNS:
        raise ValueError(f"unknown background kind {kind!r}; expected one of {BACKGROUND_KINDS}")
    first, second = background_colours(rng, contrast)
    mix = _PATTERNS[kind](height, width, rng)
    out = np.empty((height, width, 3), np.float32)
    for channel in range(3):  # per channel: much faster than broadcasting over a trailing axis of 3
        out[..., channel] = first[channel] + (second[channel] - first[channel]) * mix
    return out

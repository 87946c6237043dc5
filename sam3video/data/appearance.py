"""How a randomised object looks: its deformed outline and its fill, outline, edge and opacity.

The object's geometry is its (deformed) polygon; its truth mask is that polygon's hard raster (pixel
centres covered), whatever the look. Looks only change colours: fills vary the brightness inside the
object (in the object's own rotating frame), outlines recolour an INNER stroke (so they never leave
the mask), soft edges blur the coverage (a pixel just outside gets some colour, alpha < 0.5, and one
just inside loses some) and opacity scales the coverage. Images are (H, W, 3) float32 RGB in [0, 255].
"""

from __future__ import annotations

import cv2
import numpy as np

from sam3video.data import shapes
from sam3video.data.styles import ObjectStyle

TEXTURE_CELLS = 7  # "mottled" fill: a TEXTURE_CELLS x TEXTURE_CELLS random grid over the object
WOBBLE_HARMONICS = (2, 3)  # the radial wobble of a deformed outline: cos(k * angle) terms
_EXTENT = 1.25  # local coordinates of an object's pixels lie within about [-_EXTENT, _EXTENT] radii


def deformed_unit_outline(shape: str, style: ObjectStyle) -> np.ndarray:
    """(K, 2) float64 unit outline of ``shape`` (radius 1, angle 0) with the style's smooth radial
    ``wobble``, then ``stretch`` (x by 1 + s, y by 1 - s) and ``shear`` (x += shear * y)."""
    pts = np.array(shapes.unit_outline(shape), dtype=np.float64)
    if style.wobble:
        rng = np.random.default_rng([style.detail_seed, 0])
        theta = np.arctan2(pts[:, 1], pts[:, 0])
        radial = sum(rng.uniform(-1.0, 1.0) * np.cos(k * theta + rng.uniform(0.0, 2 * np.pi))
                     for k in WOBBLE_HARMONICS) / len(WOBBLE_HARMONICS)
        pts *= (1.0 + style.wobble * radial)[:, None]
    matrix = np.array([[1.0 + style.stretch, 0.0], [style.shear, 1.0 - style.stretch]])
    pts = pts @ matrix
    pts.setflags(write=False)
    return pts


def texture(style: ObjectStyle) -> np.ndarray:
    """(TEXTURE_CELLS, TEXTURE_CELLS) float32 in [0, 1): the static texture of a "mottled" fill."""
    return np.random.default_rng([style.detail_seed, 1]).random((TEXTURE_CELLS, TEXTURE_CELLS)).astype(np.float32)


def _shade(style: ObjectStyle, u: np.ndarray, v: np.ndarray, tex: np.ndarray | None) -> np.ndarray:
    """(h, w) float32 brightness change in [-fill_strength, fill_strength] at object coordinates u, v."""
    strength = np.float32(style.fill_strength)
    along = u * np.float32(np.cos(style.fill_angle)) + v * np.float32(np.sin(style.fill_angle))
    if style.fill == "gradient":
        return strength * np.clip(along / np.float32(_EXTENT), -1.0, 1.0)
    if style.fill == "shaded":  # a highlight at ``highlight``, darker towards the far rim
        dist = np.hypot(u - np.float32(style.highlight[0]), v - np.float32(style.highlight[1]))
        return strength * (1.0 - 2.0 * np.clip(dist / np.float32(1.5), 0.0, 1.0))
    if style.fill == "mottled":
        scale = np.float32((TEXTURE_CELLS - 1) / (2 * _EXTENT))
        mx, my = (u + np.float32(_EXTENT)) * scale, (v + np.float32(_EXTENT)) * scale
        sampled = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return strength * (2.0 * sampled - 1.0)
    if style.fill == "hatched":
        return strength * np.sign(np.sin(along * np.float32(2 * np.pi / style.hatch_period)))
    raise ValueError(f"unknown fill {style.fill!r}")


def _tone(rgb: np.ndarray, amount: np.ndarray | float) -> np.ndarray:
    """``rgb`` (3,) lightened towards white (amount > 0) or darkened towards black (amount < 0):
    (3,) for a scalar ``amount``, (h, w, 3) float32 for an (h, w) one."""
    amount = np.asarray(amount, np.float32)
    lighter = np.maximum(amount, np.float32(0.0))
    darker = amount - lighter
    channels = [np.float32(c) + lighter * np.float32(255.0 - c) + darker * np.float32(c) for c in rgb]
    return np.stack(channels, axis=-1)


def composite(
    image: np.ndarray,
    raster: tuple[int, int, np.ndarray],
    style: ObjectStyle,
    rgb: tuple[int, int, int],
    center: np.ndarray,
    radius: float,
    angle: float,
    tex: np.ndarray | None = None,
) -> None:
    """Draw one object over ``image`` (H, W, 3) float32 in place. ``raster`` = (x0, y0, mask) its
    unclipped hard raster (``shapes.raster``); ``center`` (x, y), ``radius`` and ``angle`` its state
    in this frame (for the fill's coordinates); ``tex`` its ``texture`` for a "mottled" fill."""
    x0, y0, mask = raster
    height, width = image.shape[:2]
    margin = int(np.ceil(3.0 * style.edge_sigma)) if style.edge_sigma > 0 else 0
    rx0, ry0 = x0 - margin, y0 - margin
    fx0, fy0 = max(rx0, 0), max(ry0, 0)
    fx1, fy1 = min(x0 + mask.shape[1] + margin, width), min(y0 + mask.shape[0] + margin, height)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    window = (slice(fy0 - ry0, fy1 - ry0), slice(fx0 - rx0, fx1 - rx0))
    solid = np.pad(mask, margin).astype(np.uint8) if margin else mask.view(np.uint8)
    colour = np.asarray(rgb, np.float32)
    layer = None
    if style.fill != "flat" or style.outline != "none":
        cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        inv_r = np.float32(1.0 / max(radius, 1e-6))
        xs = (np.arange(fx0, fx1, dtype=np.float32) + np.float32(0.5 - center[0])) * inv_r
        ys = (np.arange(fy0, fy1, dtype=np.float32) + np.float32(0.5 - center[1])) * inv_r
        u = xs[None, :] * cos + ys[:, None] * sin  # the inverse of shapes.place's rotation
        v = ys[:, None] * cos - xs[None, :] * sin
        layer = np.broadcast_to(colour, u.shape + (3,)).copy() if style.fill == "flat" else \
            _tone(colour, _shade(style, u, v, tex))
        if style.outline != "none":
            stroke = max(1, int(round(style.outline_width * radius)))
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * stroke + 1, 2 * stroke + 1))
            inner = cv2.erode(solid, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)[window]
            amount = style.outline_amount if style.outline == "light" else -style.outline_amount
            layer[inner == 0] = _tone(colour, amount)
    target = image[fy0:fy1, fx0:fx1]
    if margin == 0 and style.opacity >= 1.0:  # hard and opaque: copy the covered pixels
        covered = mask[window]
        target[covered] = colour if layer is None else layer[covered]
        return
    coverage = solid.astype(np.float32)
    if margin:
        coverage = cv2.GaussianBlur(coverage, (0, 0), style.edge_sigma, borderType=cv2.BORDER_CONSTANT)
    alpha = coverage[window] * np.float32(style.opacity)
    source = colour if layer is None else layer
    target += alpha[..., None] * (source - target)

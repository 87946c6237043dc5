"""Shape outlines and their rasterisation.

An outline is a (K, 2) float array of (x, y) pixel vertices. Rasterisation uses ``cv2.fillPoly`` with
sub-pixel vertices (4 fractional bits) and no anti-aliasing, so masks have hard, reproducible edges.
A polygon is rasterised on its own canvas and then cropped to the image (cv2's own clipping can move
edge pixels near the border), so a partly visible object shows exactly the crop of its whole raster.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

CIRCLE_VERTICES = 48
_SUBPIXEL_BITS = 4


@lru_cache(maxsize=None)
def unit_outline(shape: str) -> np.ndarray:
    """(K, 2) float64 vertices of ``shape`` with nominal radius 1, centred at the origin, angle 0.

    Sizes are chosen so that shapes of the same radius look about equally big. Read-only array.
    """
    if shape == "circle":
        angles = np.linspace(0.0, 2 * np.pi, CIRCLE_VERTICES, endpoint=False)
        pts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif shape == "square":
        half = 0.88
        pts = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    elif shape == "triangle":
        pts = _regular(3, 1.15, -np.pi / 2)
    elif shape == "hexagon":
        pts = _regular(6, 1.0, 0.0)
    elif shape == "star":
        outer = _regular(5, 1.2, -np.pi / 2)
        inner = _regular(5, 0.5, -np.pi / 2 + np.pi / 5)
        pts = np.stack([outer, inner], axis=1).reshape(10, 2)
    elif shape == "cross":
        a, b = 1.0, 0.34
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
                        [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]])
    else:
        raise ValueError(f"unknown shape {shape!r}")
    pts = np.asarray(pts, dtype=np.float64)
    pts.setflags(write=False)
    return pts


def _regular(n: int, radius: float, phase: float) -> np.ndarray:
    angles = phase + np.arange(n) * (2 * np.pi / n)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def outline(shape: str, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """(K, 2) float64 pixel vertices of ``shape`` at ``center`` (x, y), scaled by ``radius``, rotated by
    ``angle`` radians (clockwise on screen, since y points down)."""
    return place(unit_outline(shape), center, radius, angle)


def place(unit: np.ndarray, center: np.ndarray, radius: float, angle: float) -> np.ndarray:
    """(K, 2) float64 pixel vertices of a unit outline ``unit`` (K, 2) placed like ``outline`` does."""
    cos, sin = np.cos(angle), np.sin(angle)
    rot = np.array([[cos, sin], [-sin, cos]])
    return unit @ rot * radius + np.asarray(center, dtype=np.float64)


def polygon_area(vertices: np.ndarray) -> float:
    """Area in square pixels of a simple polygon (shoelace formula), ignoring the image bounds."""
    x, y = vertices[:, 0], vertices[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def fill(canvas: np.ndarray, vertices: np.ndarray, value: int) -> None:
    """Write ``value`` into the pixels of ``canvas`` (H, W) whose centres the polygon covers (in place)."""
    pts = np.round((vertices - 0.5) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    cv2.fillPoly(canvas, [pts], color=int(value), lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)


def rasterize(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of one polygon on its own: the crop of its unclipped ``raster`` to the image."""
    mask = np.zeros((height, width), bool)
    paste(mask, *raster(vertices), True)
    return mask


def pixel_bounds(vertices: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) integer pixel region, possibly outside the image, holding every pixel the
    polygon can cover (x1, y1 exclusive)."""
    low = np.floor(vertices.min(axis=0)).astype(int) - 1
    high = np.ceil(vertices.max(axis=0)).astype(int) + 1
    return int(low[0]), int(low[1]), int(high[0]), int(high[1])


def raster(vertices: np.ndarray) -> tuple[int, int, np.ndarray]:
    """The polygon rasterised on its own canvas, never clipped: ``(x0, y0, mask)`` where ``mask``
    (h, w) bool covers pixels x0..x0 + w - 1, y0..y0 + h - 1 (which may lie outside any image).
    Rasterisation is exact under integer translation, so a frame shows the crop of this mask."""
    x0, y0, x1, y1 = pixel_bounds(vertices)
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fill(canvas, vertices - np.array([x0, y0], np.float64), 1)
    return x0, y0, canvas.astype(bool)


def paste(target: np.ndarray, x0: int, y0: int, mask: np.ndarray, value: int | bool) -> None:
    """Set ``target`` (H, W) to ``value`` where ``mask`` (placed with its top-left at x0, y0) is True;
    the parts of ``mask`` outside ``target`` are dropped (in place)."""
    height, width = target.shape[:2]
    fx0, fy0 = max(x0, 0), max(y0, 0)
    fx1, fy1 = min(x0 + mask.shape[1], width), min(y0 + mask.shape[0], height)
    if fx1 <= fx0 or fy1 <= fy0:
        return
    crop = mask[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
    target[fy0:fy1, fx0:fx1][crop] = value

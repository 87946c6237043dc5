"""Pure functions that pair tracks with detections: overlap matrices and an optimal assignment.

Boxes are (N, 4) xyxy in pixels; masks are (N, H, W) bool of one frame size. Every function is
deterministic and returns float32 matrices of shape (N, M) (rows: first argument, e.g. tracks).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of xyxy boxes (N, 4) and (M, 4); 0 where the union is empty."""
    a = np.asarray(boxes_a, np.float32).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float32).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0).astype(np.float32)


def mask_iou(masks_a: np.ndarray, masks_b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of bool masks (N, H, W) and (M, H, W); 0 where both masks are empty.

    Both sets are cropped to the rows/columns where any mask is set, flattened to (N, P) float32 and
    intersected with one matrix product (exact for up to 2**24 pixels per mask).
    """
    a = np.asarray(masks_a, bool)
    b = np.asarray(masks_b, bool)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return np.zeros((n, m), np.float32)
    rows = np.flatnonzero(a.any(axis=(0, 2)) | b.any(axis=(0, 2)))
    cols = np.flatnonzero(a.any(axis=(0, 1)) | b.any(axis=(0, 1)))
    if len(rows) == 0:
        return np.zeros((n, m), np.float32)
    crop = np.s_[:, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    fa = a[crop].reshape(n, -1).astype(np.float32)
    fb = b[crop].reshape(m, -1).astype(np.float32)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def associate(cost: np.ndarray, max_cost: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal one-to-one assignment of rows (tracks) to columns (detections).

    ``cost`` (N, M) float; entries above ``max_cost`` (and inf/nan) are never matched. The assignment
    maximises the number of admissible pairs, then minimises their total cost (Hungarian algorithm).
    Returns ``matches`` (K, 2) int64 of (row, column) sorted by row, and the unmatched rows (N - K,)
    and columns (M - K,) as sorted int64 arrays.
    """
    cost = np.asarray(cost, np.float64)
    n, m = cost.shape
    ok = np.isfinite(cost) & (cost <= max_cost)
    matches = np.zeros((0, 2), np.int64)
    if ok.any():
        valid = cost[ok]
        # An inadmissible pair costs more than any set of admissible ones could save.
        big = (np.abs(valid).max() + 1.0) * (min(n, m) + 1) * 2
        rows, cols = linear_sum_assignment(np.where(ok, cost, big))
        keep = ok[rows, cols]
        matches = np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)
    unmatched_rows = np.setdiff1d(np.arange(n), matches[:, 0]).astype(np.int64)
    unmatched_cols = np.setdiff1d(np.arange(m), matches[:, 1]).astype(np.int64)
    return matches, unmatched_rows, unmatched_cols

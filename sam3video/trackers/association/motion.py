"""Constant-velocity Kalman filter of one box, as pure functions on (mean, covariance).

State (8,): centre x, centre y, width, height (pixels) and their change per frame. The filter follows
SORT (Bewley et al., "Simple Online and Realtime Tracking", ICIP 2016) with the (cx, cy, w, h) state
and the size-proportional noise of BoT-SORT (Aharon et al., "BoT-SORT: Robust Associations
Multi-Pedestrian Tracking", 2022): every standard deviation is a fraction of the box's width (x, w)
or height (y, h), so one set of weights serves small and large objects. Boxes in and out are (4,)
(cx, cy, w, h) float arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MOTION = np.eye(8)
_MOTION[:4, 4:] = np.eye(4)  # x_{t+1} = x_t + v_t
_OBSERVE = np.eye(4, 8)  # the box is observed, its velocity is not


@dataclass(frozen=True)
class MotionNoise:
    """Standard deviations as fractions of the box's width / height."""

    position: float = 1 / 40  # process noise of the box, per frame (BoT-SORT: 1/20; measured, docs/benchmarks.md)
    velocity: float = 1 / 80  # process noise of the velocity, per frame (BoT-SORT: 1/160)
    measurement: float = 1 / 20  # noise of an observed box

    def scale(self, box: np.ndarray) -> np.ndarray:
        """(4,) the (w, h, w, h) of ``box`` that each fraction multiplies."""
        w, h = max(float(box[2]), 1.0), max(float(box[3]), 1.0)
        return np.array([w, h, w, h])


def initiate(box: np.ndarray, noise: MotionNoise) -> tuple[np.ndarray, np.ndarray]:
    """(mean (8,), covariance (8, 8)) of a new track at ``box``, velocity 0 and uncertain."""
    scale = noise.scale(box)
    std = np.concatenate([2 * noise.position * scale, 10 * noise.velocity * scale])
    return np.concatenate([np.asarray(box, np.float64), np.zeros(4)]), np.diag(std**2)


def predict(mean: np.ndarray, cov: np.ndarray, noise: MotionNoise) -> tuple[np.ndarray, np.ndarray]:
    """The state one frame later."""
    scale = noise.scale(mean[:4])
    q = np.diag(np.concatenate([noise.position * scale, noise.velocity * scale]) ** 2)
    return _MOTION @ mean, _MOTION @ cov @ _MOTION.T + q


def update(mean: np.ndarray, cov: np.ndarray, box: np.ndarray, noise: MotionNoise
           ) -> tuple[np.ndarray, np.ndarray]:
    """The state after observing ``box`` (cx, cy, w, h)."""
    r = np.diag((noise.measurement * noise.scale(mean[:4])) ** 2)
    s = _OBSERVE @ cov @ _OBSERVE.T + r
    gain = np.linalg.solve(s, _OBSERVE @ cov).T  # cov H^T S^-1 (S symmetric)
    mean = mean + gain @ (np.asarray(box, np.float64) - _OBSERVE @ mean)
    cov = cov - gain @ s @ gain.T
    return mean, cov

"""Smooth object trajectories: centre, radius and rotation angle for every frame.

A trajectory integrates a smoothly varying velocity (speed and heading wobble around their initial
values), then is pinned to an anchor: the object is at ``anchor_xy`` at frame ``anchor_frame``. Two
objects pinned to the same anchor cross there. Bouncing objects are folded back into the frame (a
triangle wave, so the path stays continuous); transiting objects keep going and leave the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MotionSpec:
    """Parameters of one object's motion. Speeds in pixels per second, angles in radians."""

    radius: float
    speed: float
    heading: float
    anchor_frame: int
    anchor_xy: tuple[float, float]
    bounce: bool
    angle0: float = 0.0
    angular_speed: float = 0.0


@dataclass(frozen=True)
class Track:
    """Per-frame state of one object: ``center`` (T, 2) float64 (x, y) pixels, ``radius`` (T,), ``angle`` (T,)."""

    center: np.ndarray
    radius: np.ndarray
    angle: np.ndarray


def smooth_noise(
    rng: np.random.Generator,
    times: np.ndarray,
    period_s: tuple[float, float] = (2.0, 8.0),
    components: int = 3,
) -> np.ndarray:
    """(T,) smooth random signal in [-1, 1]: the mean of a few sinusoids with random periods and phases."""
    periods = rng.uniform(*period_s, size=components)
    phases = rng.uniform(0.0, 2 * np.pi, size=components)
    waves = np.sin(2 * np.pi * times[:, None] / periods[None, :] + phases[None, :])
    return waves.mean(axis=1)


def fold(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Reflect ``values`` into [low, high] as if bouncing between the two walls."""
    span = high - low
    if span <= 0:
        return np.full_like(values, (low + high) / 2)
    phase = np.mod(values - low, 2 * span)
    return low + np.where(phase > span, 2 * span - phase, phase)


def make_track(
    spec: MotionSpec,
    num_frames: int,
    fps: float,
    frame_size: tuple[int, int],
    rng: np.random.Generator,
    size_jitter: float = 0.12,
    speed_jitter: float = 0.35,
    turn_amplitude: float = 0.6,
    bounce_overhang: float = 0.4,
) -> Track:
    """The object's ``Track`` over ``num_frames`` frames of a ``frame_size`` = (width, height) image.

    ``size_jitter`` and ``speed_jitter`` are relative amplitudes of the smooth radius and speed changes,
    ``turn_amplitude`` the largest heading deviation (radians), ``bounce_overhang`` the fraction of the
    radius a bouncing object may stick out of the frame.
    """
    times = np.arange(num_frames, dtype=np.float64) / fps
    radius = spec.radius * (1.0 + size_jitter * smooth_noise(rng, times))
    speed = spec.speed * (1.0 + speed_jitter * smooth_noise(rng, times))
    heading = spec.heading + turn_amplitude * smooth_noise(rng, times)
    step = np.stack([np.cos(heading), np.sin(heading)], axis=1) * (speed / fps)[:, None]
    travelled = np.concatenate([np.zeros((1, 2)), np.cumsum(step[:-1], axis=0)], axis=0)
    anchor = min(max(spec.anchor_frame, 0), num_frames - 1)
    center = np.asarray(spec.anchor_xy, np.float64) + travelled - travelled[anchor]
    if spec.bounce:
        inset = spec.radius * (1.0 - bounce_overhang)
        for axis, extent in enumerate(frame_size):
            center[:, axis] = fold(center[:, axis], inset, extent - inset)
    angle = spec.angle0 + spec.angular_speed * times
    return Track(center=center, radius=radius, angle=angle)

"""A synthetic video world with exact ground truth: flat shapes moving over varied backgrounds.

``generate_classic_clip(seed, config)`` samples the objects and their motion; the returned ``Clip`` renders
any frame on demand (``clip.frame(t) -> (image, FrameTruth)``), deterministically from the seed alone.
``WorldConfig.style`` (None: this classic world, unchanged) switches on domain randomisation (``styles``,
``styled``): frame size, backgrounds, object looks, colours and camera effects drawn per clip;
``clips.generate_clip`` makes either.
Conventions: frame index ``t`` 0-based; object ids 1-based and stable over the clip; images (H, W, 3)
uint8 RGB; pixel (row y, column x) covers [x, x + 1) x [y, y + 1). Objects are drawn back to front by
``depth`` (0 = back), so a later object hides an earlier one and truth masks are the visible parts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from typing import Any, Iterator

import cv2
import numpy as np

from sam3video.data import shapes
from sam3video.data.backgrounds import BACKGROUND_KINDS, make_background
from sam3video.data.concepts import (
    DISTRACTOR_COLOURS, DISTRACTOR_SHAPES, PROMPTS, TARGET_COLOURS, TARGET_SHAPES, concept_matches,
    jittered_rgb,
)
from sam3video.data.motion import MotionSpec, Track, make_track
from sam3video.data.styles import SPLITS, StyleConfig
from sam3video.data.truth import FrameTruth, ObjectTruth, object_truth
from sam3video.errors import InputError

__all__ = [
    "PROMPTS", "Clip", "FrameTruth", "ObjectSpec", "ObjectTruth", "WorldConfig", "concept_matches",
    "generate_classic_clip",
]

_NOISE_PAD = 32  # the per-clip noise bank is this much larger than a frame; frames crop it at random


@dataclass(frozen=True)
class WorldConfig:
    """How clips are made. Ranges are (low, high), inclusive for counts. Lengths in pixels, times in s."""

    width: int = 320
    height: int = 240
    fps: float = 30.0
    duration_s: float = 10.0
    num_targets: tuple[int, int] = (3, 6)  # objects of a target colour and shape
    num_distractors: tuple[int, int] = (1, 3)  # objects with a distractor colour and/or shape
    same_concept_prob: float = 0.25  # chance a target repeats an earlier target's colour and shape
    radius_px: tuple[float, float] = (12.0, 30.0)
    size_jitter: float = 0.12  # relative amplitude of smooth size changes
    speed_px_s: tuple[float, float] = (25.0, 100.0)
    speed_jitter: float = 0.35  # relative amplitude of smooth speed changes
    turn_amplitude_rad: float = 0.6  # largest smooth deviation from the initial heading
    rotating_prob: float = 0.5
    max_rotation_deg_s: float = 40.0
    transit_prob: float = 0.35  # chance an object moves through the frame instead of bouncing inside
    bounce_overhang: float = 0.4  # fraction of its radius a bouncing object may stick out of the frame
    crossing_pairs: tuple[int, int] = (1, 2)  # pairs of objects sent through the same point together
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS
    background_contrast: tuple[float, float] = (0.08, 0.25)  # HSV value difference of the two colours
    hue_jitter_deg: float = 6.0
    saturation_jitter: float = 0.08
    value_jitter: float = 0.08
    noise_sigma: float = 3.0  # standard deviation of the per-frame pixel noise, in 0-255 units
    blur_prob: float = 0.5  # chance a clip is lightly blurred
    blur_sigma: tuple[float, float] = (0.5, 0.9)
    min_visible_px: int = 1  # objects with fewer visible pixels are absent from the truth
    # None: the classic world above. A StyleConfig (or the shorthand "train" / "heldout") randomises
    # the look per clip; width and height then only set the reference size for radius_px and
    # speed_px_s, which scale with the sampled frame (see styled.generate_styled_clip).
    style: StyleConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.style, str):
            if self.style not in SPLITS + ("classic",):
                raise InputError(f"style must be a StyleConfig, 'classic' or one of {SPLITS}, got {self.style!r}")
            object.__setattr__(self, "style", None if self.style == "classic" else StyleConfig(split=self.style))
        elif self.style is not None and not isinstance(self.style, StyleConfig):
            raise InputError(f"style must be a StyleConfig or None, got {type(self.style).__name__}")
        if self.width < 16 or self.height < 16 or self.width % 2 or self.height % 2:
            raise InputError(f"width and height must be even and >= 16 (H.264 yuv420p), got "
                             f"{self.width}x{self.height}")
        if not (self.fps > 0 and self.duration_s > 0):
            raise InputError(f"fps and duration_s must be positive, got {self.fps}, {self.duration_s}")
        for name in ("num_targets", "num_distractors", "crossing_pairs", "radius_px", "speed_px_s",
                     "background_contrast", "blur_sigma"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise InputError(f"{name} must be a range (low, high) with 0 <= low <= high, got {(low, high)}")
        if self.num_targets[1] + self.num_distractors[1] > 255:
            raise InputError("at most 255 objects per clip")
        if not (0 < self.radius_px[0] and self.radius_px[1] <= min(self.width, self.height) / 4):
            raise InputError(f"radius_px must be in (0, min(width, height) / 4], got {self.radius_px}")
        for name in ("same_concept_prob", "rotating_prob", "transit_prob", "blur_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"{name} must be a probability, got {getattr(self, name)}")
        unknown = set(self.backgrounds) - set(BACKGROUND_KINDS)
        if not self.backgrounds or unknown:
            raise InputError(f"backgrounds must be a non-empty subset of {BACKGROUND_KINDS}, got {self.backgrounds}")

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.duration_s * self.fps)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists); no "style" key for the classic world."""
        data = asdict(self)
        if self.style is None:
            del data["style"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorldConfig":
        """Inverse of ``to_dict``; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise InputError(f"unknown WorldConfig keys: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        if isinstance(values.get("style"), dict):
            values["style"] = StyleConfig.from_dict(values["style"])
        return cls(**values)


@dataclass(frozen=True)
class ObjectSpec:
    """One object of a clip: what it is (``shape``, ``colour`` name, jittered ``rgb``), its draw ``depth``
    (0 = back; deeper objects are hidden by shallower ones) and its motion. ``distractor`` is True when
    its colour or shape is outside the prompt vocabulary."""

    object_id: int
    shape: str
    colour: str
    rgb: tuple[int, int, int]
    depth: int
    distractor: bool
    motion: MotionSpec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class Clip:
    """A sampled clip. ``objects[i]`` has id ``i + 1`` and moves along ``tracks[i]``; ``background``
    (H, W, 3) float32 RGB. Frames are rendered on demand; rendering reads no global state."""

    seed: int
    config: WorldConfig
    objects: tuple[ObjectSpec, ...]
    tracks: tuple[Track, ...]
    background: np.ndarray
    background_kind: str
    blur_sigma: float
    draw_order: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        order = tuple(o.object_id for o in sorted(self.objects, key=lambda o: o.depth))
        object.__setattr__(self, "draw_order", order)

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    @property
    def fps(self) -> float:
        return self.config.fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels (a randomised clip samples its own)."""
        return self.config.width, self.config.height

    def object(self, object_id: int) -> ObjectSpec:
        return self.objects[object_id - 1]

    def objects_matching(self, prompt: str) -> tuple[ObjectSpec, ...]:
        return tuple(o for o in self.objects if concept_matches(o, prompt))

    def outline(self, object_id: int, t: int) -> np.ndarray:
        """(K, 2) float64 (x, y) pixel vertices of the object in frame ``t``, unclipped."""
        track, spec = self.tracks[object_id - 1], self.objects[object_id - 1]
        return shapes.outline(spec.shape, track.center[t], track.radius[t], track.angle[t])

    def full_mask(self, object_id: int, t: int) -> np.ndarray:
        """(H, W) bool: the object in frame ``t`` as if nothing hid it (still clipped to the frame)."""
        width, height = self.size
        return shapes.rasterize(self.outline(object_id, t), height, width)

    def label_map(self, t: int) -> np.ndarray:
        """(H, W) int32 id of the object seen at each pixel of frame ``t`` (0 = background)."""
        return self._render_labels(self._rasters(t))

    def image(self, t: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB frame ``t``."""
        rasters = self._rasters(t)
        return self._render_image(self._render_labels(rasters), t, rasters)

    def frame(self, t: int) -> tuple[np.ndarray, FrameTruth]:
        """(image (H, W, 3) uint8 RGB, its ground truth) of frame ``t`` (0-based)."""
        rasters = self._rasters(t)
        labels = self._render_labels(rasters)
        return self._render_image(labels, t, rasters), self._truth(labels, rasters, t)

    def frames(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray, FrameTruth]]:
        """Yield ``(t, image, truth)`` for frames ``start`` to ``stop`` (exclusive; default: the end)."""
        for t in range(start, self.num_frames if stop is None else min(stop, self.num_frames)):
            image, truth = self.frame(t)
            yield t, image, truth

    def _rasters(self, t: int) -> dict[int, tuple[int, int, np.ndarray]]:
        """Back to front: object id -> its unclipped raster ``(x0, y0, mask)`` in frame ``t``, for the
        objects whose outline reaches into the frame."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} outside the clip's {self.num_frames} frames")
        width, height = self.size
        rasters = {}
        for oid in self.draw_order:
            verts = self.outline(oid, t)
            x0, y0, x1, y1 = shapes.pixel_bounds(verts)
            if x1 > 0 and y1 > 0 and x0 < width and y0 < height:
                rasters[oid] = shapes.raster(verts)
        return rasters

    def _render_labels(self, rasters: dict[int, tuple[int, int, np.ndarray]]) -> np.ndarray:
        width, height = self.size
        labels = np.zeros((height, width), np.int32)
        for oid, (x0, y0, mask) in rasters.items():  # back to front: later objects overwrite
            shapes.paste(labels, x0, y0, mask, oid)
        return labels

    def _render_image(self, labels: np.ndarray, t: int, rasters: dict[int, tuple[int, int, np.ndarray]]) -> np.ndarray:
        image = self.background.copy()
        covered = np.flatnonzero(labels)
        image.reshape(-1, 3)[covered] = self._palette[labels.ravel()[covered]]
        if self.blur_sigma > 0:
            image = cv2.GaussianBlur(image, (0, 0), self.blur_sigma)
        image += self._noise(t)
        np.clip(image, 0.0, 255.0, out=image)
        return image.astype(np.uint8)

    def _truth(self, labels: np.ndarray, rasters: dict[int, tuple[int, int, np.ndarray]], t: int) -> FrameTruth:
        found: list[ObjectTruth] = []
        for oid in sorted(rasters):
            spec, (x0, y0, mask) = self.objects[oid - 1], rasters[oid]
            region = (x0, y0, x0 + mask.shape[1], y0 + mask.shape[0])
            truth = object_truth(labels, oid, spec.shape, spec.colour, region, int(np.count_nonzero(mask)),
                                 self.config.min_visible_px)
            if truth is not None:
                found.append(truth)
        return FrameTruth(frame_index=t, label_map=labels, objects=tuple(found))

    @cached_property
    def _palette(self) -> np.ndarray:
        palette = np.zeros((len(self.objects) + 1, 3), np.float32)
        for spec in self.objects:
            palette[spec.object_id] = spec.rgb
        return palette

    @property
    def _noise_sigma(self) -> float:
        return self.config.noise_sigma

    @cached_property
    def _noise_bank(self) -> np.ndarray:
        """Triangular noise (the sum of two uniform bytes) of standard deviation ``noise_sigma``; cheaper
        to draw than Gaussian noise and looks the same."""
        width, height = self.size
        shape = (height + _NOISE_PAD, width + _NOISE_PAD, 3)
        rng = np.random.default_rng([self.seed, 1])
        draws = [np.frombuffer(rng.bytes(int(np.prod(shape))), np.uint8).reshape(shape) for _ in range(2)]
        bank = draws[0].astype(np.float32)
        bank += draws[1]
        bank -= np.float32(255.0)
        bank *= np.float32(self._noise_sigma / (256.0 / np.sqrt(6.0)))
        bank += np.float32(0.5)  # so that the final truncation to uint8 rounds
        return bank

    def _noise(self, t: int) -> np.ndarray:
        """(H, W, 3) float32 noise of frame ``t``: a crop of the clip's noise bank at a per-frame offset."""
        width, height = self.size
        dy, dx, flip = np.random.default_rng([self.seed, 2, t]).integers(0, _NOISE_PAD, size=3)
        crop = self._noise_bank[dy:dy + height, dx:dx + width]
        return crop[::-1] if flip % 2 else crop


def generate_classic_clip(seed: int, config: WorldConfig | None = None) -> Clip:
    """Sample a clip of the classic world: objects, their motion and the background, all from ``seed``
    (an int >= 0); ``config.style`` is not looked at (``clips.generate_clip`` sends styled configs to ``styled``)."""
    config = config or WorldConfig()
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    rng = np.random.default_rng(seed)
    kinds = _sample_kinds(rng, config)
    depths = rng.permutation(len(kinds))
    motions = _sample_motions(rng, config, len(kinds))
    objects = tuple(
        ObjectSpec(object_id=i + 1, shape=shape, colour=colour,
                   rgb=jittered_rgb(colour, rng, config.hue_jitter_deg, config.saturation_jitter,
                                    config.value_jitter),
                   depth=int(depths[i]), distractor=distractor, motion=motions[i])
        for i, (shape, colour, distractor) in enumerate(kinds)
    )
    frame_size = (config.width, config.height)
    tracks = tuple(
        make_track(m, config.num_frames, config.fps, frame_size, rng, config.size_jitter,
                   config.speed_jitter, config.turn_amplitude_rad, config.bounce_overhang)
        for m in motions
    )
    kind = str(rng.choice(list(config.backgrounds)))
    background = make_background(kind, config.height, config.width, rng, config.background_contrast)
    blur = float(rng.uniform(*config.blur_sigma)) if rng.random() < config.blur_prob else 0.0
    return Clip(seed=seed, config=config, objects=objects, tracks=tracks, background=background,
                background_kind=kind, blur_sigma=blur)


def _sample_kinds(rng: np.random.Generator, config: WorldConfig) -> list[tuple[str, str, bool]]:
    """(shape, colour, distractor) of every object, in random order (which becomes the id order)."""
    kinds: list[tuple[str, str, bool]] = []
    for _ in range(int(rng.integers(config.num_targets[0], config.num_targets[1] + 1))):
        if kinds and rng.random() < config.same_concept_prob:
            kinds.append(kinds[int(rng.integers(len(kinds)))])
        else:
            kinds.append((str(rng.choice(TARGET_SHAPES)), str(rng.choice(TARGET_COLOURS)), False))
    for _ in range(int(rng.integers(config.num_distractors[0], config.num_distractors[1] + 1))):
        variant = int(rng.integers(3))  # 0: odd colour, 1: odd shape, 2: both
        shape = str(rng.choice(DISTRACTOR_SHAPES if variant else TARGET_SHAPES))
        colour = str(rng.choice(DISTRACTOR_COLOURS if variant != 1 else TARGET_COLOURS))
        kinds.append((shape, colour, True))
    return [kinds[i] for i in rng.permutation(len(kinds))]


def _sample_motions(rng: np.random.Generator, config: WorldConfig, count: int) -> list[MotionSpec]:
    """Motion of every object; ``crossing_pairs`` pairs share an anchor point and time."""
    width, height, frames = config.width, config.height, config.num_frames

    def central_point() -> tuple[float, float]:
        return float(rng.uniform(0.25, 0.75) * width), float(rng.uniform(0.25, 0.75) * height)

    motions = []
    for _ in range(count):
        bounce = bool(rng.random() >= config.transit_prob)
        if bounce:
            anchor_frame, anchor = 0, (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
        else:
            anchor_frame, anchor = int(rng.integers(int(0.1 * frames), int(0.9 * frames) + 1)), central_point()
        rotating = rng.random() < config.rotating_prob
        motions.append(MotionSpec(
            radius=float(rng.uniform(*config.radius_px)), speed=float(rng.uniform(*config.speed_px_s)),
            heading=float(rng.uniform(0, 2 * np.pi)), anchor_frame=anchor_frame, anchor_xy=anchor,
            bounce=bounce, angle0=float(rng.uniform(0, 2 * np.pi)),
            angular_speed=float(np.deg2rad(rng.uniform(-1, 1) * config.max_rotation_deg_s)) if rotating else 0.0,
        ))
    pairs = min(int(rng.integers(config.crossing_pairs[0], config.crossing_pairs[1] + 1)), count // 2)
    chosen = rng.permutation(count)[: 2 * pairs]
    for a, b in chosen.reshape(-1, 2):
        frame = int(rng.integers(int(0.15 * frames), int(0.85 * frames) + 1))
        point = central_point()
        turn = rng.uniform(np.pi / 3, np.pi) * rng.choice([-1.0, 1.0])
        motions[a] = replace(motions[a], anchor_frame=frame, anchor_xy=point)
        motions[b] = replace(motions[b], anchor_frame=frame, anchor_xy=point,
                              heading=motions[a].heading + float(turn))
    return motions


"""Domain randomisation of the synthetic world: what a randomised clip may look like, and its splits.

``StyleConfig`` holds every documented range and probability; ``sample_style(rng, config)`` draws one
clip's ``ClipStyle`` (frame size, background family, camera and sensor effects) and
``sample_object_style`` one object's ``ObjectStyle`` (fill, outline, edge, opacity, deformation);
``styled_rgb`` draws an object's colour from the range of its colour name (``COLOUR_RANGES``).

Splits: ``"train"`` draws backgrounds from ``train_backgrounds`` and fills from ``train_fills``;
``"heldout"`` draws them only from ``heldout_backgrounds`` / ``heldout_fills``, which training never
sees (the two are disjoint, checked). Every other range is shared by the two splits.

Reproducibility: every sampler draws the same count of random numbers in the same order whatever the
probabilities, ranges and families are, so turning one option off (probability 0) or narrowing one
range changes nothing else about a clip. Angles in radians, hues in degrees, lengths as documented.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np

from sam3video.data.backgrounds import BACKGROUND_KINDS
from sam3video.data.concepts import ALL_COLOURS, hsv_to_rgb255
from sam3video.errors import InputError

SPLITS: tuple[str, ...] = ("train", "heldout")
#: Background families: the classic patterns plus textured / cluttered / photo-like ones (``scenes``).
TRAIN_BACKGROUNDS: tuple[str, ...] = BACKGROUND_KINDS + ("fractal", "texture", "clutter", "photo")
HELDOUT_BACKGROUNDS: tuple[str, ...] = ("voronoi",)
#: Fill families of an object (``appearance``); outlines (none, dark, light) are shared by both splits.
TRAIN_FILLS: tuple[str, ...] = ("flat", "gradient", "shaded", "mottled")
HELDOUT_FILLS: tuple[str, ...] = ("hatched",)
OUTLINES: tuple[str, ...] = ("dark", "light")
#: An object is seen (in the label map and the truth) where it is the front-most object covering the
#: pixel centre among those of opacity >= VISIBLE_OPACITY; fainter objects are drawn but never occlude
#: and are absent from the truth (``StyleConfig.opacity`` keeps sampled objects above it).
VISIBLE_OPACITY = 0.5


@dataclass(frozen=True)
class HsvRange:
    """Colours of one name: hue in degrees (low may be negative: the range wraps through 0), saturation
    and value in [0, 1]; uniform within each range."""

    hue_deg: tuple[float, float]
    saturation: tuple[float, float]
    value: tuple[float, float]


#: name -> the range an object of that colour is drawn from. Target and distractor hue ranges never
#: overlap and leave gaps of 7-26 degrees; distractor hues may be drawn near their range's ends
#: (``StyleConfig.boundary_prob``). White has no hue boundary: its boundary is saturation <= 0.12.
COLOUR_RANGES: Mapping[str, HsvRange] = MappingProxyType({
    "red": HsvRange((-14.0, 12.0), (0.60, 1.00), (0.55, 1.00)),
    "orange": HsvRange((19.0, 38.0), (0.65, 1.00), (0.70, 1.00)),
    "yellow": HsvRange((46.0, 64.0), (0.60, 1.00), (0.75, 1.00)),
    "green": HsvRange((90.0, 150.0), (0.50, 1.00), (0.40, 0.95)),
    "cyan": HsvRange((168.0, 195.0), (0.50, 1.00), (0.60, 1.00)),
    "blue": HsvRange((205.0, 245.0), (0.55, 1.00), (0.50, 1.00)),
    "purple": HsvRange((262.0, 320.0), (0.40, 0.90), (0.45, 0.95)),
    "white": HsvRange((0.0, 360.0), (0.00, 0.12), (0.82, 1.00)),
})


@dataclass(frozen=True)
class StyleConfig:
    """Ranges of the randomised world. (low, high) ranges are uniform unless marked log-uniform;
    ``*_prob`` are per-clip (clip effects) or per-object (object looks) probabilities."""

    split: str = "train"
    train_backgrounds: tuple[str, ...] = TRAIN_BACKGROUNDS
    heldout_backgrounds: tuple[str, ...] = HELDOUT_BACKGROUNDS
    train_fills: tuple[str, ...] = TRAIN_FILLS
    heldout_fills: tuple[str, ...] = HELDOUT_FILLS
    # frame: the long side log-uniform, then rounded to even sizes; short side = long / aspect, so
    # with the defaults each side lies in [90, 1280] px and the long side in [160, 1280] px
    long_side_px: tuple[int, int] = (160, 1280)
    aspect: tuple[float, float] = (1.0, 16 / 9)  # long side / short side
    portrait_prob: float = 0.35  # height > width
    # objects: WorldConfig.radius_px and speed_px_s are scaled by short side / the config's short side
    size_scale: tuple[float, float] = (0.3, 2.2)  # log-uniform per-object radius factor on top of that
    min_radius_px: float = 3.0  # radii are clipped to [min_radius_px, short side / 4]
    boundary_prob: float = 0.5  # a distractor's hue lies within boundary_band_deg of its range's edge
    boundary_band_deg: float = 5.0
    # object looks (per object)
    fill_strength: tuple[float, float] = (0.10, 0.35)  # largest lightening/darkening of the fill
    hatch_period: tuple[float, float] = (0.25, 0.6)  # hatched fill: stripe period in object radii
    outline_prob: float = 0.35
    outline_width: tuple[float, float] = (0.06, 0.16)  # inner stroke, in object radii (>= 1 px)
    outline_amount: tuple[float, float] = (0.35, 0.75)  # blend of the fill towards black / white
    soft_edge_prob: float = 0.5
    edge_sigma_px: tuple[float, float] = (0.3, 1.2)  # Gaussian softening of the coverage; else hard
    transparent_prob: float = 0.2
    opacity: tuple[float, float] = (0.65, 0.9)  # fainter objects change colour names too much
    deform_prob: float = 0.5
    stretch: tuple[float, float] = (-0.10, 0.10)  # relative axis scaling (x by 1 + s, y by 1 - s)
    shear: tuple[float, float] = (-0.08, 0.08)
    wobble: tuple[float, float] = (0.0, 0.06)  # smooth radial wobble of the outline, relative
    # background
    background_contrast: tuple[float, float] = (0.05, 0.45)  # HSV value difference of its colours
    background_saturation: float = 0.5  # largest saturation of background colours
    background_value: tuple[float, float] = (0.10, 0.90)
    # camera and sensor (per clip)
    blur_prob: float = 0.4
    blur_sigma: tuple[float, float] = (0.4, 1.6)  # px
    noise_sigma: tuple[float, float] = (0.0, 10.0)  # per-pixel sensor noise, 0-255 units
    jpeg_prob: float = 0.4
    jpeg_quality: tuple[int, int] = (20, 90)  # inclusive
    gray_prob: float = 0.1
    lighting_prob: float = 0.6
    light_gain: tuple[float, float] = (0.75, 1.25)  # clip-wide brightness factor
    light_tint: tuple[float, float] = (-0.08, 0.08)  # per-channel relative colour cast
    light_flicker: tuple[float, float] = (0.0, 0.25)  # relative amplitude of the change over time
    light_gradient: tuple[float, float] = (0.0, 0.3)  # illumination 1 -/+ this across the frame
    light_period_s: tuple[float, float] = (1.0, 6.0)  # periods of the change over time
    shake_prob: float = 0.3
    shake_amplitude: tuple[float, float] = (0.002, 0.015)  # largest offset, in short sides
    shake_period_s: tuple[float, float] = (0.15, 0.8)

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise InputError(f"split must be one of {SPLITS}, got {self.split!r}")
        for name in ("train_backgrounds", "heldout_backgrounds", "train_fills", "heldout_fills"):
            if not getattr(self, name):
                raise InputError(f"{name} must not be empty")
        known_bg, known_fill = set(TRAIN_BACKGROUNDS + HELDOUT_BACKGROUNDS), set(TRAIN_FILLS + HELDOUT_FILLS)
        if not set(self.train_backgrounds + self.heldout_backgrounds) <= known_bg:
            raise InputError(f"backgrounds must be among {sorted(known_bg)}")
        if not set(self.train_fills + self.heldout_fills) <= known_fill:
            raise InputError(f"fills must be among {sorted(known_fill)}")
        if set(self.train_backgrounds) & set(self.heldout_backgrounds) or set(self.train_fills) & set(self.heldout_fills):
            raise InputError("train and held-out families must be disjoint")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise InputError(f"{f.name} must be a probability, got {value}")
            is_range = f.type.startswith(("tuple[float, float]", "tuple[int, int]"))
            if is_range and not value[0] <= value[1]:
                raise InputError(f"{f.name} must be a range (low, high), got {value}")
        if not (16 <= self.long_side_px[0] and 1.0 <= self.aspect[0] and self.long_side_px[0] / self.aspect[1] >= 16):
            raise InputError("frames must be at least 16 px on each side")
        if not (0 < self.size_scale[0] and 0 < self.min_radius_px and 0 < self.opacity[0] and self.opacity[1] <= 1):
            raise InputError("size_scale, min_radius_px and opacity must be positive (opacity <= 1)")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise InputError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")

    @property
    def backgrounds(self) -> tuple[str, ...]:
        """The background families of this split."""
        return self.train_backgrounds if self.split == "train" else self.heldout_backgrounds

    @property
    def fills(self) -> tuple[str, ...]:
        """The fill families of this split."""
        return self.train_fills if self.split == "train" else self.heldout_fills

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StyleConfig:
        """Inverse of ``to_dict`` (lists become tuples); unknown keys are an error."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InputError(f"unknown StyleConfig keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class ClipStyle:
    """One clip's sampled look. Neutral values mean "off": ``blur_sigma`` 0, ``noise_sigma`` 0,
    ``jpeg_quality`` 0 (no re-encoding), ``light_*`` gain 1 / tint 0 / flicker 0 / gradient 0,
    ``shake_px`` 0. ``signal_seed`` seeds the smooth signals over time (flicker, shake)."""

    split: str
    width: int
    height: int
    background: str
    blur_sigma: float
    noise_sigma: float
    jpeg_quality: int
    gray: bool
    light_gain: float
    light_tint: tuple[float, float, float]
    light_flicker: float
    light_gradient: float
    light_angle: float
    light_period_s: tuple[float, float]
    shake_px: float
    shake_period_s: tuple[float, float]
    signal_seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ObjectStyle:
    """One object's sampled look. ``fill`` family with ``fill_strength`` (0 for "flat"), direction
    ``fill_angle`` (object frame), ``hatch_period`` and ``highlight`` (x, y) in object radii;
    ``outline`` "none" / "dark" / "light" with ``outline_width`` (radii) and ``outline_amount``;
    ``edge_sigma`` px (0 = hard edge); ``opacity`` in (0, 1]; ``stretch``, ``shear``, ``wobble``
    deform the outline (all 0 = undeformed); ``detail_seed`` seeds its texture and wobble."""

    fill: str
    fill_strength: float
    fill_angle: float
    hatch_period: float
    highlight: tuple[float, float]
    outline: str
    outline_width: float
    outline_amount: float
    edge_sigma: float
    opacity: float
    stretch: float
    shear: float
    wobble: float
    detail_seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    """One uniform draw in [low, high]; consumes exactly one random number even when low == high."""
    return float(bounds[0] + (bounds[1] - bounds[0]) * rng.random())


def _log_uniform(rng: np.random.Generator, bounds: Sequence[float]) -> float:
    return float(np.exp(_uniform(rng, (np.log(bounds[0]), np.log(bounds[1])))))


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """A uniform choice consuming exactly one random number whatever ``len(options)``."""
    return options[min(int(rng.random() * len(options)), len(options) - 1)]


def _integer(rng: np.random.Generator, bounds: Sequence[int]) -> int:
    """A uniform integer in [low, high] (inclusive), consuming exactly one random number."""
    return int(bounds[0]) + min(int(rng.random() * (bounds[1] - bounds[0] + 1)), int(bounds[1] - bounds[0]))


def _flag(rng: np.random.Generator, prob: float) -> bool:
    return bool(rng.random() < prob)


def _even(value: float) -> int:
    return max(16, 2 * int(round(value / 2)))


def sample_frame_size(rng: np.random.Generator, config: StyleConfig) -> tuple[int, int]:
    """(width, height) even pixels: the long side log-uniform in ``long_side_px``, the short side the
    long one over an ``aspect`` draw, portrait (height > width) with ``portrait_prob``."""
    long_side = _even(min(_log_uniform(rng, config.long_side_px), config.long_side_px[1]))
    short_side = _even(long_side / _uniform(rng, config.aspect))
    portrait = _flag(rng, config.portrait_prob)
    return (short_side, long_side) if portrait else (long_side, short_side)


def sample_style(rng: np.random.Generator, config: StyleConfig | str = "train") -> ClipStyle:
    """One clip's ``ClipStyle``; ``config`` a ``StyleConfig`` or a split name (default ranges). The
    background family comes only from the families of ``config.split``."""
    config = StyleConfig(split=config) if isinstance(config, str) else config
    width, height = sample_frame_size(rng, config)
    background = _pick(rng, config.backgrounds)
    blur, blur_sigma = _flag(rng, config.blur_prob), _uniform(rng, config.blur_sigma)
    noise_sigma = _uniform(rng, config.noise_sigma)
    jpeg, quality = _flag(rng, config.jpeg_prob), _integer(rng, config.jpeg_quality)
    gray = _flag(rng, config.gray_prob)
    lit = _flag(rng, config.lighting_prob)
    gain = _uniform(rng, config.light_gain)
    tint = tuple(_uniform(rng, config.light_tint) for _ in range(3))
    flicker, gradient = _uniform(rng, config.light_flicker), _uniform(rng, config.light_gradient)
    angle = _uniform(rng, (0.0, 2 * np.pi))
    light_periods = (_uniform(rng, config.light_period_s), _uniform(rng, config.light_period_s))
    shaken, shake = _flag(rng, config.shake_prob), _uniform(rng, config.shake_amplitude) * min(width, height)
    shake_periods = (_uniform(rng, config.shake_period_s), _uniform(rng, config.shake_period_s))
    return ClipStyle(
        split=config.split, width=width, height=height, background=background,
        blur_sigma=blur_sigma if blur else 0.0, noise_sigma=noise_sigma, jpeg_quality=quality if jpeg else 0,
        gray=gray, light_gain=gain if lit else 1.0,
        light_tint=tuple(float(v) for v in tint) if lit else (0.0, 0.0, 0.0),
        light_flicker=flicker if lit else 0.0, light_gradient=gradient if lit else 0.0, light_angle=angle,
        light_period_s=light_periods, shake_px=shake if shaken else 0.0, shake_period_s=shake_periods,
        signal_seed=int(rng.integers(0, 2**62)),
    )


def sample_object_style(rng: np.random.Generator, config: StyleConfig) -> ObjectStyle:
    """One object's ``ObjectStyle``; the fill family comes only from the families of ``config.split``."""
    fill = _pick(rng, config.fills)
    strength, angle = _uniform(rng, config.fill_strength), _uniform(rng, (0.0, 2 * np.pi))
    period = _uniform(rng, config.hatch_period)
    highlight = (_uniform(rng, (-0.5, 0.5)), _uniform(rng, (-0.5, 0.5)))
    outlined, kind = _flag(rng, config.outline_prob), _pick(rng, OUTLINES)
    width, amount = _uniform(rng, config.outline_width), _uniform(rng, config.outline_amount)
    soft, sigma = _flag(rng, config.soft_edge_prob), _uniform(rng, config.edge_sigma_px)
    transparent, opacity = _flag(rng, config.transparent_prob), _uniform(rng, config.opacity)
    deformed = _flag(rng, config.deform_prob)
    stretch, shear, wobble = _uniform(rng, config.stretch), _uniform(rng, config.shear), _uniform(rng, config.wobble)
    return ObjectStyle(
        fill=fill, fill_strength=0.0 if fill == "flat" else strength, fill_angle=angle, hatch_period=period,
        highlight=highlight, outline=kind if outlined else "none", outline_width=width, outline_amount=amount,
        edge_sigma=sigma if soft else 0.0, opacity=opacity if transparent else 1.0,
        stretch=stretch if deformed else 0.0, shear=shear if deformed else 0.0, wobble=wobble if deformed else 0.0,
        detail_seed=int(rng.integers(0, 2**62)),
    )


def styled_rgb(colour: str, rng: np.random.Generator, distractor: bool, config: StyleConfig) -> tuple[int, int, int]:
    """0-255 RGB of an object named ``colour``: uniform in ``COLOUR_RANGES[colour]``; a ``distractor``
    colour's hue lies, with probability ``boundary_prob``, within ``boundary_band_deg`` of one end of
    its range (next to a target colour's range). Draws 5 random numbers whatever the case."""
    if colour not in ALL_COLOURS:
        raise InputError(f"unknown colour {colour!r}")
    bounds = COLOUR_RANGES[colour]
    low, high = bounds.hue_deg
    hue = _uniform(rng, bounds.hue_deg)
    near, upper, offset = _flag(rng, config.boundary_prob), _flag(rng, 0.5), _uniform(rng, (0.0, 1.0))
    band = min(config.boundary_band_deg, (high - low) / 2)
    if distractor and near and high - low < 360.0:
        hue = high - offset * band if upper else low + offset * band
    sat, val = _uniform(rng, bounds.saturation), _uniform(rng, bounds.value)
    return hsv_to_rgb255(hue % 360.0, sat, val)


def hue_in_range(hue_deg: float, bounds: tuple[float, float], slack: float = 0.0) -> bool:
    """Whether ``hue_deg`` lies in the (possibly wrapping) hue range ``bounds``, widened by ``slack``."""
    low, high = bounds[0] - slack, bounds[1] + slack
    if high - low >= 360.0:
        return True
    return (hue_deg - low) % 360.0 <= high - low

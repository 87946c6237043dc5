"""Randomised clips: the synthetic world with a per-clip ``ClipStyle`` and per-object ``ObjectStyle``.

``clips.generate_clip(seed, WorldConfig(style=StyleConfig(split)))`` lands here. The clip's frame size,
background family and camera effects are drawn from ``StyleConfig`` (``styles``); objects, motion and
counts follow the ``WorldConfig`` with ``radius_px`` and ``speed_px_s`` scaled by the sampled short
side over the config's short side, and each radius further by a log-uniform ``size_scale``.

Ground truth stays exact: geometry (deformation, camera shake, frame size) is in the outlines that
are rasterised for the truth; looks and effects (fills, outlines, soft edges, lighting, blur, noise,
JPEG, gray) only change colours. An object is seen where it is the front-most object covering the
pixel centre among those with opacity >= ``styles.VISIBLE_OPACITY``; fainter ones are drawn but never
hide anything and never appear in the truth.

Independent random streams (``np.random.default_rng([seed, stream])``): the clip style, the objects
and motion, their sizes, their colours, their looks and the background each have their own, so that
changing one option of ``StyleConfig`` leaves the other draws alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from sam3video.data import appearance, effects, shapes
from sam3video.data.motion import Track, make_track
from sam3video.data.scenes import make_styled_background
from sam3video.data.styles import (
    VISIBLE_OPACITY, ClipStyle, ObjectStyle, StyleConfig, sample_object_style, sample_style, styled_rgb,
)
from sam3video.data.synthetic import Clip, FrameTruth, ObjectSpec, WorldConfig, _sample_kinds, _sample_motions

STYLE_STREAM, OBJECT_STREAM, SIZE_STREAM, COLOUR_STREAM, LOOK_STREAM, BACKGROUND_STREAM = range(10, 16)


@dataclass(frozen=True, eq=False, kw_only=True)
class StyledClip(Clip):
    """A randomised clip. ``style`` its look, ``object_styles[i]`` that of object ``i + 1``; ``scene``
    (H + 2 pad, W + 2 pad, 3) float32 background of which frame ``t`` shows the crop moved by
    ``shake[t]`` = (dx, dy) whole pixels (``background`` is the unmoved (H, W, 3) crop). The tracks
    already include the shake."""

    style: ClipStyle
    object_styles: tuple[ObjectStyle, ...]
    scene: np.ndarray
    pad: int
    shake: np.ndarray

    @property
    def size(self) -> tuple[int, int]:
        return self.style.width, self.style.height

    @property
    def gray(self) -> bool:
        return self.style.gray

    def outline(self, object_id: int, t: int) -> np.ndarray:
        track = self.tracks[object_id - 1]
        return shapes.place(self._unit_outlines[object_id - 1], track.center[t], track.radius[t], track.angle[t])

    @cached_property
    def _unit_outlines(self) -> tuple[np.ndarray, ...]:
        return tuple(appearance.deformed_unit_outline(o.shape, s) for o, s in zip(self.objects, self.object_styles))

    @cached_property
    def _textures(self) -> tuple[np.ndarray | None, ...]:
        return tuple(appearance.texture(s) if s.fill == "mottled" else None for s in self.object_styles)

    @cached_property
    def _gains(self) -> np.ndarray:
        return effects.lighting_gains(self.style, self.num_frames, self.fps)

    @cached_property
    def _illumination(self) -> np.ndarray | None:
        return effects.illumination(self.style)

    @property
    def _noise_sigma(self) -> float:
        return self.style.noise_sigma

    def _render_labels(self, rasters: dict[int, tuple[int, int, np.ndarray]]) -> np.ndarray:
        seen = {oid: r for oid, r in rasters.items() if self.object_styles[oid - 1].opacity >= VISIBLE_OPACITY}
        return super()._render_labels(seen)

    def _render_image(self, labels: np.ndarray, t: int, rasters: dict[int, tuple[int, int, np.ndarray]]) -> np.ndarray:
        width, height = self.size
        dx, dy = (int(v) for v in self.shake[t])
        image = self.scene[self.pad - dy:self.pad - dy + height, self.pad - dx:self.pad - dx + width].copy()
        for oid, raster in rasters.items():  # back to front
            track = self.tracks[oid - 1]
            appearance.composite(image, raster, self.object_styles[oid - 1], self.objects[oid - 1].rgb,
                                 track.center[t], float(track.radius[t]), float(track.angle[t]),
                                 self._textures[oid - 1])
        return effects.finish_frame(image, self.style, self._gains[t], self._illumination, self._noise(t))

    def _truth(self, labels: np.ndarray, rasters: dict[int, tuple[int, int, np.ndarray]], t: int) -> FrameTruth:
        truth = super()._truth(labels, rasters, t)
        return replace(truth, gray=True) if self.style.gray else truth


def resized_world(config: WorldConfig, width: int, height: int, size_scale: float = 1.0) -> WorldConfig:
    """``config`` for (``width``, ``height``) frames: ``radius_px`` and ``speed_px_s`` scaled by the
    ratio of the short sides (radii also by ``size_scale``, capped at a quarter of the short side)."""
    short = min(width, height)
    scale = short / min(config.width, config.height)
    radius = tuple(min(r * scale * size_scale, short / 4) for r in config.radius_px)
    speed = tuple(v * scale for v in config.speed_px_s)
    return replace(config, width=width, height=height, radius_px=radius, speed_px_s=speed)


def styled_world(config: WorldConfig, style: ClipStyle) -> WorldConfig:
    """The classic config of a clip of ``style``'s frame size (``resized_world``)."""
    return replace(resized_world(config, style.width, style.height), style=None)


def generate_styled_clip(seed: int, config: WorldConfig) -> StyledClip:
    """A randomised clip from ``seed`` and ``config`` (whose ``style`` must be set)."""
    if config.style is None:
        raise ValueError("generate_styled_clip needs a config with a style")
    looks: StyleConfig = config.style
    style = sample_style(np.random.default_rng([seed, STYLE_STREAM]), looks)
    world = styled_world(config, style)
    short = min(style.width, style.height)
    rng = np.random.default_rng([seed, OBJECT_STREAM])
    kinds = _sample_kinds(rng, world)
    depths = rng.permutation(len(kinds))
    motions = _sample_motions(rng, world, len(kinds))
    sizes = np.random.default_rng([seed, SIZE_STREAM])
    scale_log = np.log(looks.size_scale)
    motions = [replace(m, radius=float(np.clip(m.radius * np.exp(sizes.uniform(*scale_log)),
                                               looks.min_radius_px, short / 4)))
               for m in motions]
    colours = np.random.default_rng([seed, COLOUR_STREAM])
    objects = tuple(
        ObjectSpec(object_id=i + 1, shape=shape, colour=colour, rgb=styled_rgb(colour, colours, distractor, looks),
                   depth=int(depths[i]), distractor=distractor, motion=motions[i])
        for i, (shape, colour, distractor) in enumerate(kinds)
    )
    look_rng = np.random.default_rng([seed, LOOK_STREAM])
    object_styles = tuple(sample_object_style(look_rng, looks) for _ in objects)
    shake = effects.shake_offsets(style, world.num_frames, world.fps)
    tracks = []
    for m in motions:
        track = make_track(m, world.num_frames, world.fps, (style.width, style.height), rng, world.size_jitter,
                           world.speed_jitter, world.turn_amplitude_rad, world.bounce_overhang)
        tracks.append(Track(center=track.center + shake, radius=track.radius, angle=track.angle))
    pad = int(np.ceil(looks.shake_amplitude[1] * short)) + 1  # the same whether this clip shakes or not
    scene = make_styled_background(style.background, style.height + 2 * pad, style.width + 2 * pad,
                                   np.random.default_rng([seed, BACKGROUND_STREAM]), looks)
    return StyledClip(seed=seed, config=config, objects=objects, tracks=tuple(tracks),
                      background=scene[pad:pad + style.height, pad:pad + style.width], background_kind=style.background,
                      blur_sigma=style.blur_sigma, style=style, object_styles=object_styles, scene=scene, pad=pad,
                      shake=shake)

"""Domain randomisation, sampled: the classic world is untouched (pinned), the splits never share
families, and every randomisation is drawn at its documented rate and within its documented range."""

from __future__ import annotations

import colorsys
import hashlib
from pathlib import Path

import numpy as np
import pytest

from sam3video.data import appearance, effects, shapes
from sam3video.data.concepts import ALL_COLOURS, DISTRACTOR_COLOURS, TARGET_SHAPES
from sam3video.data.scenes import make_styled_background
from sam3video.data.styled import StyledClip
from sam3video.data.styles import (
    COLOUR_RANGES, HELDOUT_BACKGROUNDS, HELDOUT_FILLS, TRAIN_BACKGROUNDS, TRAIN_FILLS, VISIBLE_OPACITY,
    StyleConfig, hue_in_range, sample_object_style, sample_style, styled_rgb,
)
from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.data.training import sample_training_example
from sam3video.errors import InputError
from tests.synth.style_helpers import _within, world

DRAWS = 3000  # style samples for rates and ranges (cheap: no rendering)


CLASSIC = Path(__file__).parent.parent / "data" / "classic_world.npz"  # see test_classic_world_is_unchanged
BLOCK = 16  # images are compared as means of BLOCK x BLOCK pixel blocks (see below)


def _truth_digest(clip, ts) -> str:
    """sha256 of the truth of frames ``ts`` (label maps, masks, boxes: integers) and of the clip's specs."""
    h = hashlib.sha256()
    for t in ts:
        _, truth = clip.frame(t)
        h.update(truth.label_map.tobytes())
        for o in truth.objects:
            h.update(repr((o.object_id, o.shape, o.colour, o.box, round(o.visibility, 9), o.area)).encode())
            h.update(np.packbits(o.mask).tobytes())
    h.update(repr([o.to_dict() for o in clip.objects]).encode())
    h.update(repr((clip.background_kind, clip.blur_sigma)).encode())
    return h.hexdigest()


def block_means(image: np.ndarray) -> np.ndarray:
    """(H // BLOCK, W // BLOCK, 3) float32 means of an (H, W, 3) uint8 image's pixel blocks."""
    h, w = image.shape[0] // BLOCK * BLOCK, image.shape[1] // BLOCK * BLOCK
    blocks = image[:h, :w].astype(np.float64).reshape(h // BLOCK, BLOCK, w // BLOCK, BLOCK, 3)
    return blocks.mean(axis=(1, 3)).astype(np.float32)


def _classic_cases():
    """(name, clip, frame indices) of the pinned classic clips."""
    small = WorldConfig(width=162, height=98, duration_s=1.5, fps=10, radius_px=(8.0, 20.0))
    return [("default", generate_clip(3, WorldConfig(duration_s=1.0)), (0, 14, 29)),
            ("small", generate_clip(5, small), (0, 7, 14))]


def test_classic_world_is_unchanged() -> None:
    """The classic world (no ``style``) as it was before domain randomisation existed: the truth
    exactly (sha256 of label maps, masks, boxes and specs) and the pixels within 0.05 of 255 per
    16x16 block mean (``tests/data/classic_world.npz``, made by this code before the change). Pixels
    are compared loosely because float32 blurs and noise may round differently on another CPU's SIMD
    path; a changed random stream or renderer moves block means by whole units."""
    pinned = np.load(CLASSIC)
    for name, clip, frames in _classic_cases():
        assert _truth_digest(clip, frames) == str(pinned[f"{name}_truth"]), name
        means = np.stack([block_means(clip.frame(t)[0]) for t in frames])
        np.testing.assert_allclose(means, pinned[f"{name}_pixels"], atol=0.05, rtol=0, err_msg=name)
    ex = sample_training_example(np.random.default_rng(7), WorldConfig(width=160, height=120, duration_s=1.0,
                                                                       radius_px=(8.0, 18.0)))
    summary = repr((ex.prompt, ex.negative_prompts, ex.object_ids.tolist(), ex.boxes.tolist())).encode()
    assert hashlib.sha256(summary).hexdigest() == str(pinned["example_truth"])
    np.testing.assert_allclose(block_means(ex.image), pinned["example_pixels"], atol=0.05, rtol=0)
    assert "style" not in WorldConfig().to_dict() and WorldConfig(style="classic") == WorldConfig()
    assert not isinstance(generate_clip(0, WorldConfig(duration_s=0.5)), StyledClip)


def test_splits_never_draw_each_others_families() -> None:
    rng = {split: np.random.default_rng(1) for split in ("train", "heldout")}
    seen = {split: (set(), set()) for split in rng}
    for split, generator in rng.items():
        config = StyleConfig(split=split)
        for _ in range(DRAWS):
            seen[split][0].add(sample_style(generator, config).background)
            seen[split][1].add(sample_object_style(generator, config).fill)
    assert seen["train"] == (set(TRAIN_BACKGROUNDS), set(TRAIN_FILLS))  # all drawn, none held out
    assert seen["heldout"] == (set(HELDOUT_BACKGROUNDS), set(HELDOUT_FILLS))
    assert not set(TRAIN_BACKGROUNDS) & set(HELDOUT_BACKGROUNDS) and not set(TRAIN_FILLS) & set(HELDOUT_FILLS)
    for seed in range(40):  # and whole clips, over many seeds
        train, held = generate_clip(seed, world("train")), generate_clip(seed, world("heldout"))
        assert train.style.background in TRAIN_BACKGROUNDS and held.style.background in HELDOUT_BACKGROUNDS
        assert {s.fill for s in train.object_styles} <= set(TRAIN_FILLS)
        assert {s.fill for s in held.object_styles} <= set(HELDOUT_FILLS)
    with pytest.raises(InputError):
        StyleConfig(train_fills=("flat", "hatched"))
    with pytest.raises(InputError):
        StyleConfig(heldout_backgrounds=("voronoi", "photo"))
    with pytest.raises(InputError):
        StyleConfig(split="test")


def _rate_ok(flags: list[bool], prob: float) -> bool:
    """The observed rate is within 4.5 standard deviations of ``prob``."""
    n = len(flags)
    return abs(np.mean(flags) - prob) <= 4.5 * np.sqrt(prob * (1 - prob) / n) + 1e-9

def test_clip_styles_are_drawn_at_their_rates_and_within_their_ranges() -> None:
    cfg = StyleConfig()
    rng = np.random.default_rng(2)
    styles = [sample_style(rng, cfg) for _ in range(DRAWS)]
    long = np.array([max(s.width, s.height) for s in styles])
    short = np.array([min(s.width, s.height) for s in styles])
    assert all(s.width % 2 == 0 and s.height % 2 == 0 for s in styles)  # H.264 yuv420p
    assert _within(long, cfg.long_side_px) and short.min() >= cfg.long_side_px[0] / cfg.aspect[1] - 2
    assert _within(long / short, cfg.aspect, 0.03)
    assert long.min() < 200 and long.max() > 1100 and (long / short).max() > 1.7  # tiny to large frames
    assert _rate_ok([s.height > s.width for s in styles], cfg.portrait_prob)
    checks = {  # option: (on?, its values, documented range, probability)
        "blur": ([s.blur_sigma > 0 for s in styles], [s.blur_sigma for s in styles if s.blur_sigma], cfg.blur_sigma,
                 cfg.blur_prob),
        "jpeg": ([s.jpeg_quality > 0 for s in styles], [s.jpeg_quality for s in styles if s.jpeg_quality],
                 cfg.jpeg_quality, cfg.jpeg_prob),
        "gray": ([s.gray for s in styles], [0.0], (0.0, 0.0), cfg.gray_prob),
        "lighting": ([s.light_gain != 1.0 for s in styles], [s.light_gain for s in styles if s.light_gain != 1.0],
                     cfg.light_gain, cfg.lighting_prob),
        "shake": ([s.shake_px > 0 for s in styles],
                  [s.shake_px / min(s.width, s.height) for s in styles if s.shake_px], cfg.shake_amplitude,
                  cfg.shake_prob),
    }
    for name, (flags, values, bounds, prob) in checks.items():
        assert _rate_ok(flags, prob), name
        assert _within(values, bounds), name
    lit = [s for s in styles if s.light_gain != 1.0]
    assert _within([t for s in lit for t in s.light_tint], cfg.light_tint)
    assert _within([s.light_flicker for s in lit], cfg.light_flicker)
    assert _within([s.light_gradient for s in lit], cfg.light_gradient)
    assert _within([p for s in styles for p in s.light_period_s + s.shake_period_s],
                   (min(cfg.light_period_s[0], cfg.shake_period_s[0]), max(cfg.light_period_s[1], cfg.shake_period_s[1])))
    assert _within([s.noise_sigma for s in styles], cfg.noise_sigma) and np.ptp([s.noise_sigma for s in styles]) > 9
    # the signals over time stay within their amplitudes, and change
    for s in [s for s in styles if s.shake_px][:50]:
        offsets = effects.shake_offsets(s, 60, 30.0)
        assert np.abs(offsets).max() <= s.shake_px + 0.5
    for s in lit[:50]:
        gains = effects.lighting_gains(s, 90, 30.0)
        tint = 1.0 + np.asarray(s.light_tint)
        assert np.all(gains <= s.light_gain * tint * (1 + s.light_flicker) + 1e-5)
        assert np.all(gains >= s.light_gain * tint * (1 - s.light_flicker) - 1e-5)
        assert s.light_flicker < 0.02 or np.ptp(gains[:, 0]) > 0  # lighting changes over the clip


def test_object_styles_are_drawn_at_their_rates_and_within_their_ranges() -> None:
    cfg = StyleConfig()
    rng = np.random.default_rng(3)
    looks = [sample_object_style(rng, cfg) for _ in range(DRAWS)]
    assert _rate_ok([o.outline != "none" for o in looks], cfg.outline_prob)
    assert {o.outline for o in looks} == {"none", "dark", "light"}
    assert _rate_ok([o.edge_sigma > 0 for o in looks], cfg.soft_edge_prob)
    assert _rate_ok([o.opacity < 1 for o in looks], cfg.transparent_prob)
    assert _rate_ok([o.wobble > 0 or o.stretch != 0 for o in looks], cfg.deform_prob)
    assert _within([o.edge_sigma for o in looks if o.edge_sigma], cfg.edge_sigma_px)
    assert _within([o.opacity for o in looks if o.opacity < 1], cfg.opacity)
    assert min(o.opacity for o in looks) >= VISIBLE_OPACITY  # sampled objects always count as visible
    assert _within([o.fill_strength for o in looks if o.fill != "flat"], cfg.fill_strength)
    assert all(o.fill_strength == 0 for o in looks if o.fill == "flat")
    assert _within([o.outline_width for o in looks], cfg.outline_width)
    assert _within([o.outline_amount for o in looks], cfg.outline_amount)
    deformed = [o for o in looks if o.wobble or o.stretch]
    assert _within([o.stretch for o in deformed], cfg.stretch) and _within([o.shear for o in deformed], cfg.shear)
    assert _within([o.wobble for o in deformed], cfg.wobble)
    for o in deformed[:40]:  # slight: every vertex stays within the documented deformation of the shape
        for shape in TARGET_SHAPES:
            unit, bent = shapes.unit_outline(shape), appearance.deformed_unit_outline(shape, o)
            bound = (1 + o.wobble) * (1 + abs(o.stretch) + abs(o.shear)) - 1
            assert np.all(np.abs(np.linalg.norm(bent, axis=1) / np.linalg.norm(unit, axis=1) - 1) <= bound + 1e-9)


def _hsv(rgb) -> tuple[float, float, float]:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    return h * 360, s, v


def test_colours_within_their_ranges_and_distractors_near_boundaries() -> None:
    cfg = StyleConfig()
    rng = np.random.default_rng(4)
    chromatic = [c for c in ALL_COLOURS if c != "white"]
    for colour in ALL_COLOURS:
        bounds, distractor = COLOUR_RANGES[colour], colour in DISTRACTOR_COLOURS
        drawn = [_hsv(styled_rgb(colour, rng, distractor, cfg)) for _ in range(400)]
        hues, sats, vals = zip(*drawn)
        assert _within(sats, bounds.saturation, 0.02) and _within(vals, bounds.value, 0.01), colour
        if colour == "white":
            continue
        for hue in hues:  # in its own range (up to 8-bit rounding) and in no other colour's
            assert [c for c in chromatic if hue_in_range(hue, COLOUR_RANGES[c].hue_deg, 1.5)] == [colour]
        width = bounds.hue_deg[1] - bounds.hue_deg[0]
        if distractor:  # about boundary_prob of them within boundary_band_deg of an end (uniform: band / width)
            near = np.mean([min((h - bounds.hue_deg[0]) % 360, (bounds.hue_deg[1] - h) % 360)
                            <= cfg.boundary_band_deg + 1.5 for h in hues])
            assert near > cfg.boundary_prob * 0.8
        assert np.ptp(np.unwrap(np.deg2rad(hues))) > np.deg2rad(0.7 * width)  # the whole range is used
    with pytest.raises(InputError):
        styled_rgb("pink", rng, True, cfg)


def test_styled_backgrounds() -> None:
    cfg = StyleConfig()
    images = {}
    for kind in TRAIN_BACKGROUNDS + HELDOUT_BACKGROUNDS:
        bg = make_styled_background(kind, 90, 160, np.random.default_rng(0), cfg)
        assert bg.shape == (90, 160, 3) and bg.dtype == np.float32 and 0 <= bg.min() and bg.max() <= 255
        assert (np.ptp(bg.reshape(-1, 3), axis=0).max() == 0) == (kind == "flat")
        np.testing.assert_array_equal(bg, make_styled_background(kind, 90, 160, np.random.default_rng(0), cfg))
        images[kind] = bg
    assert make_styled_background("photo", 720, 1280, np.random.default_rng(1), cfg).shape == (720, 1280, 3)
    with pytest.raises(ValueError):
        make_styled_background("plaid", 10, 10, np.random.default_rng(0), cfg)

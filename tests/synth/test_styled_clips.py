"""Domain randomisation, rendered: every option changes the pixels; appearance options leave the
truth alone, geometric ones (camera shake, deformation, frame size) move it with the pixels; the
transparency and gray-frame rules; reproducibility and the written files."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from sam3video.data.concepts import TARGET_COLOURS, TARGET_SHAPES
from sam3video.data.dataset import load_clip, write_clip
from sam3video.data.styles import TRAIN_BACKGROUNDS, TRAIN_FILLS, VISIBLE_OPACITY, StyleConfig
from sam3video.data.synthetic import WorldConfig
from sam3video.data.clips import generate_clip
from sam3video.data.training import askable_prompts, sample_training_example, split_prompts
from sam3video.errors import InputError
from tests.synth.style_helpers import OFF, SEEDS, _frames, _painted, _same_truth, _within, world


def test_frame_sizes_and_object_sizes_scale() -> None:
    cfg = StyleConfig(long_side_px=(160, 720))
    fractions, portrait = [], 0
    for seed in range(30):
        clip = generate_clip(seed, world(cfg, duration_s=0.3))
        width, height = clip.size
        short = min(width, height)
        assert (width, height) == (clip.style.width, clip.style.height) and width % 2 == height % 2 == 0
        portrait += height > width
        radii = np.array([o.motion.radius for o in clip.objects])
        assert _within(radii, (cfg.min_radius_px, short / 4), 1e-9)
        fractions += list(radii / short)
        image, truth = clip.frame(1)
        assert image.shape == (height, width, 3) and truth.label_map.shape == (height, width)
        for o in truth.objects:
            assert 0 <= o.box[0] < o.box[2] <= width and 0 <= o.box[1] < o.box[3] <= height
    assert portrait > 3 and min(fractions) < 0.03 and max(fractions) > 0.15  # portrait; tiny to large objects


APPEARANCE = {  # options that change only how things look
    "blur": dict(blur_prob=1.0),
    "noise": dict(noise_sigma=(4.0, 10.0)),
    "jpeg": dict(jpeg_prob=1.0, jpeg_quality=(20, 40)),
    "gray": dict(gray_prob=1.0),
    "lighting": dict(lighting_prob=1.0),
    "outline": dict(outline_prob=1.0),
    "soft edge": dict(soft_edge_prob=1.0),
    "transparency": dict(transparent_prob=1.0),
    **{f"{fill} fill": dict(train_fills=(fill,)) for fill in TRAIN_FILLS if fill != "flat"},
    "held-out hatched fill": dict(split="heldout"),
    **{f"{kind} background": dict(train_backgrounds=(kind,)) for kind in TRAIN_BACKGROUNDS},
}


@pytest.mark.parametrize("name", list(APPEARANCE))
def test_appearance_option_changes_pixels_not_truth(name: str) -> None:
    reference = OFF  # a background family is compared against another fixed one
    if name.endswith("background"):
        reference = replace(OFF, train_backgrounds=("checker",) if name.startswith("flat") else ("flat",))
    base = _frames(world(reference))
    varied = _frames(world(replace(OFF, **APPEARANCE[name])))
    changed = 0
    for (img_a, truth_a), (img_b, truth_b) in zip(base, varied):
        assert _same_truth(truth_a, truth_b), name
        assert truth_b.gray == (name == "gray")
        if name == "gray":
            assert np.array_equal(img_b[..., 0], img_b[..., 1]) and np.array_equal(img_b[..., 0], img_b[..., 2])
        covered = truth_a.label_map > 0
        where = covered if name.endswith("fill") or name in ("outline", "transparency") else np.ones_like(covered)
        if name.endswith("background"):
            where = ~covered
        moved = np.abs(img_a.astype(int) - img_b).max(axis=2) >= 2
        changed += np.count_nonzero(moved & where) >= max(1, 0.005 * np.count_nonzero(where))
    assert changed >= len(base) - 1, f"{name} should change the pixels"


def test_lighting_changes_over_time() -> None:
    cfg = replace(OFF, lighting_prob=1.0, light_flicker=(0.2, 0.25), light_period_s=(1.0, 1.5), light_gradient=(0, 0))
    clip = generate_clip(0, world(cfg, duration_s=2.0))
    still = generate_clip(0, world(OFF, duration_s=2.0))
    ratios = [clip.image(t).mean() / still.image(t).mean() for t in range(0, 20, 2)]
    assert np.ptp(ratios) > 0.1


def test_camera_shake_moves_pixels_and_truth_together() -> None:
    cfg = replace(OFF, long_side_px=(640, 640), shake_prob=1.0, shake_amplitude=(0.01, 0.015))
    for seed in SEEDS:
        still = generate_clip(seed, world(replace(cfg, shake_prob=0.0)))
        shaken = generate_clip(seed, world(cfg))
        assert np.abs(shaken.shake).max() >= 2
        m = int(np.abs(shaken.shake).max())
        for t in range(0, 10, 3):
            (img_a, truth_a), (img_b, truth_b) = still.frame(t), shaken.frame(t)
            dx, dy = (int(v) for v in shaken.shake[t])
            height, width = img_a.shape[:2]
            inner = (slice(m, height - m), slice(m, width - m))
            moved = (slice(m - dy, height - m - dy), slice(m - dx, width - m - dx))  # shaken[y, x] = still[y - dy, x - dx]
            np.testing.assert_array_equal(truth_b.label_map[inner], truth_a.label_map[moved])
            np.testing.assert_array_equal(img_b[inner], img_a[moved])
            for obj in truth_b.objects:  # boxes follow the masks
                ys, xs = np.nonzero(obj.mask)
                assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_deformation_moves_the_truth_and_pixels_follow_it() -> None:
    """With every look off but deformation, shake and sampled frame sizes, each object's visible pixels
    show exactly its colour and every other pixel exactly the background."""
    cfg = replace(OFF, long_side_px=(160, 400), aspect=(1.0, 16 / 9), portrait_prob=0.5, deform_prob=1.0,
                  wobble=(0.04, 0.06), shake_prob=1.0)
    differs = 0
    for seed in SEEDS:
        clip = generate_clip(seed, world(cfg))
        plain = generate_clip(seed, world(replace(cfg, deform_prob=0.0)))
        for t in (0, 4, 8):
            image, truth = clip.frame(t)
            np.testing.assert_array_equal(truth.label_map, _painted(clip, t))
            differs += not np.array_equal(truth.label_map, plain.frame(t)[1].label_map)
            for obj in truth.objects:
                assert np.all(image[obj.mask] == clip.object(obj.object_id).rgb)
            dx, dy = clip.shake[t]
            height, width = truth.label_map.shape
            scene = clip.scene[clip.pad - dy:clip.pad - dy + height, clip.pad - dx:clip.pad - dx + width]
            background = truth.label_map == 0
            np.testing.assert_array_equal(image[background], (scene + 0.5).astype(np.uint8)[background])
    assert differs >= 6


def test_transparency_rule() -> None:
    """Opacity >= VISIBLE_OPACITY: seen and occluding as if opaque; below: drawn, but absent from the
    truth and hiding nothing."""
    opaque = _frames(world(OFF))
    half = _frames(world(replace(OFF, transparent_prob=1.0, opacity=(VISIBLE_OPACITY, 0.6))))
    ghosts = _frames(world(replace(OFF, transparent_prob=1.0, opacity=(0.2, 0.45))))
    for (img_o, truth_o), (img_h, truth_h), (img_g, truth_g) in zip(opaque, half, ghosts):
        assert _same_truth(truth_o, truth_h)
        assert not truth_g.objects and not truth_g.label_map.any()
        covered = truth_o.label_map > 0
        if covered.any():
            assert np.abs(img_o.astype(int) - img_h)[covered].mean() > 1  # see-through, yet counted
    # mixed: a ghost in front of an opaque object hides nothing
    cfg = replace(OFF, transparent_prob=0.5, opacity=(0.2, 0.45))
    found = 0
    for seed in range(10):
        clip = generate_clip(seed, world(cfg))
        ghost_ids = {i + 1 for i, s in enumerate(clip.object_styles) if s.opacity < VISIBLE_OPACITY}
        for t in (0, 5):
            truth = clip.frame(t)[1]
            assert not ghost_ids & set(truth.object_ids)
            np.testing.assert_array_equal(truth.label_map, _painted(clip, t))
            found += bool(ghost_ids) and bool(truth.objects)
    assert found


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_randomised_truth_is_exact(split: str) -> None:
    for seed in range(4):
        clip = generate_clip(seed, world(StyleConfig(split=split, long_side_px=(160, 480))))
        for t in (0, 9):
            image, truth = clip.frame(t)
            assert image.dtype == np.uint8 and image.shape[:2] == truth.label_map.shape
            np.testing.assert_array_equal(truth.label_map, _painted(clip, t))
            assert set(truth.object_ids) == set(np.unique(truth.label_map)) - {0}
            for obj in truth.objects:
                ys, xs = np.nonzero(obj.mask)
                assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) and obj.area == len(xs)
                np.testing.assert_array_equal(obj.mask, truth.label_map == obj.object_id)
                full = int(clip.full_mask(obj.object_id, t).sum())
                assert 0 < obj.visibility <= 1.0 and obj.area <= full


def test_randomised_clips_reproduce_and_round_trip(tmp_path) -> None:
    config = world(StyleConfig(long_side_px=(160, 320)))
    first, again = generate_clip(7, config), generate_clip(7, config)
    np.testing.assert_array_equal(first.frame(6)[0], again.frame(6)[0])
    assert not np.array_equal(first.frame(6)[0], generate_clip(8, config).frame(6)[0])
    assert WorldConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert world("heldout").style == StyleConfig(split="heldout")
    with pytest.raises(InputError):
        world("sepia")
    out = write_clip(first, tmp_path / "clip", ["circle", "red circle"], video=False)
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["width"], meta["height"]) == first.size and meta["style"]["background"] == first.style.background
    np.testing.assert_array_equal(load_clip(out).frame(3)[0], first.frame(3)[0])


def test_gray_frames_ask_shape_prompts_only() -> None:
    config = WorldConfig(width=160, height=120, duration_s=1.0, radius_px=(8.0, 18.0), style=replace(OFF, gray_prob=1.0))
    positives = 0
    for i in range(25):
        ex = sample_training_example(np.random.default_rng(300 + i), config)
        assert ex.truth.gray and np.array_equal(ex.image[..., 0], ex.image[..., 2])
        assert ex.prompt in TARGET_SHAPES and set(ex.negative_prompts) <= set(TARGET_SHAPES)
        positives += ex.is_positive
    assert positives > 0
    truth = generate_clip(1, world(OFF)).frame(0)[1]
    assert askable_prompts(replace(truth, gray=True)) == TARGET_SHAPES
    assert len(askable_prompts(truth)) == 20
    positives, hard, easy = split_prompts(replace(truth, gray=True))
    assert set(positives + hard + easy) == set(TARGET_SHAPES)
    assert not any(c in p for c in TARGET_COLOURS for p in positives + hard + easy)

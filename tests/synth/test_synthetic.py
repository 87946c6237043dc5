"""The synthetic world: exact truth (tight boxes, visible masks, depth order, clipping), stable ids,
determinism, prompt matching, the written MOT/MOTS/video files and training examples."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from sam3video.data import shapes
from sam3video.data.backgrounds import BACKGROUND_KINDS, make_background
from sam3video.data.concepts import DISTRACTOR_COLOURS, DISTRACTOR_SHAPES, PROMPTS
from sam3video.export.outputs import prompt_slug
from sam3video.data.dataset import load_clip, write_clip
from sam3video.export.tables import read_mot as read_mot_table
from sam3video.export.mots import read_mots
from sam3video.data.synthetic import Clip, ObjectSpec, WorldConfig, concept_matches
from sam3video.data.clips import generate_clip
from sam3video.data.training import sample_training_example, split_prompts
from sam3video.errors import InputError

# pycocotools' decode trips a numpy 2 DeprecationWarning inside its Cython code; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SMALL = WorldConfig(width=160, height=120, fps=15.0, duration_s=4.0, radius_px=(8.0, 18.0),
                    speed_px_s=(20.0, 60.0), blur_prob=0.0)
NOISE_BOUND = SMALL.noise_sigma * np.sqrt(6.0) + 1.0  # triangular noise is bounded by sigma * sqrt(6)


@pytest.fixture(scope="module")
def clips() -> list[Clip]:
    return [generate_clip(seed, SMALL) for seed in range(6)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxes_are_tight_around_visible_masks(seed: int) -> None:
    clip = generate_clip(seed, SMALL)
    for t in (0, clip.num_frames // 2, clip.num_frames - 1):
        image, truth = clip.frame(t)
        assert image.shape == (SMALL.height, SMALL.width, 3) and image.dtype == np.uint8
        assert truth.frame_index == t
        for obj in truth.objects:
            ys, xs = np.nonzero(obj.mask)
            assert obj.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            assert obj.area == len(xs)
            np.testing.assert_array_equal(obj.mask, truth.label_map == obj.object_id)
            assert 0.0 < obj.visibility <= 1.0
        # present in the truth exactly when some pixel shows it
        shown = set(np.unique(truth.label_map)) - {0}
        assert set(truth.object_ids) == shown


def test_ids_stable_unique_and_continuous(clips: list[Clip]) -> None:
    clip = clips[0]
    max_step = SMALL.speed_px_s[1] * (1 + SMALL.speed_jitter) / SMALL.fps + 2.0
    previous: dict[int, np.ndarray] = {}
    for t, _, truth in clip.frames():
        ids = truth.object_ids
        assert len(ids) == len(set(ids)) and all(1 <= i <= len(clip.objects) for i in ids)
        current = {}
        for obj in truth.objects:
            spec = clip.object(obj.object_id)
            assert (obj.shape, obj.colour) == (spec.shape, spec.colour)
            if obj.visibility == 1.0:
                ys, xs = np.nonzero(obj.mask)
                current[obj.object_id] = np.array([xs.mean(), ys.mean()])
        for oid in current.keys() & previous.keys():  # the same object moved a little, not jumped
            assert np.linalg.norm(current[oid] - previous[oid]) < max_step
        previous = current


def test_later_drawn_objects_hide_earlier_ones(clips: list[Clip]) -> None:
    longest_overlap, checked = 0, 0
    for clip in clips:
        run: dict[tuple[int, int], int] = {}
        for t in range(clip.num_frames):
            image, truth = clip.frame(t)
            full = {o.object_id: clip.full_mask(o.object_id, t) for o in clip.objects}
            order = clip.draw_order
            for i, back in enumerate(order):
                for front in order[i + 1:]:
                    overlap = full[back] & full[front]
                    if not overlap.any():
                        run[back, front] = 0
                        continue
                    run[back, front] = run.get((back, front), 0) + 1
                    longest_overlap = max(longest_overlap, run[back, front])
                    assert clip.object(back).depth < clip.object(front).depth
                    assert not (truth.label_map[overlap] == back).any()
                    on_top = overlap & (truth.label_map == front)
                    # only objects drawn after `front` may take its overlap pixels
                    later = set(order[order.index(front) + 1:])
                    assert set(np.unique(truth.label_map[overlap & ~on_top])) <= later
                    rgb = np.array(clip.object(front).rgb, float)
                    if on_top.any():
                        assert np.abs(image[on_top].astype(float) - rgb).max() <= NOISE_BOUND
                        checked += 1
    assert checked > 0
    assert longest_overlap >= 3, "crossing objects should overlap for several frames"


def test_objects_enter_leave_and_are_clipped(clips: list[Clip]) -> None:
    pad, clipped, entered = 64, 0, 0
    for clip in clips:
        seen_before: set[int] = set()
        for t in range(clip.num_frames):
            truth = clip.frame(t)[1]
            entered += len(set(truth.object_ids) - seen_before) if t > 0 else 0
            seen_before |= set(truth.object_ids)
            for obj in truth.objects:
                verts = clip.outline(obj.object_id, t)
                x0, y0, x1, y1 = shapes.pixel_bounds(verts)
                if x0 >= 0 and y0 >= 0 and x1 <= SMALL.width and y1 <= SMALL.height:
                    continue
                unclipped = np.zeros((SMALL.height + 2 * pad, SMALL.width + 2 * pad), np.uint8)
                shapes.fill(unclipped, verts + pad, 1)  # one cv2 fill on a canvas with room around
                inside = unclipped[pad:-pad, pad:-pad]
                if inside.sum() == unclipped.sum():
                    continue  # the outline's bounds stick out, but no pixel does
                inside = inside.astype(bool)
                np.testing.assert_array_equal(clip.full_mask(obj.object_id, t), inside)
                np.testing.assert_array_equal(obj.mask, inside & (truth.label_map == obj.object_id))
                assert obj.visibility < 1.0
                ys, xs = np.nonzero(inside)  # the clipped outline runs along the frame's edge
                assert xs.min() == 0 or ys.min() == 0 or xs.max() == SMALL.width - 1 or ys.max() == SMALL.height - 1
                clipped += 1
    assert clipped > 0 and entered > 0


def test_same_seed_same_clip_other_seed_other_clip() -> None:
    first, second, other = generate_clip(11, SMALL), generate_clip(11, SMALL), generate_clip(12, SMALL)
    assert first.objects == second.objects
    late = first.num_frames - 1
    later_first = first.frame(late)  # random access: rendering order does not matter
    for t in (0, 5, late):
        (img_a, truth_a), (img_b, truth_b) = second.frame(t), first.frame(t)
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(truth_a.label_map, truth_b.label_map)
        assert [(o.object_id, o.box, o.visibility) for o in truth_a.objects] == \
               [(o.object_id, o.box, o.visibility) for o in truth_b.objects]
    np.testing.assert_array_equal(later_first[0], first.frame(late)[0])
    assert not np.array_equal(first.frame(0)[0], other.frame(0)[0])
    assert not np.array_equal(first.frame(0)[0], first.frame(1)[0])  # noise and motion per frame


_SPEC = dict(rgb=(0, 0, 0), depth=0, motion=None)


@pytest.mark.parametrize("shape, colour, prompt, expected", [
    ("circle", "red", "circle", True),
    ("circle", "red", "red circle", True),
    ("circle", "red", "  Red   CIRCLE ", True),
    ("circle", "red", "blue circle", False),
    ("circle", "red", "red square", False),
    ("square", "blue", "circle", False),
    ("star", "yellow", "yellow star", True),
    ("triangle", "green", "green triangle", True),
    ("circle", "purple", "circle", True),  # a distractor colour is still a circle
    ("circle", "purple", "red circle", False),
    ("circle", "purple", "purple circle", True),  # described truthfully, though not in PROMPTS
    ("hexagon", "red", "red circle", False),
    ("circle", "red", "dog", False),
    ("circle", "red", "", False),
    ("circle", "red", "red", False),
    ("circle", "red", "big red circle", False),
])
def test_concept_matches(shape: str, colour: str, prompt: str, expected: bool) -> None:
    obj = ObjectSpec(object_id=1, shape=shape, colour=colour, distractor=False, **_SPEC)
    assert concept_matches(obj, prompt) is expected


def test_prompt_list_and_distractors(clips: list[Clip]) -> None:
    assert len(PROMPTS) == 20 == len(set(PROMPTS)) == len({prompt_slug(p) for p in PROMPTS})
    assert not any(w in p.split() for p in PROMPTS for w in DISTRACTOR_COLOURS + DISTRACTOR_SHAPES)
    distractors = [o for c in clips for o in c.objects if o.distractor]
    assert distractors
    for obj in distractors:
        assert obj.colour in DISTRACTOR_COLOURS or obj.shape in DISTRACTOR_SHAPES
        assert not any(concept_matches(obj, p) for p in PROMPTS if " " in p)


def test_written_files_parse_and_match_the_truth(tmp_path) -> None:
    config = WorldConfig(width=160, height=120, fps=15.0, duration_s=1.0, radius_px=(10.0, 18.0), blur_prob=0.0)
    clip = generate_clip(3, config)
    prompts = ["circle", "red circle", "triangle", "dog"] + [f"{o.colour} {o.shape}" for o in clip.objects[:2]]
    out = write_clip(clip, tmp_path / "clip", prompts)
    truths = [truth for _, _, truth in clip.frames()]
    rows_total = 0
    for prompt in dict.fromkeys(prompts):
        folder = out / "gt" / prompt_slug(prompt)
        table = read_mot_table(folder / "gt.txt")
        rows = np.concatenate([table.frames[:, None], table.ids[:, None], table.boxes, table.confidence[:, None],
                               table.extra], axis=1)
        masks = {frame + 1: dict(zip(d.tracker_id.tolist(), d.mask))
                 for frame, d in read_mots(folder / "gt.mots.txt").items()}
        expected = [(t.frame_index + 1, o) for t in truths for o in t.matching(prompt)]
        assert len(rows) == len(expected) == sum(len(m) for m in masks.values())
        rows_total += len(rows)
        for row, (frame, obj) in zip(rows, expected):
            x0, y0, x1, y1 = obj.box
            assert tuple(row[:6]) == (frame, obj.object_id, x0, y0, x1 - x0, y1 - y0)
            assert row[8] == pytest.approx(obj.visibility, abs=1e-4)
            np.testing.assert_array_equal(masks[frame][obj.object_id], obj.mask)
        for frame_masks in masks.values():  # visible masks never overlap
            assert (np.sum(list(frame_masks.values()), axis=0) <= 1).all()
    assert rows_total > 0
    assert len(read_mot_table(out / "gt" / "dog" / "gt.txt")) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 3 and len(meta["objects"]) == len(clip.objects)
    np.testing.assert_array_equal(load_clip(out).frame(4)[0], clip.frame(4)[0])
    with av.open(str(out / "video.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == clip.num_frames and decoded[0].shape == (120, 160, 3)
    diff = np.abs(decoded[4].astype(float) - clip.frame(4)[0].astype(float))
    other = np.abs(decoded[4].astype(float) - clip.frame(10)[0].astype(float))
    assert np.median(diff) <= 3.0, "crf 18 keeps most pixels within a few levels (edges lose chroma)"
    assert diff.mean() < 0.5 * other.mean(), "the video's frame 4 is the rendered frame 4"
    assert not list(out.rglob("*.tmp"))


def test_training_examples_are_consistent_and_reproducible() -> None:
    config = WorldConfig(width=160, height=120, duration_s=1.0, radius_px=(8.0, 18.0))
    examples = [sample_training_example(np.random.default_rng(100 + i), config) for i in range(30)]
    positives = 0
    hard = 0
    for ex in examples:
        k = len(ex.object_ids)
        assert ex.masks.shape == (k, 120, 160) and ex.boxes.shape == (k, 4)
        assert ex.prompt in PROMPTS and ex.prompt not in ex.negative_prompts
        assert sorted(ex.object_ids.tolist()) == [o.object_id for o in ex.truth.matching(ex.prompt)]
        for mask, box in zip(ex.masks, ex.boxes):
            ys, xs = np.nonzero(mask)
            assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert all(not ex.truth.matching(p) for p in ex.negative_prompts)
        hard += len(set(ex.negative_prompts) & set(split_prompts(ex.truth)[1]))
        positives += ex.is_positive
    assert 0 < positives < len(examples) and hard > 0
    again = sample_training_example(np.random.default_rng(100), config)
    np.testing.assert_array_equal(again.image, examples[0].image)
    assert again.prompt == examples[0].prompt


@pytest.mark.parametrize("kind", BACKGROUND_KINDS)
def test_backgrounds(kind: str) -> None:
    bg = make_background(kind, 60, 80, np.random.default_rng(0))
    assert bg.shape == (60, 80, 3) and bg.dtype == np.float32
    assert 0.0 <= bg.min() and bg.max() <= 255.0
    assert (np.ptp(bg.reshape(-1, 3), axis=0).max() == 0) == (kind == "flat")


def test_config_checks_and_round_trip() -> None:
    with pytest.raises(InputError):
        WorldConfig(width=161)
    with pytest.raises(InputError):
        WorldConfig(num_targets=(3, 1))
    with pytest.raises(InputError):
        WorldConfig(backgrounds=("plaid",))
    assert WorldConfig.from_dict(json.loads(json.dumps(SMALL.to_dict()))) == SMALL
    detections = generate_clip(0, SMALL).frame(0)[1].to_detections("circle")
    assert detections.mask is not None and detections.mask.shape[1:] == (120, 160)

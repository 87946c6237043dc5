"""Batches for training the demo model: synthetic frames, text prompts, exemplar boxes, exact targets.

Each image carries ``prompts_per_image`` prompts (the backbone runs once for all of them): a positive
prompt, hard negatives (same colour or shape as something visible) and, now and then, a word the demo
world never shows ("dog"), so that the presence token learns to say "absent". With probability
``exemplar_prob`` a prompt gets exemplar boxes instead, in the two ways SAM 3 uses them:
- ``"visual"`` + a positive box on one object: the targets are every object of that colour and shape;
- a shape prompt (``"circle"``) + a negative box on one instance: the targets are the instances that do
  not share the marked one's colour (and optionally a positive box on one of them).
Boxes are normalised cx, cy, w, h (the model's convention); masks are resized to the mask head's size.
"""

from __future__ import annotations

import collections
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from ..data.concepts import TARGET_SHAPES
from ..data.styled import resized_world
from ..data.styles import StyleConfig, sample_frame_size
from ..data.synthetic import WorldConfig
from ..data.training import sample_training_example, split_prompts
from ..geometry import normalised_cxcywh
from ..model.geometry_encoders import Prompt, prompt_from_boxes
from ..preprocess import preprocess_image

UNKNOWN_WORDS = ("dog", "cat", "car", "person", "tree", "house", "bird", "chair", "bottle", "cup", "phone",
                 "horse", "boat", "bicycle", "flower", "book", "clock", "banana", "pizza", "shoe")
VISUAL = "visual"


@dataclass(frozen=True)
class DataConfig:
    resolution: int = 224
    mask_size: int = 64  # the mask head's output size at this resolution
    prompts_per_image: int = 2
    positive_prob: float = 0.6  # of the first prompt of an image; the others are negatives
    shape_prompt_prob: float = 0.3  # a positive first prompt is shape-only ("circle") this often
    hard_negative_prob: float = 0.8  # a negative prompt shares the colour or shape of something visible
    unknown_word_prob: float = 0.1
    exemplar_prob: float = 0.2
    second_positive: bool = False  # with > 2 prompts per image, a second colour + shape prompt that is there
    world: WorldConfig = WorldConfig(duration_s=2.0)
    classic_share: float = 0.0  # with a styled ``world``: this share of images is drawn unstyled (classic)
    gray_share: float = 0.0  # this share of images (any world) is turned gray; only shape prompts are asked
    # this share of classic images is drawn at a frame size from ``StyleConfig`` (160-1280 px long side,
    # aspect 1 to 16:9, portrait one time in three) with radii scaled by the short side x ``reframe_scale``
    reframe_prob: float = 0.0
    reframe_scale: tuple[float, float] = (0.5, 1.5)  # log-uniform


def curriculum(step: int, easy_steps: int, config: "DataConfig") -> "DataConfig":
    """Few, large objects and mostly easy negatives first; the full world after ``easy_steps``, and hard
    negatives ("blue star" when a red star and a blue square are visible) ramping up over 4x as long.
    Measured: with hard negatives from the start, colour + shape prompts stayed at the prior presence
    (about 0.32 for every such prompt after 2000 steps) while shape-only prompts were learned."""
    hard = config.hard_negative_prob * min(1.0, 0.25 + 0.75 * step / (4 * easy_steps))
    world = config.world
    if step < easy_steps:
        world = replace(world, num_targets=(1, 3), num_distractors=(0, 1), radius_px=(18.0, 40.0),
                        crossing_pairs=(0, 1))
    if step >= 2 * easy_steps:
        # Balanced colour + shape prompts. Measured at step 9500 with the defaults (about 25% of colour +
        # shape prompts positive): their presence sat at that prior (0.39 on positives, 0.31 on negatives)
        # and the semantic head lit no pixel for any of them, while shape-only prompts worked.
        # Then 4 prompts per image (two there, two hard negatives): "red circle" next to "red square"
        # and "blue circle" on the same image is the contrast that teaches reading both words.
        config = replace(config, positive_prob=0.9, shape_prompt_prob=0.15, prompts_per_image=4,
                         second_positive=True)
    return replace(config, world=world, hard_negative_prob=hard)


def _targets(objs, width: int, height: int, mask_size: int) -> dict:
    boxes = torch.from_numpy(normalised_cxcywh(np.array([o.box for o in objs], np.float32).reshape(-1, 4), width, height))
    masks = [cv2.resize(o.mask.astype(np.float32), (mask_size, mask_size), interpolation=cv2.INTER_AREA)
             for o in objs]
    masks = torch.from_numpy(np.stack(masks)) if masks else torch.zeros(0, mask_size, mask_size)
    return {"boxes": boxes, "masks": masks}


def _exemplar_query(example, rng, width, height, mask_size):
    """(prompt, [(box cxcywh, positive)], targets) built from exemplar boxes, or None if not possible."""
    objects = example.truth.objects
    targets_of = [o for o in objects if o.shape in TARGET_SHAPES]
    if not targets_of or example.truth.gray:  # both kinds of query need colours told apart
        return None
    marked = targets_of[int(rng.integers(len(targets_of)))]
    if rng.random() < 0.5:  # the concept is given by one positive box only
        objs = [o for o in objects if (o.colour, o.shape) == (marked.colour, marked.shape)]
        return VISUAL, [(normalised_cxcywh(marked.box, width, height).tolist(), True)], _targets(objs, width, height, mask_size)
    same_shape = [o for o in objects if o.shape == marked.shape]
    objs = [o for o in same_shape if o.colour != marked.colour]
    boxes = [(normalised_cxcywh(marked.box, width, height).tolist(), False)]
    if objs and rng.random() < 0.5:
        boxes.append((normalised_cxcywh(objs[int(rng.integers(len(objs)))].box, width, height).tolist(), True))
    return marked.shape, boxes, _targets(objs, width, height, mask_size)


def sample_batch(rng: np.random.Generator, num_images: int, config: DataConfig) -> dict:
    """A batch: ``images`` (I, 3, R, R) normalised; per query ``prompts``, ``img_ids``, ``targets``;
    ``geometric_prompt`` for all queries (I x prompts_per_image of them)."""
    images, prompts, img_ids, targets, boxes = [], [], [], [], []
    for i in range(num_images):
        world = config.world
        # no draw for an option at 0, so that older runs replay their batches
        if config.classic_share and rng.random() < config.classic_share:
            world = replace(world, style=None)
        if world.style is None and config.reframe_prob and rng.random() < config.reframe_prob:
            width, height = sample_frame_size(rng, StyleConfig())
            scale = float(np.exp(rng.uniform(*np.log(config.reframe_scale))))
            world = resized_world(world, width, height, scale)
        gray = bool(config.gray_share) and rng.random() < config.gray_share
        example = sample_training_example(rng, world, positive_prob=config.positive_prob,
                                          shape_prompt_prob=config.shape_prompt_prob,
                                          hard_negative_prob=config.hard_negative_prob, gray=gray)
        height, width = example.image.shape[:2]
        images.append(preprocess_image(torch.from_numpy(example.image).permute(2, 0, 1), config.resolution))
        queries = [(example.prompt, [], _targets(example.truth.matching(example.prompt), width, height,
                                                config.mask_size))]
        if config.second_positive and example.is_positive and config.prompts_per_image > 2:
            others = [p for p in split_prompts(example.truth)[0] if " " in p and p != example.prompt]
            if others:
                other = str(rng.choice(others))
                queries.append((other, [], _targets(example.truth.matching(other), width, height, config.mask_size)))
        for negative in example.negative_prompts[: config.prompts_per_image - len(queries)]:
            if rng.random() < config.unknown_word_prob:
                negative = str(rng.choice(UNKNOWN_WORDS))
            queries.append((negative, [], _targets([], width, height, config.mask_size)))
        if rng.random() < config.exemplar_prob:
            query = _exemplar_query(example, rng, width, height, config.mask_size)
            if query is not None:
                queries[-1] = query
        while len(queries) < config.prompts_per_image:
            queries.append((str(rng.choice(UNKNOWN_WORDS)), [], _targets([], width, height, config.mask_size)))
        for prompt, query_boxes, query_targets in queries[: config.prompts_per_image]:
            prompts.append(prompt)
            img_ids.append(i)
            targets.append(query_targets)
            boxes.append(query_boxes)
    return {
        "images": torch.stack(images),
        "prompts": prompts,
        "img_ids": torch.tensor(img_ids),
        "targets": targets,
        "geometric_prompt": prompt_from_boxes(boxes),
    }


def batch_for_step(seed: int, step: int, num_images: int, easy_steps: int, config: DataConfig) -> dict:
    """The training batch of ``step``: drawn from ``(seed, step)`` alone, so that a resumed run or any
    number of data workers sees the same batches."""
    return sample_batch(np.random.default_rng([seed, step]), num_images, curriculum(step, easy_steps, config))


def _quiet_worker() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class BatchStream:
    """``batch_for_step`` for steps ``start, start + 1, ...``, built by ``workers`` processes (0: in the
    caller) and at most ``2 * workers`` steps ahead. Use as a context manager; iterate for batches."""

    def __init__(self, seed: int, start: int, num_images: int, easy_steps: int, config: DataConfig,
                 workers: int = 0):
        self.args = (seed, num_images, easy_steps, config)
        self.step, self.workers = start, workers
        self.pool = None
        self.pending: collections.deque = collections.deque()

    def __enter__(self) -> "BatchStream":
        if self.workers:
            self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_quiet_worker)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        seed, num_images, easy_steps, config = self.args
        if self.pool is None:
            batch = batch_for_step(seed, self.step, num_images, easy_steps, config)
        else:
            while len(self.pending) < 2 * self.workers:
                ahead = self.step + len(self.pending)
                self.pending.append(self.pool.submit(batch_for_step, seed, ahead, num_images, easy_steps, config))
            batch = self.pending.popleft().result()
        self.step += 1
        return batch


def batch_to(batch: dict, device: torch.device) -> dict:
    """The batch's tensors (images, ids, targets, exemplar boxes) on ``device``."""
    prompt = batch["geometric_prompt"]  # from prompt_from_boxes: boxes only
    moved = Prompt(box_embeddings=prompt.box_embeddings.to(device), box_mask=prompt.box_mask.to(device),
                   box_labels=prompt.box_labels.to(device))
    return {**batch, "images": batch["images"].to(device), "img_ids": batch["img_ids"].to(device),
            "targets": [{k: v.to(device) for k, v in t.items()} for t in batch["targets"]],
            "geometric_prompt": moved}

"""Single-frame training examples from the synthetic world: an image, a prompt and its instances.

Prompts come from ``PROMPTS``. Negatives are prompts with no visible instance; "hard" negatives share
the shape or the colour of something visible (a red circle is there, "blue circle" or "red square" is
asked), which is what teaches a model to read both words of a prompt.

Gray frames (``FrameTruth.gray``, from randomised clips: R = G = B) cannot answer a colour word, so
only shape prompts are asked of them, as positives or negatives; colour + shape prompts are neither
(not asked, not listed as negatives). ``STYLED_TRAINING_CONFIG`` draws the randomised train split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from sam3video.data.concepts import PROMPTS, parse_prompt
from sam3video.data.effects import gray_frame
from sam3video.data.styles import StyleConfig
from sam3video.data.synthetic import FrameTruth, WorldConfig
from sam3video.data.clips import generate_clip

#: A shorter default than a benchmark clip: only one frame of each sampled clip is used.
TRAINING_CONFIG = WorldConfig(duration_s=2.0)
#: The same with domain randomisation (the "train" split; evaluate on ``StyleConfig("heldout")``).
STYLED_TRAINING_CONFIG = WorldConfig(duration_s=2.0, style=StyleConfig(split="train"))


@dataclass(frozen=True)
class TrainingExample:
    """``image`` (H, W, 3) uint8 RGB; ``prompt``; its instances: ``masks`` (K, H, W) bool visible masks,
    ``boxes`` (K, 4) float32 xyxy pixels (x1, y1 exclusive), ``object_ids`` (K,) int64 — K = 0 for a
    negative prompt; ``negative_prompts`` from ``PROMPTS`` with no visible instance (hard ones first);
    ``truth`` the whole frame's ground truth (for other prompts or exemplar boxes)."""

    image: np.ndarray
    prompt: str
    masks: np.ndarray
    boxes: np.ndarray
    object_ids: np.ndarray
    negative_prompts: tuple[str, ...]
    truth: FrameTruth

    @property
    def is_positive(self) -> bool:
        return len(self.object_ids) > 0


def askable_prompts(truth: FrameTruth, prompts: tuple[str, ...] = PROMPTS) -> tuple[str, ...]:
    """The ``prompts`` a frame can answer: all of them, or only the shape prompts on a gray frame."""
    if not truth.gray:
        return tuple(prompts)
    return tuple(p for p in prompts if (parse_prompt(p) or (None, ""))[0] is None)


def split_prompts(truth: FrameTruth, prompts: tuple[str, ...] = PROMPTS) -> tuple[list[str], list[str], list[str]]:
    """(positives, hard negatives, easy negatives) among the ``askable_prompts`` for one frame's truth."""
    prompts = askable_prompts(truth, prompts)
    seen = {(o.colour, o.shape) for o in truth.objects}
    colours = {c for c, _ in seen}
    shapes = {s for _, s in seen}
    positives, hard, easy = [], [], []
    for prompt in prompts:
        if truth.matching(prompt):
            positives.append(prompt)
            continue
        parsed = parse_prompt(prompt)
        colour, shape = parsed if parsed is not None else (None, "")
        (hard if colour in colours or shape in shapes else easy).append(prompt)
    return positives, hard, easy


def sample_training_example(
    rng: np.random.Generator,
    config: WorldConfig = TRAINING_CONFIG,
    positive_prob: float = 0.75,
    shape_prompt_prob: float = 0.3,
    hard_negative_prob: float = 0.8,
    num_negatives: int = 3,
    gray: bool = False,
) -> TrainingExample:
    """A random frame of a freshly sampled clip with one prompt and its instances.

    With probability ``positive_prob`` (when anything is visible) the prompt has instances: a
    shape-only prompt with probability ``shape_prompt_prob``, else a colour + shape one. Otherwise it
    is a negative, a hard one with probability ``hard_negative_prob`` when one exists (a positive
    when no negative exists, as on a gray frame showing every shape). ``gray``: the frame is turned
    gray (``effects.gray_frame``) whatever its world. Gray frames: see the module.
    """
    clip = generate_clip(int(rng.integers(0, 2**62)), config)
    image, truth = clip.frame(int(rng.integers(clip.num_frames)))
    if gray and not truth.gray:
        image, truth = gray_frame(image), replace(truth, gray=True)
    positives, hard, easy = split_prompts(truth)
    if positives and (not hard and not easy or rng.random() < positive_prob):
        shape_only = [p for p in positives if " " not in p]
        coloured = [p for p in positives if " " in p]
        pool = shape_only if shape_only and (not coloured or rng.random() < shape_prompt_prob) else coloured
        prompt = str(rng.choice(pool))
    else:
        pool = hard if hard and (not easy or rng.random() < hard_negative_prob) else easy
        prompt = str(rng.choice(pool))
    hard_left = [p for p in hard if p != prompt]
    easy_left = [p for p in easy if p != prompt]
    negatives = list(rng.permutation(hard_left))[:num_negatives] if hard_left else []
    if len(negatives) < num_negatives and easy_left:
        negatives += list(rng.permutation(easy_left))[: num_negatives - len(negatives)]
    objs = truth.matching(prompt)
    height, width = truth.label_map.shape
    return TrainingExample(
        image=image,
        prompt=prompt,
        masks=np.stack([o.mask for o in objs]) if objs else np.zeros((0, height, width), bool),
        boxes=np.array([o.box for o in objs], np.float32).reshape(-1, 4),
        object_ids=np.array([o.object_id for o in objs], np.int64),
        negative_prompts=tuple(str(p) for p in negatives),
        truth=truth,
    )


def training_examples(seed: int, config: WorldConfig = TRAINING_CONFIG, **kwargs) -> Iterator[TrainingExample]:
    """Endless, reproducible stream of ``sample_training_example`` results from ``seed``."""
    rng = np.random.default_rng(seed)
    while True:
        yield sample_training_example(rng, config, **kwargs)

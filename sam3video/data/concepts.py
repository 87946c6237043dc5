"""The vocabulary of the synthetic world: shapes, colours, prompt concepts and who matches them.

Target shapes and colours make the 20 prompt concepts in ``PROMPTS`` (4 shapes + 16 colour-shape pairs).
Distractor shapes and colours exist in the videos but never appear in ``PROMPTS``, so a distractor is
never the answer to a colour-shape prompt (a purple circle is still a circle: it matches "circle").
Colours are defined in HSV (hue in degrees, saturation and value in [0, 1]).
"""

from __future__ import annotations

import colorsys
from typing import Protocol

import numpy as np

TARGET_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
DISTRACTOR_SHAPES: tuple[str, ...] = ("hexagon", "cross")
ALL_SHAPES: tuple[str, ...] = TARGET_SHAPES + DISTRACTOR_SHAPES

#: name -> (hue degrees, saturation, value) of the colour before per-object jitter.
COLOUR_HSV: dict[str, tuple[float, float, float]] = {
    "red": (0.0, 0.82, 0.86),
    "green": (125.0, 0.75, 0.72),
    "blue": (225.0, 0.80, 0.88),
    "yellow": (55.0, 0.85, 0.93),
    "purple": (280.0, 0.60, 0.72),
    "orange": (28.0, 0.88, 0.96),
    "white": (0.0, 0.03, 0.94),
    "cyan": (185.0, 0.80, 0.86),
}
TARGET_COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")
DISTRACTOR_COLOURS: tuple[str, ...] = ("purple", "orange", "white", "cyan")
ALL_COLOURS: tuple[str, ...] = TARGET_COLOURS + DISTRACTOR_COLOURS

#: The prompt concepts: each target shape, then each target colour with each target shape.
PROMPTS: tuple[str, ...] = TARGET_SHAPES + tuple(f"{c} {s}" for c in TARGET_COLOURS for s in TARGET_SHAPES)


class HasConcept(Protocol):
    """Anything with a ``shape`` and a ``colour`` name (an object spec or an object's frame truth)."""

    shape: str
    colour: str


def parse_prompt(prompt: str) -> tuple[str | None, str] | None:
    """``"red circle"`` -> ``("red", "circle")``, ``"circle"`` -> ``(None, "circle")``, unknown -> None.

    Case and surrounding/inner whitespace are ignored. Any shape and colour of the world is understood
    (distractors included), so a prompt describes what is really drawn; anything else matches nothing.
    """
    words = prompt.lower().split()
    if len(words) == 1 and words[0] in ALL_SHAPES:
        return None, words[0]
    if len(words) == 2 and words[0] in ALL_COLOURS and words[1] in ALL_SHAPES:
        return words[0], words[1]
    return None


def concept_matches(obj: HasConcept, prompt: str) -> bool:
    """Whether ``obj`` is an instance of the concept ``prompt`` (shape, or colour + shape)."""
    parsed = parse_prompt(prompt)
    if parsed is None:
        return False
    colour, shape = parsed
    return obj.shape == shape and (colour is None or obj.colour == colour)


def jittered_rgb(
    colour: str,
    rng: np.random.Generator,
    hue_jitter_deg: float = 6.0,
    saturation_jitter: float = 0.08,
    value_jitter: float = 0.08,
) -> tuple[int, int, int]:
    """The colour ``colour`` with a small uniform HSV jitter, as 0-255 RGB."""
    hue, sat, val = COLOUR_HSV[colour]
    hue = (hue + rng.uniform(-hue_jitter_deg, hue_jitter_deg)) % 360.0
    sat = float(np.clip(sat + rng.uniform(-saturation_jitter, saturation_jitter), 0.0, 1.0))
    val = float(np.clip(val + rng.uniform(-value_jitter, value_jitter), 0.0, 1.0))
    return hsv_to_rgb255(hue, sat, val)


def hsv_to_rgb255(hue_deg: float, saturation: float, value: float) -> tuple[int, int, int]:
    """HSV (hue in degrees, s and v in [0, 1]) -> RGB ints in [0, 255]."""
    r, g, b = colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))

"""``generate_clip``: a clip of the synthetic world from a seed, the classic world (``synthetic``) or, with
``config.style`` set, the randomised one (``styled``, which builds on ``synthetic``)."""

from __future__ import annotations

from sam3video.data.styled import generate_styled_clip
from sam3video.data.synthetic import Clip, WorldConfig, generate_classic_clip
from sam3video.errors import InputError


def generate_clip(seed: int, config: WorldConfig | None = None) -> Clip:
    """Sample a clip: objects, their motion and the background, all from ``seed`` (an int >= 0). With
    ``config.style`` set, a randomised ``styled.StyledClip`` (a ``Clip``)."""
    config = config or WorldConfig()
    if seed < 0:
        raise InputError(f"seed must be >= 0, got {seed}")
    return generate_styled_clip(seed, config) if config.style is not None else generate_classic_clip(seed, config)

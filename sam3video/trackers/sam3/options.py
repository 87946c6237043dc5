"""The choices of a ``--tracker sam3`` run that the official thresholds (``thresholds.Sam3LoopConfig``) do not
cover; torch-free, read by the run's config (``video.session``)."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import InputError


@dataclass(frozen=True)
class Sam3Options:
    """Where a ``--tracker sam3`` run may differ from the official loop; the defaults are official."""

    memory_dtype: str = "bf16"  # memories stored in bf16 as officially, or "fp32"
    rerun_prompt_frame: bool = True  # officially the first frame is processed twice (add_prompt, then propagate)
    # Not official (it takes one box on one frame): the detection a positive exemplar box marks, on any
    # frame, starts an object whatever its score or re-prompts the track it overlaps. Only acts with exemplars.
    exemplar_conditioning: bool = True

    def __post_init__(self) -> None:
        if self.memory_dtype not in ("bf16", "fp32"):
            raise InputError(f"memory_dtype must be bf16 or fp32, got {self.memory_dtype!r}")

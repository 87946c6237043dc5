"""Seeded random weights for SAM 3.1 parity fixtures, the same in the official code's venv and in ours.

Each tensor is drawn from its own generator, seeded from (seed, name), so any subset of the checkpoint's names
gets the same values whichever model asks; values are rounded to fp16 (exact in fp32 and fp16 storage).
Torch only: ``tools/make_sam31_module_fixture.py`` imports this in the official SAM 3.1 venv, the tests in ours.
"""

from __future__ import annotations

import zlib

import torch

# 1-D tensors that scale (LayerNorm weights, layer scales) start near 1; other 1-D tensors (biases) near 0.
_SCALE_SUFFIXES = ("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "norm_final_attn.weight",
                   ".gamma", "ln_pre.weight", "ln_post.weight")


# The multiplex decoder's object-score bias: with it plain random, every propagated object scores about -0.2.
OBJECT_SCORE_BIAS = "tracker.model.sam_mask_decoder.pred_obj_score_head.layers.2.bias"


def seeded_tensor(name: str, shape, seed: int, adjust: "dict | None" = None) -> torch.Tensor:
    """A float32 tensor of ``shape`` for the parameter ``name`` (checkpoint layout), fp16-representable.
    ``adjust``: {name: [scale, shift]} applied before rounding (a fixture's scene: e.g. the detector's score
    scale, the tracker's object-score bias); a name listed replaces the default object-score shift."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    shape = tuple(shape)
    x = torch.randn(shape, generator=g)
    if name.endswith("positional_encoding_gaussian_matrix"):
        pass  # N(0, 1), as initialised
    elif len(shape) >= 2:
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        x = x / max(fan_in, 1) ** 0.5
        if len(shape) == 2 and shape[0] <= 64 and ("embed" in name or "token" in name):
            x = x * 0.5  # embeddings and tokens: like the official trunc-normal inits, a little larger
    elif any(name.endswith(s) for s in _SCALE_SUFFIXES) or (name.endswith(".weight") and ".norm" in name):
        x = 1.0 + 0.1 * x
    else:
        x = 0.05 * x
    if adjust and name in adjust:
        scale, shift = adjust[name]
        x = x * scale + shift
    elif name.endswith(OBJECT_SCORE_BIAS):
        x = x + 0.4  # so that propagated objects are present (score > 0), not all replaced by -1024 masks
    return x.half().float()


def seeded_state_dict(shapes: dict, seed: int) -> dict:
    """{name: shape} -> {name: ``seeded_tensor``}."""
    return {name: seeded_tensor(name, shape, seed) for name, shape in shapes.items()}

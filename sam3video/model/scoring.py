"""SAM 3 query scoring: dot product between each decoder query and the mean-pooled prompt
(official name ``DotProductScoring``)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor


class DotProductScoring(nn.Module):
    """Logit of every query matching the prompt: ``<hs_proj(hs), prompt_proj(mean(prompt_mlp(prompt)))>
    / sqrt(d_proj)``, clamped to ``[-clamp_max_val, clamp_max_val]`` when ``clamp_logits``."""

    def __init__(
        self,
        d_model: int,
        d_proj: int,
        prompt_mlp: Optional[nn.Module] = None,
        clamp_logits: bool = True,
        clamp_max_val: float = 12.0,
    ):
        super().__init__()
        assert isinstance(prompt_mlp, nn.Module) or prompt_mlp is None
        self.d_proj = d_proj
        self.prompt_mlp = prompt_mlp
        self.prompt_proj = nn.Linear(d_model, d_proj)
        self.hs_proj = nn.Linear(d_model, d_proj)
        self.scale = float(1.0 / math.sqrt(d_proj))
        self.clamp_logits = clamp_logits
        if clamp_logits:
            self.clamp_max_val = clamp_max_val

    @staticmethod
    def mean_pool_text(prompt: Tensor, prompt_mask: Tensor) -> Tensor:
        """(L, B, d) prompt, (B, L) mask (True = padding) -> (B, d) mean over the valid tokens."""
        is_valid = (~prompt_mask).float().permute(1, 0)[..., None]
        num_valid = torch.clamp(torch.sum(is_valid, dim=0), min=1.0)
        return (prompt * is_valid).sum(dim=0) / num_valid

    def forward(self, hs: Tensor, prompt: Tensor, prompt_mask: Tensor) -> Tensor:
        """``hs``: (layers, B, Q, d); ``prompt``: (L, B, d); ``prompt_mask``: (B, L), True = padding.

        Returns logits (layers, B, Q, 1).
        """
        assert hs.dim() == 4 and prompt.dim() == 3 and prompt_mask.dim() == 2
        if self.prompt_mlp is not None:
            prompt = self.prompt_mlp(prompt)
        pooled_prompt = self.mean_pool_text(prompt, prompt_mask)
        proj_pooled_prompt = self.prompt_proj(pooled_prompt)  # B, d_proj
        proj_hs = self.hs_proj(hs)  # layers, B, Q, d_proj
        scores = torch.matmul(proj_hs, proj_pooled_prompt.unsqueeze(-1)) * self.scale
        if self.clamp_logits:
            scores = scores.clamp(min=-self.clamp_max_val, max=self.clamp_max_val)
        return scores

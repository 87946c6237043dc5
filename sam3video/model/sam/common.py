"""Small blocks of the SAM heads (official names: ``MLPBlock``, ``LayerNorm2d``, ``MLP``)."""

from __future__ import annotations

from typing import Type

import torch
import torch.nn as nn

from ..model_misc import MLP as _MLP


class MLPBlock(nn.Module):
    """(..., d) -> lin1 -> act -> lin2 -> (..., d). State-dict names ``lin1``, ``lin2``."""

    def __init__(self, embedding_dim: int, mlp_dim: int, act: Type[nn.Module] = nn.GELU):
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = act()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (B, C, H, W) map (biased variance, ``eps`` inside the sqrt)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(_MLP):
    """``num_layers`` linear layers with ReLU between them, optionally a sigmoid on the output
    (the SAM heads' MLP). State-dict names ``layers.{i}.*``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int,
                 sigmoid_output: bool = False):
        super().__init__(input_dim, hidden_dim, output_dim, num_layers)
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return torch.sigmoid(x) if self.sigmoid_output else x

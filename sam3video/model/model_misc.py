"""Small building blocks shared by the SAM 3 modules (official names: ``MLP``, ``get_clones`` ...)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them.

    ``residual`` adds the input to the output (needs ``input_dim == output_dim``); ``out_norm`` is applied
    last. State-dict names: ``layers.{i}.weight``, ``out_norm.*``.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        dropout: float = 0.0,
        residual: bool = False,
        out_norm: nn.Module | None = None,
    ):
        super().__init__()
        self.num_layers = num_layers
        hidden = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip([input_dim] + hidden, hidden + [output_dim])
        )
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if residual and input_dim != output_dim:
            raise ValueError("a residual MLP needs input_dim == output_dim")
        self.residual = residual
        self.out_norm = out_norm if out_norm is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig = x
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = self.drop(F.relu(x))
        if self.residual:
            x = x + orig
        return self.out_norm(x)


def get_clones(module: nn.Module, n: int) -> nn.ModuleList:
    """``n`` independent deep copies of ``module``."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def get_activation_fn(name: str):
    """The activation function called ``name`` (relu, gelu, glu)."""
    activations = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in activations:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(activations)}")
    return activations[name]


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """log(x / (1 - x)) with x clamped to [0, 1] and both terms to at least ``eps``."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class MultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` that never returns attention weights (lets torch use fused kernels).

    ``attention_kernel`` (None: torch's): a callable (B, heads, L, d) q, k, v -> (B, heads, L, d) that
    replaces the scaled dot-product attention of unmasked inference calls (``--runtime openvino`` sets
    OpenVINO's on the fusion encoder's self-attention); the projections stay torch's.
    """

    attention_kernel = None

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False, attn_mask=None, **kwargs):
        if (self.attention_kernel is not None and key_padding_mask is None and attn_mask is None and not kwargs
                and not self.training and self._qkv_same_embed_dim and self.bias_k is None and not self.add_zero_attn):
            return self._forward_with_kernel(query, key, value), None
        return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=False,
                               attn_mask=attn_mask, **kwargs)

    def _forward_with_kernel(self, query, key, value):
        """The attention with ``attention_kernel``: (L, B, E) or with ``batch_first`` (B, L, E) inputs."""
        if not self.batch_first:
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        heads = [F.linear(x, w, b).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
                 for x, w, b in zip((query, key, value), self.in_proj_weight.chunk(3), biases)]
        out = self.attention_kernel(*heads).to(heads[0].dtype).transpose(1, 2).flatten(2)
        out = self.out_proj(out)
        return out if self.batch_first else out.transpose(0, 1)

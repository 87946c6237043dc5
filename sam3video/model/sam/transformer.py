"""Attention blocks of the SAM heads and of the tracker's memory attention (official names:
``Attention``, ``RoPEAttention``, ``TwoWayAttentionBlock``, ``TwoWayTransformer``).

Token sequences here are batch-first ``(B, N, C)``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..vitdet import compute_axial_cis
from .common import MLPBlock


def apply_rotary_enc(
    xq: Tensor, xk: Tensor, freqs_cis: Tensor, repeat_freqs_k: bool = False
) -> Tuple[Tensor, Tensor]:
    """Rotate q (B, nHead, Lq, C) and k (B, nHead, Lk, C) by ``freqs_cis`` (Lq, C // 2).

    Channel pairs (2i, 2i+1) form a complex number. With ``repeat_freqs_k`` the frequencies are tiled
    ``Lk // Lq`` times along the sequence, so each of several stacked memory maps gets the same
    rotations as the query map. Empty k is returned unchanged.
    """
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3).type_as(xq)
    if xk.shape[-2] == 0:
        return xq_out, xk
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    if repeat_freqs_k:
        freqs_cis = freqs_cis.repeat(xk_.shape[-2] // xq_.shape[-2], 1)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3).type_as(xk)
    return xq_out, xk_out


def axial_freqs_cis(head_dim: int, feat_sizes: Tuple[int, int], length: int, theta: float) -> Tensor:
    """(length, head_dim // 2) complex64 RoPE rotations of a row-major query map of ``length`` tokens:
    ``feat_sizes`` if it has that many, else a square map (as the official code assumes)."""
    end_x, end_y = feat_sizes
    if end_x * end_y != length:
        end_x = end_y = math.isqrt(length)
        if end_x * end_y != length:
            raise ValueError(f"RoPE attention needs a square query map, got {length} tokens")
    return compute_axial_cis(head_dim, end_x, end_y, theta=theta)


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by ``downsample_rate``.

    q (B, Nq, embedding_dim), k and v (B, Nk, kv_in_dim) -> (B, Nq, embedding_dim). Projections
    ``q_proj``, ``k_proj``, ``v_proj`` map to ``internal_dim = embedding_dim // downsample_rate``;
    ``out_proj`` maps back. ``dropout`` applies to the attention weights in training only.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: Optional[int] = None,
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        assert self.internal_dim % num_heads == 0, "num_heads must divide embedding_dim."
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _separate_heads(self, x: Tensor) -> Tensor:
        """(B, N, C) -> (B, nHead, N, C / nHead)."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _recombine_heads(x: Tensor) -> Tensor:
        """(B, nHead, N, c) -> (B, N, nHead * c)."""
        b, n_heads, n_tokens, c = x.shape
        return x.transpose(1, 2).reshape(b, n_tokens, n_heads * c)

    def _project(self, q: Tensor, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        return (self._separate_heads(self.q_proj(q)), self._separate_heads(self.k_proj(k)),
                self._separate_heads(self.v_proj(v)))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        dropout_p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return self.out_proj(self._recombine_heads(out))

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self._attend(*self._project(q, k, v))


class RoPEAttention(Attention):
    """``Attention`` with 2-D axial rotary position encoding on q and k (the memory attention's).

    The query is a square ``feat_sizes`` map flattened row-major (Lq = H * W tokens); with
    ``rope_k_repeat`` the keys may be several such maps stacked (Lk = n * Lq), each rotated like the
    query. The last ``num_k_exclude_rope`` keys (object-pointer tokens) are not rotated. The complex
    frequencies (Lq, head_dim // 2) are computed lazily per sequence length and device and are not
    part of the state dict.
    """

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: Tuple[int, int] = (64, 64),
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)
        self._freqs_cache: dict = {}

    def _freqs_cis(self, length: int, device: torch.device) -> Tensor:
        """(length, head_dim // 2) complex64 rotations for a row-major grid of ``length`` tokens."""
        key = (length, device)
        if key not in self._freqs_cache:
            self._freqs_cache[key] = axial_freqs_cis(self.internal_dim // self.num_heads, self.feat_sizes, length,
                                                     self.rope_theta).to(device)
        return self._freqs_cache[key]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0) -> Tensor:
        q, k, v = self._project(q, k, v)
        if q.shape[-2] != k.shape[-2]:
            assert self.rope_k_repeat, "keys longer than queries need rope_k_repeat"
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        freqs_cis = self._freqs_cis(q.shape[-2], q.device)
        q, k_rope = apply_rotary_enc(q, k[:, :, :num_k_rope], freqs_cis, repeat_freqs_k=self.rope_k_repeat)
        k = torch.cat((k_rope, k[:, :, num_k_rope:]), dim=2)
        return self._attend(q, k, v)


class TwoWayAttentionBlock(nn.Module):
    """Sparse tokens and the dense image attend to each other (post-norm):
    (1) token self-attention, (2) tokens -> image cross-attention, (3) MLP on tokens,
    (4) image -> tokens cross-attention. ``skip_first_layer_pe``: no position encoding (and no
    residual) in (1), as in the first block.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ):
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        """queries (B, N, C) with query_pe; keys (B, HW, C) with key_pe -> (queries, keys)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks, then a last tokens -> image attention and LayerNorm (SAM's decoder).

    forward(image_embedding (B, C, H, W), image_pe (B, C, H, W), point_embedding (B, N, C))
    -> (queries (B, N, C), keys (B, HW, C)).
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ):
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim, num_heads=num_heads, mlp_dim=mlp_dim, activation=activation,
                attention_downsample_rate=attention_downsample_rate, skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> Tuple[Tensor, Tensor]:
        image_embedding = image_embedding.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries, keys = point_embedding, image_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
        q, k = queries + point_embedding, keys + image_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys

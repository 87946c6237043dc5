"""Sine position encoding for feature maps, boxes and points (official name: ``PositionEmbeddingSine``)."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn


class PositionEmbeddingSine(nn.Module):
    """The "Attention is all you need" sine/cosine encoding, generalised to 2-D images.

    ``num_pos_feats`` is the total output width: half of it encodes y, half encodes x. With
    ``normalize=True`` positions are scaled to (0, ``scale``] (default 2*pi) before the frequencies
    ``temperature ** (2 * (i // 2) / (num_pos_feats / 2))`` are applied; channels alternate sin, cos.
    The module has no parameters. Encodings of feature maps are cached per (H, W, device).
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: int = 10000,
        normalize: bool = True,
        scale: Optional[float] = None,
        precompute_resolution: Optional[int] = None,
    ):
        super().__init__()
        assert num_pos_feats % 2 == 0, "Expecting even model width"
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        if scale is not None and normalize is False:
            raise ValueError("normalize should be True if scale is passed")
        self.scale = 2 * math.pi if scale is None else scale
        # Only used by the official code to pre-fill its cache; encodings are computed lazily here.
        self.precompute_resolution = precompute_resolution
        self.cache: dict = {}

    def _dim_t(self, device: torch.device) -> torch.Tensor:
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        return self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)

    @staticmethod
    def _sin_cos(pos: torch.Tensor) -> torch.Tensor:
        """(..., F) angles -> (..., F) with sin on even and cos on odd channels (interleaved)."""
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    def _encode_xy(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised coordinates x, y of shape (N,) -> (pos_x, pos_y), each (N, num_pos_feats // 2)."""
        assert len(x) == len(y) and x.ndim == y.ndim == 1
        dim_t = self._dim_t(x.device)
        pos_x = self._sin_cos(x[:, None] * self.scale / dim_t)
        pos_y = self._sin_cos(y[:, None] * self.scale / dim_t)
        return pos_x, pos_y

    @torch.no_grad()
    def encode_boxes(
        self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, h: torch.Tensor
    ) -> torch.Tensor:
        """Boxes (cx, cy, w, h), each (N,), normalised -> (N, num_pos_feats + 2): [pos_y, pos_x, h, w]."""
        pos_x, pos_y = self._encode_xy(x, y)
        return torch.cat((pos_y, pos_x, h[:, None], w[:, None]), dim=1)

    encode = encode_boxes  # official alias

    @torch.no_grad()
    def encode_points(self, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Points x, y and labels, each (B, N) -> (B, N, num_pos_feats + 1): [pos_y, pos_x, label]."""
        (bx, nx), (by, ny), (bl, nl) = x.shape, y.shape, labels.shape
        assert bx == by and nx == ny and bx == bl and nx == nl
        pos_x, pos_y = self._encode_xy(x.flatten(), y.flatten())
        pos_x, pos_y = pos_x.reshape(bx, nx, -1), pos_y.reshape(by, ny, -1)
        return torch.cat((pos_y, pos_x, labels[:, :, None]), dim=2)

    @torch.no_grad()
    def _encode_grid(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(num_pos_feats, h, w) float32 encoding of the pixel grid (positions 1..h, 1..w)."""
        y_embed = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        x_embed = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[-1:] + eps) * self.scale
            x_embed = x_embed / (x_embed[-1:] + eps) * self.scale
        dim_t = self._dim_t(device)
        pos_y = self._sin_cos(y_embed[:, None] / dim_t)[:, None, :].expand(h, w, -1)
        pos_x = self._sin_cos(x_embed[:, None] / dim_t)[None, :, :].expand(h, w, -1)
        return torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).contiguous()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map (B, C, H, W) -> encoding (B, num_pos_feats, H, W) in float32 on x's device."""
        key = (x.shape[-2], x.shape[-1], x.device)
        if key not in self.cache:
            self.cache[key] = self._encode_grid(x.shape[-2], x.shape[-1], x.device)
        return self.cache[key][None].repeat(x.shape[0], 1, 1, 1)

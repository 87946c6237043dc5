"""Memory encoder of the SAM 3 tracker (official names: ``SimpleMaskDownSampler``, ``CXBlock``,
``SimpleFuser``, ``SimpleMaskEncoder``; state-dict prefix ``tracker.maskmem_backbone.``).

A frame's predicted mask (already turned into scaled probabilities by the tracker) is downsampled to
the image-embedding grid, added to the projected image features, fused by ConvNeXt blocks and
projected to the memory width: (B, C, h, w) features + (B, 1, H, W) mask -> (B, mem_dim, h, w).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model_misc import get_clones
from .sam.common import LayerNorm2d
from .vitdet import DropPath


class SimpleMaskDownSampler(nn.Module):
    """(B, C_in, H, W) masks -> (B, embed_dim, H / total_stride, W / total_stride).

    The masks are first resized (bilinear, antialiased) to ``interpol_size`` unless they have that size
    already; then log_stride(total_stride) times [conv k/stride, LayerNorm2d, activation], each
    multiplying the channels by stride**2, then a 1x1 conv to ``embed_dim``. State-dict names
    ``encoder.{i}``. SAM 3: one mask channel, 1 -> 4 -> 16 -> 64 -> 256 for stride 2, total 16.
    SAM 3.1: C_in = multiplex_count * input_channel_multiplier (16 slot masks + 16 conditioning flags
    = 32) and the first conv gives starting_out_chan * stride**2 (32 -> 16 -> 64 -> 256 -> 1024).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        activation: Type[nn.Module] = nn.GELU,
        interpol_size: Optional[Sequence[int]] = None,
        multiplex_count: int = 1,
        starting_out_chan: int = 1,
        input_channel_multiplier: int = 1,
    ):
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        assert stride**num_layers == total_stride
        self.encoder = nn.Sequential()
        self.multiplex_count = multiplex_count * input_channel_multiplier
        mask_in_chans, mask_out_chans = self.multiplex_count, starting_out_chan
        for _ in range(num_layers):
            mask_out_chans = mask_out_chans * (stride**2)
            self.encoder.append(nn.Conv2d(mask_in_chans, mask_out_chans, kernel_size, stride=stride, padding=padding))
            self.encoder.append(LayerNorm2d(mask_out_chans))
            self.encoder.append(activation())
            mask_in_chans = mask_out_chans
        self.encoder.append(nn.Conv2d(mask_out_chans, embed_dim, kernel_size=1))
        self.interpol_size = list(interpol_size) if interpol_size is not None else None
        assert self.interpol_size is None or len(self.interpol_size) == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpol_size is not None and self.interpol_size != list(x.shape[-2:]):
            x = F.interpolate(x.float(), size=self.interpol_size, align_corners=False, mode="bilinear", antialias=True)
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block on (B, C, H, W): depthwise k x k conv, LayerNorm2d, Linear C -> 4C, GELU,
    Linear 4C -> C, per-channel scale ``gamma``, residual."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(layer_scale_init_value * torch.ones(dim)) if layer_scale_init_value > 0 else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)  # (B, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(x)))
        if self.gamma is not None:
            x = self.gamma * x
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


class SimpleFuser(nn.Module):
    """``num_layers`` copies of ``layer`` (CXBlocks) on (B, C, H, W), after an optional 1x1 conv."""

    def __init__(self, layer: nn.Module, num_layers: int, dim: Optional[int] = None, input_projection: bool = False):
        super().__init__()
        self.proj = nn.Identity()
        self.layers = get_clones(layer, num_layers)
        if input_projection:
            assert dim is not None
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class SimpleMaskEncoder(nn.Module):
    """pix_feat (B, in_dim, h, w) + masks (B, 1, H, W) -> ``vision_features`` (B, out_dim, h, w) and
    ``vision_pos_enc`` [(B, out_dim, h, w)] (the sine encoding of the output grid).

    x = fuser(pix_feat_proj(pix_feat) + mask_downsampler(sigmoid(masks))), then ``out_proj``
    (a 1x1 conv, Identity when out_dim == in_dim). ``skip_mask_sigmoid``: the masks are already
    probabilities (the tracker passes sigmoid(logits) * 20 - 10).
    """

    def __init__(
        self,
        out_dim: int,
        mask_downsampler: nn.Module,
        fuser: nn.Module,
        position_encoding: nn.Module,
        in_dim: int = 256,
    ):
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()

    def forward(self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False) -> dict:
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + masks
        x = self.out_proj(self.fuser(x))
        pos = self.position_encoding(x).to(x.dtype)
        return {"vision_features": x, "vision_pos_enc": [pos]}

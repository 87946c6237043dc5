"""ViTDet-style vision transformer of SAM 3 (official names: ``ViT``, ``Block``, ``Attention``).

Tokens are kept as (B, H, W, C) maps. Most blocks attend inside non-overlapping windows, a few
("global" blocks) over the whole map. Queries and keys get a 2-D axial rotary encoding (RoPE) whose
complex frequencies ``freqs_cis`` are a (non-trainable) buffer of each ``Attention``; with
``rope_interp`` the positions are rescaled so that a global block sees the same position range as the
window size used in pre-training. The absolute position embedding is learnt at ``pretrain_img_size``
(with a class-token slot that is dropped) and tiled over the larger input grid.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


# ----------------------------------------------------------------------------------------------------
# 2-D axial rotary position encoding
# ----------------------------------------------------------------------------------------------------
def init_t_xy(end_x: int, end_y: int, scale: float = 1.0, offset: int = 0) -> Tuple[Tensor, Tensor]:
    """x and y coordinates, each (end_x * end_y,), of a row-major end_y x end_x grid, times ``scale``."""
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = (t % end_x).float()
    t_y = torch.div(t, end_x, rounding_mode="floor").float()
    return t_x * scale + offset, t_y * scale + offset


def compute_axial_cis(
    dim: int, end_x: int, end_y: int, theta: float = 10000.0, scale_pos: float = 1.0, offset: int = 0
) -> Tensor:
    """Complex rotations (end_x * end_y, dim // 2): first dim // 4 columns rotate by x, the rest by y."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: (dim // 4)].float() / dim))
    t_x, t_y = init_t_xy(end_x, end_y, scale_pos, offset)
    freqs_x = torch.outer(t_x, freqs)
    freqs_y = torch.outer(t_y, freqs)
    freqs_cis_x = torch.polar(torch.ones_like(freqs_x), freqs_x)
    freqs_cis_y = torch.polar(torch.ones_like(freqs_y), freqs_y)
    return torch.cat([freqs_cis_x, freqs_cis_y], dim=-1)


def apply_rotary_enc(xq: Tensor, xk: Tensor, freqs_cis: Tensor) -> Tuple[Tensor, Tensor]:
    """Rotate q, k (B, nHead, L, C) by ``freqs_cis`` (L, C // 2); channel pairs (2i, 2i+1) form a complex."""
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)


def apply_rotary_enc_real(xq: Tensor, xk: Tensor, freqs_cis: Tensor) -> Tuple[Tensor, Tensor]:
    """``apply_rotary_enc`` in real arithmetic, for exporters without complex tensors (OpenVINO, ONNX):
    pair (a, b) rotated by (cos, sin) is (a cos - b sin, a sin + b cos). Same shapes and values."""
    cos, sin = freqs_cis.real, freqs_cis.imag

    def rotate(x: Tensor) -> Tensor:
        pairs = x.float().reshape(*x.shape[:-1], -1, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(3).type_as(x)

    return rotate(xq), rotate(xk)


def use_real_rope(module: nn.Module, real: bool = True) -> nn.Module:
    """Every ``Attention`` under ``module`` rotates with ``apply_rotary_enc_real`` (``real``) or the
    complex ``apply_rotary_enc``; returns ``module``."""
    for child in module.modules():
        if isinstance(child, Attention):
            child.real_rope = real
    return module


# ----------------------------------------------------------------------------------------------------
# Helpers: windows, absolute position embedding, patch embedding, MLP, stochastic depth
# ----------------------------------------------------------------------------------------------------
def window_partition(x: Tensor, window_size: int) -> Tuple[Tensor, Tuple[int, int]]:
    """(B, H, W, C) -> windows (B * nWin, ws, ws, C), zero-padding H, W up to multiples of ws.

    Returns the windows and the padded size (Hp, Wp).
    """
    B, H, W, C = x.shape
    pad_h = (window_size - H % window_size) % window_size
    pad_w = (window_size - W % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    Hp, Wp = H + pad_h, W + pad_w
    x = x.view(B, Hp // window_size, window_size, Wp // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, C)
    return windows, (Hp, Wp)


def window_unpartition(
    windows: Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> Tensor:
    """Inverse of ``window_partition``: (B * nWin, ws, ws, C) -> (B, H, W, C) with the padding removed."""
    Hp, Wp = pad_hw
    H, W = hw
    B = windows.shape[0] // (Hp * Wp // window_size // window_size)
    x = windows.reshape(B, Hp // window_size, Wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, -1)
    if Hp > H or Wp > W:
        x = x[:, :H, :W, :]
    return x


def get_abs_pos(
    abs_pos: Tensor, has_cls_token: bool, hw: Tuple[int, int], retain_cls_token: bool = False,
    tiling: bool = False,
) -> Tensor:
    """Absolute position embedding (1, [1 +] S*S, C) resized to the token grid -> (1, H, W, C).

    The class-token slot is dropped; the S x S grid is tiled (``tiling``) or bicubically resized.
    """
    if retain_cls_token:
        raise NotImplementedError("retain_cls_token is not supported")
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    size = int(math.sqrt(abs_pos.shape[1]))
    assert size * size == abs_pos.shape[1], "position embedding must cover a square grid"
    if size == h and size == w:
        return abs_pos.reshape(1, h, w, -1)
    grid = abs_pos.reshape(1, size, size, -1).permute(0, 3, 1, 2)
    if tiling:
        grid = grid.tile([1, 1, h // size + 1, w // size + 1])[:, :, :h, :w]
    else:
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1)


class PatchEmbed(nn.Module):
    """Image (B, C, H, W) -> patch tokens (B, H / p, W / p, embed_dim) with one strided conv."""

    def __init__(self, kernel_size=(16, 16), stride=(16, 16), padding=(0, 0), in_chans: int = 3,
                 embed_dim: int = 768, bias: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride,
                              padding=padding, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 -> dropout (timm layout: ``fc1``, ``fc2``)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU,
                 drop: Tuple[float, float] = (0.0, 0.0)):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop[0])
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop2 = nn.Dropout(drop[1])

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero the whole residual branch of a sample with probability p."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class LayerScale(nn.Module):
    """Learnt per-channel scale ``gamma`` (only built when ``init_values`` is set)."""

    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


# ----------------------------------------------------------------------------------------------------
# Attention, Block, ViT
# ----------------------------------------------------------------------------------------------------
class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) token map with optional 2-D RoPE.

    ``input_size`` is the (H, W) the block sees (window size for window blocks); with ``rope_interp``
    the RoPE positions are scaled by ``rope_pt_size[0] / input_size[0]``. Relative position biases and
    class tokens of the official code are not supported (SAM 3 uses neither).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
        cls_token: bool = False,
        use_rope: bool = False,
        rope_theta: float = 10000.0,
        rope_pt_size: Optional[Tuple[int, int]] = None,
        rope_interp: bool = False,
    ):
        super().__init__()
        if use_rel_pos or cls_token:
            raise NotImplementedError("relative position biases and class tokens are not supported")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

        self.use_rope = use_rope
        self.input_size = input_size
        self.rope_theta = rope_theta
        self.rope_pt_size = rope_pt_size if rope_pt_size is not None else input_size
        self.rope_interp = rope_interp
        self.real_rope = False  # ``apply_rotary_enc_real`` instead (same values), for exporters
        if use_rope:
            assert input_size is not None
            self.register_buffer("freqs_cis", self.rope_table())
        else:
            self.freqs_cis = None

    def rope_table(self, input_size: Optional[Tuple[int, int]] = None) -> Tensor:
        """(H * W, head_dim // 2) complex64: the RoPE frequencies ``freqs_cis`` for this block's ``input_size``
        (or another (H, W) grid, by the same rule; the official checkpoint stores them, a transformers one
        does not)."""
        h, w = self.input_size if input_size is None else input_size
        scale_pos = self.rope_pt_size[0] / h if self.rope_interp else 1.0
        return compute_axial_cis(self.head_dim, h, w, theta=self.rope_theta, scale_pos=scale_pos)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C); RoPE needs H * W == len(freqs_cis)."""
        B, H, W, _ = x.shape
        L = H * W
        q, k, v = self.qkv(x).reshape(B, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.use_rope:
            q, k = (apply_rotary_enc_real if self.real_rope else apply_rotary_enc)(q, k, self.freqs_cis)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, nHead, L, head_dim)
        x = x.permute(0, 2, 1, 3).reshape(B, H, W, -1)
        return self.proj(x)


class Block(nn.Module):
    """Pre-norm transformer block; ``window_size > 0`` restricts attention to windows of that size."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        use_rel_pos: bool = False,
        rel_pos_zero_init: bool = True,
        window_size: int = 0,
        input_size: Optional[Tuple[int, int]] = None,
        use_rope: bool = False,
        rope_pt_size: Optional[Tuple[int, int]] = None,
        rope_tiled: bool = False,
        rope_interp: bool = False,
        use_ve_rope: bool = False,
        cls_token: bool = False,
        dropout: float = 0.0,
        init_values: Optional[float] = None,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim, num_heads=num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
            use_rope=use_rope, rope_pt_size=rope_pt_size, rope_interp=rope_interp, cls_token=cls_token,
        )
        self.ls1 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=(dropout, 0.0))
        self.ls2 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.window_size = window_size

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.ls1(self.attn(x))
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        x = shortcut + self.dropout(self.drop_path(x))
        return x + self.dropout(self.drop_path(self.ls2(self.mlp(self.norm2(x)))))


class ViT(nn.Module):
    """ViTDet backbone: image (B, 3, H, W) -> list of feature maps (B, embed_dim, H / p, W / p).

    The list holds the output of the last global block (or of every global block with
    ``return_interm_layers``). ``channel_list`` gives their widths (read by the neck).
    Activation checkpointing and ``compile_mode`` are accepted and ignored.
    """

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: Union[Callable[..., nn.Module], str] = "LayerNorm",
        act_layer: Callable[..., nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        tile_abs_pos: bool = True,
        rel_pos_blocks: Union[Tuple[int, ...], bool] = (),
        rel_pos_zero_init: bool = True,
        window_size: int = 14,
        global_att_blocks: Tuple[int, ...] = (2, 5, 8, 11),
        use_rope: bool = False,
        rope_pt_size: Optional[int] = None,
        use_interp_rope: bool = False,
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        retain_cls_token: bool = False,
        dropout: float = 0.0,
        return_interm_layers: bool = False,
        init_values: Optional[float] = None,
        ln_pre: bool = False,
        ln_post: bool = False,
        bias_patch_embed: bool = True,
        compile_mode: Optional[str] = None,
        use_act_checkpoint: bool = True,
    ):
        super().__init__()
        if rel_pos_blocks is True or (not isinstance(rel_pos_blocks, bool) and len(rel_pos_blocks)):
            raise NotImplementedError("relative position blocks are not supported")
        if retain_cls_token:
            raise NotImplementedError("retain_cls_token is not supported")
        if tile_abs_pos:
            assert use_abs_pos
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.retain_cls_token = retain_cls_token
        self.full_attn_ids = list(global_att_blocks)
        self.tile_abs_pos = tile_abs_pos
        self.use_abs_pos = use_abs_pos
        if isinstance(norm_layer, str):
            norm_layer = partial(getattr(nn, norm_layer), eps=1e-5)

        self.patch_embed = PatchEmbed(kernel_size=(patch_size, patch_size),
                                      stride=(patch_size, patch_size), in_chans=in_chans,
                                      embed_dim=embed_dim, bias=bias_patch_embed)
        if use_abs_pos:
            num_patches = (pretrain_img_size // patch_size) ** 2
            num_positions = num_patches + 1 if pretrain_use_cls_token else num_patches
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        else:
            self.pos_embed = None

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device="cpu")]
        grid = (img_size // patch_size, img_size // patch_size)
        pt_size = (window_size, window_size) if rope_pt_size is None else (rope_pt_size, rope_pt_size)
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                drop_path=dpr[i], norm_layer=norm_layer, act_layer=act_layer,
                window_size=0 if i in self.full_attn_ids else window_size, input_size=grid,
                use_rope=use_rope, rope_pt_size=pt_size, rope_interp=use_interp_rope,
                dropout=dropout, init_values=init_values,
            )
            for i in range(depth)
        )
        self.return_interm_layers = return_interm_layers
        self.channel_list = [embed_dim] * len(self.full_attn_ids) if return_interm_layers else [embed_dim]
        self.ln_pre = norm_layer(embed_dim) if ln_pre else nn.Identity()
        self.ln_post = norm_layer(embed_dim) if ln_post else nn.Identity()

        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def embed(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, H / p, W / p, embed_dim): the token map the first block takes."""
        x = self.patch_embed(x)
        h, w = x.shape[1], x.shape[2]
        if self.pos_embed is not None:
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, (h, w),
                                tiling=self.tile_abs_pos)
        return self.ln_pre(x)

    def forward(self, x: Tensor) -> List[Tensor]:
        """(B, 3, H, W) -> [(B, embed_dim, H / p, W / p)] (one entry per returned global block)."""
        x = self.embed(x)
        outputs = []
        last = self.full_attn_ids[-1]
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == last or (self.return_interm_layers and i in self.full_attn_ids):
                if i == last:
                    x = self.ln_post(x)
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs

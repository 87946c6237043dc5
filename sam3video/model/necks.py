"""Simple feature pyramids on top of the ViT (official names: ``Sam3DualViTDetNeck`` for SAM 3,
``Sam3TriViTDetNeck`` for SAM 3.1)."""

from __future__ import annotations

from copy import deepcopy
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn


def _make_level(dim: int, d_model: int, scale: float) -> nn.Sequential:
    """One pyramid level: resample the (B, dim, h, w) map by ``scale``, then 1x1 and 3x3 convs to d_model.

    4x: two stride-2 transposed convs (dim -> dim/2 -> dim/4) with GELU between; 2x: one
    (dim -> dim/2); 1x: nothing; 0.5x: 2x2 max-pool.
    """
    level = nn.Sequential()
    if scale == 4.0:
        level.add_module("dconv_2x2_0", nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        level.add_module("gelu", nn.GELU())
        level.add_module("dconv_2x2_1", nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2))
        out_dim = dim // 4
    elif scale == 2.0:
        level.add_module("dconv_2x2", nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        out_dim = dim // 2
    elif scale == 1.0:
        out_dim = dim
    elif scale == 0.5:
        level.add_module("maxpool_2x2", nn.MaxPool2d(kernel_size=2, stride=2))
        out_dim = dim
    else:
        raise NotImplementedError(f"scale_factor={scale} is not supported yet.")
    level.add_module("conv_1x1", nn.Conv2d(out_dim, d_model, kernel_size=1, bias=True))
    level.add_module("conv_3x3", nn.Conv2d(d_model, d_model, kernel_size=3, padding=1, bias=True))
    return level


class Sam3DualViTDetNeck(nn.Module):
    """ViTDet simple FPN over the last trunk output, one level per entry of ``scale_factors``.

    With ``add_sam2_neck`` a second, identically shaped set of levels (``sam2_convs``, own weights)
    produces the features for the SAM 2-style tracker.
    """

    def __init__(
        self,
        trunk: nn.Module,
        position_encoding: nn.Module,
        d_model: int,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        add_sam2_neck: bool = False,
    ):
        super().__init__()
        self.trunk = trunk
        self.position_encoding = position_encoding
        self.scale_factors = scale_factors
        dim: int = self.trunk.channel_list[-1]
        self.convs = nn.ModuleList(_make_level(dim, d_model, scale) for scale in scale_factors)
        self.sam2_convs = deepcopy(self.convs) if add_sam2_neck else None

    def forward(
        self, tensor_list: Union[torch.Tensor, List[torch.Tensor]]
    ) -> Tuple[
        List[torch.Tensor], List[torch.Tensor], Optional[List[torch.Tensor]], Optional[List[torch.Tensor]]
    ]:
        """Images (B, 3, H, W) -> (sam3_out, sam3_pos, sam2_out, sam2_pos).

        Each list has one (B, d_model, h_i, w_i) map per scale factor, highest resolution first; the
        position encodings match the features' shapes and dtype. The sam2 lists are None without
        ``add_sam2_neck``.
        """
        x = self.trunk(tensor_list)[-1]
        sam3_out = [conv(x) for conv in self.convs]
        sam3_pos = [self.position_encoding(f).to(f.dtype) for f in sam3_out]
        sam2_out = sam2_pos = None
        if self.sam2_convs is not None:
            sam2_out = [conv(x) for conv in self.sam2_convs]
            sam2_pos = [self.position_encoding(f).to(f.dtype) for f in sam2_out]
        return sam3_out, sam3_pos, sam2_out, sam2_pos


class Sam3TriViTDetNeck(nn.Module):
    """SAM 3.1's neck: one ViT pass, three identically shaped simple FPNs with their own weights —
    ``convs`` (the detector), ``interactive_convs`` (clicks and mask prompts) and ``propagation_convs``
    (the multiplex tracker). SAM 3.1 uses the scales 4, 2, 1.
    """

    def __init__(
        self,
        trunk: nn.Module,
        position_encoding: nn.Module,
        d_model: int,
        scale_factors: Sequence[float] = (4.0, 2.0, 1.0),
    ):
        super().__init__()
        self.trunk = trunk
        self.position_encoding = position_encoding
        self.scale_factors = scale_factors
        dim: int = self.trunk.channel_list[-1]
        self.convs = nn.ModuleList(_make_level(dim, d_model, scale) for scale in scale_factors)
        self.interactive_convs = deepcopy(self.convs)
        self.propagation_convs = deepcopy(self.convs)

    def forward(self, tensor_list: torch.Tensor, *, need_sam3_out: bool = True, need_interactive_out: bool = True,
                need_propagation_out: bool = True) -> Tuple[Optional[List[torch.Tensor]], ...]:
        """Images (B, 3, H, W) -> (sam3_out, sam3_pos, interactive_out, interactive_pos, propagation_out,
        propagation_pos): per path one (B, d_model, h_i, w_i) map per scale, finest first (None when
        the path is not needed)."""
        x = self.trunk(tensor_list)[-1]
        outputs = []
        for convs, needed in ((self.convs, need_sam3_out), (self.interactive_convs, need_interactive_out),
                              (self.propagation_convs, need_propagation_out)):
            if not needed:
                outputs += [None, None]
                continue
            features = [conv(x) for conv in convs]
            outputs += [features, [self.position_encoding(f).to(f.dtype) for f in features]]
        return tuple(outputs)

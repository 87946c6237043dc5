"""SAM 3 fusion encoder: image tokens attend to themselves and to the prompt tokens.

Official names: ``TransformerEncoderLayer`` (also used by the geometry encoder), ``TransformerEncoder``,
``TransformerEncoderFusion``, ``pool_text_feat`` and ``TransformerWrapper`` (the ``transformer.`` module
holding the encoder and the decoder).

Conventions: image features enter the fusion encoder sequence-first, ``(H*W, B, d)``, with ``feat_sizes``
giving ``(H, W)`` per level; prompts are ``(L, B, d)`` with a ``(B, L)`` padding mask (True = padding).
Inside ``TransformerEncoder`` the layers run batch-first (their attention modules are built with
``batch_first=True``); the outputs are returned sequence-first again.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .model_misc import get_activation_fn, get_clones


def _attend(attn: nn.Module, query, key, value, attn_mask=None, key_padding_mask=None) -> Tensor:
    """Output of an ``nn.MultiheadAttention`` without attention weights (as the official wrapper)."""
    return attn(
        query, key, value, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False
    )[0]


class TransformerEncoderLayer(nn.Module):
    """Self-attention, cross-attention to ``memory``, then a feed-forward network (pre- or post-norm).

    The layout (sequence-first or batch-first) is whatever the two attention modules expect; ``tgt`` and
    ``query_pos`` share a layout, as do ``memory`` and ``pos``.
    """

    def __init__(
        self,
        activation: str,
        cross_attention: nn.Module,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        pre_norm: bool,
        self_attention: nn.Module,
    ):
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.dropout_value = dropout
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention

        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)

        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

        self.activation_str = activation
        self.activation = get_activation_fn(activation)
        self.pre_norm = pre_norm
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys
        self.layer_idx = None

    def _cross_attend(self, tgt, memory, memory_mask, memory_key_padding_mask, pos, query_pos) -> Tensor:
        return _attend(
            self.cross_attn_image,
            tgt + query_pos if self.pos_enc_at_cross_attn_queries else tgt,
            memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )

    def forward_post(
        self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
        memory_key_padding_mask=None, pos=None, query_pos=None,
    ) -> Tensor:
        """Post-norm: each residual block is followed by its LayerNorm."""
        q = k = tgt + query_pos if self.pos_enc_at_attn else tgt
        tgt2 = _attend(self.self_attn, q, k, tgt, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt2 = self._cross_attend(tgt, memory, memory_mask, memory_key_padding_mask, pos, query_pos)
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))

    def forward_pre(
        self, tgt, memory, dac=False, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
        memory_key_padding_mask=None, pos=None, query_pos=None,
    ) -> Tensor:
        """Pre-norm: LayerNorm before each block. With ``dac`` only the first half of ``tgt`` (dim 0)
        takes part in self-attention; the second half skips it."""
        if dac:
            assert tgt.shape[0] % 2 == 0
            other_tgt = tgt[tgt.shape[0] // 2 :]
            tgt = tgt[: tgt.shape[0] // 2]
        tgt2 = self.norm1(tgt)
        q = k = tgt2 + query_pos if self.pos_enc_at_attn else tgt2
        tgt2 = _attend(self.self_attn, q, k, tgt2, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)
        tgt = tgt + self.dropout1(tgt2)
        if dac:
            tgt = torch.cat((tgt, other_tgt), dim=0)
        tgt2 = self._cross_attend(
            self.norm2(tgt), memory, memory_mask, memory_key_padding_mask, pos, query_pos
        )
        tgt = tgt + self.dropout2(tgt2)
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(tgt2)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        dac: bool = False,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        """``tgt`` attends to itself (positions ``query_pos``) and to ``memory`` (positions ``pos``)."""
        masks = dict(
            tgt_mask=tgt_mask, memory_mask=memory_mask, tgt_key_padding_mask=tgt_key_padding_mask,
            memory_key_padding_mask=memory_key_padding_mask, pos=pos, query_pos=query_pos,
        )
        if self.pre_norm:
            return self.forward_pre(tgt, memory, dac=dac, **masks)
        if dac:
            raise ValueError("divide-and-conquer self-attention needs pre_norm=True")
        return self.forward_post(tgt, memory, **masks)


def get_valid_ratio(mask: Tensor) -> Tensor:
    """(B, H, W) padding mask (True = padding) -> (B, 2) valid fraction of width and height."""
    _, h, w = mask.shape
    valid_h = torch.sum(~mask[:, :, 0], 1)
    valid_w = torch.sum(~mask[:, 0, :], 1)
    return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)


class TransformerEncoder(nn.Module):
    """A stack of encoder layers over flattened multi-level image features attending to a prompt.

    ``use_act_checkpoint`` is accepted and ignored (no activation checkpointing here).
    """

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        d_model: int,
        num_feature_levels: int,
        frozen: bool = False,
        use_act_checkpoint: bool = False,
    ):
        super().__init__()
        self.layers = get_clones(layer, num_layers)
        self.num_layers = num_layers
        self.num_feature_levels = num_feature_levels
        self.level_embed = None
        if num_feature_levels > 1:
            self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
            nn.init.normal_(self.level_embed)
        if frozen:
            for p in self.parameters():
                p.requires_grad_(False)
        self.use_act_checkpoint = use_act_checkpoint
        for layer_idx, enc_layer in enumerate(self.layers):
            enc_layer.layer_idx = layer_idx

    def _prepare_multilevel_features(self, srcs, masks, pos_embeds):
        """Flatten (B, C, H, W) levels to (B, sum HW, C); add level embeddings to the positions.

        Returns (src_flatten, mask_flatten or None, lvl_pos_embed_flatten, level_start_index,
        valid_ratios (B, levels, 2), spatial_shapes (levels, 2)).
        """
        assert len(srcs) == self.num_feature_levels, "mismatch between expected and received feature levels"
        if masks is None:
            masks = [None] * len(srcs)
        has_mask = masks[0] is not None
        src_flatten, mask_flatten, lvl_pos_embed_flatten, spatial_shapes = [], [], [], []
        for lvl, (src, mask, pos_embed) in enumerate(zip(srcs, masks, pos_embeds)):
            spatial_shapes.append(src.shape[-2:])
            src_flatten.append(src.flatten(2).transpose(1, 2))
            pos_embed = pos_embed.flatten(2).transpose(1, 2)
            if self.level_embed is not None:
                pos_embed = pos_embed + self.level_embed[lvl].view(1, 1, -1)
            lvl_pos_embed_flatten.append(pos_embed)
            if has_mask:
                mask_flatten.append(mask.flatten(1))
        src_flatten = torch.cat(src_flatten, 1)
        mask_flatten = torch.cat(mask_flatten, 1) if has_mask else None
        lvl_pos_embed_flatten = torch.cat(lvl_pos_embed_flatten, 1)
        spatial_shapes = torch.tensor(spatial_shapes, dtype=torch.long, device=src_flatten.device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        if has_mask:
            valid_ratios = torch.stack([get_valid_ratio(m) for m in masks], 1)
        else:
            valid_ratios = torch.ones(
                (src_flatten.shape[0], self.num_feature_levels, 2), device=src_flatten.device
            )
        return (
            src_flatten, mask_flatten, lvl_pos_embed_flatten, level_start_index, valid_ratios, spatial_shapes
        )

    def forward(
        self,
        src: List[Tensor],
        src_key_padding_masks: Optional[List[Tensor]] = None,
        pos: Optional[List[Tensor]] = None,
        prompt: Optional[Tensor] = None,
        prompt_key_padding_mask: Optional[Tensor] = None,
        encoder_extra_kwargs: Optional[Dict] = None,
    ):
        """``src``/``pos``: per level (B, C, H, W); ``prompt``: (B, L, C) batch-first; masks True = padding.

        Returns (output (sum HW, B, C), padding mask (sum HW, B) or None, positions (sum HW, B, C),
        level_start_index, spatial_shapes, valid_ratios).
        """
        assert len(src) == self.num_feature_levels, "must be equal to num_feature_levels"
        if src_key_padding_masks is not None:
            assert len(src_key_padding_masks) == self.num_feature_levels
        if pos is not None:
            assert len(pos) == self.num_feature_levels
        (
            output, key_padding_masks_flatten, lvl_pos_embed_flatten, level_start_index, valid_ratios,
            spatial_shapes,
        ) = self._prepare_multilevel_features(src, src_key_padding_masks, pos)
        for layer in self.layers:
            output = layer(
                tgt=output,
                memory=prompt,
                memory_key_padding_mask=prompt_key_padding_mask,
                query_pos=lvl_pos_embed_flatten,
                tgt_key_padding_mask=key_padding_masks_flatten,
                **(encoder_extra_kwargs or {}),
            )
        return (
            output.transpose(0, 1),
            key_padding_masks_flatten.transpose(0, 1) if key_padding_masks_flatten is not None else None,
            lvl_pos_embed_flatten.transpose(0, 1),
            level_start_index,
            spatial_shapes,
            valid_ratios,
        )


class TransformerEncoderFusion(TransformerEncoder):
    """Encoder fusing the prompt into the image tokens; optionally adds the pooled prompt first.

    ``compile_mode`` is accepted and ignored.
    """

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        d_model: int,
        num_feature_levels: int,
        add_pooled_text_to_img_feat: bool = True,
        pool_text_with_mask: bool = False,
        compile_mode: Optional[str] = None,
        **kwargs,
    ):
        super().__init__(layer, num_layers, d_model, num_feature_levels, **kwargs)
        self.add_pooled_text_to_img_feat = add_pooled_text_to_img_feat
        if add_pooled_text_to_img_feat:
            self.text_pooling_proj = nn.Linear(d_model, d_model)
        self.pool_text_with_mask = pool_text_with_mask

    def forward(
        self,
        src: List[Tensor],
        prompt: Tensor,
        src_key_padding_mask: Optional[List[Tensor]] = None,
        src_pos: Optional[List[Tensor]] = None,
        prompt_key_padding_mask: Optional[Tensor] = None,
        prompt_pos: Optional[Tensor] = None,
        feat_sizes: Optional[List] = None,
        encoder_extra_kwargs: Optional[Dict] = None,
    ) -> Dict[str, Tensor]:
        """``src``/``src_pos``: per level (H*W, B, C) with ``feat_sizes`` [(H, W)], else (B, C, H, W);
        ``prompt``: (L, B, C); ``prompt_key_padding_mask``: (B, L), True = padding. ``prompt_pos`` is
        unused (as officially).

        Returns a dict: ``memory`` (sum HW, B, C), ``padding_mask``, ``pos_embed`` (sum HW, B, C),
        ``memory_text`` (the prompt, unchanged), ``level_start_index``, ``spatial_shapes``, ``valid_ratios``.
        """
        src = list(src)
        src_pos = list(src_pos) if src_pos is not None else None
        if feat_sizes is not None:
            assert len(feat_sizes) == len(src)
            bs = src[0].shape[1]
            masks = list(src_key_padding_mask) if src_key_padding_mask is not None else [None] * len(src)
            for i, (h, w) in enumerate(feat_sizes):
                src[i] = src[i].reshape(h, w, bs, -1).permute(2, 3, 0, 1)
                src_pos[i] = src_pos[i].reshape(h, w, bs, -1).permute(2, 3, 0, 1)
                if masks[i] is not None:
                    masks[i] = masks[i].reshape(h, w, bs).permute(2, 0, 1)
            src_key_padding_mask = masks
        else:
            assert all(x.dim() == 4 for x in src), "expected list of (bs, c, h, w) tensors"

        if self.add_pooled_text_to_img_feat:
            pooled_text = pool_text_feat(prompt, prompt_key_padding_mask, self.pool_text_with_mask)
            pooled_text = self.text_pooling_proj(pooled_text)[..., None, None]
            src = [x + pooled_text for x in src]

        out, padding_mask, pos_embed, level_start_index, spatial_shapes, valid_ratios = super().forward(
            src,
            src_key_padding_masks=src_key_padding_mask,
            pos=src_pos,
            prompt=prompt.transpose(0, 1),
            prompt_key_padding_mask=prompt_key_padding_mask,
            encoder_extra_kwargs=encoder_extra_kwargs,
        )
        return {
            "memory": out,
            "padding_mask": padding_mask,
            "pos_embed": pos_embed,
            "memory_text": prompt,
            "level_start_index": level_start_index,
            "spatial_shapes": spatial_shapes,
            "valid_ratios": valid_ratios,
        }


def pool_text_feat(prompt: Tensor, prompt_mask: Optional[Tensor], pool_with_mask: bool) -> Tensor:
    """Mean of the prompt tokens: (L, B, C) -> (B, C); with ``pool_with_mask`` only over the tokens where
    ``prompt_mask`` (B, L) is False (at least one token counted)."""
    if not pool_with_mask:
        return prompt.mean(dim=0)
    assert prompt_mask.dim() == 2
    is_valid = (~prompt_mask).float().permute(1, 0)[..., None]
    num_valid = torch.clamp(torch.sum(is_valid, dim=0), min=1.0)
    return (prompt * is_valid).sum(dim=0) / num_valid


class TransformerWrapper(nn.Module):
    """Holds the fusion ``encoder`` and the ``decoder`` (state-dict prefix ``transformer.``).

    At construction every parameter with more than one dimension is Xavier-initialised, except those
    of the box head, the query embeddings and the reference points (as officially).
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        d_model: int,
        two_stage_type: str = "none",
        pos_enc_at_input_dec: bool = True,
    ):
        super().__init__()
        assert two_stage_type == "none", f"unknown two_stage_type {two_stage_type!r}"
        self.encoder = encoder
        self.decoder = decoder
        self.num_queries = decoder.num_queries if decoder is not None else None
        self.pos_enc_at_input_dec = pos_enc_at_input_dec
        self.two_stage_type = two_stage_type
        self._reset_parameters()
        self.d_model = d_model

    def _reset_parameters(self) -> None:
        for name, p in self.named_parameters():
            if p.dim() > 1 and not any(s in name for s in ("box_embed", "query_embed", "reference_points")):
                nn.init.xavier_uniform_(p)

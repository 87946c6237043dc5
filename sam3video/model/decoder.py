"""SAM 3 DETR-style decoder: object queries with box refinement, box relative position bias (boxRPB),
text cross-attention, a presence token and divide-and-conquer (DAC) one-to-many queries.

Official names: ``TransformerDecoderLayer``, ``TransformerDecoder``, ``gen_sineembed_for_position``.
Everything here is sequence-first: queries (Q, B, d), image memory (H*W, B, d), text (L, B, d).

DAC (training): the Q queries are repeated to 2Q; the first Q (one-to-one) run self-attention, the
second Q (one-to-many) skip it; both halves cross-attend and refine their boxes.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .box_ops import box_cxcywh_to_xyxy
from .model_misc import MLP, get_activation_fn, get_clones, inverse_sigmoid


def _attend(attn: nn.Module, query, key, value, attn_mask=None, key_padding_mask=None) -> Tensor:
    """Output of an ``nn.MultiheadAttention`` without attention weights. A boolean padding mask next to
    an additive float mask becomes additive too (what torch does internally, minus its warning)."""
    if (
        key_padding_mask is not None and key_padding_mask.dtype == torch.bool
        and attn_mask is not None and attn_mask.is_floating_point()
    ):
        key_padding_mask = torch.zeros_like(key_padding_mask, dtype=attn_mask.dtype).masked_fill(
            key_padding_mask, float("-inf")
        )
    return attn(
        query, key, value, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False
    )[0]


def _with_pos(tensor: Tensor, pos: Optional[Tensor]) -> Tensor:
    return tensor if pos is None else tensor + pos


class TransformerDecoderLayer(nn.Module):
    """Self-attention (o2o queries + presence token), text cross-attention, image cross-attention with
    the boxRPB mask, FFN; post-norm. ``cross_attention`` must be sequence-first."""

    full_precision_children = ("linear1", "linear2")  # the FFN runs outside autocast (model.precision)

    def __init__(
        self,
        activation: str,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        cross_attention: nn.Module,
        n_heads: int,
        use_text_cross_attention: bool = False,
    ):
        super().__init__()

        def drop() -> nn.Module:
            return nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self.cross_attn = cross_attention
        self.dropout1 = drop()
        self.norm1 = nn.LayerNorm(d_model)

        self.use_text_cross_attention = use_text_cross_attention
        if use_text_cross_attention:
            self.ca_text = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
            self.catext_dropout = drop()
            self.catext_norm = nn.LayerNorm(d_model)

        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = drop()
        self.norm2 = nn.LayerNorm(d_model)

        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = get_activation_fn(activation)
        self.dropout3 = drop()
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = drop()
        self.norm3 = nn.LayerNorm(d_model)

    def forward_ffn(self, tgt: Tensor) -> Tensor:
        # The official FFN runs outside autocast (full precision).
        with torch.autocast(device_type=tgt.device.type, enabled=False):
            tgt2 = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(tgt2))

    def forward(
        self,
        tgt: Tensor,
        tgt_query_pos: Optional[Tensor] = None,
        memory_text: Optional[Tensor] = None,
        text_attention_mask: Optional[Tensor] = None,
        memory: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        memory_pos: Optional[Tensor] = None,
        self_attn_mask: Optional[Tensor] = None,
        cross_attn_mask: Optional[Tensor] = None,
        dac: bool = False,
        dac_use_selfatt_ln: bool = True,
        presence_token: Optional[Tensor] = None,
        **kwargs,
    ):
        """``tgt``, ``tgt_query_pos``: (Q, B, d) (2Q with ``dac``); ``memory_text``: (L, B, d) with
        ``text_attention_mask`` (B, L), True = padding; ``memory``, ``memory_pos``: (HW, B, d) with
        ``memory_key_padding_mask`` (HW, B); ``cross_attn_mask``: (B*heads, Q, HW) additive bias;
        ``presence_token``: (1, B, d) or None. Other official keyword arguments (reference points, sine
        embeddings, level indices) are accepted and unused.

        Returns (tgt (Q, B, d), presence token out (1, B, d) or None).
        """
        if dac:
            assert tgt.shape[0] % 2 == 0
            num_o2o_queries = tgt.shape[0] // 2
            tgt_o2o = tgt[:num_o2o_queries]
            tgt_query_pos_o2o = tgt_query_pos[:num_o2o_queries]
            tgt_o2m = tgt[num_o2o_queries:]
        else:
            tgt_o2o = tgt
            tgt_query_pos_o2o = tgt_query_pos

        if presence_token is not None:
            tgt_o2o = torch.cat([presence_token, tgt_o2o], dim=0)
            zeros = torch.zeros_like(presence_token)
            tgt_query_pos_o2o = torch.cat([zeros, tgt_query_pos_o2o], dim=0)
            tgt_query_pos = torch.cat([zeros, tgt_query_pos], dim=0)

        q = k = _with_pos(tgt_o2o, tgt_query_pos_o2o)
        tgt2 = _attend(self.self_attn, q, k, tgt_o2o, attn_mask=self_attn_mask)
        tgt_o2o = tgt_o2o + self.dropout2(tgt2)
        if dac:
            if not dac_use_selfatt_ln:
                tgt_o2o = self.norm2(tgt_o2o)
            tgt = torch.cat((tgt_o2o, tgt_o2m), dim=0)
            if dac_use_selfatt_ln:
                tgt = self.norm2(tgt)
        else:
            tgt = self.norm2(tgt_o2o)

        if self.use_text_cross_attention:
            tgt2 = _attend(
                self.ca_text, _with_pos(tgt, tgt_query_pos), memory_text, memory_text,
                key_padding_mask=text_attention_mask,
            )
            tgt = self.catext_norm(tgt + self.catext_dropout(tgt2))

        if presence_token is not None and cross_attn_mask is not None:
            # the presence token attends to the whole image
            presence_token_mask = torch.zeros_like(cross_attn_mask[:, :1, :])
            cross_attn_mask = torch.cat([presence_token_mask, cross_attn_mask], dim=1)

        tgt2 = _attend(
            self.cross_attn,
            _with_pos(tgt, tgt_query_pos),
            _with_pos(memory, memory_pos),
            memory,
            attn_mask=cross_attn_mask,
            key_padding_mask=(
                memory_key_padding_mask.transpose(0, 1) if memory_key_padding_mask is not None else None
            ),
        )
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt = self.forward_ffn(tgt)

        presence_token_out = None
        if presence_token is not None:
            presence_token_out = tgt[:1]
            tgt = tgt[1:]
        return tgt, presence_token_out


class TransformerDecoder(nn.Module):
    """Stack of decoder layers with iterative box refinement (reference boxes are cx, cy, w, h in [0, 1]).

    Supported configuration (asserted): ``return_intermediate=True``, ``box_refine=True``, no
    interaction layer, no instance queries. ``resolution``, ``stride``, ``use_act_checkpoint`` and
    ``compile_mode`` are accepted and ignored. ``clamp_presence_logits`` is stored but, exactly as in
    the official code (whose clamp is not in place and its result dropped), the logits are not clamped.
    """

    def __init__(
        self,
        d_model: int,
        frozen: bool,
        interaction_layer,
        layer: nn.Module,
        num_layers: int,
        num_queries: int,
        return_intermediate: bool,
        box_refine: bool = False,
        num_o2m_queries: int = 0,
        dac: bool = False,
        boxRPB: str = "none",
        instance_query: bool = False,
        num_instances: int = 1,
        dac_use_selfatt_ln: bool = True,
        use_act_checkpoint: bool = False,
        compile_mode=None,
        presence_token: bool = False,
        clamp_presence_logits: bool = True,
        clamp_presence_logit_max_val: float = 10.0,
        use_normed_output_consistently: bool = True,
        separate_box_head_instance: bool = False,
        separate_norm_instance: bool = False,
        resolution: Optional[int] = None,
        stride: Optional[int] = None,
    ):
        super().__init__()
        assert interaction_layer is None, "interaction layers are not supported"
        assert not (instance_query or separate_box_head_instance or separate_norm_instance), (
            "instance queries are not supported"
        )
        assert return_intermediate, "support return_intermediate only"
        assert box_refine, "support box refine only"
        assert boxRPB in ["none", "log", "linear", "both"]
        self.d_model = d_model
        self.layers = get_clones(layer, num_layers)
        self.num_layers = num_layers
        self.num_queries = num_queries
        self.dac = dac
        # with DAC the o2m queries are a copy of the o2o ones, so only num_queries embeddings exist
        self.num_o2m_queries = num_queries if dac else num_o2m_queries
        tot_num_queries = num_queries if dac else num_queries + num_o2m_queries
        self.norm = nn.LayerNorm(d_model)
        self.return_intermediate = return_intermediate
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.query_embed = nn.Embedding(tot_num_queries, d_model)
        self.use_normed_output_consistently = use_normed_output_consistently
        self.box_refine = box_refine
        nn.init.constant_(self.bbox_embed.layers[-1].weight.data, 0)
        nn.init.constant_(self.bbox_embed.layers[-1].bias.data, 0)
        self.reference_points = nn.Embedding(num_queries, 4)

        self.boxRPB = boxRPB
        if boxRPB != "none":
            first = self.layers[0]
            attn = first.cross_attn_image if hasattr(first, "cross_attn_image") else first.cross_attn
            n_input = 4 if boxRPB == "both" else 2
            self.boxRPB_embed_x = MLP(n_input, d_model, attn.num_heads, 2)
            self.boxRPB_embed_y = MLP(n_input, d_model, attn.num_heads, 2)

        if frozen:
            for p in self.parameters():
                p.requires_grad_(False)

        self.presence_token = None
        self.clamp_presence_logits = clamp_presence_logits
        self.clamp_presence_logit_max_val = clamp_presence_logit_max_val
        if presence_token:
            self.presence_token = nn.Embedding(1, d_model)
            self.presence_token_head = MLP(d_model, d_model, 1, 3)
            self.presence_token_out_norm = nn.LayerNorm(d_model)

        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.dac_use_selfatt_ln = dac_use_selfatt_ln
        self.use_act_checkpoint = use_act_checkpoint
        nn.init.normal_(self.query_embed.weight.data)
        for layer_idx, dec_layer in enumerate(self.layers):
            dec_layer.layer_idx = layer_idx

    @staticmethod
    def _get_coords(H: int, W: int, device) -> tuple[Tensor, Tensor]:
        """Top-left coordinates of the feature cells, normalised by the feature size: (H,), (W,)."""
        coords_h = torch.arange(0, H, device=device, dtype=torch.float32) / H
        coords_w = torch.arange(0, W, device=device, dtype=torch.float32) / W
        return coords_h, coords_w

    def _get_rpb_matrix(self, reference_boxes: Tensor, feat_size) -> Tensor:
        """Box relative position bias: (Q, B, 4) cxcywh boxes -> (B, heads, Q, H*W) additive mask."""
        H, W = int(feat_size[0]), int(feat_size[1])
        boxes_xyxy = box_cxcywh_to_xyxy(reference_boxes).transpose(0, 1)
        bs, num_queries, _ = boxes_xyxy.shape
        coords_h, coords_w = self._get_coords(H, W, reference_boxes.device)
        boxes_flat = boxes_xyxy.reshape(-1, 1, 4)
        deltas_y = (coords_h.view(1, -1, 1) - boxes_flat[:, :, 1:4:2]).view(bs, num_queries, -1, 2)
        deltas_x = (coords_w.view(1, -1, 1) - boxes_flat[:, :, 0:3:2]).view(bs, num_queries, -1, 2)

        if self.boxRPB in ["log", "both"]:
            # map [-1, 1] to a signed log scale over [-8, 8], normalised to [-1, 1]
            def signed_log(d: Tensor) -> Tensor:
                d = d * 8
                return torch.sign(d) * torch.log2(torch.abs(d) + 1.0) / math.log2(8)

            if self.boxRPB == "log":
                deltas_x, deltas_y = signed_log(deltas_x), signed_log(deltas_y)
            else:
                deltas_x = torch.cat([deltas_x, signed_log(deltas_x)], dim=-1)
                deltas_y = torch.cat([deltas_y, signed_log(deltas_y)], dim=-1)

        deltas_x = self.boxRPB_embed_x(deltas_x)  # B, Q, W, heads
        deltas_y = self.boxRPB_embed_y(deltas_y)  # B, Q, H, heads
        B = deltas_y.unsqueeze(3) + deltas_x.unsqueeze(2)  # B, Q, H, W, heads
        return B.flatten(2, 3).permute(0, 3, 1, 2).contiguous()  # B, heads, Q, H*W

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        reference_boxes: Optional[Tensor] = None,
        level_start_index: Optional[Tensor] = None,
        spatial_shapes: Optional[Tensor] = None,
        valid_ratios: Optional[Tensor] = None,
        memory_text: Optional[Tensor] = None,
        text_attention_mask: Optional[Tensor] = None,
        apply_dac: Optional[bool] = None,
        is_instance_prompt: bool = False,
        decoder_extra_kwargs: Optional[Dict] = None,
    ):
        """``tgt``: (Q, B, d) query embeddings; ``memory``/``pos``: (HW, B, d) with ``spatial_shapes``
        (1, 2) (single level) and ``valid_ratios`` (B, 1, 2); ``memory_key_padding_mask``: (HW, B) or
        None; ``memory_text``: (L, B, d) with ``text_attention_mask`` (B, L), True = padding;
        ``reference_boxes``: (Q, B, 4) after sigmoid, or None to use the learnt ones; ``apply_dac``
        defaults to ``self.dac`` (SAM 3 passes ``dac and training``).

        Returns (hs (layers, Q', B, d) normed outputs, reference boxes (layers, Q', B, 4) each layer's
        input boxes, presence logits (layers, 1, B) or None, presence features (1, B, d) or None), with
        Q' = 2Q under DAC (o2o first, then o2m).
        """
        assert not is_instance_prompt, "instance prompts are not supported"
        if memory_mask is not None:
            assert self.boxRPB == "none", "a memory_mask together with boxRPB is not supported"
        apply_dac = apply_dac if apply_dac is not None else self.dac
        if apply_dac:
            assert tgt.shape[0] == self.num_queries
            # tgt_mask is not tiled: the o2m half skips self-attention
            tgt = tgt.repeat(2, 1, 1)
            if reference_boxes is not None:
                assert reference_boxes.shape[0] == self.num_queries
                reference_boxes = reference_boxes.repeat(2, 1, 1)

        bs = tgt.shape[1]
        if reference_boxes is None:
            reference_boxes = self.reference_points.weight.unsqueeze(1)
            reference_boxes = reference_boxes.repeat(2 if apply_dac else 1, bs, 1).sigmoid()
        intermediate_ref_boxes = [reference_boxes]
        intermediate, intermediate_presence_logits = [], []
        presence_feats = None

        output = tgt
        presence_out = None
        if self.presence_token is not None:
            presence_out = self.presence_token.weight[None].expand(1, bs, -1)

        for layer_idx, layer in enumerate(self.layers):
            reference_points_input = (
                reference_boxes[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[None, :]
            )  # Q, B, levels, 4
            query_sine_embed = gen_sineembed_for_position(reference_points_input[:, :, 0, :], self.d_model)
            query_pos = self.ref_point_head(query_sine_embed)  # Q, B, d

            if self.boxRPB != "none":
                assert spatial_shapes.shape[0] == 1, "only single scale support implemented"
                memory_mask = self._get_rpb_matrix(
                    reference_boxes, (spatial_shapes[0, 0], spatial_shapes[0, 1])
                )
                memory_mask = memory_mask.flatten(0, 1)  # B*heads, Q, HW

            output, presence_out = layer(
                tgt=output,
                tgt_query_pos=query_pos,
                tgt_query_sine_embed=query_sine_embed,
                tgt_key_padding_mask=tgt_key_padding_mask,
                tgt_reference_points=reference_points_input,
                memory_text=memory_text,
                text_attention_mask=text_attention_mask,
                memory=memory,
                memory_key_padding_mask=memory_key_padding_mask,
                memory_level_start_index=level_start_index,
                memory_spatial_shapes=spatial_shapes,
                memory_pos=pos,
                self_attn_mask=tgt_mask,
                cross_attn_mask=memory_mask,
                dac=apply_dac,
                dac_use_selfatt_ln=self.dac_use_selfatt_ln,
                presence_token=presence_out,
                **(decoder_extra_kwargs or {}),
            )

            # box refinement: the head predicts a delta in logit space
            normed = self.norm(output) if self.use_normed_output_consistently else output
            delta_unsig = self.bbox_embed(normed)
            new_reference_points = (delta_unsig + inverse_sigmoid(reference_boxes)).sigmoid()
            reference_boxes = new_reference_points.detach()
            if layer_idx != self.num_layers - 1:
                intermediate_ref_boxes.append(new_reference_points)

            intermediate.append(self.norm(output))
            if self.presence_token is not None:
                logits = self.presence_token_head(self.presence_token_out_norm(presence_out)).squeeze(-1)
                intermediate_presence_logits.append(logits)
                presence_feats = presence_out.clone()

        return (
            torch.stack(intermediate),
            torch.stack(intermediate_ref_boxes),
            torch.stack(intermediate_presence_logits) if self.presence_token is not None else None,
            presence_feats,
        )


def gen_sineembed_for_position(pos_tensor: Tensor, num_feats: int = 256) -> Tensor:
    """Sine embedding of (Q, B, 2) points or (Q, B, 4) boxes in [0, 1]: ``num_feats // 2`` channels per
    coordinate, concatenated in the order y, x (then w, h) -> (Q, B, num_feats) or (Q, B, 2 * num_feats)."""
    assert num_feats % 2 == 0
    num_feats = num_feats // 2
    scale = 2 * math.pi
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=pos_tensor.device)
    dim_t = 10000 ** (2 * (torch.div(dim_t, 2, rounding_mode="floor")) / num_feats)

    def embed(coord: Tensor) -> Tensor:
        p = (coord * scale)[:, :, None] / dim_t
        return torch.stack((p[:, :, 0::2].sin(), p[:, :, 1::2].cos()), dim=3).flatten(2)

    if pos_tensor.size(-1) == 2:
        return torch.cat((embed(pos_tensor[:, :, 1]), embed(pos_tensor[:, :, 0])), dim=2)
    if pos_tensor.size(-1) == 4:
        coords = [pos_tensor[:, :, i] for i in (1, 0, 2, 3)]
        return torch.cat([embed(c) for c in coords], dim=2)
    raise ValueError(f"Unknown pos_tensor shape(-1): {pos_tensor.size(-1)}")

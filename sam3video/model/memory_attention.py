"""Memory attention of the SAM 3 tracker (official names: ``TransformerEncoderCrossAttention``,
``TransformerDecoderLayerv2``; state-dict prefix ``tracker.transformer.encoder.``).

The current frame's image tokens (HW, B, C) self-attend (RoPE) and cross-attend (RoPE on the spatial
memories, none on object-pointer tokens) to the memory bank prompt (M, B, mem_dim): 4 pre-norm layers
at full size, then a LayerNorm.
"""

from __future__ import annotations

from typing import List, Optional, Union

import torch.nn as nn
from torch import Tensor

from .model_misc import get_activation_fn, get_clones
from .sam.transformer import RoPEAttention


class TransformerDecoderLayerv2(nn.Module):
    """Pre-norm layer on batch-first tokens: x += SA(norm1(x)); x += CA(norm2(x), memory + pos);
    x += FFN(norm3(x)) (``cross_attention_first`` swaps the two attentions).

    tgt (B, HW, C), memory (B, M, mem_dim), pos (B, M, mem_dim), query_pos (B, HW, C). Position
    encodings are added to the self-attention inputs with ``pos_enc_at_attn``, to the cross-attention
    queries / keys with ``pos_enc_at_cross_attn_queries`` / ``_keys`` (the tracker: keys only).
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
        cross_attention_first: bool = False,
    ):
        super().__init__()
        if not pre_norm:
            raise NotImplementedError("TransformerDecoderLayerv2 is pre-norm only")
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
        self.cross_attention_first = cross_attention_first

    def _forward_sa(self, tgt: Tensor, query_pos: Optional[Tensor]) -> Tensor:
        tgt2 = self.norm1(tgt)
        q = k = tgt2 + query_pos if self.pos_enc_at_attn else tgt2
        return tgt + self.dropout1(self.self_attn(q, k, v=tgt2))

    def _forward_ca(self, tgt: Tensor, memory: Tensor, query_pos: Optional[Tensor], pos: Optional[Tensor],
                    num_k_exclude_rope: int = 0) -> Tensor:
        if self.cross_attn_image is None:
            return tgt
        kwds = {}
        if num_k_exclude_rope > 0:
            assert isinstance(self.cross_attn_image, RoPEAttention)
            kwds = {"num_k_exclude_rope": num_k_exclude_rope}
        tgt2 = self.norm2(tgt)
        tgt2 = self.cross_attn_image(
            q=tgt2 + query_pos if self.pos_enc_at_cross_attn_queries else tgt2,
            k=memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            v=memory,
            **kwds,
        )
        return tgt + self.dropout2(tgt2)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        num_k_exclude_rope: int = 0,
    ) -> Tensor:
        if self.cross_attention_first:
            tgt = self._forward_ca(tgt, memory, query_pos, pos, num_k_exclude_rope)
            tgt = self._forward_sa(tgt, query_pos)
        else:
            tgt = self._forward_sa(tgt, query_pos)
            tgt = self._forward_ca(tgt, memory, query_pos, pos, num_k_exclude_rope)
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(tgt2)


class TransformerEncoderCrossAttention(nn.Module):
    """``num_layers`` copies of ``layer``, then ``norm``. Inputs and outputs are seq-first.

    forward(src (HW, B, C) or [it], prompt (M, B, mem_dim), src_pos (HW, B, C), prompt_pos
    (M, B, mem_dim), num_obj_ptr_tokens = how many of the last prompt tokens are object pointers)
    -> {"memory": (HW, B, C), "pos_embed": src_pos, "padding_mask": None}. With ``pos_enc_at_input``
    the layers start from src + 0.1 * src_pos. Masks are not supported (the tracker passes none).
    """

    def __init__(
        self,
        d_model: int,
        frozen: bool,
        pos_enc_at_input: bool,
        layer: nn.Module,
        num_layers: int,
        use_act_checkpoint: bool = False,
        batch_first: bool = False,
        remove_cross_attention_layers: Optional[list] = None,
    ):
        super().__init__()
        self.d_model = d_model
        self.layers = get_clones(layer, num_layers)
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.use_act_checkpoint = use_act_checkpoint
        self.batch_first = batch_first
        if frozen:
            for p in self.parameters():
                p.requires_grad_(False)
        for i in remove_cross_attention_layers or []:
            self.layers[i].cross_attn_image = None
            self.layers[i].norm2 = None
            self.layers[i].dropout2 = None

    def forward(
        self,
        src: Union[Tensor, List[Tensor]],
        prompt: Tensor,
        src_pos: Union[Tensor, List[Tensor]],
        prompt_pos: Tensor,
        feat_sizes: Optional[list] = None,
        num_obj_ptr_tokens: int = 0,
        src_key_padding_mask=None,
        prompt_key_padding_mask=None,
    ) -> dict:
        if isinstance(src, list):
            assert isinstance(src_pos, list) and len(src) == len(src_pos) == 1
            src, src_pos = src[0], src_pos[0]
        if isinstance(src_key_padding_mask, list):
            src_key_padding_mask = src_key_padding_mask[0]
        if src_key_padding_mask is not None or prompt_key_padding_mask is not None:
            raise NotImplementedError("padding masks are not supported in the memory attention")
        assert src.shape[1] == prompt.shape[1], "Batch size must be the same for src and prompt"
        output = src
        if self.pos_enc_at_input and src_pos is not None:
            output = output + 0.1 * src_pos
        if self.batch_first:
            output, src_pos = output.transpose(0, 1), src_pos.transpose(0, 1)
            prompt, prompt_pos = prompt.transpose(0, 1), prompt_pos.transpose(0, 1)
        for layer in self.layers:
            kwds = {}
            if isinstance(layer.cross_attn_image, RoPEAttention):
                kwds = {"num_k_exclude_rope": num_obj_ptr_tokens}
            output = layer(tgt=output, memory=prompt, pos=prompt_pos, query_pos=src_pos, **kwds)
        normed_output = self.norm(output)
        if self.batch_first:
            normed_output, src_pos = normed_output.transpose(0, 1), src_pos.transpose(0, 1)
        return {"memory": normed_output, "pos_embed": src_pos, "padding_mask": src_key_padding_mask}

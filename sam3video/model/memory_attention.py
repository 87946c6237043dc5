"""Memory attention of the SAM 3 tracker (official names: ``TransformerEncoderCrossAttention``,
``TransformerDecoderLayerv2``; state-dict prefix ``tracker.transformer.encoder.``) and SAM 3.1's
decoupled one (``TransformerEncoderDecoupledCrossAttention``, ``DecoupledTransformerDecoderLayerv2``,
``SimpleRoPEAttention``; prefix ``tracker.model.transformer.encoder.``).

The current frame's image tokens (HW, B, C) self-attend (RoPE) and cross-attend (RoPE on the spatial
memories, none on object-pointer tokens) to the memory bank prompt (M, B, mem_dim): 4 pre-norm layers
at full size, then a LayerNorm.
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .model_misc import get_activation_fn, get_clones
from .sam.transformer import RoPEAttention, axial_freqs_cis


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


# ----------------------------------------------------------------------------------------------------
# SAM 3.1: decoupled memory attention (state-dict prefix ``tracker.model.transformer.encoder.``)
# ----------------------------------------------------------------------------------------------------
def apply_rotary_enc_real(xq: Tensor, xk: Tensor, freqs_cis: Tensor, repeat_freqs_k: bool = False):
    """``apply_rotary_enc`` written with real arithmetic (SAM 3.1's default ``use_rope_real``): channel
    pairs (2i, 2i+1) = (re, im) are multiplied by (cos, sin) of ``freqs_cis`` (Lq, C // 2)."""
    cos, sin = freqs_cis.real, freqs_cis.imag

    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        pairs = x.float().reshape(*x.shape[:-1], -1, 2)
        re, im = pairs[..., 0], pairs[..., 1]
        return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(3).type_as(x)

    xq_out = rotate(xq, cos, sin)
    if repeat_freqs_k:
        r = xk.shape[-2] // xq.shape[-2]
        cos, sin = cos.repeat(r, 1), sin.repeat(r, 1)
    return xq_out, rotate(xk, cos, sin)


class SimpleRoPEAttention(nn.Module):
    """Multi-head attention with 2-D axial RoPE and no projections of its own (the layer owns them).

    q (B, Lq, C), k and v (B, Lk, C) already projected -> (B, Lq, C). The query is a square
    ``feat_sizes`` map (row-major); with ``rope_k_repeat`` the keys may be several such maps, each
    rotated like the query; the last ``num_k_exclude_rope`` keys (object pointers) are not rotated.
    """

    def __init__(self, d_model: int, num_heads: int, dropout_p: float, rope_theta: float = 10000.0,
                 rope_k_repeat: bool = False, feat_sizes: Tuple[int, int] = (64, 64)):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout_p = dropout_p
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)
        self._freqs_cache: dict = {}

    def _freqs_cis(self, length: int, device: torch.device) -> Tensor:
        key = (length, device)
        if key not in self._freqs_cache:
            self._freqs_cache[key] = axial_freqs_cis(self.head_dim, self.feat_sizes, length, self.rope_theta).to(device)
        return self._freqs_cache[key]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0) -> Tensor:
        b, n, c = q.shape
        m = k.shape[1]
        if q.shape[1] != m:
            assert self.rope_k_repeat, "keys longer than queries need rope_k_repeat"
        q = q.reshape(b, n, self.num_heads, -1).transpose(1, 2)
        k = k.reshape(k.shape[0], m, self.num_heads, -1).transpose(1, 2)
        v = v.reshape(v.shape[0], m, self.num_heads, -1).transpose(1, 2)
        num_k_rope = m - num_k_exclude_rope
        q, k_rope = apply_rotary_enc_real(q, k[:, :, :num_k_rope], self._freqs_cis(n, q.device),
                                          repeat_freqs_k=self.rope_k_repeat)
        k = torch.cat((k_rope, k[:, :, num_k_rope:]), dim=2)
        dropout_p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return out.transpose(1, 2).reshape(b, n, -1)


class DecoupledTransformerDecoderLayerv2(nn.Module):
    """Pre-norm layer of SAM 3.1's memory attention, batch-first (B = buckets).

    x += out(RoPE-SA(q(n1), k(n1), v(n1))), n1 = norm1(x);
    x += out(RoPE-CA(q = Wq_img(image) + Wq(norm2(x)), k = Wk_img(memory_image) + Wk(memory)
    (+ memory_image_pos), v = Wv(memory)));  x += FFN(norm3(x)).
    image (B|1, HW, C) is the current frame's features, memory_image (B|1, M, C) the past frames'
    image features (zeros for pointer tokens), memory (B, M, C) their memories and pointers.
    """

    def __init__(
        self,
        *,
        activation: str,
        d_model: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        pre_norm: bool,
        self_attention_rope: SimpleRoPEAttention,
        cross_attention_rope: SimpleRoPEAttention,
        cross_attention_first: bool = False,
    ):
        super().__init__()
        if not pre_norm:
            raise NotImplementedError("DecoupledTransformerDecoderLayerv2 is pre-norm only")
        self.d_model = d_model
        self.num_heads = num_heads
        self.dim_feedforward = dim_feedforward
        for name in ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj",
                     "cross_attn_q_proj", "cross_attn_k_proj", "cross_attn_v_proj", "cross_attn_out_proj",
                     "image_cross_attn_q_proj", "image_cross_attn_k_proj"):
            setattr(self, name, nn.Linear(d_model, d_model))
        self.self_attention_rope = self_attention_rope
        self.cross_attention_rope = cross_attention_rope
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
        out = self.self_attention_rope(self.self_attn_q_proj(q), self.self_attn_k_proj(k), self.self_attn_v_proj(tgt2))
        return tgt + self.dropout1(self.self_attn_out_proj(out))

    def _forward_ca(self, image: Tensor, tgt: Tensor, memory_image: Tensor, memory: Tensor,
                    query_pos: Optional[Tensor], memory_image_pos: Optional[Tensor], num_k_exclude_rope: int) -> Tensor:
        tgt2 = self.norm2(tgt)
        q = self.image_cross_attn_q_proj(image) + self.cross_attn_q_proj(tgt2)
        if self.pos_enc_at_cross_attn_queries:
            q = q + query_pos
        k = self.image_cross_attn_k_proj(memory_image) + self.cross_attn_k_proj(memory)
        if self.pos_enc_at_cross_attn_keys:
            k = k + memory_image_pos
        out = self.cross_attention_rope(q, k, self.cross_attn_v_proj(memory), num_k_exclude_rope=num_k_exclude_rope)
        return tgt + self.dropout2(self.cross_attn_out_proj(out))

    def forward(self, *, image: Tensor, tgt: Tensor, memory_image: Tensor, memory: Tensor,
                query_pos: Optional[Tensor] = None, memory_image_pos: Optional[Tensor] = None,
                num_k_exclude_rope: int = 0) -> Tuple[Tensor, Tensor]:
        """-> (image unchanged, tgt)."""
        if self.cross_attention_first:
            tgt = self._forward_ca(image, tgt, memory_image, memory, query_pos, memory_image_pos, num_k_exclude_rope)
            tgt = self._forward_sa(tgt, query_pos)
        else:
            tgt = self._forward_sa(tgt, query_pos)
            tgt = self._forward_ca(image, tgt, memory_image, memory, query_pos, memory_image_pos, num_k_exclude_rope)
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
        return image, tgt + self.dropout3(tgt2)


class TransformerEncoderDecoupledCrossAttention(nn.Module):
    """``num_layers`` decoupled layers, then ``norm`` (of the output alone unless ``use_image_in_output``).

    Seq-first inputs: image (HW, 1, C) and src (HW, B, C) (the same features, src expanded over B buckets),
    memory_image (M_img, 1, C) past frames' features, memory (M, B, C) with its last ``num_obj_ptr_tokens``
    tokens pointers (M = M_img + num_obj_ptr_tokens), src_pos (HW, B, C), memory_image_pos (M_img, 1, C),
    memory_pos (M, B, C) -> {"memory": (HW, B, C), "pos_embed": src_pos}. Pointer tokens get zero image
    features and the pointer positions of bucket 0 as their image positions.
    """

    def __init__(self, d_model: int, frozen: bool, pos_enc_at_input: bool, layer: nn.Module, num_layers: int,
                 use_act_checkpoint: bool = False, batch_first: bool = False, use_image_in_output: bool = True):
        super().__init__()
        self.d_model = d_model
        self.layers = get_clones(layer, num_layers)
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.use_act_checkpoint = use_act_checkpoint
        self.use_image_in_output = use_image_in_output
        self.batch_first = batch_first
        if frozen:
            for p in self.parameters():
                p.requires_grad_(False)

    def forward(self, image: Tensor, src: Tensor, memory_image: Tensor, memory: Tensor,
                image_pos: Optional[Tensor] = None, src_pos: Optional[Tensor] = None,
                memory_image_pos: Optional[Tensor] = None, memory_pos: Optional[Tensor] = None,
                num_obj_ptr_tokens: int = 0) -> dict:
        assert src.shape[1] == memory.shape[1], "src and memory must have the same batch"
        assert image.shape[1] == memory_image.shape[1], "image and memory_image must have the same batch"
        output = src
        if self.pos_enc_at_input and src_pos is not None:
            output = output + 0.1 * src_pos
        if self.batch_first:
            output, src_pos, image = output.transpose(0, 1), src_pos.transpose(0, 1), image.transpose(0, 1)
            memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
            memory_image, memory_image_pos = memory_image.transpose(0, 1), memory_image_pos.transpose(0, 1)
        if memory_image.shape[1] != memory.shape[1]:
            assert memory.shape[1] - memory_image.shape[1] == num_obj_ptr_tokens
            pad = memory_image.new_zeros((memory_image.shape[0], num_obj_ptr_tokens) + memory_image.shape[2:])
            memory_image = torch.cat([memory_image, pad], dim=1)
            if memory_image_pos is not None:
                memory_image_pos = torch.cat([memory_image_pos, memory_pos[0:1, -num_obj_ptr_tokens:]], dim=1)
        for layer in self.layers:
            image, output = layer(image=image, tgt=output, memory_image=memory_image, memory=memory,
                                  query_pos=src_pos, memory_image_pos=memory_image_pos,
                                  num_k_exclude_rope=num_obj_ptr_tokens)
        normed_output = self.norm(output + image) if self.use_image_in_output else self.norm(output)
        if self.batch_first:
            normed_output, src_pos = normed_output.transpose(0, 1), src_pos.transpose(0, 1)
        return {"memory": normed_output, "pos_embed": src_pos}

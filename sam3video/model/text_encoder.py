"""SAM 3 text encoder: a CLIP-style causal text transformer plus a linear resizer to ``d_model``.

Official names: ``VETextEncoder`` (state-dict prefix ``backbone.language_backbone.``) with ``encoder``
(``TextTransformer``) and ``resizer``. ``TextTransformer`` keeps CLIP's ``text_projection`` parameter
(``width x output_dim``, ``output_dim`` = 512 by default) although SAM 3 uses the unpooled tokens only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``; x is (B, L, width)."""

    def __init__(
        self,
        d_model: int,
        n_head: int,
        mlp_ratio: float = 4.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head, batch_first=True)
        self.ln_1 = norm_layer(d_model)
        self.ln_2 = norm_layer(d_model)
        mlp_width = int(d_model * mlp_ratio)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(d_model, mlp_width)),
                    ("gelu", act_layer()),
                    ("c_proj", nn.Linear(mlp_width, d_model)),
                ]
            )
        )

    def attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(x.dtype)
        return self.attn(x, x, x, need_weights=False, attn_mask=attn_mask)[0]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attention(self.ln_1(x), attn_mask=attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of ``layers`` ``ResidualAttentionBlock`` (``resblocks.{i}``) on (B, L, width) tensors."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float = 4.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        compile_mode: str | None = None,
        use_act_checkpoint: bool = False,
    ):
        # compile_mode / use_act_checkpoint are accepted for signature compatibility and ignored.
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            [
                ResidualAttentionBlock(width, heads, mlp_ratio, act_layer=act_layer, norm_layer=norm_layer)
                for _ in range(layers)
            ]
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return x


def text_global_pool(
    x: torch.Tensor, text: torch.Tensor | None = None, pool_type: str = "argmax"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split (B, L, C) features into (pooled, tokens) as CLIP does; ``"none"`` returns x for both."""
    if pool_type == "first":
        return x[:, 0], x[:, 1:]
    if pool_type == "last":
        return x[:, -1], x[:, :-1]
    if pool_type == "argmax":  # the end token has the highest id of each row
        assert text is not None
        return x[torch.arange(x.shape[0], device=x.device), text.argmax(dim=-1)], x
    return x, x


class TextTransformer(nn.Module):
    """CLIP text tower: token + positional embedding, causal transformer, final LayerNorm.

    ``forward(text)`` takes ids (B, L) and returns ``pooled @ text_projection`` and, when
    ``output_tokens``, also the per-token features (B, L, width) after ``ln_final``.
    """

    def __init__(
        self,
        context_length: int = 77,
        vocab_size: int = 49408,
        width: int = 512,
        heads: int = 8,
        layers: int = 12,
        mlp_ratio: float = 4.0,
        output_dim: int = 512,
        no_causal_mask: bool = False,
        pool_type: str = "none",
        proj_bias: bool = False,
        act_layer: Callable = nn.GELU,
        norm_layer: Callable = nn.LayerNorm,
        output_tokens: bool = False,
        use_ln_post: bool = True,
        compile_mode: str | None = None,
        use_act_checkpoint: bool = False,
    ):
        super().__init__()
        assert pool_type in ("first", "last", "argmax", "none")
        self.output_tokens = output_tokens
        self.num_pos = self.context_length = context_length
        self.vocab_size = vocab_size
        self.width = width
        self.output_dim = output_dim
        self.heads = heads
        self.pool_type = pool_type

        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(self.num_pos, width))
        self.transformer = Transformer(
            width=width,
            layers=layers,
            heads=heads,
            mlp_ratio=mlp_ratio,
            act_layer=act_layer,
            norm_layer=norm_layer,
            compile_mode=compile_mode,
            use_act_checkpoint=use_act_checkpoint,
        )
        self.ln_final = norm_layer(width) if use_ln_post else nn.Identity()
        if no_causal_mask:
            self.attn_mask = None
        else:
            self.register_buffer("attn_mask", self.build_causal_mask(), persistent=False)
        if proj_bias:
            self.text_projection = nn.Linear(width, output_dim)
        else:
            self.text_projection = nn.Parameter(torch.empty(width, output_dim))
        self.init_parameters()

    def init_parameters(self) -> None:
        """CLIP's initialisation for the raw parameters (the checkpoint overwrites them)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        if isinstance(self.text_projection, nn.Parameter):
            nn.init.normal_(self.text_projection, std=self.width**-0.5)

    def build_causal_mask(self) -> torch.Tensor:
        """Additive (num_pos, num_pos) mask: -inf above the diagonal, 0 elsewhere."""
        return torch.full((self.num_pos, self.num_pos), float("-inf")).triu_(1)

    def forward(self, text: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        seq_len = text.shape[1]
        x = self.token_embedding(text)  # (B, L, width)
        attn_mask = self.attn_mask
        if attn_mask is not None:
            attn_mask = attn_mask[:seq_len, :seq_len]
        x = x + self.positional_embedding[:seq_len]
        x = self.transformer(x, attn_mask=attn_mask)
        x = self.ln_final(x)
        pooled, tokens = text_global_pool(x, text, pool_type=self.pool_type)
        if isinstance(self.text_projection, nn.Linear):
            pooled = self.text_projection(pooled)
        else:
            pooled = pooled @ self.text_projection
        if self.output_tokens:
            return pooled, tokens
        return pooled


class VETextEncoder(nn.Module):
    """Tokenize captions, encode them with ``encoder`` and project to ``d_model`` with ``resizer``.

    ``tokenizer`` is any callable ``(texts, context_length=...) -> LongTensor (B, L)``; it is stored as a
    plain attribute (no state-dict keys).
    """

    def __init__(
        self,
        d_model: int,
        tokenizer: Callable,
        width: int = 1024,
        heads: int = 16,
        layers: int = 24,
        context_length: int = 32,
        vocab_size: int = 49408,
        use_ln_post: bool = True,
        compile_mode: str | None = None,
        use_act_checkpoint: bool = True,
    ):
        super().__init__()
        self.context_length = context_length
        self.use_ln_post = use_ln_post
        self.tokenizer = tokenizer
        self.encoder = TextTransformer(
            context_length=context_length,
            vocab_size=vocab_size,
            width=width,
            heads=heads,
            layers=layers,
            output_tokens=True,  # SAM 3 needs the tokens, not the pooled output
            use_ln_post=use_ln_post,
            compile_mode=compile_mode,
            use_act_checkpoint=use_act_checkpoint,
        )
        self.resizer = nn.Linear(self.encoder.width, d_model)

    def forward(
        self,
        text: list[str] | tuple[torch.Tensor, torch.Tensor, dict],
        input_boxes: list | None = None,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode captions.

        ``text`` is a list of B strings, or an already encoded tuple
        ``(text_attention_mask, text_memory_resized, {"inputs_embeds": (B, L, width)})`` passed through.
        ``device`` defaults to the module's device. Returns, with L = ``context_length``:
          - text_attention_mask (B, L) bool, True at padding (PyTorch key-padding convention);
          - text_memory_resized (L, B, d_model): encoder output after ``resizer``, sequence first;
          - inputs_embeds (L, B, width): token embeddings before the encoder, sequence first.
        """
        if isinstance(text[0], str):
            assert input_boxes is None or len(input_boxes) == 0, "boxes in text are not supported"
            if device is None:
                device = self.resizer.weight.device
            tokenized = self.tokenizer(text, context_length=self.context_length).to(device)  # (B, L)
            inputs_embeds = self.encoder.token_embedding(tokenized)  # (B, L, width)
            _, text_memory = self.encoder(tokenized)  # (B, L, width)
            assert text_memory.shape[1] == inputs_embeds.shape[1]
            text_attention_mask = tokenized == 0
            text_memory_resized = self.resizer(text_memory.transpose(0, 1))  # (L, B, d_model)
        else:
            text_attention_mask, text_memory_resized, tokenized = text
            inputs_embeds = tokenized["inputs_embeds"]
            assert input_boxes is None or len(input_boxes) == 0, (
                "Can't replace boxes in text if it's already encoded"
            )
        return text_attention_mask, text_memory_resized, inputs_embeds.transpose(0, 1)

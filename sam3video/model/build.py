"""Configs -> ``Sam3Image``. A config is data: a TOML/JSON file, a dict, or the name of a bundled preset.

Key names are those of the official parity generator's ``SIZES`` (``resolution``, ``vit_dim``,
``d_model`` ...), so any size the official code can be built at can be built here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch.nn as nn

from ..errors import ConfigError
from ..thresholds import SCORE_THRESHOLD

from .decoder import TransformerDecoder, TransformerDecoderLayer
from .encoder import TransformerEncoderFusion, TransformerEncoderLayer, TransformerWrapper
from .geometry_encoders import SequenceGeometryEncoder
from .model_misc import MLP, MultiheadAttention
from .necks import Sam3DualViTDetNeck, Sam3TriViTDetNeck
from .position_encoding import PositionEmbeddingSine
from .sam3_image import Sam3Image
from .scoring import DotProductScoring
from .segmentation import PixelDecoder, UniversalSegmentationHead
from .text_encoder import VETextEncoder
from .tokenizer import SimpleTokenizer
from .vitdet import ViT
from .vl_combiner import SAM3VLBackbone

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESETS = ("sam3", "sam3.1", "tiny", "demo")
# Keys the official parity config carries that say nothing about the architecture.
_INFORMATIONAL_KEYS = {"name", "seed", "parameters"}
# Tables of a config file for other parts of the model, read by ``build_video.load_video_config`` (the image
# model ignores them): ``[tracker]``, the SAM 3 tracker's sizes; ``[multiplex_tracker]``, SAM 3.1's (its presence
# makes the config a SAM 3.1 one).
_SECTIONS = {"tracker", "multiplex_tracker"}


@dataclass(frozen=True)
class Sam3Config:
    """Every size of a SAM 3 image model. Defaults are the official full model (``configs/sam3.toml``)."""

    resolution: int = 1008
    patch_size: int = 14
    pretrain_img_size: int = 336
    vit_dim: int = 1024
    vit_depth: int = 32
    vit_heads: int = 16
    vit_mlp_ratio: float = 4.625
    vit_window: int = 24
    vit_global_blocks: tuple[int, ...] = (7, 15, 23, 31)
    d_model: int = 256
    heads: int = 8
    ffn: int = 2048
    enc_layers: int = 6
    dec_layers: int = 6
    num_queries: int = 200
    text_width: int = 1024
    text_heads: int = 16
    text_layers: int = 24
    context_length: int = 32
    geo_layers: int = 3
    scoring_hidden: int = 2048
    neck_scales: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    scalp: int = 1
    # Ours (not in the official SIZES): regularisation used in training only, and the operating point:
    # a detection scoring at least ``score_threshold`` is confident (reported; with 0.1 more it starts a
    # track). 0.5 is the official value; the demo model's is chosen on validation clips
    # (tools/calibrate_thresholds.py). An explicit threshold (CLI, TrackingConfig, Sam3Processor) wins.
    dropout: float = 0.1
    drop_path_rate: float = 0.1
    score_threshold: float = SCORE_THRESHOLD
    name: str = field(default="custom", compare=False)

    @classmethod
    def from_dict(cls, values: dict) -> "Sam3Config":
        """Raises ``ConfigError`` naming an unknown key or a value of the wrong type or sign."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config is a table of keys, got {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(map(str, values)) - set(fields) - _INFORMATIONAL_KEYS - _SECTIONS)
        if unknown:
            shown = ", ".join(k if k.isprintable() else repr(k) for k in unknown)  # one line
            raise ConfigError(f"unknown config keys: {shown}")
        for section in _SECTIONS & set(values):
            if not isinstance(values[section], dict):
                raise ConfigError(f"config key {section}: expected a table of keys, got {_shown(values[section])}")
        kwargs = {k: _checked_value(k, v, fields[k].default) for k, v in values.items() if k in fields}
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _checked_value(key: str, value, default):
    """``value`` for field ``key`` if it has the default's type (ints pass as floats; lists as tuples of
    positive numbers); sizes must be positive, the score threshold in [0, 1]."""
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"config key {key}: expected text, got {_shown(value)}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or not all(_is_number(v, float) for v in value):
            raise ConfigError(f"config key {key}: expected a list of numbers, got {_shown(value)}")
        kind = type(default[0]) if default else float
        if kind is int and not all(isinstance(v, int) for v in value):
            raise ConfigError(f"config key {key}: expected a list of integers, got {_shown(value)}")
        return tuple(kind(v) for v in value)
    kind = type(default)
    if not _is_number(value, kind):
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"config key {key}: expected {expected}, got {_shown(value)}")
    if key in ("dropout", "drop_path_rate", "score_threshold"):
        if not 0 <= value <= 1:
            raise ConfigError(f"config key {key}: must be in [0, 1], got {value!r}")
    elif not value > 0 and key != "scalp":
        raise ConfigError(f"config key {key}: must be > 0, got {value!r}")
    elif key == "scalp" and value < 0:
        raise ConfigError(f"config key {key}: must be >= 0, got {value!r}")
    return kind(value)


def _shown(value) -> str:
    """``repr(value)``, at most 60 characters (one line: repr escapes newlines)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value, kind: type) -> bool:
    """An int (for int fields), or an int or finite float (for float fields); never a bool. Ints must
    fit a float (below 1.8e308) for float fields."""
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    if isinstance(value, int):
        return abs(value) <= sys.float_info.max
    return isinstance(value, float) and math.isfinite(value)


def load_config(config: "str | Path | dict | Sam3Config") -> Sam3Config:
    """A ``Sam3Config`` from a preset name (``sam3``, ``tiny``, ``demo``), a .toml/.json path or a dict.

    Raises ``ConfigError`` (one line) for a missing or unreadable file and a wrong key or value."""
    if isinstance(config, Sam3Config):
        return config
    if isinstance(config, dict):
        return Sam3Config.from_dict(config)
    path, values = read_config_values(config)
    if path is None:
        return Sam3Config.from_dict(values)
    try:
        return Sam3Config.from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"config {path}: {e}") from None


MIN_GRID = 8  # the smallest token grid ``at_resolution`` builds (112 px at patch 14)


def at_resolution(config: Sam3Config, resolution: "int | None") -> Sam3Config:
    """``config`` with the square input size ``resolution`` (pixels; None: unchanged). Every size that follows
    it follows: the token grid, the absolute position embedding tiled over it, the global blocks' RoPE tables
    (``load_model`` recomputes a checkpoint's), the windows padded as in ViTDet, the neck's levels, the
    decoder's box bias, the tracker's mask and memory sizes. Raises ``ConfigError`` unless it is a multiple
    of the patch size with a token grid of at least ``MIN_GRID``."""
    if resolution is None or resolution == config.resolution:
        return config
    p = config.patch_size
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution % p or resolution < MIN_GRID * p:
        raise ConfigError(f"resolution must be a multiple of the patch size {p} of at least {MIN_GRID * p} "
                          f"(e.g. {', '.join(str(n) for n in _example_resolutions(config))}), got {resolution!r}")
    return dataclasses.replace(config, resolution=resolution)


def _example_resolutions(config: Sam3Config) -> list[int]:
    """Sizes to suggest: the config's own and a few smaller multiples of the patch size."""
    p, native = config.patch_size, config.resolution
    return sorted({native, *(max(MIN_GRID, round(native * f / p)) * p for f in (2 / 3, 1 / 2, 1 / 3))}, reverse=True)


def read_config_values(config: "str | Path") -> "tuple[Path | None, object]":
    """The raw values of a preset (path None) or of a .toml/.json file (with its path; ``name`` set to
    the file stem when missing). Raises ``ConfigError`` for a missing or unreadable file."""
    text_config = str(config)
    if text_config in PRESETS:
        data = resources.files("sam3video.configs").joinpath(f"{text_config}.toml").read_text()
        return None, {"name": text_config, **tomllib.loads(data)}
    path = Path(text_config)
    if not path.is_file():
        raise ConfigError(f"config not found: {path} (or use one of: {', '.join(PRESETS)})")
    if path.suffix not in (".json", ".toml"):
        raise ConfigError(f"config must be a .toml or .json file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:  # JSONDecodeError, TOMLDecodeError are ValueErrors
        reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(f"cannot read config {path}: {reason}") from None
    except RecursionError:  # [[[[... deeper than the parser can recurse
        raise ConfigError(f"cannot read config {path}: nested too deeply") from None
    if isinstance(values, dict):
        values.setdefault("name", path.stem)
    return path, values


def _attention(c: Sam3Config, dropout: float, batch_first: bool = False) -> MultiheadAttention:
    return MultiheadAttention(c.d_model, c.heads, dropout=dropout, batch_first=batch_first)


def build_vit(c: Sam3Config) -> ViT:
    """The image trunk of config ``c`` (``backbone.vision_backbone.trunk``), random weights."""
    return ViT(
        img_size=c.resolution, pretrain_img_size=c.pretrain_img_size, patch_size=c.patch_size,
        embed_dim=c.vit_dim, depth=c.vit_depth, num_heads=c.vit_heads, mlp_ratio=c.vit_mlp_ratio,
        norm_layer="LayerNorm", drop_path_rate=c.drop_path_rate, qkv_bias=True, use_abs_pos=True,
        tile_abs_pos=True, global_att_blocks=c.vit_global_blocks, rel_pos_blocks=(), use_rope=True,
        use_interp_rope=True, window_size=c.vit_window, pretrain_use_cls_token=True,
        retain_cls_token=False, ln_pre=True, ln_post=False, return_interm_layers=False,
        bias_patch_embed=False,
    )


def _build_backbone(c: Sam3Config, add_sam2_neck: bool = False, tri_neck: bool = False) -> SAM3VLBackbone:
    vit = build_vit(c)
    position_encoding = _position_encoding(c, precompute_resolution=c.resolution)
    if tri_neck:
        neck = Sam3TriViTDetNeck(trunk=vit, position_encoding=position_encoding, d_model=c.d_model,
                                 scale_factors=c.neck_scales)
    else:
        neck = Sam3DualViTDetNeck(position_encoding=position_encoding, d_model=c.d_model,
                                  scale_factors=c.neck_scales, trunk=vit, add_sam2_neck=add_sam2_neck)
    text = VETextEncoder(
        tokenizer=SimpleTokenizer(), d_model=c.d_model, width=c.text_width, heads=c.text_heads,
        layers=c.text_layers, context_length=c.context_length,
    )
    return SAM3VLBackbone(visual=neck, text=text, scalp=c.scalp)


def _position_encoding(c: Sam3Config, precompute_resolution=None) -> PositionEmbeddingSine:
    return PositionEmbeddingSine(
        num_pos_feats=c.d_model, normalize=True, scale=None, temperature=10000,
        precompute_resolution=precompute_resolution,
    )


def _build_transformer(c: Sam3Config) -> TransformerWrapper:
    encoder_layer = TransformerEncoderLayer(
        activation="relu", d_model=c.d_model, dim_feedforward=c.ffn, dropout=c.dropout,
        pos_enc_at_attn=True, pos_enc_at_cross_attn_keys=False, pos_enc_at_cross_attn_queries=False,
        pre_norm=True, self_attention=_attention(c, c.dropout, batch_first=True),
        cross_attention=_attention(c, c.dropout, batch_first=True),
    )
    encoder = TransformerEncoderFusion(
        layer=encoder_layer, num_layers=c.enc_layers, d_model=c.d_model, num_feature_levels=1,
        frozen=False, use_act_checkpoint=False, add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
    )
    decoder_layer = TransformerDecoderLayer(
        activation="relu", d_model=c.d_model, dim_feedforward=c.ffn, dropout=c.dropout,
        cross_attention=_attention(c, c.dropout), n_heads=c.heads, use_text_cross_attention=True,
    )
    decoder = TransformerDecoder(
        layer=decoder_layer, num_layers=c.dec_layers, num_queries=c.num_queries,
        return_intermediate=True, box_refine=True, num_o2m_queries=0, dac=True, boxRPB="log",
        d_model=c.d_model, frozen=False, interaction_layer=None, dac_use_selfatt_ln=True,
        resolution=c.resolution, stride=c.patch_size, use_act_checkpoint=False, presence_token=True,
    )
    return TransformerWrapper(encoder=encoder, decoder=decoder, d_model=c.d_model)


def _build_heads(c: Sam3Config):
    scoring = DotProductScoring(
        d_model=c.d_model, d_proj=c.d_model,
        prompt_mlp=MLP(
            input_dim=c.d_model, hidden_dim=c.scoring_hidden, output_dim=c.d_model, num_layers=2,
            dropout=c.dropout, residual=True, out_norm=nn.LayerNorm(c.d_model),
        ),
    )
    segmentation_head = UniversalSegmentationHead(
        hidden_dim=c.d_model, upsampling_stages=3, aux_masks=False, presence_head=False,
        dot_product_scorer=None, act_ckpt=False, cross_attend_prompt=_attention(c, 0.0),
        pixel_decoder=PixelDecoder(
            num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=c.d_model,
        ),
    )
    geometry_layer = TransformerEncoderLayer(
        activation="relu", d_model=c.d_model, dim_feedforward=c.ffn, dropout=c.dropout,
        pos_enc_at_attn=False, pre_norm=True, self_attention=_attention(c, c.dropout),
        pos_enc_at_cross_attn_queries=False, pos_enc_at_cross_attn_keys=True,
        cross_attention=_attention(c, c.dropout),
    )
    geometry_encoder = SequenceGeometryEncoder(
        pos_enc=_position_encoding(c), encode_boxes_as_points=False, points_direct_project=True,
        points_pool=True, points_pos_enc=True, boxes_direct_project=True, boxes_pool=True,
        boxes_pos_enc=True, d_model=c.d_model, num_layers=c.geo_layers, layer=geometry_layer,
        use_act_ckpt=False, add_cls=True, add_post_encode_proj=True,
    )
    return scoring, segmentation_head, geometry_encoder


def build_model(config: "str | Path | dict | Sam3Config" = "sam3") -> Sam3Image:
    """A randomly initialised ``Sam3Image`` in eval mode. ``config``: preset name, file path or dict.

    Build under ``torch.device("meta")`` to get the structure without allocating weights.
    """
    return _build_image_model(load_config(config))


def _build_image_model(c: Sam3Config, add_sam2_neck: bool = False, tri_neck: bool = False) -> Sam3Image:
    """``build_model``; with ``add_sam2_neck`` the vision neck also has the SAM 3 tracker's ``sam2_convs``,
    with ``tri_neck`` it is SAM 3.1's (``interactive_convs``, ``propagation_convs``)."""
    scoring, segmentation_head, geometry_encoder = _build_heads(c)
    model = Sam3Image(
        backbone=_build_backbone(c, add_sam2_neck, tri_neck), transformer=_build_transformer(c),
        input_geometry_encoder=geometry_encoder, segmentation_head=segmentation_head,
        num_feature_levels=1, o2m_mask_predict=True, dot_prod_scoring=scoring,
        use_instance_query=False, multimask_output=True,
    )
    model.config = c
    return model.eval()

"""Configs -> ``Sam3VideoModel`` (detector with the second neck + the SAM 3 memory tracker).

A config file's top-level keys size the detector (``Sam3Config``); its ``[tracker]`` table sizes the
tracker (``TrackerConfig``, official values by default). The tracker's width, input size and stride
are the detector's ``d_model``, ``resolution`` and ``patch_size``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .build import Sam3Config, _build_image_model, _shown, read_config_values
from .encoder import TransformerWrapper
from .memory import CXBlock, SimpleFuser, SimpleMaskDownSampler, SimpleMaskEncoder
from .memory_attention import (
    DecoupledTransformerDecoderLayerv2,
    SimpleRoPEAttention,
    TransformerDecoderLayerv2,
    TransformerEncoderCrossAttention,
    TransformerEncoderDecoupledCrossAttention,
)
from .position_encoding import PositionEmbeddingSine
from .sam.transformer import RoPEAttention
from .sam3_tracker_base import Sam3TrackerBase
from .sam31_tracker import Sam3MultiplexTrackerWrapper, VideoTrackingMultiplex
from .sam31_video import Sam31VideoModel
from .sam3_video import Sam3VideoModel

# Fields that may be 0 or -1 (-1: no limit), and those in [0, 1].
_NON_NEGATIVE = {"multimask_min_pt_num", "multimask_max_pt_num"}
_MINUS_ONE_OK = {"max_cond_frames_in_attn"}
# (SAM 3.1's keys share these rules.)
_UNIT = {"dropout", "dynamic_multimask_stability_thresh", "mf_threshold"}


@dataclass(frozen=True)
class TrackerConfig:
    """Sizes and settings of the SAM 3 tracker. Defaults: the official video model (``sam3.pt``)."""

    mem_dim: int = 64  # memory width (memory encoder out_proj, object-pointer tokens)
    num_maskmem: int = 7  # memory frames: 1 conditioning slot + 6 previous frames
    memory_attention_layers: int = 4
    memory_attention_heads: int = 1
    memory_attention_ffn: int = 2048
    rope_theta: float = 10000.0
    fuser_layers: int = 2  # CXBlocks in the memory encoder's fuser
    fuser_kernel: int = 7
    mask_in_chans: int = 16  # SAM prompt encoder's mask branch
    decoder_depth: int = 2  # two-way transformer of the SAM mask decoder
    decoder_heads: int = 8
    decoder_mlp: int = 2048
    iou_head_hidden: int = 256
    dropout: float = 0.1  # memory attention (training only)
    max_cond_frames_in_attn: int = 4
    max_obj_ptrs_in_encoder: int = 16
    memory_temporal_stride_for_eval: int = 1
    multimask_output_in_sam: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    use_memory_selection: bool = True  # official apply_temporal_disambiguation
    mf_threshold: float = 0.01

    @classmethod
    def from_dict(cls, values: dict) -> "TrackerConfig":
        """Raises ``ConfigError`` naming an unknown key (as ``tracker.KEY``) or a wrong value."""
        return _from_table(cls, values, "tracker")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _from_table(cls, values, section: str):
    """A tracker config dataclass from a config file's ``[section]`` table, every key checked (``_checked``)."""
    if not isinstance(values, dict):
        raise ConfigError(f"config key {section}: expected a table of keys, got {_shown(values)}")
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, values)) - set(fields))
    if unknown:
        raise ConfigError("unknown config keys: " + ", ".join(repr(f"{section}.{k}") if not k.isprintable()
                                                             else f"{section}.{k}" for k in unknown))
    return cls(**{k: _checked(k, v, fields[k], section) for k, v in values.items()})


def _checked(key: str, value, default, section: str = "tracker"):
    name = f"{section}.{key}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {name}: expected true or false, got {_shown(value)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config key {name}: expected a number, got {_shown(value)}")
    if isinstance(default, int) and not isinstance(value, int):
        raise ConfigError(f"config key {name}: expected an integer, got {_shown(value)}")
    if isinstance(default, float) and (abs(value) > sys.float_info.max or not math.isfinite(value)):
        raise ConfigError(f"config key {name}: expected a finite number, got {_shown(value)}")
    if key in _UNIT:
        ok = 0 <= value <= 1
    elif key in _NON_NEGATIVE:
        ok = value >= 0
    elif key in _MINUS_ONE_OK:
        ok = value > 0 or value == -1
    else:
        ok = value > 0
    if not ok:
        raise ConfigError(f"config key {name}: out of range, got {value!r}")
    return type(default)(value)


@dataclass(frozen=True)
class MultiplexTrackerConfig:
    """Sizes and settings of SAM 3.1's multiplex tracker. Defaults: the official builder
    (``build_sam3_multiplex_video_model``). The SAM heads' sizes are the official classes' own."""

    multiplex_count: int = 16  # objects per bucket
    num_maskmem: int = 7
    memory_attention_layers: int = 4
    memory_attention_heads: int = 8
    memory_attention_ffn: int = 2048
    rope_theta: float = 10000.0
    fuser_layers: int = 2
    fuser_kernel: int = 7
    maskmem_start_chan: int = 4  # mask downsampler: 32 -> 16 -> 64 -> 256 -> 1024 channels at 4
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp: int = 2048
    iou_head_hidden: int = 256
    dropout: float = 0.1
    max_cond_frames_in_attn: int = 4
    max_obj_ptrs_in_encoder: int = 16
    memory_temporal_stride_for_eval: int = 1
    dynamic_multimask_via_stability: bool = True  # the interactive decoder's (the multiplex one has none)
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    @classmethod
    def from_dict(cls, values: dict) -> "MultiplexTrackerConfig":
        """Raises ``ConfigError`` naming an unknown key (as ``multiplex_tracker.KEY``) or a wrong value."""
        return _from_table(cls, values, "multiplex_tracker")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class VideoConfig:
    """The detector's and the tracker's configs; ``multiplex`` set (SAM 3.1) replaces ``tracker``."""

    detector: Sam3Config = field(default_factory=Sam3Config)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    multiplex: "MultiplexTrackerConfig | None" = None

    @property
    def version(self) -> str:
        return "sam3.1" if self.multiplex is not None else "sam3"


def load_video_config(config: "str | Path | dict | Sam3Config | VideoConfig" = "sam3") -> VideoConfig:
    """A ``VideoConfig`` from a preset name, a .toml/.json path, a dict (with an optional ``tracker``
    table) or a ``Sam3Config`` (official tracker). Raises ``ConfigError`` (one line), also when the
    tracker does not fit the detector."""
    if isinstance(config, VideoConfig):
        video = config
    elif isinstance(config, Sam3Config):
        video = VideoConfig(config, TrackerConfig())
    elif isinstance(config, dict):
        video = _from_values(config)
    else:
        path, values = read_config_values(config)
        try:
            return _from_values(values)
        except ConfigError as e:
            raise ConfigError(f"config {path}: {e}" if path is not None else str(e)) from None
    _check_fits(video)
    return video


def _from_values(values) -> VideoConfig:
    detector = Sam3Config.from_dict(values)  # raises unless values is a dict
    multiplex = None
    if "multiplex_tracker" in values:
        if "tracker" in values:
            raise ConfigError("a config has either a [tracker] (SAM 3) or a [multiplex_tracker] (SAM 3.1) table, not both")
        multiplex = MultiplexTrackerConfig.from_dict(values["multiplex_tracker"])
    video = VideoConfig(detector, TrackerConfig.from_dict(values.get("tracker", {})), multiplex)
    _check_fits(video)
    return video


def _check_fits(video: VideoConfig) -> None:
    """The tracker's sizes must divide the detector's: width, heads, RoPE (head width % 4), levels."""
    c, t = video.detector, video.tracker
    d = c.d_model
    kept = tuple(c.neck_scales[: len(c.neck_scales) - c.scalp])
    if video.multiplex is not None:
        m = video.multiplex
        problems = [
            (kept == (4.0, 2.0, 1.0), f"the neck must keep the scales 4, 2, 1 for the tracker, keeps {kept}"),
            (d % 8 == 0, f"d_model must be a multiple of 8 for the tracker, got {d}"),
            (d % m.memory_attention_heads == 0 and (d // m.memory_attention_heads) % 4 == 0,
             "multiplex_tracker.memory_attention_heads must leave a head width divisible by 4, "
             f"got {m.memory_attention_heads}"),
            (d % m.decoder_heads == 0, f"multiplex_tracker.decoder_heads must divide d_model {d}, got {m.decoder_heads}"),
            (m.fuser_kernel % 2 == 1, f"multiplex_tracker.fuser_kernel must be odd, got {m.fuser_kernel}"),
            (m.max_cond_frames_in_attn != 1, "multiplex_tracker.max_cond_frames_in_attn must be -1 or at least 2"),
        ]
        for ok, message in problems:
            if not ok:
                raise ConfigError(message)
        return
    problems = [
        (kept == (4.0, 2.0, 1.0), f"the neck must keep the scales 4, 2, 1 for the tracker, keeps {kept}"),
        (d % 8 == 0, f"d_model must be a multiple of 8 for the tracker, got {d}"),
        (d % t.mem_dim == 0, f"tracker.mem_dim must divide d_model {d}, got {t.mem_dim}"),
        (d % t.memory_attention_heads == 0 and (d // t.memory_attention_heads) % 4 == 0,
         f"tracker.memory_attention_heads must leave a head width divisible by 4, got {t.memory_attention_heads}"),
        ((d // 2) % t.decoder_heads == 0, f"tracker.decoder_heads must divide d_model / 2, got {t.decoder_heads}"),
        (t.mask_in_chans % 4 == 0, f"tracker.mask_in_chans must be a multiple of 4, got {t.mask_in_chans}"),
        (t.fuser_kernel % 2 == 1, f"tracker.fuser_kernel must be odd, got {t.fuser_kernel}"),
        (t.max_cond_frames_in_attn != 1, "tracker.max_cond_frames_in_attn must be -1 or at least 2"),
    ]
    for ok, message in problems:
        if not ok:
            raise ConfigError(message)


def _build_maskmem_backbone(c: Sam3Config, t: TrackerConfig) -> SimpleMaskEncoder:
    """The memory encoder (official ``_create_tracker_maskmem_backbone``); masks enter at 16x the
    image-embedding size (1152 at full size)."""
    input_mask_size = c.resolution // c.patch_size * 16
    layer = CXBlock(dim=c.d_model, kernel_size=t.fuser_kernel, padding=t.fuser_kernel // 2,
                    layer_scale_init_value=1e-6, use_dwconv=True)
    return SimpleMaskEncoder(
        out_dim=t.mem_dim, in_dim=c.d_model,
        position_encoding=PositionEmbeddingSine(num_pos_feats=t.mem_dim, normalize=True, scale=None,
                                                temperature=10000, precompute_resolution=c.resolution),
        mask_downsampler=SimpleMaskDownSampler(embed_dim=c.d_model, kernel_size=3, stride=2, padding=1,
                                               interpol_size=[input_mask_size, input_mask_size]),
        fuser=SimpleFuser(layer=layer, num_layers=t.fuser_layers),
    )


def _build_memory_attention(c: Sam3Config, t: TrackerConfig) -> TransformerWrapper:
    """The memory attention (official ``_create_tracker_transformer``)."""
    side = c.resolution // c.patch_size
    common = {"embedding_dim": c.d_model, "num_heads": t.memory_attention_heads, "downsample_rate": 1,
              "dropout": t.dropout, "rope_theta": t.rope_theta, "feat_sizes": [side, side]}
    layer = TransformerDecoderLayerv2(
        cross_attention_first=False, activation="relu", dim_feedforward=t.memory_attention_ffn, dropout=t.dropout,
        pos_enc_at_attn=False, pre_norm=True, self_attention=RoPEAttention(**common), d_model=c.d_model,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        cross_attention=RoPEAttention(**common, kv_in_dim=t.mem_dim, rope_k_repeat=True),
    )
    encoder = TransformerEncoderCrossAttention(
        remove_cross_attention_layers=[], batch_first=True, d_model=c.d_model, frozen=False, pos_enc_at_input=True,
        layer=layer, num_layers=t.memory_attention_layers, use_act_checkpoint=False,
    )
    return TransformerWrapper(encoder=encoder, decoder=None, d_model=c.d_model)


def build_tracker(c: Sam3Config, t: TrackerConfig) -> Sam3TrackerBase:
    """A randomly initialised ``Sam3TrackerBase`` (official ``build_tracker``) in eval mode."""
    tracker = Sam3TrackerBase(
        transformer=_build_memory_attention(c, t), maskmem_backbone=_build_maskmem_backbone(c, t),
        num_maskmem=t.num_maskmem, image_size=c.resolution, backbone_stride=c.patch_size,
        max_cond_frames_in_attn=t.max_cond_frames_in_attn, keep_first_cond_frame=False,
        multimask_output_in_sam=t.multimask_output_in_sam, multimask_min_pt_num=t.multimask_min_pt_num,
        multimask_max_pt_num=t.multimask_max_pt_num, multimask_output_for_tracking=t.multimask_output_for_tracking,
        memory_temporal_stride_for_eval=t.memory_temporal_stride_for_eval, non_overlap_masks_for_mem_enc=False,
        max_obj_ptrs_in_encoder=t.max_obj_ptrs_in_encoder,
        sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": t.dynamic_multimask_via_stability,
            "dynamic_multimask_stability_delta": t.dynamic_multimask_stability_delta,
            "dynamic_multimask_stability_thresh": t.dynamic_multimask_stability_thresh,
        },
        use_memory_selection=t.use_memory_selection, mf_threshold=t.mf_threshold,
        mask_in_chans=t.mask_in_chans, decoder_depth=t.decoder_depth, decoder_heads=t.decoder_heads,
        decoder_mlp_dim=t.decoder_mlp, iou_head_hidden_dim=t.iou_head_hidden,
    )
    return tracker.eval()


def _build_multiplex_maskmem_backbone(c: Sam3Config, m: MultiplexTrackerConfig) -> SimpleMaskEncoder:
    """SAM 3.1's memory encoder (official ``_create_multiplex_maskmem_backbone``): 2 x 16 input channels,
    256-d output (no out_proj)."""
    input_mask_size = c.resolution // c.patch_size * 16
    layer = CXBlock(dim=c.d_model, kernel_size=m.fuser_kernel, padding=m.fuser_kernel // 2,
                    layer_scale_init_value=1e-6, use_dwconv=True)
    return SimpleMaskEncoder(
        out_dim=c.d_model, in_dim=c.d_model,
        position_encoding=PositionEmbeddingSine(num_pos_feats=c.d_model, normalize=True, scale=None,
                                                temperature=10000, precompute_resolution=c.resolution),
        mask_downsampler=SimpleMaskDownSampler(
            embed_dim=c.d_model, kernel_size=3, stride=2, padding=1, interpol_size=[input_mask_size, input_mask_size],
            multiplex_count=m.multiplex_count, starting_out_chan=m.maskmem_start_chan, input_channel_multiplier=2),
        fuser=SimpleFuser(layer=layer, num_layers=m.fuser_layers),
    )


def _build_decoupled_memory_attention(c: Sam3Config, m: MultiplexTrackerConfig) -> TransformerWrapper:
    """SAM 3.1's memory attention (official ``_create_multiplex_transformer``): 8 heads, GELU FFN."""
    side = c.resolution // c.patch_size

    def rope(**kw) -> SimpleRoPEAttention:
        return SimpleRoPEAttention(d_model=c.d_model, num_heads=m.memory_attention_heads, dropout_p=m.dropout,
                                   rope_theta=m.rope_theta, feat_sizes=(side, side), **kw)

    layer = DecoupledTransformerDecoderLayerv2(
        activation="gelu", d_model=c.d_model, num_heads=m.memory_attention_heads, dropout=m.dropout,
        dim_feedforward=m.memory_attention_ffn, pos_enc_at_attn=False, pre_norm=True,
        pos_enc_at_cross_attn_keys=True, pos_enc_at_cross_attn_queries=False,
        self_attention_rope=rope(), cross_attention_rope=rope(rope_k_repeat=True),
    )
    encoder = TransformerEncoderDecoupledCrossAttention(
        d_model=c.d_model, frozen=False, pos_enc_at_input=True, use_image_in_output=False, layer=layer,
        num_layers=m.memory_attention_layers, use_act_checkpoint=False, batch_first=True)
    return TransformerWrapper(encoder=encoder, decoder=None, d_model=c.d_model)


def build_multiplex_tracker(c: Sam3Config, m: MultiplexTrackerConfig) -> VideoTrackingMultiplex:
    """A randomly initialised SAM 3.1 ``VideoTrackingMultiplex`` in eval mode."""
    tracker = VideoTrackingMultiplex(
        transformer=_build_decoupled_memory_attention(c, m), maskmem_backbone=_build_multiplex_maskmem_backbone(c, m),
        multiplex_count=m.multiplex_count, num_maskmem=m.num_maskmem, image_size=c.resolution,
        backbone_stride=c.patch_size, max_cond_frames_in_attn=m.max_cond_frames_in_attn,
        max_obj_ptrs_in_encoder=m.max_obj_ptrs_in_encoder,
        memory_temporal_stride_for_eval=m.memory_temporal_stride_for_eval,
        interactive_sam_mask_decoder_extra_args={
            "dynamic_multimask_via_stability": m.dynamic_multimask_via_stability,
            "dynamic_multimask_stability_delta": m.dynamic_multimask_stability_delta,
            "dynamic_multimask_stability_thresh": m.dynamic_multimask_stability_thresh,
        },
        mask_in_chans=m.mask_in_chans, decoder_depth=m.decoder_depth, decoder_heads=m.decoder_heads,
        decoder_mlp_dim=m.decoder_mlp, iou_head_hidden_dim=m.iou_head_hidden,
    )
    return tracker.eval()


def build_video_model(config: "str | Path | dict | Sam3Config | VideoConfig" = "sam3"
                      ) -> "Sam3VideoModel | Sam31VideoModel":
    """A randomly initialised video model in eval mode: ``Sam3VideoModel`` (keys of ``sam3.pt``, 1465 at
    full size) or, for a SAM 3.1 config, ``Sam31VideoModel`` (keys of ``sam3.1_multiplex.pt``, 1623).
    Build under ``torch.device("meta")`` for the structure only."""
    video = load_video_config(config)
    if video.multiplex is not None:
        model = Sam31VideoModel(detector=_build_image_model(video.detector, tri_neck=True),
                                tracker=Sam3MultiplexTrackerWrapper(build_multiplex_tracker(video.detector,
                                                                                           video.multiplex)))
        model.config = video
        return model.eval()
    model = Sam3VideoModel(detector=_build_image_model(video.detector, add_sam2_neck=True),
                           tracker=build_tracker(video.detector, video.tracker))
    model.config = video
    return model.eval()

"""The transformers layout of SAM 3 (``Sam3VideoModel``: ``detector_model.*``, ``tracker_model.*``, ``tracker_neck.*``)
and how each official tensor of ``sam3.pt`` maps onto it.

``hf_sources(official_keys)`` gives, for each official key, where its value is in a transformers state dict:

- ``copy``: one tensor, renamed;
- ``qkv``: the three transformers tensors ``(q, k, v)`` of a fused projection, joined on dim 0 (every
  ``nn.MultiheadAttention`` ``in_proj_*`` and the ViT's ``attn.qkv``);
- ``transpose``: the CLIP ``text_projection`` (stored transposed);
- ``cls_row``: the ViT's ``pos_embed`` without its first row (the unused class slot; a zero row goes back);
- ``row``: one row of the SAM prompt encoder's joined ``point_embed`` (``index`` which);
- ``computed``: the ViT's RoPE tables ``freqs_cis`` (not stored: computed from the config);
- ``absent``: the detector's point projections ``geometry_encoder.points_*`` (the transformers geometry encoder
  takes boxes only, so a transformers file cannot carry them).

Besides, the SAM prompt encoder's Gaussian matrix is stored twice (``DUPLICATES``). The rules follow the
family names of ``Sam3VideoModel`` in transformers 5.23; structural indices (a 3-layer SAM MLP's
``layers.0/1/2`` -> ``proj_in``/``layers.0``/``proj_out``, a DETR MLP's ``layers.i`` -> ``layer{i+1}``,
``Sequential`` positions -> named layers) are derived from the key set, so the rules hold at any size.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

HF_DETECTOR = "detector_model."
HF_TRACKER = "tracker_model."
HF_TRACKER_NECK = "tracker_neck."
OFFICIAL_DETECTOR = "detector."
OFFICIAL_TRACKER = "tracker."
GAUSSIAN = "prompt_encoder.shared_embedding.positional_embedding"
DUPLICATES = {HF_TRACKER + "shared_image_embedding.positional_embedding": HF_TRACKER + GAUSSIAN}


@dataclass(frozen=True)
class HfSource:
    """Where an official tensor's value is in the transformers layout (see the module docstring)."""

    op: str
    keys: tuple[str, ...] = ()
    index: int = 0


def _subs(name: str, rules: Iterable[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        name = re.sub(pattern, replacement, name)
    return name


_ATTENTION = [(r"\.out_proj\.", ".o_proj.")]
_FFN = [(r"\.linear1\.", ".mlp.fc1."), (r"\.linear2\.", ".mlp.fc2.")]
_NORMS = [(r"\.norm(\d)\.", r".layer_norm\1.")]


def _detr_mlp(name: str, official: str, hf: str) -> str:
    """A DETR MLP: ``official.layers.i`` -> ``hf.layer{i+1}``."""
    return re.sub(re.escape(official) + r"\.layers\.(\d+)\.", lambda m: f"{hf}.layer{int(m.group(1)) + 1}.", name)


def _detector_name(name: str) -> str:
    """The transformers name (under ``detector_model.``, or ``tracker_neck.``) of a detector tensor."""
    if name.startswith("backbone.vision_backbone.trunk."):
        name = name.removeprefix("backbone.vision_backbone.trunk.")
        name = _subs(name, [(r"^blocks\.(\d+)\.", r"layers.\1."), (r"\.norm([12])\.", r".layer_norm\1."),
                            (r"\.attn\.proj\.", ".attention.o_proj."), (r"\.attn\.qkv\.", ".attention.qkv."),
                            (r"^ln_pre\.", "layer_norm."), (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
                            (r"^pos_embed$", "embeddings.position_embeddings")])
        return "vision_encoder.backbone." + name
    neck = re.match(r"backbone\.vision_backbone\.(convs|sam2_convs)\.(\d+)\.(.*)$", name)
    if neck:
        inner = _subs(neck.group(3), [(r"^conv_1x1\.", "proj1."), (r"^conv_3x3\.", "proj2."),
                                      (r"^dconv_2x2(_0)?\.", "scale_layers.0."), (r"^dconv_2x2_1\.", "scale_layers.2.")])
        head = "vision_encoder.neck." if neck.group(1) == "convs" else "//" + HF_TRACKER_NECK
        return f"{head}fpn_layers.{neck.group(2)}.{inner}"
    if name.startswith("backbone.language_backbone.resizer."):
        return "text_projection." + name.removeprefix("backbone.language_backbone.resizer.")
    if name == "backbone.language_backbone.encoder.text_projection":
        return "text_encoder.text_projection.weight"
    if name.startswith("backbone.language_backbone.encoder."):
        name = name.removeprefix("backbone.language_backbone.encoder.")
        name = _subs(name, [(r"^transformer\.resblocks\.(\d+)\.", r"encoder.layers.\1."),
                            (r"\.attn\.in_proj_", ".self_attn.in_proj_"), (r"\.attn\.out_proj\.", ".self_attn.out_proj."),
                            (r"\.ln_([12])\.", r".layer_norm\1."), (r"\.mlp\.c_fc\.", ".mlp.fc1."),
                            (r"\.mlp\.c_proj\.", ".mlp.fc2."), (r"^ln_final\.", "final_layer_norm."),
                            (r"^positional_embedding$", "embeddings.position_embedding.weight"),
                            (r"^token_embedding\.", "embeddings.token_embedding.")])
        return "text_encoder.text_model." + name
    if name.startswith("geometry_encoder."):
        return _subs(name, [(r"^geometry_encoder\.encode\.(\d+)\.", r"geometry_encoder.layers.\1."),
                            (r"\.cross_attn_image\.", ".cross_attn."), *_ATTENTION, *_FFN, *_NORMS,
                            (r"\.encode_norm\.", ".output_layer_norm."), (r"\.img_pre_norm\.", ".vision_layer_norm."),
                            (r"^geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm.")])
    if name.startswith("transformer.encoder."):
        return _subs(name, [(r"^transformer\.encoder\.", "detr_encoder."), (r"\.cross_attn_image\.", ".cross_attn."),
                            *_ATTENTION, *_FFN, *_NORMS])
    if name.startswith("transformer.decoder."):
        name = name.replace("transformer.decoder.", "detr_decoder.", 1)
        for official, hf in (("bbox_embed", "box_head"), ("boxRPB_embed_x", "box_rpb_embed_x"),
                             ("boxRPB_embed_y", "box_rpb_embed_y"), ("presence_token_head", "presence_head"),
                             ("ref_point_head", "ref_point_head")):
            name = _detr_mlp(name, "detr_decoder." + official, "detr_decoder." + hf)
        return _subs(name, [(r"\.ca_text\.", ".text_cross_attn."), (r"\.catext_norm\.", ".text_cross_attn_layer_norm."),
                            (r"(layers\.\d+)\.cross_attn\.", r"\1.vision_cross_attn."),
                            (r"\.norm1\.", ".vision_cross_attn_layer_norm."), (r"\.norm2\.", ".self_attn_layer_norm."),
                            (r"\.norm3\.", ".mlp_layer_norm."), *_ATTENTION, *_FFN,
                            (r"^detr_decoder\.norm\.", "detr_decoder.output_layer_norm."),
                            (r"\.presence_token_out_norm\.", ".presence_layer_norm.")])
    if name.startswith("dot_prod_scoring."):
        name = _detr_mlp(name, "dot_prod_scoring.prompt_mlp", "dot_prod_scoring.text_mlp")
        return _subs(name, [(r"^dot_prod_scoring\.", "dot_product_scoring."), (r"\.hs_proj\.", ".query_proj."),
                            (r"\.prompt_mlp\.out_norm\.", ".text_mlp_out_norm."), (r"\.prompt_proj\.", ".text_proj.")])
    if name.startswith("segmentation_head."):
        return _subs(name, [(r"^segmentation_head\.", "mask_decoder."), (r"\.cross_attend_prompt\.", ".prompt_cross_attn."),
                            *_ATTENTION, (r"\.cross_attn_norm\.", ".prompt_cross_attn_norm."),
                            (r"\.instance_seg_head\.", ".instance_projection."),
                            (r"\.semantic_seg_head\.", ".semantic_projection."),
                            (r"\.mask_predictor\.mask_embed\.", ".mask_embedder.")])
    return name


_SAM_MLPS = (r"obj_ptr_proj", r"sam_mask_decoder\.iou_prediction_head", r"sam_mask_decoder\.pred_obj_score_head",
             r"sam_mask_decoder\.output_hypernetworks_mlps\.\d+")
_SEQUENTIAL = {  # positions of an official nn.Sequential -> the transformers names
    "sam_mask_decoder.output_upscaling": {0: "upscale_conv1", 1: "upscale_layer_norm", 3: "upscale_conv2"},
    "sam_prompt_encoder.mask_downscaling": {0: "conv1", 1: "layer_norm1", 3: "conv2", 4: "layer_norm2", 6: "conv3"},
}


def _sam_mlp_layer(index: int, count: int) -> str:
    """A SAM MLP of ``count`` layers: the first is ``proj_in``, the last ``proj_out``, the others ``layers.i-1``."""
    return "proj_in" if index == 0 else "proj_out" if index == count - 1 else f"layers.{index - 1}"


def _tracker_name(name: str, mlp_sizes: dict[str, int], downsampler_layers: int) -> str:
    """The transformers name (under ``tracker_model.``) of a tracker tensor."""
    for pattern in _SAM_MLPS:
        m = re.match(rf"({pattern})\.layers\.(\d+)\.(.*)$", name)
        if m:
            name = f"{m.group(1)}.{_sam_mlp_layer(int(m.group(2)), mlp_sizes[m.group(1)])}.{m.group(3)}"
            break
    for prefix, names in _SEQUENTIAL.items():
        m = re.match(rf"{re.escape(prefix)}\.(\d+)\.(.*)$", name)
        if m:
            name = f"{prefix}.{names[int(m.group(1))]}.{m.group(2)}"
    m = re.match(r"maskmem_backbone\.mask_downsampler\.encoder\.(\d+)\.(.*)$", name)
    if m:
        i = int(m.group(1))
        layer = "final_conv" if i == 3 * downsampler_layers else f"layers.{i // 3}.{('conv', 'layer_norm')[i % 3]}"
        name = f"maskmem_backbone.mask_downsampler.{layer}.{m.group(2)}"
    return _subs(name, [
        (r"^maskmem_backbone\.out_proj\.", "memory_encoder.projection."), (r"^maskmem_backbone\.", "memory_encoder."),
        (r"\.fuser\.", ".memory_fuser."), (r"\.dwconv\.", ".depthwise_conv."), (r"\.gamma$", ".scale"),
        (r"(memory_fuser\.layers\.\d+)\.norm\.", r"\1.layer_norm."), (r"\.pwconv([12])\.", r".pointwise_conv\1."),
        (r"\.pix_feat_proj\.", ".feature_projection."),
        (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"), (r"^no_mem_embed$", "no_memory_embedding"),
        (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
        (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"), (r"^no_obj_ptr$", "no_object_pointer"),
        (r"^obj_ptr_proj\.", "object_pointer_proj."),
        (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
        (r"^sam_mask_decoder\.output_upscaling\.", "mask_decoder."), (r"^sam_mask_decoder\.", "mask_decoder."), (r"\.mlp\.lin1\.", ".mlp.proj_in."), (r"\.mlp\.lin2\.", ".mlp.proj_out."),
        (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
        (r"^sam_prompt_encoder\.mask_downscaling\.", "prompt_encoder.mask_embed."), (r"^sam_prompt_encoder\.", "prompt_encoder."),
        (r"^transformer\.encoder\.norm\.", "memory_attention.layer_norm."), (r"^transformer\.encoder\.", "memory_attention."),
        *_ATTENTION, (r"\.norm(\d)\.", r".layer_norm\1.")])


def hf_sources(official_keys: Iterable[str]) -> dict[str, HfSource]:
    """Official key (``detector.*`` / ``tracker.*``, as in ``sam3.pt``) -> where its value is in a transformers
    ``Sam3VideoModel`` state dict."""
    keys = list(official_keys)
    tracker = [k.removeprefix(OFFICIAL_TRACKER) for k in keys if k.startswith(OFFICIAL_TRACKER)]
    mlp_sizes: dict[str, int] = {}
    for name in tracker:
        for pattern in _SAM_MLPS:
            m = re.match(rf"({pattern})\.layers\.(\d+)\.", name)
            if m:
                mlp_sizes[m.group(1)] = max(mlp_sizes.get(m.group(1), 0), int(m.group(2)) + 1)
    positions = [int(m.group(1)) for n in tracker if (m := re.match(r"maskmem_backbone\.mask_downsampler\.encoder\.(\d+)\.",
                                                                     n))]
    downsampler_layers = max(positions, default=0) // 3
    sources: dict[str, HfSource] = {}
    for key in keys:
        if key.startswith(OFFICIAL_TRACKER):
            name = key.removeprefix(OFFICIAL_TRACKER)
            hf = HF_TRACKER + _tracker_name(name, mlp_sizes, downsampler_layers)
            point = re.match(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$", name)
            if point:
                sources[key] = HfSource("row", (HF_TRACKER + "prompt_encoder.point_embed.weight",), int(point.group(1)))
            elif name == "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix":
                sources[key] = HfSource("copy", (HF_TRACKER + GAUSSIAN,))
            else:
                sources[key] = HfSource("copy", (hf,))
            continue
        name = key.removeprefix(OFFICIAL_DETECTOR)
        if name.startswith("geometry_encoder.points_"):
            sources[key] = HfSource("absent")
            continue
        if name.endswith("attn.freqs_cis"):
            sources[key] = HfSource("computed")
            continue
        hf = _detector_name(name)
        hf = hf[2:] if hf.startswith("//") else HF_DETECTOR + hf
        if name == "backbone.language_backbone.encoder.text_projection":
            sources[key] = HfSource("transpose", (hf,))
        elif name == "backbone.vision_backbone.trunk.pos_embed":
            sources[key] = HfSource("cls_row", (hf,))
        elif ".attention.qkv." in hf or ".in_proj_" in hf:
            fused = re.sub(r"\.(attention\.)?qkv\.", r".\1{}_proj.", hf) if ".qkv." in hf else re.sub(
                r"\.in_proj_(weight|bias)$", r".{}_proj.\1", hf)
            sources[key] = HfSource("qkv", tuple(fused.format(p) for p in "qkv"))
        else:
            sources[key] = HfSource("copy", (hf,))
    return sources


def to_hf_state_dict(official: dict) -> dict:
    """An official-layout state dict (``detector.*`` / ``tracker.*``) in transformers' layout: ``hf_sources`` run
    the other way (fused projections split, the class row dropped, the point embeddings joined, the Gaussian
    matrix stored twice; RoPE tables and the detector's point projections left out, as transformers has none)."""
    import torch

    out: dict = {}
    rows: dict[str, dict[int, object]] = {}
    for key, source in hf_sources(official).items():
        value = official[key]
        if source.op == "copy":
            out[source.keys[0]] = value
        elif source.op == "qkv":
            out.update(zip(source.keys, value.chunk(3, dim=0)))
        elif source.op == "transpose":
            out[source.keys[0]] = value.t().contiguous()
        elif source.op == "cls_row":
            out[source.keys[0]] = value[:, 1:].contiguous()
        elif source.op == "row":
            rows.setdefault(source.keys[0], {})[source.index] = value
    for key, parts in rows.items():
        out[key] = torch.cat([parts[i] for i in sorted(parts)], dim=0)
    for copy, original in DUPLICATES.items():
        if original in out:
            out[copy] = out[original].clone()
    return out


HF_MEMORY_KEY_WIDTH = 64  # transformers fixes the memory attention's key/value input width (the released mem_dim)


def hf_config(video):
    """transformers' ``Sam3VideoConfig`` of the same model as ``video`` (a ``VideoConfig``): what ``to_hf_state_dict``
    fills. ``ValueError`` for sizes transformers cannot express (a memory width other than 64)."""
    import transformers as t

    d, tr = video.detector, video.tracker
    if tr.mem_dim != HF_MEMORY_KEY_WIDTH:
        raise ValueError(f"transformers' SAM 3 tracker fixes the memory width at {HF_MEMORY_KEY_WIDTH}; this model's "
                         f"is {tr.mem_dim}")
    grid = d.resolution // d.patch_size
    vit = t.Sam3ViTConfig(hidden_size=d.vit_dim, intermediate_size=int(d.vit_dim * d.vit_mlp_ratio),
                          num_hidden_layers=d.vit_depth, num_attention_heads=d.vit_heads, image_size=d.resolution,
                          patch_size=d.patch_size, window_size=d.vit_window, global_attn_indexes=list(d.vit_global_blocks),
                          pretrain_image_size=d.pretrain_img_size)
    vision = t.Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=d.d_model, scale_factors=list(d.neck_scales),
                                backbone_feature_sizes=[[int(grid * s)] * 2 for s in d.neck_scales[:3]])
    text = t.CLIPTextConfig(hidden_size=d.text_width, intermediate_size=4 * d.text_width,
                            num_hidden_layers=d.text_layers, num_attention_heads=d.text_heads,
                            max_position_embeddings=d.context_length, projection_dim=512, hidden_act="gelu")
    detector = t.Sam3Config(
        vision_config=vision, text_config=text,
        geometry_encoder_config=t.Sam3GeometryEncoderConfig(hidden_size=d.d_model, num_layers=d.geo_layers,
                                                            num_attention_heads=d.heads, intermediate_size=d.ffn),
        detr_encoder_config=t.Sam3DETREncoderConfig(hidden_size=d.d_model, num_layers=d.enc_layers,
                                                    num_attention_heads=d.heads, intermediate_size=d.ffn),
        detr_decoder_config=t.Sam3DETRDecoderConfig(hidden_size=d.d_model, num_layers=d.dec_layers,
                                                    num_queries=d.num_queries, num_attention_heads=d.heads,
                                                    intermediate_size=d.ffn),
        mask_decoder_config=t.Sam3MaskDecoderConfig(hidden_size=d.d_model, num_attention_heads=d.heads))
    tracker = t.Sam3TrackerVideoConfig(
        vision_config=vision, image_size=d.resolution, num_maskmem=tr.num_maskmem,
        prompt_encoder_config=dict(hidden_size=d.d_model, image_size=d.resolution, patch_size=d.patch_size,
                                   mask_input_channels=tr.mask_in_chans),
        mask_decoder_config=dict(hidden_size=d.d_model, mlp_dim=tr.decoder_mlp, num_hidden_layers=tr.decoder_depth,
                                 num_attention_heads=tr.decoder_heads, iou_head_hidden_dim=tr.iou_head_hidden),
        memory_attention_hidden_size=d.d_model, memory_attention_num_layers=tr.memory_attention_layers,
        memory_attention_num_attention_heads=tr.memory_attention_heads,
        memory_attention_feed_forward_hidden_size=tr.memory_attention_ffn, memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=d.d_model, memory_encoder_output_channels=tr.mem_dim,
        mask_downsampler_embed_dim=d.d_model, memory_fuser_num_layers=tr.fuser_layers, memory_fuser_embed_dim=d.d_model,
        memory_fuser_intermediate_dim=4 * d.d_model, memory_fuser_kernel_size=tr.fuser_kernel)
    return t.Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * grid)

"""``Sam3Image``: the SAM 3 detector — backbone, prompt encoding, fusion encoder, DETR decoder, heads.

Conventions (as in the official code):
- images are (B, 3, H, W) float, normalised with mean = std = 0.5, at the model resolution;
- transformer sequences are sequence-first (L, B, d); ``hs`` from the decoder is (layers, B, Q, d);
- boxes are normalised cx, cy, w, h (``pred_boxes``) or x0, y0, x1, y1 (``pred_boxes_xyxy``);
- ``pred_masks`` are mask logits at 4x the stride of the finest kept backbone level.

The model is stateless: per-image or per-video state lives in ``backbone_out`` dicts owned by callers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .box_ops import box_cxcywh_to_xyxy
from .geometry_encoders import Prompt
from .model_misc import inverse_sigmoid


@dataclass
class FindStage:
    """What to look for: which image (``img_ids``) with which text (``text_ids``), both (B,) long.
    (The official class also carries boxes and points; here they go in the ``geometric_prompt``.)"""

    img_ids: torch.Tensor
    text_ids: torch.Tensor


def instance_scores(outputs: dict) -> torch.Tensor:
    """(B, Q) score of each query: sigmoid(pred_logits) x sigmoid(presence_logit_dec), as the official
    image API scores instances."""
    return outputs["pred_logits"].sigmoid()[..., 0] * outputs["presence_logit_dec"].sigmoid()


def _update_out(out: dict, key: str, value: torch.Tensor, update_aux: bool = True) -> None:
    """Store the last layer of ``value`` (layers, ...) under ``key``; earlier layers in ``aux_outputs``."""
    out[key] = value[-1]
    if update_aux:
        aux = out.setdefault("aux_outputs", [{} for _ in range(len(value) - 1)])
        for layer_out, layer_value in zip(aux, value[:-1]):
            layer_out[key] = layer_value


class Sam3Image(nn.Module):
    """The SAM 3 image model. Submodule names follow the official checkpoint layout."""

    TEXT_ID_FOR_TEXT = 0
    TEXT_ID_FOR_VISUAL = 1
    TEXT_ID_FOR_GEOMETRIC = 2

    def __init__(
        self,
        backbone: nn.Module,
        transformer: nn.Module,
        input_geometry_encoder: nn.Module,
        segmentation_head: nn.Module | None = None,
        num_feature_levels: int = 1,
        o2m_mask_predict: bool = True,
        dot_prod_scoring: nn.Module | None = None,
        use_instance_query: bool = True,
        multimask_output: bool = True,
        use_act_checkpoint_seg_head: bool = True,
        supervise_joint_box_scores: bool = False,
        detach_presence_in_joint_score: bool = False,
        inst_interactive_predictor: nn.Module | None = None,
        matcher=None,
        **unused,
    ):
        super().__init__()
        if dot_prod_scoring is None:
            raise ValueError("Sam3Image needs a dot_prod_scoring head (the official scoring)")
        self.backbone = backbone
        self.geometry_encoder = input_geometry_encoder
        self.transformer = transformer
        self.hidden_dim = transformer.d_model
        self.num_feature_levels = num_feature_levels
        self.segmentation_head = segmentation_head
        self.o2m_mask_predict = o2m_mask_predict
        self.dot_prod_scoring = dot_prod_scoring
        self.use_instance_query = use_instance_query
        self.multimask_output = multimask_output
        self.supervise_joint_box_scores = supervise_joint_box_scores
        self.detach_presence_in_joint_score = detach_presence_in_joint_score
        self.inst_interactive_predictor = inst_interactive_predictor
        self.matcher = matcher
        decoder = transformer.decoder
        if decoder.num_o2m_queries != (decoder.num_queries if decoder.dac else 0):
            raise ValueError("num_o2m_queries must equal num_queries with DAC, else 0")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ image features
    def _get_img_feats(self, backbone_out: dict, img_ids: torch.Tensor):
        """Flattened features of images ``img_ids`` -> (backbone_out, feats, pos, sizes).

        ``feats``/``pos`` are lists (one per kept level) of (HW, B, d); ``sizes`` their (H, W).
        If ``backbone_out`` has no ``backbone_fpn`` but an ``img_batch_all_stages`` (a tensor or any
        indexable of (3, H, W) frames, possibly fp16 on the CPU), the backbone runs on the unique
        requested frames only and ``id_mapping`` (frame index -> row in ``backbone_fpn``, -1 if not
        computed; a CPU tensor) records them; the returned ``backbone_out`` is a new dict holding those
        features. With ``img_ids`` on the CPU (as the video path gives them) this bookkeeping never waits
        for the GPU.
        """
        if "backbone_fpn" in backbone_out:
            id_mapping = backbone_out.get("id_mapping")
            if id_mapping is not None:
                img_ids = id_mapping[img_ids.to(id_mapping.device)]
                if (img_ids < 0).any():
                    raise KeyError("requested frames whose backbone features were not computed")
            vis_feats = backbone_out["backbone_fpn"][-self.num_feature_levels :]
            vis_pos_enc = backbone_out["vision_pos_enc"][-self.num_feature_levels :]
            vis_feat_sizes = [x.shape[-2:] for x in vis_pos_enc]
            img_ids = img_ids.to(vis_feats[0].device, non_blocking=True)
            img_feats = [x[img_ids].flatten(2).permute(2, 0, 1) for x in vis_feats]
            img_pos_embeds = [x[img_ids].flatten(2).permute(2, 0, 1) for x in vis_pos_enc]
            return backbone_out, img_feats, img_pos_embeds, vis_feat_sizes

        img_batch = backbone_out["img_batch_all_stages"]
        unique_ids = torch.unique(img_ids) if img_ids.numel() > 1 else img_ids.reshape(1)
        dtype = next(self.backbone.parameters()).dtype  # frames may be stored as fp16 on the CPU
        if isinstance(img_batch, torch.Tensor):
            image = img_batch[unique_ids.to(img_batch.device)].to(device=self.device, dtype=dtype)
        else:
            frames = [torch.as_tensor(img_batch[i]).to(device=self.device, dtype=dtype) for i in unique_ids.tolist()]
            image = torch.stack(frames)
        id_mapping = torch.full((len(img_batch),), -1, dtype=torch.long)
        id_mapping[unique_ids.cpu()] = torch.arange(len(unique_ids))
        backbone_out = {**backbone_out, **self.backbone.forward_image(image), "id_mapping": id_mapping}
        return self._get_img_feats(backbone_out, img_ids)

    # ------------------------------------------------------------------ prompts
    def _encode_prompt(
        self,
        backbone_out: dict,
        find_input: FindStage,
        geometric_prompt: Prompt,
        visual_prompt_embed: torch.Tensor | None = None,
        visual_prompt_mask: torch.Tensor | None = None,
        encode_text: bool = True,
        prev_mask_pred: torch.Tensor | None = None,
    ):
        """Text, geometry and visual prompts -> (prompt (L, B, d), prompt_mask (B, L) True=pad, backbone_out)."""
        txt_ids = find_input.text_ids
        txt_feats = backbone_out["language_features"][:, txt_ids]
        txt_masks = backbone_out["language_mask"][txt_ids]

        backbone_out, img_feats, img_pos_embeds, vis_feat_sizes = self._get_img_feats(
            backbone_out, find_input.img_ids
        )
        if prev_mask_pred is not None:
            img_feats = [img_feats[-1] + prev_mask_pred]
        geo_feats, geo_masks = self.geometry_encoder(
            geo_prompt=geometric_prompt,
            img_feats=img_feats,
            img_sizes=vis_feat_sizes,
            img_pos_embeds=img_pos_embeds,
        )
        if visual_prompt_embed is None:
            visual_prompt_embed = geo_feats.new_zeros((0, *geo_feats.shape[1:]))
            visual_prompt_mask = geo_masks.new_zeros((*geo_masks.shape[:-1], 0))
        if encode_text:
            prompt = torch.cat([txt_feats, geo_feats, visual_prompt_embed], dim=0)
            prompt_mask = torch.cat([txt_masks, geo_masks, visual_prompt_mask], dim=1)
        else:
            prompt = torch.cat([geo_feats, visual_prompt_embed], dim=0)
            prompt_mask = torch.cat([geo_masks, visual_prompt_mask], dim=1)
        return prompt, prompt_mask, backbone_out

    # ------------------------------------------------------------------ encoder / decoder
    def _run_encoder(self, backbone_out, find_input, prompt, prompt_mask, encoder_extra_kwargs=None):
        """Fusion encoder: image tokens attend to themselves and to the prompt."""
        feat_tuple = self._get_img_feats(backbone_out, find_input.img_ids)
        backbone_out, img_feats, img_pos_embeds, vis_feat_sizes = feat_tuple
        memory = self.transformer.encoder(
            src=list(img_feats),
            src_key_padding_mask=None,
            src_pos=list(img_pos_embeds),
            prompt=prompt,
            prompt_pos=torch.zeros_like(prompt),
            prompt_key_padding_mask=prompt_mask,
            feat_sizes=vis_feat_sizes,
            encoder_extra_kwargs=encoder_extra_kwargs,
        )
        encoder_out = {
            "encoder_hidden_states": memory["memory"],
            "pos_embed": memory["pos_embed"],
            "padding_mask": memory["padding_mask"],
            "level_start_index": memory["level_start_index"],
            "spatial_shapes": memory["spatial_shapes"],
            "valid_ratios": memory["valid_ratios"],
            "vis_feat_sizes": vis_feat_sizes,
            "prompt_before_enc": prompt,
            "prompt_after_enc": memory.get("memory_text", prompt),
            "prompt_mask": prompt_mask,
        }
        return backbone_out, encoder_out, feat_tuple

    def _run_decoder(self, pos_embed, memory, src_mask, out, prompt, prompt_mask, encoder_out):
        """DETR decoder with presence token and box refinement; fills scores and boxes into ``out``."""
        batch_size = memory.shape[1]
        tgt = self.transformer.decoder.query_embed.weight.unsqueeze(1).repeat(1, batch_size, 1)
        apply_dac = self.transformer.decoder.dac and self.training
        hs, reference_boxes, dec_presence_out, dec_presence_feats = self.transformer.decoder(
            tgt=tgt,
            memory=memory,
            memory_key_padding_mask=src_mask,
            pos=pos_embed,
            reference_boxes=None,
            level_start_index=encoder_out["level_start_index"],
            spatial_shapes=encoder_out["spatial_shapes"],
            valid_ratios=encoder_out["valid_ratios"],
            tgt_mask=None,
            memory_text=prompt,
            text_attention_mask=prompt_mask,
            apply_dac=apply_dac,
        )
        hs = hs.transpose(1, 2)  # (layers, Q, B, d) -> (layers, B, Q, d)
        reference_boxes = reference_boxes.transpose(1, 2)
        if dec_presence_out is not None:
            dec_presence_out = dec_presence_out.transpose(1, 2)
        out["presence_feats"] = dec_presence_feats
        self._update_scores_and_boxes(out, hs, reference_boxes, prompt, prompt_mask, dec_presence_out)
        return out, hs

    def _update_scores_and_boxes(
        self, out, hs, reference_boxes, prompt, prompt_mask, dec_presence_out=None
    ) -> None:
        """Dot-product scores and refined boxes for every decoder layer; o2m queries split off."""
        apply_dac = self.transformer.decoder.dac and self.training
        num_o2o = hs.size(2) // 2 if apply_dac else hs.size(2)
        num_o2m = hs.size(2) - num_o2o
        out["queries"] = hs[-1][:, :num_o2o]

        outputs_class = self.dot_prod_scoring(hs, prompt, prompt_mask)
        anchor_box_offsets = self.transformer.decoder.bbox_embed(hs)
        outputs_coord = (inverse_sigmoid(reference_boxes) + anchor_box_offsets).sigmoid()
        outputs_boxes_xyxy = box_cxcywh_to_xyxy(outputs_coord)

        if dec_presence_out is not None:
            _update_out(out, "presence_logit_dec", dec_presence_out, update_aux=self.training)
        if self.supervise_joint_box_scores:
            presence_prob = dec_presence_out.sigmoid()
            if self.detach_presence_in_joint_score:
                presence_prob = presence_prob.detach()
            outputs_class = inverse_sigmoid(outputs_class.sigmoid() * presence_prob.unsqueeze(2))
            outputs_class = outputs_class.clamp(min=-10.0, max=10.0)

        _update_out(out, "pred_logits", outputs_class[:, :, :num_o2o], update_aux=self.training)
        _update_out(out, "pred_boxes", outputs_coord[:, :, :num_o2o], update_aux=self.training)
        _update_out(out, "pred_boxes_xyxy", outputs_boxes_xyxy[:, :, :num_o2o], update_aux=self.training)
        if num_o2m > 0:
            _update_out(out, "pred_logits_o2m", outputs_class[:, :, num_o2o:])
            _update_out(out, "pred_boxes_o2m", outputs_coord[:, :, num_o2o:])
            _update_out(out, "pred_boxes_xyxy_o2m", outputs_boxes_xyxy[:, :, num_o2o:])

    def _run_segmentation_heads(
        self, out, backbone_out, img_ids, vis_feat_sizes, encoder_hidden_states, prompt, prompt_mask, hs
    ) -> None:
        """Pixel decoder + mask predictor: ``pred_masks`` (B, Q, H/4s, W/4s) and ``semantic_seg``."""
        if self.segmentation_head is None:
            return
        apply_dac = self.transformer.decoder.dac and self.training
        num_o2o = hs.size(2) // 2 if apply_dac else hs.size(2)
        num_o2m = hs.size(2) - num_o2o
        obj_queries = hs if self.o2m_mask_predict else hs[:, :, :num_o2o]
        if backbone_out.get("id_mapping") is not None:  # lazily computed rows, not frame indices
            img_ids = backbone_out["id_mapping"][img_ids.to(backbone_out["id_mapping"].device)]
        img_ids = img_ids.to(hs.device, non_blocking=True)
        seg_head_outputs = self.segmentation_head(
            backbone_feats=backbone_out["backbone_fpn"],
            obj_queries=obj_queries,
            image_ids=img_ids,
            encoder_hidden_states=encoder_hidden_states,
            prompt=prompt,
            prompt_mask=prompt_mask,
        )
        for key, value in seg_head_outputs.items():
            if key in self.segmentation_head.instance_keys:
                out[key] = value[:, :num_o2o]
                if self.o2m_mask_predict and num_o2m > 0:
                    out[f"{key}_o2m"] = value[:, num_o2o:]
            else:
                out[key] = value

    # ------------------------------------------------------------------ entry point
    def forward_grounding(
        self,
        backbone_out: dict,
        find_input: FindStage,
        geometric_prompt: Prompt,
        find_target=None,
    ) -> dict:
        """Detect every instance of the prompted concept.

        Returns a dict with ``pred_logits`` (B, Q, 1), ``pred_boxes`` (B, Q, 4) cxcywh in [0, 1],
        ``pred_boxes_xyxy``, ``pred_masks`` (B, Q, h, w) logits, ``presence_logit_dec`` (B, 1),
        ``queries`` (B, Q, d), ``semantic_seg`` (B, 1, h, w); in training also ``aux_outputs`` and the
        ``*_o2m`` outputs of the DAC one-to-many queries. ``prev_encoder_out`` holds the (possibly
        lazily computed) ``backbone_out``.
        """
        prompt, prompt_mask, backbone_out = self._encode_prompt(backbone_out, find_input, geometric_prompt)
        backbone_out, encoder_out, _ = self._run_encoder(backbone_out, find_input, prompt, prompt_mask)
        out = {
            "encoder_hidden_states": encoder_out["encoder_hidden_states"],
            "prev_encoder_out": {"encoder_out": encoder_out, "backbone_out": backbone_out},
        }
        out, hs = self._run_decoder(
            memory=out["encoder_hidden_states"],
            pos_embed=encoder_out["pos_embed"],
            src_mask=encoder_out["padding_mask"],
            out=out,
            prompt=prompt,
            prompt_mask=prompt_mask,
            encoder_out=encoder_out,
        )
        self._run_segmentation_heads(
            out=out,
            backbone_out=backbone_out,
            img_ids=find_input.img_ids,
            vis_feat_sizes=encoder_out["vis_feat_sizes"],
            encoder_hidden_states=out["encoder_hidden_states"],
            prompt=prompt,
            prompt_mask=prompt_mask,
            hs=hs,
        )
        return out

    def _get_dummy_prompt(self, num_prompts: int = 1) -> Prompt:
        """An empty geometric prompt (no boxes) for ``num_prompts`` prompts."""
        return Prompt(
            box_embeddings=torch.zeros(0, num_prompts, 4, device=self.device),
            box_mask=torch.zeros(num_prompts, 0, device=self.device, dtype=torch.bool),
        )

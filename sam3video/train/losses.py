"""The SAM 3 training losses at small scale (the official recipe's terms, written from its description).

Per image the target is ``{"boxes": (G, 4) cxcywh normalised, "masks": (G, H, W) bool}`` (G may be 0).
Terms, each on the one-to-one queries of every decoder layer and on the DAC one-to-many queries:
- ``loss_ce``: IoU-aware BCE — a matched query's target is prob^a * IoU^(1-a) (detached), others 0;
  images without any target get no per-query loss (the presence token answers "absent"). We use
  a = 0 (target = IoU): with a > 0 a query that starts at prob 0.05 gets a target near 0.15, and scores
  stay low for thousands of steps (seen in an earlier run);
- ``presence_loss``: BCE of the presence logit against "the concept is in the image";
- ``loss_bbox`` (L1) and ``loss_giou`` on matched boxes, normalised by the number of targets;
- ``loss_mask`` (sigmoid focal) and ``loss_dice`` on matched masks (last layer only, as officially);
- ``loss_semantic`` (BCE + dice) of the semantic-segmentation head against the union of the targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..model.box_ops import box_cxcywh_to_xyxy, box_iou, generalized_box_iou
from .matcher import MatchCosts, hungarian_match, one_to_many_match


@dataclass(frozen=True)
class LossWeights:
    loss_ce: float = 20.0
    presence_loss: float = 20.0
    loss_bbox: float = 5.0
    loss_giou: float = 2.0
    loss_mask: float = 50.0
    loss_dice: float = 5.0
    loss_semantic: float = 5.0
    o2m: float = 1.0  # scale of every one-to-many term
    iabce_alpha: float = 0.0
    iabce_pos_weight: float = 10.0
    match: MatchCosts = field(default_factory=MatchCosts)


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Element-wise focal loss (no reduction)."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, P) logits and targets -> (N,) 1 - Dice."""
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(-1)
    return 1 - (numerator + 1) / (prob.sum(-1) + targets.sum(-1) + 1)


class Sam3Criterion:
    """Matches and computes the weighted sum of the losses for a ``forward_grounding`` training output."""

    def __init__(self, weights: LossWeights = LossWeights()):
        self.w = weights

    def __call__(self, outputs: dict, targets: list[dict]) -> tuple[torch.Tensor, dict[str, float]]:
        boxes = [t["boxes"] for t in targets]
        num_boxes = max(sum(len(b) for b in boxes), 1)
        has_target = torch.tensor([len(b) > 0 for b in boxes], dtype=torch.float32,
                                  device=outputs["pred_logits"].device)
        logs: dict[str, float] = {}
        total = outputs["pred_logits"].new_zeros(())

        layers = [outputs] + list(outputs.get("aux_outputs", []))
        for i, layer in enumerate(layers):
            last = i == 0
            for suffix, scale in (("", 1.0), ("_o2m", self.w.o2m)):
                if f"pred_logits{suffix}" not in layer:
                    continue
                logits, pred_boxes = layer[f"pred_logits{suffix}"], layer[f"pred_boxes{suffix}"]
                if suffix:
                    match = one_to_many_match(logits, pred_boxes, boxes)
                else:
                    match = hungarian_match(logits, pred_boxes, boxes, self.w.match)
                terms = self._box_and_class_terms(logits, pred_boxes, boxes, match, has_target, num_boxes)
                if last and f"pred_masks{suffix}" in outputs:
                    terms.update(self._mask_terms(outputs[f"pred_masks{suffix}"], targets, match, num_boxes))
                for name, value in terms.items():
                    total = total + scale * getattr(self.w, name) * value
                    if last:
                        logs[f"{name}{suffix}"] = float(value.detach())
            if "presence_logit_dec" in layer:
                presence = F.binary_cross_entropy_with_logits(layer["presence_logit_dec"].view(-1), has_target)
                total = total + self.w.presence_loss * presence
                if last:
                    logs["presence_loss"] = float(presence.detach())
                    logs["presence_acc"] = float(((layer["presence_logit_dec"].view(-1) > 0).float()
                                                  == has_target).float().mean())
        if "semantic_seg" in outputs:
            semantic = self._semantic_term(outputs["semantic_seg"], targets)
            total = total + self.w.loss_semantic * semantic
            logs["loss_semantic"] = float(semantic.detach())
        logs["loss"] = float(total.detach())
        return total, logs

    def _box_and_class_terms(self, logits, pred_boxes, boxes, match, has_target, num_boxes) -> dict:
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(match)])
        src_idx = torch.cat([src for src, _ in match])
        matched_pred = pred_boxes[batch_idx, src_idx]
        matched_target = torch.cat([boxes[b][tgt] for b, (_, tgt) in enumerate(match)]).to(pred_boxes)

        logits = logits.squeeze(-1)
        prob = logits.sigmoid()
        is_pos = torch.zeros_like(logits)
        is_pos[batch_idx, src_idx] = 1.0
        soft_target = torch.zeros_like(logits)
        if len(src_idx):
            with torch.no_grad():
                iou = box_iou(box_cxcywh_to_xyxy(matched_pred), box_cxcywh_to_xyxy(matched_target))[0].diagonal()
                quality = prob[batch_idx, src_idx] ** self.w.iabce_alpha * iou ** (1 - self.w.iabce_alpha)
                soft_target[batch_idx, src_idx] = quality.clamp(min=0.01)
        bce_pos = F.binary_cross_entropy_with_logits(logits, soft_target, reduction="none")
        bce_neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
        loss_ce = is_pos * self.w.iabce_pos_weight * bce_pos + (1 - is_pos) * bce_neg
        loss_ce = (loss_ce * has_target[:, None]).mean()

        if len(src_idx) == 0:
            zero = pred_boxes.sum() * 0
            return {"loss_ce": loss_ce, "loss_bbox": zero, "loss_giou": zero}
        loss_bbox = F.l1_loss(matched_pred, matched_target, reduction="sum") / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(matched_pred), box_cxcywh_to_xyxy(matched_target)).diagonal()
        loss_giou = (1 - giou).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def _mask_terms(self, pred_masks, targets, match, num_boxes) -> dict:
        size = pred_masks.shape[-2:]
        src, tgt = [], []
        for b, (src_idx, tgt_idx) in enumerate(match):
            if len(src_idx):
                src.append(pred_masks[b, src_idx])
                tgt.append(_resize_masks(targets[b]["masks"][tgt_idx], size).to(pred_masks))
        if not src:
            zero = pred_masks.sum() * 0
            return {"loss_mask": zero, "loss_dice": zero}
        src_masks, tgt_masks = torch.cat(src).flatten(1), torch.cat(tgt).flatten(1)
        loss_mask = sigmoid_focal_loss(src_masks, tgt_masks).mean(1).sum() / num_boxes
        loss_dice = dice_loss(src_masks, tgt_masks).sum() / num_boxes
        return {"loss_mask": loss_mask, "loss_dice": loss_dice}

    @staticmethod
    def _semantic_term(semantic_seg, targets) -> torch.Tensor:
        size = semantic_seg.shape[-2:]
        union = torch.stack([
            _resize_masks(t["masks"], size).amax(0) if len(t["masks"]) else semantic_seg.new_zeros(size)
            for t in targets
        ]).to(semantic_seg)
        logits = semantic_seg[:, 0]
        bce = F.binary_cross_entropy_with_logits(logits, union)
        return bce + dice_loss(logits.flatten(1), union.flatten(1)).mean()


def _resize_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """(G, H, W) bool/float -> (G, h, w) float in [0, 1] (area-averaged when shrinking)."""
    if masks.shape[-2:] == tuple(size):
        return masks.float()
    return F.interpolate(masks[:, None].float(), size=tuple(size), mode="area" if masks.shape[-1] >= size[-1]
                         else "bilinear")[:, 0]

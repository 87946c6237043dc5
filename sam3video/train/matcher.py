"""Matching predictions to ground truth for set-prediction training.

- ``hungarian_match``: one-to-one (the o2o queries), cost = class + L1 + GIoU as in DETR / SAM 3.
- ``one_to_many_match``: the DAC one-to-many queries: each target takes its ``topk`` best predictions by
  ``alpha * prob + (1 - alpha) * IoU`` above ``threshold``; each prediction goes to at most one target.

Boxes are normalised cx, cy, w, h. Returns index pairs ``(pred_idx, target_idx)`` per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..model.box_ops import box_cxcywh_to_xyxy, box_iou, generalized_box_iou


@dataclass(frozen=True)
class MatchCosts:
    """Weights of the one-to-one matching cost (focal-style class cost, L1 and GIoU of boxes)."""

    cost_class: float = 2.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


def _per_image(pred_logits, pred_boxes, target_boxes, match_one) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Apply ``match_one(prob (Q,), boxes (Q, 4), targets (G, 4)) -> (rows, cols)`` to each image."""
    prob = pred_logits.squeeze(-1).sigmoid().float()
    matches = []
    for b, targets in enumerate(target_boxes):
        if len(targets) == 0:
            rows = cols = np.zeros(0, dtype=np.int64)
        else:
            rows, cols = match_one(prob[b], pred_boxes[b].float(), targets.float().to(pred_boxes.device))
        matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return matches


@torch.no_grad()
def hungarian_match(
    pred_logits: torch.Tensor, pred_boxes: torch.Tensor, target_boxes: list[torch.Tensor],
    costs: MatchCosts = MatchCosts(),
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``pred_logits`` (B, Q, 1), ``pred_boxes`` (B, Q, 4), ``target_boxes`` B x (G_b, 4) -> B pairs."""

    def match_one(prob, boxes, targets):
        p = prob[:, None]
        neg = (1 - costs.focal_alpha) * p**costs.focal_gamma * -(1 - p + 1e-8).log()
        pos = costs.focal_alpha * (1 - p) ** costs.focal_gamma * -(p + 1e-8).log()
        cost = (
            costs.cost_class * (pos - neg)
            + costs.cost_bbox * torch.cdist(boxes, targets, p=1)
            - costs.cost_giou * generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(targets))
        )
        return linear_sum_assignment(cost.cpu().numpy())

    return _per_image(pred_logits, pred_boxes, target_boxes, match_one)


@torch.no_grad()
def one_to_many_match(
    pred_logits: torch.Tensor, pred_boxes: torch.Tensor, target_boxes: list[torch.Tensor],
    alpha: float = 0.3, threshold: float = 0.4, topk: int = 4,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """DAC-style one-to-many assignment (see module docstring). Same shapes as ``hungarian_match``."""

    def match_one(prob, boxes, targets):
        iou, _ = box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(targets))
        quality = (alpha * prob[:, None] + (1 - alpha) * iou).cpu().numpy()  # (Q, G), higher is better
        k = min(topk, quality.shape[0])
        selected = np.zeros_like(quality, dtype=bool)
        top = np.argsort(-quality, axis=0, kind="stable")[:k]  # (k, G)
        selected[top, np.arange(quality.shape[1])[None, :]] = True
        selected &= quality > threshold
        best_target = np.where(selected, quality, -np.inf).argmax(axis=1)  # a prediction -> its best target
        rows = np.nonzero(selected.any(axis=1))[0]
        return rows, best_target[rows]

    return _per_image(pred_logits, pred_boxes, target_boxes, match_one)

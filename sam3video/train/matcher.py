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


Matches = list[tuple[torch.Tensor, torch.Tensor]]


def _padded_targets(target_boxes: list[torch.Tensor], device) -> tuple[torch.Tensor, list[int]]:
    """B x (G_b, 4) -> (B, G, 4) with G = max G_b (padding: a unit box, never read) and the G_b."""
    sizes = [len(t) for t in target_boxes]
    padded = torch.full((len(target_boxes), max(sizes), 4), 0.5, device=device)
    for b, targets in enumerate(target_boxes):
        padded[b, : sizes[b]] = targets.to(device=device, dtype=torch.float32)
    return padded, sizes


def _per_image(quality: torch.Tensor, sizes: list[int], match_one) -> Matches:
    """Apply ``match_one(array (Q, G_b)) -> (rows, cols)`` to each image of a (B, Q, G) matrix, moved to
    the CPU once (on a GPU, one copy per image would cost more than the matching)."""
    quality = quality.cpu().numpy()
    matches = []
    for b, size in enumerate(sizes):
        rows, cols = match_one(quality[b, :, :size]) if size else (np.zeros(0, np.int64),) * 2
        matches.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return matches


def _no_targets(batch_size: int) -> Matches:
    empty = torch.zeros(0, dtype=torch.long)
    return [(empty, empty)] * batch_size


@torch.no_grad()
def hungarian_match(
    pred_logits: torch.Tensor, pred_boxes: torch.Tensor, target_boxes: list[torch.Tensor],
    costs: MatchCosts = MatchCosts(),
) -> Matches:
    """``pred_logits`` (B, Q, 1), ``pred_boxes`` (B, Q, 4), ``target_boxes`` B x (G_b, 4) -> B pairs."""
    if not any(len(t) for t in target_boxes):
        return _no_targets(len(target_boxes))
    targets, sizes = _padded_targets(target_boxes, pred_boxes.device)
    boxes = pred_boxes.float()
    p = pred_logits.float().sigmoid()  # (B, Q, 1)
    neg = (1 - costs.focal_alpha) * p**costs.focal_gamma * -(1 - p + 1e-8).log()
    pos = costs.focal_alpha * (1 - p) ** costs.focal_gamma * -(p + 1e-8).log()
    cost = (
        costs.cost_class * (pos - neg)
        + costs.cost_bbox * (boxes[:, :, None] - targets[:, None]).abs().sum(-1)
        - costs.cost_giou * generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(targets))
    )
    return _per_image(cost, sizes, linear_sum_assignment)


@torch.no_grad()
def one_to_many_match(
    pred_logits: torch.Tensor, pred_boxes: torch.Tensor, target_boxes: list[torch.Tensor],
    alpha: float = 0.3, threshold: float = 0.4, topk: int = 4,
) -> Matches:
    """DAC-style one-to-many assignment (see module docstring). Same shapes as ``hungarian_match``."""
    if not any(len(t) for t in target_boxes):
        return _no_targets(len(target_boxes))
    targets, sizes = _padded_targets(target_boxes, pred_boxes.device)
    iou, _ = box_iou(box_cxcywh_to_xyxy(pred_boxes.float()), box_cxcywh_to_xyxy(targets))
    quality = alpha * pred_logits.float().sigmoid() + (1 - alpha) * iou  # (B, Q, G), higher is better

    def match_one(quality):
        k = min(topk, quality.shape[0])
        selected = np.zeros_like(quality, dtype=bool)
        top = np.argsort(-quality, axis=0, kind="stable")[:k]  # (k, G)
        selected[top, np.arange(quality.shape[1])[None, :]] = True
        selected &= quality > threshold
        best_target = np.where(selected, quality, -np.inf).argmax(axis=1)  # a prediction -> its best target
        rows = np.nonzero(selected.any(axis=1))[0]
        return rows, best_target[rows]

    return _per_image(quality, sizes, match_one)

"""Per-frame detection: all prompts of a frame in one batched ``forward_grounding``, then post-processing.

Post-processing (each step a named ``DetectionConfig`` field): score = sigmoid(logit) x sigmoid(presence);
keep score >= ``low_score_threshold`` (ByteTrack's second pass uses the low band, the tracker decides);
masks resized to the frame and thresholded at logit 0; specks smaller than ``min_component_area`` and
holes smaller than ``max_hole_area`` (fractions of the frame) removed with scipy.ndimage; mask NMS per
prompt; boxes from the box head, as the official image API reports them (``box_from_mask``: from the
mask extent instead, the predicted box where the mask is empty).
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..detections import Detections
from ..model.box_ops import box_cxcywh_to_xyxy
from ..model.geometry_encoders import Prompt
from ..geometry import masks_to_boxes
from ..model.sam3_image import FindStage, Sam3Image, instance_scores
from .session import DetectionConfig


def encode_prompts(model: Sam3Image, prompts: list[str]) -> dict:
    """Text features of all prompts, computed once per run (``language_features`` (L, P, d) ...)."""
    with torch.inference_mode():
        return model.backbone.forward_text(prompts, device=model.device)


def run_frames(
    model: Sam3Image, frame_indices: list[int], backbone_out: dict, text_out: dict, geometric_prompt: Prompt
) -> dict:
    """``forward_grounding`` of every prompt on every frame of ``frame_indices`` in one batch; query
    ``f * P + p`` is prompt ``p`` on frame ``frame_indices[f]`` (P prompts; ``geometric_prompt`` in the
    same order). ``backbone_out`` holds ``img_batch_all_stages`` (lazy frames) or cached features with
    ``id_mapping``. Batching frames changes no result; on a CPU it uses the cores better."""
    num_prompts = text_out["language_features"].shape[1]
    frames = torch.as_tensor(frame_indices, dtype=torch.long)  # on the CPU: frame bookkeeping needs no GPU sync
    find = FindStage(
        img_ids=frames.repeat_interleave(num_prompts),
        text_ids=torch.arange(num_prompts, device=model.device).repeat(len(frames)),
    )
    with torch.inference_mode():
        return model.forward_grounding({**backbone_out, **text_out}, find, geometric_prompt)


def run_frame(
    model: Sam3Image, frame_index: int, backbone_out: dict, text_out: dict, geometric_prompt: Prompt
) -> dict:
    """``run_frames`` on one frame: every prompt on frame ``frame_index``."""
    return run_frames(model, [frame_index], backbone_out, text_out, geometric_prompt)


#: The per-query outputs ``postprocess`` reads (leading dimension: queries of ``run_frames``).
QUERY_OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks", "presence_logit_dec", "queries")


def split_frames(outputs: dict, num_frames: int) -> list[dict]:
    """``run_frames`` outputs -> one dict per frame with the ``QUERY_OUTPUTS`` of its P prompts."""
    return [{k: v.reshape(num_frames, -1, *v.shape[1:])[f] for k, v in outputs.items() if k in QUERY_OUTPUTS}
            for f in range(num_frames)]


def _clean_mask(mask: np.ndarray, min_area: int, max_hole: int) -> np.ndarray:
    """Drop connected components smaller than ``min_area`` pixels; fill holes (background components
    that do not touch the border) smaller than ``max_hole`` pixels. One labelling pass each."""
    if min_area > 0:
        labels, count = ndimage.label(mask)
        if count:
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            small = sizes < min_area
            small[0] = False
            if small.any():
                mask = mask & ~small[labels]
    if max_hole > 0:
        labels, count = ndimage.label(~mask)
        if count > 1:
            sizes = np.bincount(labels.ravel(), minlength=count + 1)
            fill = sizes < max_hole
            fill[0] = False
            border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
            fill[border] = False
            if fill.any():
                mask = mask | fill[labels]
    return mask


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS on (N, H, W) bool masks, highest score first."""
    order = np.argsort(-scores, kind="stable")
    flat = masks.reshape(len(masks), -1).astype(np.float32)
    areas = flat.sum(1)
    inter = flat @ flat.T
    iou = inter / np.maximum(areas[:, None] + areas[None, :] - inter, 1e-6)
    keep: list[int] = []
    for i in order:
        if all(iou[i, j] <= iou_threshold for j in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def pooled_embeddings(features: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
    """Mask-pooled, L2-normalised features: (d, h, w) and (N, H, W) bool -> (N, d) float32."""
    if len(masks) == 0:
        return np.zeros((0, features.shape[0]), np.float32)
    weights = F.interpolate(masks[:, None].float(), size=features.shape[-2:], mode="area")[:, 0]
    weights = weights / weights.flatten(1).sum(1).clamp(min=1e-6)[:, None, None]
    pooled = torch.einsum("nhw,dhw->nd", weights.to(features.device), features.float())
    return F.normalize(pooled, dim=1).float().cpu().numpy()  # float32 also when called under autocast


def postprocess(
    outputs: dict, frame_size: tuple[int, int], config: DetectionConfig, features: torch.Tensor | None = None
) -> Detections:
    """Model outputs for P prompts on one frame -> ``Detections`` in frame pixels, class_id = prompt index.

    ``features`` (d, h, w): image features to mask-pool into ``data["embedding"]`` (appearance).
    """
    height, width = frame_size
    scores = instance_scores(outputs)  # (P, Q)
    frame_area = height * width
    parts = []
    for p in range(scores.shape[0]):
        keep = torch.nonzero(scores[p] >= config.low_score_threshold)[:, 0]
        keep = keep[torch.argsort(-scores[p, keep], stable=True)][: config.max_detections]
        if len(keep) == 0:
            continue
        logits = F.interpolate(outputs["pred_masks"][p, keep][:, None], size=(height, width),
                               mode="bilinear", align_corners=False)[:, 0]
        masks = np.stack([
            _clean_mask(m, int(config.min_component_area * frame_area), int(config.max_hole_area * frame_area))
            for m in (logits > 0).cpu().numpy()
        ])
        score = scores[p, keep].float().cpu().numpy()
        kept = mask_nms(masks, score, config.nms_iou_threshold)
        masks, score, keep = masks[kept], score[kept], keep[kept.tolist()]
        scale = np.array([width, height, width, height], np.float32)
        boxes = (box_cxcywh_to_xyxy(outputs["pred_boxes"][p, keep]).float().cpu().numpy() * scale).clip(0, scale)
        if config.box_from_mask:
            empty = ~masks.any(axis=(1, 2))
            boxes[~empty] = masks_to_boxes(masks[~empty])
        data = {"query": outputs["queries"][p, keep].float().cpu().numpy()}
        if features is not None:
            data["embedding"] = pooled_embeddings(features, torch.from_numpy(masks))
        parts.append(Detections(xyxy=boxes, confidence=score, class_id=np.full(len(keep), p), mask=masks,
                                data=data))
    if not parts:
        empty = Detections.empty(height, width)
        empty.data = {"query": np.zeros((0, outputs["queries"].shape[-1]), np.float32)}
        if features is not None:
            empty.data["embedding"] = np.zeros((0, features.shape[0]), np.float32)
        return empty
    return Detections.merge(parts)

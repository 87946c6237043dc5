"""Geometric prompts (boxes, points, masks) and their encoder (official names: ``Prompt``,
``SequenceGeometryEncoder``).

Conventions, as in the official code: sequences are sequence-first ``(L, B, C)``, padding masks are
batch-first ``(B, L)`` with True marking padding, and every padded sequence is right-padded. Boxes are
normalised ``(cx, cy, w, h)`` and points normalised ``(x, y)``, all in [0, 1]. Labels are 1 (or True)
for positive and 0 (or False) for negative prompts.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from ..errors import InputError
from .box_ops import box_cxcywh_to_xyxy
from .model_misc import get_clones


def is_right_padded(mask: torch.Tensor) -> torch.Tensor:
    """Whether the (B, L) padding mask (True = pad) only pads at the end of each row (0-dim bool)."""
    return (mask.long() == torch.sort(mask.long(), dim=-1)[0]).all()


def concat_padded_sequences(seq1, mask1, seq2, mask2, return_index: bool = False):
    """Concatenate two right-padded sequences into one contiguous right-padded sequence.

    seq1 (L1, B, C) with mask1 (B, L1), seq2 (L2, B, C) with mask2 (B, L2) -> (L1 + L2, B, C) and its
    (B, L1 + L2) mask. The valid items of seq2 follow directly after the valid items of seq1 in each
    batch row; the tail is padding (zeros where seq2's padding did not land). The result has seq2's
    dtype (the official behaviour: appending bool labels to long labels gives bool labels).
    With ``return_index``, also the (L2, B) positions of seq2's items in the result.
    """
    len1, bs, dim = seq1.shape
    len2 = seq2.shape[0]
    assert seq2.shape[1:] == (bs, dim) and mask1.shape == (bs, len1) and mask2.shape == (bs, len2)
    # Asynchronous checks: no host-device synchronisation on accelerators.
    torch._assert_async(is_right_padded(mask1))
    torch._assert_async(is_right_padded(mask2))

    len1_valid = (~mask1).sum(dim=-1)
    final_lengths = len1_valid + (~mask2).sum(dim=-1)
    positions = torch.arange(len1 + len2, device=seq2.device)
    concatenated_mask = positions[None].repeat(bs, 1) >= final_lengths[:, None]

    concatenated = torch.zeros((len1 + len2, bs, dim), device=seq2.device, dtype=seq2.dtype)
    concatenated[:len1] = seq1
    # seq1's items are already in place; shift seq2's items to follow seq1's valid items.
    index = torch.arange(len2, device=seq2.device)[:, None].repeat(1, bs) + len1_valid[None]
    concatenated = concatenated.scatter(0, index[:, :, None].expand(-1, -1, dim), seq2)
    if return_index:
        return concatenated, concatenated_mask, index
    return concatenated, concatenated_mask


class Prompt:
    """A batch of geometric prompts.

    box_embeddings (N_boxes, B, 4) cx, cy, w, h; box_mask (B, N_boxes); box_labels (N_boxes, B).
    point_embeddings (N_points, B, 2) x, y; point_mask (B, N_points); point_labels (N_points, B).
    mask_embeddings (N_masks, B, 1, H, W); mask_mask (B, N_masks); mask_labels (N_masks, B).
    Masks are True for padding; labels are long or bool, 1/True = positive. Missing labels default to
    positive, missing masks to "no padding", missing boxes/points to empty sequences. With no box,
    point or mask embeddings at all, every field is None (the "null prompt").
    """

    def __init__(
        self,
        box_embeddings=None,
        box_mask=None,
        point_embeddings=None,
        point_mask=None,
        box_labels=None,
        point_labels=None,
        mask_embeddings=None,
        mask_mask=None,
        mask_labels=None,
    ):
        present = [t for t in (box_embeddings, point_embeddings, mask_embeddings) if t is not None]
        if not present:
            for name in ("box", "point", "mask"):
                for suffix in ("embeddings", "labels", "mask"):
                    setattr(self, f"{name}_{suffix}", None)
            return
        bs, device = present[0].shape[1], present[0].device
        for t in present:
            assert t.shape[1] == bs, f"batch size mismatch between prompt types: {t.shape[1]} vs {bs}"
            assert t.device == device, "device mismatch between prompt types"

        def seq_len(t):
            return 0 if t is None else t.shape[0]

        def labels_or_positive(labels, n):
            return torch.ones(n, bs, device=device, dtype=torch.long) if labels is None else labels

        def mask_or_valid(mask, n):
            return torch.zeros(bs, n, device=device, dtype=torch.bool) if mask is None else mask

        n_box, n_point, n_mask = seq_len(box_embeddings), seq_len(point_embeddings), seq_len(mask_embeddings)
        if box_embeddings is None:
            box_embeddings = torch.zeros(0, bs, 4, device=device)
        if point_embeddings is None:
            point_embeddings = torch.zeros(0, bs, 2, device=device)
        # Mask embeddings may have any resolution: left None when absent (never encoded then).
        self.box_embeddings = box_embeddings
        self.box_labels = labels_or_positive(box_labels, n_box)
        self.box_mask = mask_or_valid(box_mask, n_box)
        self.point_embeddings = point_embeddings
        self.point_labels = labels_or_positive(point_labels, n_point)
        self.point_mask = mask_or_valid(point_mask, n_point)
        self.mask_embeddings = mask_embeddings
        self.mask_labels = labels_or_positive(mask_labels, n_mask)
        self.mask_mask = mask_or_valid(mask_mask, n_mask)

        for name, n in (("box", n_box), ("point", n_point), ("mask", n_mask)):
            emb, labels, mask = (getattr(self, f"{name}_{s}") for s in ("embeddings", "labels", "mask"))
            if emb is not None:
                assert list(emb.shape[:2]) == [n, bs], f"wrong {name} embeddings shape {tuple(emb.shape)}"
            assert list(labels.shape) == [n, bs], f"wrong {name} labels shape {tuple(labels.shape)}"
            assert list(mask.shape) == [bs, n], f"wrong {name} mask shape {tuple(mask.shape)}"
            for t in (emb, labels, mask):
                assert t is None or t.device == device, f"{name} tensors must be on {device}"

    def _append(self, kind: str, items, labels, mask=None) -> None:
        emb = getattr(self, f"{kind}_embeddings")
        if emb is None:
            setattr(self, f"{kind}_embeddings", items)
            setattr(self, f"{kind}_labels", labels)
            setattr(self, f"{kind}_mask", mask)
            return
        bs = emb.shape[1]
        assert items.shape[1] == labels.shape[1] == bs
        assert list(items.shape[:2]) == list(labels.shape[:2])
        if mask is None:
            mask = torch.zeros(bs, items.shape[0], dtype=torch.bool, device=items.device)
        old_mask = getattr(self, f"{kind}_mask")
        new_labels, _ = concat_padded_sequences(
            getattr(self, f"{kind}_labels").unsqueeze(-1), old_mask, labels.unsqueeze(-1), mask
        )
        new_emb, new_mask = concat_padded_sequences(emb, old_mask, items, mask)
        setattr(self, f"{kind}_labels", new_labels.squeeze(-1))
        setattr(self, f"{kind}_embeddings", new_emb)
        setattr(self, f"{kind}_mask", new_mask)

    def append_boxes(self, boxes, labels, mask=None) -> None:
        """Append boxes (n, B, 4) with labels (n, B) and optional padding mask (B, n)."""
        self._append("box", boxes, labels, mask)

    def append_points(self, points, labels, mask=None) -> None:
        """Append points (n, B, 2) with labels (n, B) and optional padding mask (B, n)."""
        self._append("point", points, labels, mask)

    def append_masks(self, masks, labels=None, attn_mask=None) -> None:
        """Set the (only) mask prompt: masks (n, B, 1, H, W), labels (n, B), attn_mask (B, n)."""
        if labels is not None:
            assert list(masks.shape[:2]) == list(labels.shape[:2])
        if self.mask_embeddings is not None:
            raise NotImplementedError("Only one mask per prompt is supported.")
        n, bs = masks.shape[:2]
        self.mask_embeddings = masks
        if labels is None:
            labels = torch.ones(n, bs, device=masks.device, dtype=torch.long)
        if attn_mask is None:
            attn_mask = torch.zeros(bs, n, device=masks.device, dtype=torch.bool)
        self.mask_labels, self.mask_mask = labels, attn_mask

    def clone(self) -> "Prompt":
        """A copy of the box and point prompts (like the official clone, mask prompts are dropped)."""

        def c(t):
            return None if t is None else t.clone()

        return Prompt(
            box_embeddings=c(self.box_embeddings), box_mask=c(self.box_mask), box_labels=c(self.box_labels),
            point_embeddings=c(self.point_embeddings), point_mask=c(self.point_mask),
            point_labels=c(self.point_labels),
        )


class SequenceGeometryEncoder(nn.Module):
    """Encode a ``Prompt``'s points and boxes into a sequence of ``d_model`` tokens.

    Each point/box token is the sum of the enabled encodings — direct linear projection of the
    coordinates, features pooled from the last image level (grid_sample for points, 7x7 roi_align +
    conv for boxes, both on ``img_pre_norm``-ed features), and a projection of the sine position
    encoding — plus a label embedding. ``encode_boxes_as_points`` instead turns each box into its two
    corners (labels 2/3 top-left, 4/5 bottom-right). Valid points, then valid boxes, then a CLS token
    are packed right-padded; then ``final_proj`` + ``norm``, ``num_layers`` clones of ``layer``
    (self-attention over the prompt, cross-attention to the image) and ``encode_norm``.
    Mask prompts are not supported (``mask_encoder`` must be None, as in the official SAM 3 model).
    """

    points_refused: Optional[str] = None  # why point prompts cannot run (no point projections were loaded)

    def __init__(
        self,
        encode_boxes_as_points: bool,
        points_direct_project: bool,
        points_pool: bool,
        points_pos_enc: bool,
        boxes_direct_project: bool,
        boxes_pool: bool,
        boxes_pos_enc: bool,
        d_model: int,
        pos_enc: nn.Module,
        num_layers: int,
        layer: nn.Module,
        roi_size: int = 7,
        add_cls: bool = True,
        add_post_encode_proj: bool = True,
        mask_encoder: Optional[nn.Module] = None,
        add_mask_label: bool = False,
        use_act_ckpt: bool = False,  # accepted for compatibility; no activation checkpointing here
    ):
        super().__init__()
        if mask_encoder is not None or add_mask_label:
            raise NotImplementedError("mask prompts are not supported by this geometry encoder")
        assert points_direct_project or points_pos_enc or points_pool, "need at least one way to encode points"
        assert encode_boxes_as_points or boxes_direct_project or boxes_pos_enc or boxes_pool, (
            "need at least one way to encode boxes"
        )
        self.d_model = d_model
        self.pos_enc = pos_enc
        self.encode_boxes_as_points = encode_boxes_as_points
        self.roi_size = roi_size
        self.use_act_ckpt = use_act_ckpt
        self.mask_encoder = None
        self.add_mask_label = False
        # Positive/negative labels; with boxes as points also top-left / bottom-right corner labels.
        self.label_embed = nn.Embedding(6 if encode_boxes_as_points else 2, d_model)
        # The CLS token also keeps the encoded sequence non-empty.
        self.cls_embed = nn.Embedding(1, d_model) if add_cls else None

        self.points_direct_project = nn.Linear(2, d_model) if points_direct_project else None
        self.points_pool_project = nn.Linear(d_model, d_model) if points_pool else None
        self.points_pos_enc_project = nn.Linear(d_model, d_model) if points_pos_enc else None

        encode_boxes = not encode_boxes_as_points
        self.boxes_direct_project = nn.Linear(4, d_model) if encode_boxes and boxes_direct_project else None
        self.boxes_pool_project = nn.Conv2d(d_model, d_model, roi_size) if encode_boxes and boxes_pool else None
        self.boxes_pos_enc_project = nn.Linear(d_model + 2, d_model) if encode_boxes and boxes_pos_enc else None

        self.final_proj = None
        if add_post_encode_proj:
            self.final_proj = nn.Linear(d_model, d_model)
            self.norm = nn.LayerNorm(d_model)

        pools = self.points_pool_project is not None or self.boxes_pool_project is not None
        self.img_pre_norm = nn.LayerNorm(d_model) if pools else nn.Identity()

        self.encode = None
        if num_layers > 0:
            assert add_cls, "a CLS token is required when encoding the prompt with a transformer"
            self.encode = get_clones(layer, num_layers)
            self.encode_norm = nn.LayerNorm(d_model)

    @staticmethod
    def _add(total: Optional[torch.Tensor], term: torch.Tensor) -> torch.Tensor:
        return term if total is None else total + term

    def _encode_points(self, points, points_mask, points_labels, img_feats):
        """points (N, B, 2), labels (N, B), img_feats (B, C, H, W) -> ((N, B, d), mask (B, N))."""
        n_points, bs = points.shape[:2]
        if n_points and self.points_refused:
            raise InputError(self.points_refused)
        embed = None
        if self.points_direct_project is not None:
            embed = self._add(embed, self.points_direct_project(points))
        if self.points_pool_project is not None:
            # grid (B, N, 1, 2) in [-1, 1]; bilinear sampling, align_corners=False.
            grid = points.transpose(0, 1).unsqueeze(2) * 2 - 1
            sampled = F.grid_sample(img_feats, grid, align_corners=False)  # (B, C, N, 1)
            embed = self._add(embed, self.points_pool_project(sampled.squeeze(-1).permute(2, 0, 1)))
        if self.points_pos_enc_project is not None:
            x, y = points.unbind(-1)
            enc_x, enc_y = self.pos_enc._encode_xy(x.flatten(), y.flatten())
            # Note the [x, y] order here, unlike the [y, x] order of box encodings.
            enc_x = enc_x.view(n_points, bs, enc_x.shape[-1])
            enc_y = enc_y.view(n_points, bs, enc_y.shape[-1])
            enc = torch.cat([enc_x, enc_y], dim=-1)
            embed = self._add(embed, self.points_pos_enc_project(enc))
        return self.label_embed(points_labels.long()) + embed, points_mask

    def _encode_boxes(self, boxes, boxes_mask, boxes_labels, img_feats):
        """boxes (N, B, 4) cxcywh, labels (N, B), img_feats (B, C, H, W) -> ((N, B, d), mask (B, N))."""
        n_boxes, bs = boxes.shape[:2]
        embed = None
        if self.boxes_direct_project is not None:
            embed = self._add(embed, self.boxes_direct_project(boxes))
        if self.boxes_pool_project is not None:
            H, W = img_feats.shape[-2:]
            scale = torch.tensor([W, H, W, H], dtype=boxes.dtype, device=boxes.device)
            boxes_xyxy = box_cxcywh_to_xyxy(boxes) * scale  # in feature-map pixels
            # Padded boxes are pooled too; their tokens are masked out later.
            sampled = torchvision.ops.roi_align(
                img_feats, list(boxes_xyxy.float().transpose(0, 1).unbind(0)), self.roi_size
            )  # (B * N, C, roi, roi)
            proj = self.boxes_pool_project(sampled).view(bs, n_boxes, self.d_model).transpose(0, 1)
            embed = self._add(embed, proj)
        if self.boxes_pos_enc_project is not None:
            cx, cy, w, h = boxes.unbind(-1)
            enc = self.pos_enc.encode_boxes(cx.flatten(), cy.flatten(), w.flatten(), h.flatten())
            embed = self._add(embed, self.boxes_pos_enc_project(enc.view(n_boxes, bs, enc.shape[-1])))
        return self.label_embed(boxes_labels.long()) + embed, boxes_mask

    def forward(
        self,
        geo_prompt: Prompt,
        img_feats: Sequence[torch.Tensor],
        img_sizes: Sequence[Sequence[int]],
        img_pos_embeds: Optional[Sequence[torch.Tensor]] = None,
    ):
        """Encode ``geo_prompt`` against the last image level.

        img_feats / img_pos_embeds: lists of seq-first (H*W, B, d) levels (only the last one is used);
        img_sizes: matching (H, W). Returns (tokens (L, B, d), padding mask (B, L), True = pad), where
        L = N_points + N_boxes (+ 1 CLS) and the valid tokens of each row come first.
        """
        points, points_mask = geo_prompt.point_embeddings, geo_prompt.point_mask
        points_labels = geo_prompt.point_labels
        boxes, boxes_mask, boxes_labels = geo_prompt.box_embeddings, geo_prompt.box_mask, geo_prompt.box_labels
        seq_img_feats = img_feats[-1]  # (H*W, B, d)
        seq_img_pos = img_pos_embeds[-1] if img_pos_embeds is not None else torch.zeros_like(seq_img_feats)

        img_map = None
        if self.points_pool_project is not None or self.boxes_pool_project is not None:
            assert len(img_feats) == len(img_sizes)
            H, W = img_sizes[-1]
            feat = self.img_pre_norm(seq_img_feats)
            assert feat.shape[0] == H * W
            img_map = feat.permute(1, 2, 0).reshape(feat.shape[1], feat.shape[2], H, W)  # (B, d, H, W)

        if self.encode_boxes_as_points:
            assert boxes is not None and boxes_mask is not None and boxes_labels is not None
            top_left, bottom_right = box_cxcywh_to_xyxy(boxes).split(2, dim=-1)
            for corner, label_offset in ((top_left, 2), (bottom_right, 4)):
                corner_labels = (boxes_labels + label_offset).unsqueeze(-1)
                points, _ = concat_padded_sequences(points, points_mask, corner, boxes_mask)
                points_labels, points_mask = concat_padded_sequences(
                    points_labels.unsqueeze(-1), points_mask, corner_labels, boxes_mask
                )
                points_labels = points_labels.squeeze(-1)

        final_embeds, final_mask = self._encode_points(points, points_mask, points_labels, img_map)
        if not self.encode_boxes_as_points:
            boxes_embeds, boxes_mask = self._encode_boxes(boxes, boxes_mask, boxes_labels, img_map)
            final_embeds, final_mask = concat_padded_sequences(
                final_embeds, final_mask, boxes_embeds, boxes_mask
            )

        bs = final_embeds.shape[1]
        if self.cls_embed is not None:
            cls = self.cls_embed.weight.view(1, 1, self.d_model).repeat(1, bs, 1)
            cls_mask = torch.zeros(bs, 1, dtype=final_mask.dtype, device=final_mask.device)
            final_embeds, final_mask = concat_padded_sequences(final_embeds, final_mask, cls, cls_mask)

        if self.final_proj is not None:
            final_embeds = self.norm(self.final_proj(final_embeds))
        if self.encode is not None:
            for layer in self.encode:
                final_embeds = layer(
                    tgt=final_embeds, memory=seq_img_feats, tgt_key_padding_mask=final_mask, pos=seq_img_pos
                )
            final_embeds = self.encode_norm(final_embeds)
        return final_embeds, final_mask


def prompt_from_boxes(boxes_per_prompt, device=None) -> "Prompt":
    """A ``Prompt`` for P prompts from python lists: ``boxes_per_prompt[p]`` holds (box, positive) pairs,
    box = normalised cx, cy, w, h. Shorter lists are padded (``box_mask`` True = padding)."""
    num_prompts = len(boxes_per_prompt)
    num_boxes = max((len(items) for items in boxes_per_prompt), default=0)
    boxes = torch.zeros(num_boxes, num_prompts, 4, device=device)
    labels = torch.zeros(num_boxes, num_prompts, dtype=torch.bool, device=device)
    padding = torch.ones(num_prompts, num_boxes, dtype=torch.bool, device=device)
    for p, items in enumerate(boxes_per_prompt):
        for i, (box, positive) in enumerate(items):
            boxes[i, p] = torch.as_tensor(box, dtype=torch.float32, device=device)
            labels[i, p] = bool(positive)
            padding[p, i] = False
    return Prompt(box_embeddings=boxes, box_mask=padding, box_labels=labels)


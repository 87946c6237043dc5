"""SAM prompt encoder of the tracker (official names: ``PromptEncoder``, ``PositionEmbeddingRandom``).

Points are absolute pixel (x, y) in the model input frame (``input_image_size``, (H, W)); labels are
1 positive, 0 negative, 2 / 3 box top-left / bottom-right corners, -1 padding. Mask prompts are
(B, 1, 4h, 4w) logits, 4x the image-embedding size (h, w).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Type

import torch
import torch.nn as nn

from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of (x, y) in [0, 1]^2 with a fixed random Gaussian matrix (2, num_pos_feats):
    output width 2 * num_pos_feats, [sin | cos]. The matrix is a persistent buffer (in the checkpoint)."""

    def __init__(self, num_pos_feats: int = 64, scale: Optional[float] = None):
        super().__init__()
        if scale is None or scale <= 0.0:
            scale = 1.0
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> torch.Tensor:
        """Encoding of the pixel centres of an (h, w) grid -> (2 * num_pos_feats, h, w)."""
        h, w = size
        grid = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / h
        x_embed = (grid.cumsum(dim=1) - 0.5) / w
        return self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords_input: torch.Tensor, image_size: Tuple[int, int]) -> torch.Tensor:
        """Pixel coordinates (B, N, 2) as (x, y) in an image of (H, W) ``image_size`` -> (B, N, C)."""
        coords = coords_input.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._pe_encoding(coords.to(torch.float))


class PromptEncoder(nn.Module):
    """Points, boxes and masks -> sparse (B, N, embed_dim) and dense (B, embed_dim, h, w) embeddings.

    ``image_embedding_size`` is (h, w) of the image embedding, ``input_image_size`` the (H, W) the point
    coordinates refer to; ``mask_input_size`` = (4h, 4w).
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int,
        activation: Type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # negative / positive point, two box corners
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, embed_dim, h, w) position encoding of the image embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2) pixel points, (B, N) labels -> (B, N [+ 1], C); ``pad`` appends a label -1 point."""
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, torch.zeros((points.shape[0], 1, 2), device=points.device)], dim=1)
            labels = torch.cat([labels, -torch.ones((labels.shape[0], 1), device=labels.device)], dim=1)
        embedding = self.pe_layer.forward_with_coords(points, self.input_image_size)
        embedding = torch.where(
            (labels == -1).unsqueeze(-1), torch.zeros_like(embedding) + self.not_a_point_embed.weight, embedding
        )
        for label in range(self.num_point_embeddings):
            embedding = torch.where(
                (labels == label).unsqueeze(-1), embedding + self.point_embeddings[label].weight, embedding
            )
        return embedding

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """(B, 4) pixel x0, y0, x1, y1 -> (B, 2, C) corner embeddings."""
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        corner_embedding = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner_embedding[:, 0, :] += self.point_embeddings[2].weight
        corner_embedding[:, 1, :] += self.point_embeddings[3].weight
        return corner_embedding

    def _get_batch_size(self, points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self,
        points: Optional[Tuple[torch.Tensor, torch.Tensor]],
        boxes: Optional[torch.Tensor],
        masks: Optional[torch.Tensor],
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(coords (B, N, 2), labels (B, N)) or None, boxes (B, 4) or None, masks (B, 1, 4h, 4w) or None
        -> sparse (B, N', embed_dim) (N' = N + 1 padding point without boxes, + 2 per box), dense
        (B, embed_dim, h, w) (``no_mask_embed`` everywhere without a mask)."""
        bs = self._get_batch_size(points, boxes, masks)
        device = self.point_embeddings[0].weight.device
        sparse_embeddings = torch.empty((bs, 0, self.embed_dim), device=device)
        if points is not None:
            coords, labels = points
            point_embeddings = self._embed_points(coords, labels, pad=(boxes is None))
            sparse_embeddings = torch.cat([sparse_embeddings, point_embeddings], dim=1)
        if boxes is not None:
            sparse_embeddings = torch.cat([sparse_embeddings, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense_embeddings = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense_embeddings = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse_embeddings, dense_embeddings

"""DensePose's embedding predictor: ConvTranspose x2 for the embedding and the coarse segmentation,
then bilinear x`up_scale` (28 -> 56 -> 112). Pixel embeddings are not normalised here."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingPredictor(nn.Module):
    def __init__(self, in_channels: int, embed_size: int, coarse_segm_channels: int, deconv_kernel: int, up_scale: int):
        super().__init__()
        padding = deconv_kernel // 2 - 1
        self.coarse_segm_lowres = nn.ConvTranspose2d(in_channels, coarse_segm_channels, deconv_kernel, 2, padding)
        self.embed_lowres = nn.ConvTranspose2d(in_channels, embed_size, deconv_kernel, 2, padding)
        self.up_scale = up_scale

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.up_scale, mode="bilinear", align_corners=False)

    def forward(self, head_outputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            "embedding": self.upsample(self.embed_lowres(head_outputs)),
            "coarse_segm": self.upsample(self.coarse_segm_lowres(head_outputs)),
        }

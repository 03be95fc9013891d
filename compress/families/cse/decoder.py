"""DensePose's decoder (the Panoptic FPN semantic head): p2-p5 merged into one stride-4 map.

Level p_k gets max(1, k - 2) conv3x3+ReLU, each followed by bilinear x2 except at stride 4; the
branches are summed and a 1x1 conv predicts. The Upsample modules take Sequential indices too,
so the keys read `p4.0`, `p4.2`, `p5.0`, `p5.2`, `p5.4`.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.families.cse.layers import Conv2dNorm

COMMON_STRIDE = 4  # the merged map's stride: p2's


class Decoder(nn.Module):
    def __init__(self, in_channels: int, conv_dims: int, num_classes: int, levels: tuple[int, ...] = (2, 3, 4, 5)):
        super().__init__()
        for level in levels:
            ops: list[nn.Module] = []
            for k in range(max(1, level - 2)):
                ops.append(Conv2dNorm(in_channels if k == 0 else conv_dims, conv_dims, 3, padding=1, relu=True))
                if 2**level != COMMON_STRIDE:
                    ops.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.add_module(f"p{level}", nn.Sequential(*ops))
        self.levels = levels
        self.predictor = nn.Conv2d(conv_dims, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = getattr(self, f"p{self.levels[0]}")(features[0])
        for level, feature in zip(self.levels[1:], features[1:]):
            x = x + getattr(self, f"p{level}")(feature)
        return self.predictor(x)

"""The appearance feature extractor: source image -> 3-D feature volume.

LivePortrait's `appearance_feature_extractor.pth` (its F); in face-vid2vid the same layers are the
first half of the generator, under the same names.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.families.facevid2vid.blocks import ResBlock3d
from compress.families.fomm.blocks import DownBlock2d, SameBlock2d, encoder_widths


class AppearanceFeatureExtractor(nn.Module):
    """Conv, down blocks, a 1x1 conv to `max_features` channels reshaped to
    [reshape_channel, reshape_depth], then 3-D residual blocks: [B, reshape_channel, D, h, w].

    `first_kernel_size`: 3 (LivePortrait, face-vid2vid's SPADE generator) or 7 (its original generator).
    """

    def __init__(
        self,
        image_channel: int,
        block_expansion: int,
        num_down_blocks: int,
        max_features: int,
        reshape_channel: int,
        reshape_depth: int,
        num_resblocks: int,
        first_kernel_size: int = 3,
    ):
        super().__init__()
        self.reshape_channel, self.reshape_depth = reshape_channel, reshape_depth
        self.first = SameBlock2d(
            image_channel, block_expansion, kernel_size=first_kernel_size, padding=first_kernel_size // 2
        )
        widths = encoder_widths(block_expansion, block_expansion, num_down_blocks, max_features)
        self.down_blocks = nn.ModuleList(DownBlock2d(c_in, c_out, kernel_size=3, padding=1) for c_in, c_out in widths)
        self.second = nn.Conv2d(widths[-1][1], max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(reshape_channel, kernel_size=3, padding=1))

    def forward(self, source_image: torch.Tensor) -> torch.Tensor:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out).unflatten(1, (self.reshape_channel, self.reshape_depth))
        return self.resblocks_3d(out)

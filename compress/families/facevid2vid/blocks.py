"""face-vid2vid's 3-D building blocks (public `modules/util.py`), with the public attribute names.

The 2-D blocks are FOMM's (compress.families.fomm.blocks): the public face-vid2vid code copied
them unchanged, and its 3-D ones are them with 3-D layers. BatchNorm replaces the public
SynchronizedBatchNorm: same parameters, same keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.families.fomm import blocks as fomm_blocks
from compress.families.fomm.blocks import DownBlock2d, ResBlock2d, UpBlock2d, encoder_widths, hourglass_width


class ResBlock3d(ResBlock2d):
    """Pre-activation residual block (BN, ReLU, conv, twice); keeps resolution and width."""

    conv_type, norm_type = nn.Conv3d, nn.BatchNorm3d


class UpBlock3d(UpBlock2d):
    """Nearest x2 upsampling of height and width (depth kept), conv, BN, ReLU."""

    conv_type, norm_type, scale_factor = nn.Conv3d, nn.BatchNorm3d, (1.0, 2.0, 2.0)


class DownBlock3d(DownBlock2d):
    """Conv, BN, ReLU, 2x2 average pooling of height and width (depth kept)."""

    conv_type, norm_type, pool_type, pool_size = nn.Conv3d, nn.BatchNorm3d, nn.AvgPool3d, (1, 2, 2)


class Encoder(fomm_blocks.Encoder):
    """3-D hourglass encoder; returns the input and every down block's output (the skips)."""

    down_block_type = DownBlock3d


class Decoder(fomm_blocks.Decoder):
    """3-D hourglass decoder (up block, then concatenation with the skip), then conv, BN, ReLU:
    face-vid2vid's addition to FOMM's decoder."""

    up_block_type = UpBlock3d

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__(block_expansion, in_features, num_blocks, max_features)
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        return F.relu(self.norm(self.conv(super().forward(skips))))


class Hourglass(fomm_blocks.Hourglass):
    """3-D U-Net pooling height and width only: the output has block_expansion + in_features channels."""

    encoder_type, decoder_type = Encoder, Decoder


class KPHourglass(nn.Module):
    """2-D encoder, a 1x1 conv whose channels are reshaped into a depth axis, 3-D decoder (no skips)."""

    def __init__(
        self,
        block_expansion: int,
        in_features: int,
        reshape_features: int,
        reshape_depth: int,
        num_blocks: int = 3,
        max_features: int = 256,
    ):
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i, (c_in, c_out) in enumerate(encoder_widths(block_expansion, in_features, num_blocks, max_features)):
            self.down_blocks.add_module(f"down{i}", DownBlock2d(c_in, c_out, kernel_size=3, padding=1))
        width = [hourglass_width(block_expansion, max_features, level) for level in range(num_blocks + 1)]
        self.conv = nn.Conv2d(width[num_blocks], reshape_features, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.up_blocks.add_module(f"up{i}", UpBlock3d(width[num_blocks - i], width[num_blocks - i - 1]))
        self.reshape_depth = reshape_depth
        self.out_filters = width[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        out = out.unflatten(1, (-1, self.reshape_depth))  # [B, C / depth, depth, h, w]
        return self.up_blocks(out)


class ResBottleneck(nn.Module):
    """ResNet bottleneck (1x1 to a quarter of the width, 3x3 with `stride`, 1x1 back), BN after each conv."""

    def __init__(self, in_features: int, stride: int):
        super().__init__()
        hidden = in_features // 4
        self.conv1 = nn.Conv2d(in_features, hidden, kernel_size=1)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(hidden, in_features, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(hidden, affine=True)
        self.norm2 = nn.BatchNorm2d(hidden, affine=True)
        self.norm3 = nn.BatchNorm2d(in_features, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(in_features, in_features, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)

"""FOMM's building blocks (official `modules/util.py`), with the official attribute names.

BatchNorm2d replaces the official SynchronizedBatchNorm2d: same parameters, same state-dict keys.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock2d(nn.Module):
    """Pre-activation residual block (BN, ReLU, conv, twice); keeps resolution and width."""

    # Layer types: face-vid2vid's 3-D blocks are these with Conv3d and BatchNorm3d.
    conv_type, norm_type = nn.Conv2d, nn.BatchNorm2d

    def __init__(self, in_features: int, kernel_size: int | tuple[int, ...], padding: int | tuple[int, ...]):
        super().__init__()
        self.conv1 = self.conv_type(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.conv2 = self.conv_type(in_features, in_features, kernel_size=kernel_size, padding=padding)
        self.norm1 = self.norm_type(in_features, affine=True)
        self.norm2 = self.norm_type(in_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class UpBlock2d(nn.Module):
    """Nearest x2 upsampling, conv, BN, ReLU."""

    conv_type, norm_type, scale_factor = nn.Conv2d, nn.BatchNorm2d, 2.0

    def __init__(self, in_features: int, out_features: int, kernel_size=3, padding=1, groups: int = 1):
        super().__init__()
        self.conv = self.conv_type(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = self.norm_type(out_features, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=self.scale_factor, mode="nearest")
        return F.relu(self.norm(self.conv(out)))


class DownBlock2d(nn.Module):
    """Conv, BN, ReLU, 2x2 average pooling."""

    conv_type, norm_type, pool_type, pool_size = nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d, (2, 2)

    def __init__(self, in_features: int, out_features: int, kernel_size=3, padding=1, groups: int = 1):
        super().__init__()
        self.conv = self.conv_type(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = self.norm_type(out_features, affine=True)
        self.pool = self.pool_type(kernel_size=self.pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class SameBlock2d(nn.Module):
    """Conv, BN, ReLU (or LeakyReLU, slope 0.01, with `lrelu`) at the same resolution."""

    def __init__(
        self, in_features: int, out_features: int, groups: int = 1, kernel_size=3, padding=1, lrelu: bool = False
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding, groups=groups)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return F.leaky_relu(out) if self.lrelu else F.relu(out)


def hourglass_width(block_expansion: int, max_features: int, level: int) -> int:
    """Channels after `level` down blocks of an hourglass (level 0: block_expansion)."""
    return min(max_features, block_expansion * 2**level)


def encoder_widths(block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> list[tuple[int, int]]:
    """(in, out) channels of an hourglass encoder's down blocks, first to last."""
    widths = [in_features] + [hourglass_width(block_expansion, max_features, i + 1) for i in range(num_blocks)]
    return list(zip(widths[:-1], widths[1:]))


def decoder_widths(block_expansion: int, num_blocks: int, max_features: int) -> list[tuple[int, int]]:
    """(in, out) channels of an hourglass decoder's up blocks, deepest first: the first reads the
    encoder's last output, the others the previous output concatenated with a skip (twice the width)."""
    widths = [hourglass_width(block_expansion, max_features, i) for i in range(num_blocks + 1)]
    return [((1 if i == num_blocks - 1 else 2) * widths[i + 1], widths[i]) for i in reversed(range(num_blocks))]


def encode(down_blocks: Iterable[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The input and every down block's output (the skips of `decode`)."""
    outs = [x]
    for block in down_blocks:
        outs.append(block(outs[-1]))
    return outs


def decode(up_blocks: Iterable[nn.Module], skips: list[torch.Tensor]) -> torch.Tensor:
    """From the deepest skip up: up block, then concatenation with the skip of the same resolution."""
    out = skips[-1]
    for block, skip in zip(up_blocks, reversed(skips[:-1])):
        out = torch.cat([block(out), skip], dim=1)
    return out


class Encoder(nn.Module):
    """Hourglass encoder; returns the input and every down block's output (the skips)."""

    down_block_type = DownBlock2d

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            self.down_block_type(c_in, c_out, kernel_size=3, padding=1)
            for c_in, c_out in encoder_widths(block_expansion, in_features, num_blocks, max_features)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return encode(self.down_blocks, x)


class Decoder(nn.Module):
    """Hourglass decoder: up block, then concatenation with the skip of the same resolution."""

    up_block_type = UpBlock2d

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.up_blocks = nn.ModuleList(
            self.up_block_type(c_in, c_out, kernel_size=3, padding=1)
            for c_in, c_out in decoder_widths(block_expansion, num_blocks, max_features)
        )
        self.out_filters = block_expansion + in_features

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        return decode(self.up_blocks, skips)


class Hourglass(nn.Module):
    """U-Net: the output has `out_filters` = block_expansion + in_features channels."""

    encoder_type, decoder_type = Encoder, Decoder

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256):
        super().__init__()
        self.encoder = self.encoder_type(block_expansion, in_features, num_blocks, max_features)
        self.decoder = self.decoder_type(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

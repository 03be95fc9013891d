"""Mobile building blocks the families' students share (MobileNet v1 separable convs, width rounding)."""

from __future__ import annotations

from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of `divisor` (MobileNet's rule), never below `divisor`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SeparableConv(nn.Sequential):
    """Depthwise k x k (stride s) -> BN -> ReLU -> pointwise 1x1 -> BN [-> ReLU] (MobileNet v1)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, last_relu: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, in_channels, kernel_size=3, stride=stride, padding=1, groups=in_channels, bias=False
            ),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if last_relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class ConvBlock(nn.Sequential):
    """Full 3x3 conv -> BN -> ReLU, for layers that read network inputs (frames, motion maps).

    A depthwise conv there would tie its channels to the input's, and torch-pruning would try
    to prune channels of a tensor no layer produces.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

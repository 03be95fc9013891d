"""detectron2's ResNet (frozen batch norm, MSRA stride placement) and FPN p2-p5, with its module names.

Keys read `backbone.bottom_up.stem.conv1.*`, `backbone.bottom_up.res{2..5}.{i}.{conv1..3,shortcut}.*`
and `backbone.fpn_{lateral,output}{2..5}.*`. FPN's p6 (a parameter-free max pool of p5) feeds only
the region proposal network, so it is left out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.families.cse.layers import Conv2dNorm, FrozenBatchNorm2d

# Blocks per stage res2..res5 for each depth; 18 and 34 use basic blocks, the rest bottlenecks.
BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
BASIC_DEPTHS = (18, 34)


def conv_frozen_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = False
) -> Conv2dNorm:
    return Conv2dNorm(
        cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False,
        norm=FrozenBatchNorm2d(cout), relu=relu,
    )  # fmt: skip


class BasicStem(nn.Module):
    """conv 7x7 stride 2, frozen BN, ReLU, max pool 3x3 stride 2: stride 4."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = conv_frozen_bn(in_channels, out_channels, 7, stride=2, relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv1(x), kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1x1, 3x3 (grouped), 1x1 and a projection shortcut when the width changes; the stride sits in
    the first 1x1 when `stride_in_1x1` (MSRA, the model zoo's choice), else in the 3x3."""

    def __init__(self, cin: int, cout: int, bottleneck: int, stride: int, num_groups: int, stride_in_1x1: bool):
        super().__init__()
        self.shortcut = conv_frozen_bn(cin, cout, 1, stride=stride) if cin != cout else None
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv_frozen_bn(cin, bottleneck, 1, stride=stride_1x1, relu=True)
        self.conv2 = conv_frozen_bn(bottleneck, bottleneck, 3, stride=stride_3x3, groups=num_groups, relu=True)
        self.conv3 = conv_frozen_bn(bottleneck, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a projection shortcut when the width changes (ResNet-18/34)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.shortcut = conv_frozen_bn(cin, cout, 1, stride=stride) if cin != cout else None
        self.conv1 = conv_frozen_bn(cin, cout, 3, stride=stride, relu=True)
        self.conv2 = conv_frozen_bn(cout, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu(self.conv2(self.conv1(x)) + shortcut)


class ResNet(nn.Module):
    """Stem and stages res2..res5 (strides 4, 8, 16, 32); `forward` returns the four stage outputs."""

    def __init__(
        self,
        depth: int,
        stem_out_channels: int = 64,
        res2_out_channels: int = 256,
        num_groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = True,
    ):
        super().__init__()
        self.stem = BasicStem(3, stem_out_channels)
        cin, cout, bottleneck = stem_out_channels, res2_out_channels, num_groups * width_per_group
        self.out_channels: list[int] = []
        for stage, num_blocks in enumerate(BLOCKS_PER_STAGE[depth], start=2):
            blocks = []
            for i in range(num_blocks):
                stride = 2 if i == 0 and stage > 2 else 1
                if depth in BASIC_DEPTHS:
                    blocks.append(BasicBlock(cin, cout, stride))
                else:
                    blocks.append(BottleneckBlock(cin, cout, bottleneck, stride, num_groups, stride_in_1x1))
                cin = cout
            self.add_module(f"res{stage}", nn.Sequential(*blocks))
            self.out_channels.append(cout)
            cout, bottleneck = cout * 2, bottleneck * 2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for stage in (self.res2, self.res3, self.res4, self.res5):
            x = stage(x)
            outputs.append(x)
        return outputs


class FPN(nn.Module):
    """Lateral 1x1 and output 3x3 convs per level, top-down by nearest x2 and sum: [p2, p3, p4, p5]."""

    LEVELS = (2, 3, 4, 5)

    def __init__(self, bottom_up: ResNet, out_channels: int):
        super().__init__()
        self.bottom_up = bottom_up
        for level, cin in zip(self.LEVELS, bottom_up.out_channels):
            self.add_module(f"fpn_lateral{level}", nn.Conv2d(cin, out_channels, 1))
            self.add_module(f"fpn_output{level}", nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.bottom_up(x)
        results = []
        top_down = None
        for level, feature in zip(reversed(self.LEVELS), reversed(features)):
            lateral = getattr(self, f"fpn_lateral{level}")(feature)
            top_down = (
                lateral if top_down is None else lateral + F.interpolate(top_down, scale_factor=2.0, mode="nearest")
            )
            results.insert(0, getattr(self, f"fpn_output{level}")(top_down))
        return results

"""Reference architectures for calibrating and validating the latency cost model.

The cost model needs only structure and shapes, so these are compact re-writings (random
weights, no torchvision) of the networks whose published latencies calibrate device profiles,
plus a generator of varied conv nets for validating the method on the host:

  MobileNetV1 1.0/224      (Howard et al. 2017; TF-slim mobilenet_v1)
  SqueezeNet 1.0           (Iandola et al. 2016; fire modules, 7x7 stem)
  NASNet-A mobile 4@1056   (Zoph et al. 2018; TF-slim nasnet_utils cell definitions)
  Inception-ResNet-V2      (Szegedy et al. 2016; TF-slim inception_resnet_v2), 299x299
  Inception-V4             (Szegedy et al. 2016; TF-slim inception_v4), 299x299
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(
    cin: int,
    cout: int,
    k: int | tuple[int, int],
    stride: int = 1,
    padding: int | tuple[int, int] | str | None = None,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv -> BatchNorm -> activation, 'same' padding by default (TF-slim style)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    pad = (kh // 2, kw // 2) if padding is None else padding
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, (kh, kw), stride, pad, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """features -> global average pool -> linear."""

    def __init__(self, features: nn.Module, channels: int, classes: int = 1001):
        super().__init__()
        self.features = features
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# -- MobileNetV1 -----------------------------------------------------------------------------
def mobilenet_v1(width: float = 1.0) -> nn.Module:
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    c = int(32 * width)
    layers: list[nn.Module] = [conv_bn(3, c, 3, 2, act=nn.ReLU6)]
    for cout, stride in plan:
        cout = int(cout * width)
        layers += [conv_bn(c, c, 3, stride, groups=c, act=nn.ReLU6), conv_bn(c, cout, 1, act=nn.ReLU6)]
        c = cout
    return Classifier(nn.Sequential(*layers), c)


# -- SqueezeNet 1.0 --------------------------------------------------------------------------
class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


def squeezenet_1_0(classes: int = 1001) -> nn.Module:
    def pool() -> nn.Module:
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    return nn.Sequential(
        nn.Conv2d(3, 96, 7, 2),
        nn.ReLU(),
        pool(),
        Fire(96, 16, 64),
        Fire(128, 16, 64),
        Fire(128, 32, 128),
        pool(),
        Fire(256, 32, 128),
        Fire(256, 48, 192),
        Fire(384, 48, 192),
        Fire(384, 64, 256),
        pool(),
        Fire(512, 64, 256),
        nn.Conv2d(512, classes, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


# -- NASNet-A mobile -------------------------------------------------------------------------
class SepConvStack(nn.Module):
    """NASNet's 'separable_KxK_2': twice (ReLU, depthwise KxK, pointwise 1x1, BN); stride on the first."""

    def __init__(self, cin: int, cout: int, k: int, stride: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(2):
            c = cin if i == 0 else cout
            layers += [
                nn.ReLU(),
                nn.Conv2d(c, c, k, stride if i == 0 else 1, k // 2, groups=c, bias=False),
                nn.Conv2d(c, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class FactorizedReduction(nn.Module):
    """Halve the resolution without losing half the pixels: two strided 1x1 paths, offset by one pixel."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.path1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.path2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        a = self.path1(F.avg_pool2d(x, 1, 2))
        b = self.path2(F.avg_pool2d(F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:], 1, 2))
        return self.bn(torch.cat([a, b], 1))


class CellOp(nn.Module):
    """One of a NASNet block's two operations; stride applies only to the cell's own inputs."""

    def __init__(self, op: str, cin: int, cout: int, stride: int):
        super().__init__()
        self.op = op
        if op.startswith("sep"):
            self.body: nn.Module = SepConvStack(cin, cout, int(op[3]), stride)
        elif op in ("avg", "max"):
            pool = nn.AvgPool2d(3, stride, 1, count_include_pad=False) if op == "avg" else nn.MaxPool2d(3, stride, 1)
            self.body = pool if cin == cout else nn.Sequential(pool, conv_bn(cin, cout, 1, act=None))
        elif stride > 1 or cin != cout:  # identity that must change shape
            self.body = nn.Sequential(nn.ReLU(), conv_bn(cin, cout, 1, stride, 0, act=None))
        else:
            self.body = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


# TF-slim nasnet_utils: (left op, right op, left input, right input) per block, and the states
# concatenated into the cell output. States: 0 = this cell's input, 1 = the previous cell's
# output, >= 2 = the blocks' outputs in order.
NORMAL_CELL = (
    [("sep5", "sep3", 0, 1), ("sep5", "sep3", 1, 1), ("avg", "id", 0, 1), ("avg", "avg", 1, 1), ("sep3", "id", 0, 0)],
    [1, 2, 3, 4, 5, 6],
)
REDUCTION_CELL = (
    [("sep5", "sep7", 0, 1), ("max", "sep7", 0, 1), ("avg", "sep5", 0, 1), ("id", "avg", 3, 2), ("sep3", "max", 2, 0)],
    [3, 4, 5, 6],
)


class NASCell(nn.Module):
    def __init__(
        self,
        cell: tuple[list[tuple[str, str, int, int]], list[int]],
        c_in: int,
        c_prev: int,
        prev_reduced: bool,
        filters: int,
        stride: int,
    ):
        super().__init__()
        self.blocks, self.outputs = cell
        self.base = nn.Sequential(nn.ReLU(), conv_bn(c_in, filters, 1, act=None))
        if prev_reduced:
            self.prev: nn.Module = FactorizedReduction(c_prev, filters)
        elif c_prev != filters:
            self.prev = nn.Sequential(nn.ReLU(), conv_bn(c_prev, filters, 1, act=None))
        else:
            self.prev = nn.Identity()
        self.ops = nn.ModuleList(
            CellOp(op, filters, filters, stride if idx < 2 else 1)
            for left, right, li, ri in self.blocks
            for op, idx in ((left, li), (right, ri))
        )

    def forward(self, x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        states = [self.base(x), self.prev(prev)]
        for b, (_, _, li, ri) in enumerate(self.blocks):
            states.append(self.ops[2 * b](states[li]) + self.ops[2 * b + 1](states[ri]))
        return torch.cat([states[i] for i in self.outputs], 1)


class NASNetMobile(nn.Module):
    """NASNet-A 4@1056: 32-filter stem, two stem reduction cells, 3 stacks of 4 normal cells."""

    def __init__(self, filters: int = 44, cells_per_stack: int = 4, classes: int = 1001):
        super().__init__()
        self.stem = conv_bn(3, 32, 3, 2, 0, act=None)
        self.cells = nn.ModuleList()
        self.prev_index: list[int] = []  # which earlier output each cell takes as `prev` (-1: stem input chain)
        shapes = [(32, 1)]  # (channels, downsampling since the stem) of every output so far
        plan = [("r", filters // 4), ("r", filters // 2)]
        for stack in range(3):
            if stack:
                plan.append(("r", filters * 2**stack))
            plan += [("n", filters * 2**stack)] * cells_per_stack
        for kind, f in plan:
            prev = len(shapes) - 2 if len(shapes) >= 2 else len(shapes) - 1
            (c_in, s_in), (c_prev, s_prev) = shapes[-1], shapes[prev]
            stride = 2 if kind == "r" else 1
            cell = NASCell(REDUCTION_CELL if kind == "r" else NORMAL_CELL, c_in, c_prev, s_prev < s_in, f, stride)
            self.cells.append(cell)
            self.prev_index.append(prev)
            shapes.append((f * len(cell.outputs), s_in * stride))
        self.fc = nn.Linear(shapes[-1][0], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.stem(x)]
        for cell, prev in zip(self.cells, self.prev_index):
            outs.append(cell(outs[-1], outs[prev]))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(outs[-1]), 1), 1))


# -- Inception-ResNet-V2 ---------------------------------------------------------------------
class Branches(nn.Module):
    """Parallel branches concatenated on channels."""

    def __init__(self, *branches: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class ResidualInception(nn.Module):
    """x + scale * up(branches(x)), then ReLU (block35 / block17 / block8)."""

    def __init__(self, branches: Branches, concat: int, channels: int, scale: float, relu: bool = True):
        super().__init__()
        self.branches, self.up, self.scale, self.relu = branches, nn.Conv2d(concat, channels, 1), scale, relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.scale * self.up(self.branches(x))
        return F.relu(x) if self.relu else x


def _seq(*convs: tuple) -> nn.Sequential:
    return nn.Sequential(*(conv_bn(*c) for c in convs))


def inception_resnet_v2(classes: int = 1001) -> nn.Module:
    def block35() -> nn.Module:
        return ResidualInception(
            Branches(_seq((320, 32, 1)), _seq((320, 32, 1), (32, 32, 3)), _seq((320, 32, 1), (32, 48, 3), (48, 64, 3))),
            128,
            320,
            0.17,
        )

    def block17() -> nn.Module:
        return ResidualInception(
            Branches(_seq((1088, 192, 1)), _seq((1088, 128, 1), (128, 160, (1, 7)), (160, 192, (7, 1)))),
            384,
            1088,
            0.10,
        )

    def block8(relu: bool = True) -> nn.Module:
        return ResidualInception(
            Branches(_seq((2080, 192, 1)), _seq((2080, 192, 1), (192, 224, (1, 3)), (224, 256, (3, 1)))),
            448,
            2080,
            0.20,
            relu,
        )

    stem = [
        _seq((3, 32, 3, 2, 0), (32, 32, 3, 1, 0), (32, 64, 3)),
        nn.MaxPool2d(3, 2),
        _seq((64, 80, 1), (80, 192, 3, 1, 0)),
        nn.MaxPool2d(3, 2),
    ]
    mixed_5b = Branches(
        _seq((192, 96, 1)),
        _seq((192, 48, 1), (48, 64, 5)),
        _seq((192, 64, 1), (64, 96, 3), (96, 96, 3)),
        nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv_bn(192, 64, 1)),
    )
    mixed_6a = Branches(
        _seq((320, 384, 3, 2, 0)), _seq((320, 256, 1), (256, 256, 3), (256, 384, 3, 2, 0)), nn.MaxPool2d(3, 2)
    )
    mixed_7a = Branches(
        _seq((1088, 256, 1), (256, 384, 3, 2, 0)),
        _seq((1088, 256, 1), (256, 288, 3, 2, 0)),
        _seq((1088, 256, 1), (256, 288, 3), (288, 320, 3, 2, 0)),
        nn.MaxPool2d(3, 2),
    )
    features = nn.Sequential(
        *stem,
        mixed_5b,
        *(block35() for _ in range(10)),
        mixed_6a,
        *(block17() for _ in range(20)),
        mixed_7a,
        *(block8() for _ in range(9)),
        block8(relu=False),
        conv_bn(2080, 1536, 1),
    )
    return Classifier(features, 1536, classes)


# -- Inception-V4 ----------------------------------------------------------------------------
def _pool_branch(channels: int, cout: int) -> nn.Sequential:
    """3x3 average pool (stride 1, 'same', padding not counted, as TF's) then a 1x1 conv."""
    return nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv_bn(channels, cout, 1))


def inception_v4(classes: int = 1001) -> nn.Module:
    """Figures 3-9 of Szegedy et al. 2016, with TF-slim's channel counts (inception_v4.py)."""

    def block_a() -> nn.Module:  # 35x35x384
        return Branches(
            _seq((384, 96, 1)),
            _seq((384, 64, 1), (64, 96, 3)),
            _seq((384, 64, 1), (64, 96, 3), (96, 96, 3)),
            _pool_branch(384, 96),
        )

    def block_b() -> nn.Module:  # 17x17x1024
        return Branches(
            _seq((1024, 384, 1)),
            _seq((1024, 192, 1), (192, 224, (1, 7)), (224, 256, (7, 1))),
            _seq((1024, 192, 1), (192, 192, (7, 1)), (192, 224, (1, 7)), (224, 224, (7, 1)), (224, 256, (1, 7))),
            _pool_branch(1024, 128),
        )

    def block_c() -> nn.Module:  # 8x8x1536
        def split(cin: int) -> Branches:
            return Branches(conv_bn(cin, 256, (1, 3)), conv_bn(cin, 256, (3, 1)))

        return Branches(
            _seq((1536, 256, 1)),
            nn.Sequential(conv_bn(1536, 384, 1), split(384)),
            nn.Sequential(_seq((1536, 384, 1), (384, 448, (3, 1)), (448, 512, (1, 3))), split(512)),
            _pool_branch(1536, 256),
        )

    stem = [
        _seq((3, 32, 3, 2, 0), (32, 32, 3, 1, 0), (32, 64, 3)),
        Branches(nn.MaxPool2d(3, 2), conv_bn(64, 96, 3, 2, 0)),  # mixed_3a: 73x73x160
        Branches(  # mixed_4a: 71x71x192
            _seq((160, 64, 1), (64, 96, 3, 1, 0)),
            _seq((160, 64, 1), (64, 64, (1, 7)), (64, 64, (7, 1)), (64, 96, 3, 1, 0)),
        ),
        Branches(conv_bn(192, 192, 3, 2, 0), nn.MaxPool2d(3, 2)),  # mixed_5a: 35x35x384
    ]
    reduction_a = Branches(
        _seq((384, 384, 3, 2, 0)), _seq((384, 192, 1), (192, 224, 3), (224, 256, 3, 2, 0)), nn.MaxPool2d(3, 2)
    )
    reduction_b = Branches(
        _seq((1024, 192, 1), (192, 192, 3, 2, 0)),
        _seq((1024, 256, 1), (256, 256, (1, 7)), (256, 320, (7, 1)), (320, 320, 3, 2, 0)),
        nn.MaxPool2d(3, 2),
    )
    features = nn.Sequential(
        *stem,
        *(block_a() for _ in range(4)),
        reduction_a,
        *(block_b() for _ in range(7)),
        reduction_b,
        *(block_c() for _ in range(3)),
    )
    return Classifier(features, 1536, classes)


# -- published references --------------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    name: str
    build: Callable[[], nn.Module]
    resolution: int


REFERENCES: dict[str, Reference] = {
    "mobilenet_v1_1.0_224": Reference("mobilenet_v1_1.0_224", mobilenet_v1, 224),
    "nasnet_mobile": Reference("nasnet_mobile", NASNetMobile, 224),
    "squeezenet_1.0": Reference("squeezenet_1.0", squeezenet_1_0, 224),
    "inception_resnet_v2": Reference("inception_resnet_v2", inception_resnet_v2, 299),
    "inception_v4": Reference("inception_v4", inception_v4, 299),
}


# -- varied conv nets for validation ---------------------------------------------------------
@dataclass(frozen=True)
class ConvNetSpec:
    """A plain conv net: a stem, stages of blocks (dense or depthwise-separable, optional residual), a head."""

    name: str
    resolution: int
    stem: int
    stages: tuple[tuple[int, int, int], ...]  # (channels, blocks, stride) per stage
    kernel: int
    depthwise: bool
    residual: bool
    act: str = "relu"
    warp: bool = False  # warp the stem features by a predicted flow (GridSample), as motion models do
    decoder: bool = False  # an hourglass: upsample back through the stages, concatenating skips (U-Net)

    def to_json(self) -> dict:
        return asdict(self)


ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
}


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, depthwise: bool, residual: bool, act: type[nn.Module]):
        super().__init__()
        if depthwise:
            self.body: nn.Module = nn.Sequential(
                conv_bn(cin, cin, k, stride, groups=cin, act=act), conv_bn(cin, cout, 1, act=act)
            )
        else:
            self.body = conv_bn(cin, cout, k, stride, act=act)
        self.residual = residual and stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class FlowWarp(nn.Module):
    """Predict a dense flow from the features and resample them with it (bilinear GridSample)."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.flow = nn.Conv2d(channels, 2, 3, padding=1)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        self.register_buffer(
            "identity", torch.stack([xs, ys], -1)[None]
        )  # an explicit grid: affine_grid does not export

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.identity + torch.tanh(self.flow(x)).permute(0, 2, 3, 1) * 0.1
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


class ConvNet(nn.Module):
    """What `ConvNetSpec` describes: stem, (warp), stages, (decoder), classifier head."""

    def __init__(self, spec: ConvNetSpec):
        super().__init__()
        act = ACTS[spec.act]
        self.stem = nn.Sequential(
            conv_bn(3, spec.stem, 3, 2, act=act),
            *([FlowWarp(spec.stem, -(-spec.resolution // 2))] if spec.warp else []),
        )
        self.stages = nn.ModuleList()
        widths = [spec.stem]
        for channels, blocks, stride in spec.stages:
            self.stages.append(
                nn.Sequential(
                    *(
                        ConvBlock(
                            widths[-1] if b == 0 else channels,
                            channels,
                            spec.kernel,
                            stride if b == 0 else 1,
                            spec.depthwise,
                            spec.residual,
                            act,
                        )
                        for b in range(blocks)
                    )
                )
            )
            widths.append(channels)
        self.up_strides = [stride for _, _, stride in spec.stages][::-1] if spec.decoder else []
        self.decoder = nn.ModuleList()
        c = widths[-1]
        for i in range(len(self.up_strides)):
            skip = widths[-2 - i]
            self.decoder.append(conv_bn(c + skip, skip, 3, act=act))
            c = skip
        self.head = nn.Linear(c, 100)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for stage in self.stages:
            skips.append(stage(skips[-1]))
        x = skips.pop()
        for conv, stride in zip(self.decoder, self.up_strides):
            if stride > 1:
                x = F.interpolate(x, scale_factor=float(stride), mode="nearest")
            x = conv(torch.cat([x, skips.pop()], 1))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def build_convnet(spec: ConvNetSpec) -> nn.Module:
    return ConvNet(spec)


def convnet_macs(spec: ConvNetSpec) -> int:
    """Conv and linear MACs of `build_convnet(spec)`, counted from the spec (no forward pass)."""
    size = -(-spec.resolution // 2)
    total = size * size * spec.stem * 3 * 9 + (size * size * 2 * spec.stem * 9 if spec.warp else 0)
    c, sizes, widths = spec.stem, [size], [spec.stem]
    for channels, blocks, stride in spec.stages:
        for b in range(blocks):
            size = -(-size // (stride if b == 0 else 1))
            k2 = spec.kernel**2
            total += size * size * (c * k2 + c * channels if spec.depthwise else c * channels * k2)
            c = channels
        sizes.append(size)
        widths.append(channels)
    if spec.decoder:
        for i in range(len(spec.stages)):
            skip, size = widths[-2 - i], sizes[-2 - i]
            total += size * size * (c + skip) * skip * 9
            c = skip
    return total + c * 100


def random_convnet_spec(seed: int, mmacs: tuple[float, float] = (20.0, 400.0), odd: bool = False) -> ConvNetSpec:
    """A random but plausible conv net, redrawn until its MACs fall in `mmacs` (millions).

    The bounds keep validation fast and keep latencies above ~1 ms, where a shared machine's
    timer and scheduling noise stay small against the figure measured. `odd` draws channel counts
    anywhere (as pruning leaves them, mostly off onnxruntime's channel blocks) and HardSwish half
    the time; its nets are named convnet-odd-SEED.
    """
    rng = random.Random(seed)
    while True:
        depthwise = rng.random() < 0.5
        width = rng.randint(5, 64) if odd else rng.choice([8, 16, 24, 32, 48, 64])
        stages = []
        for i in range(rng.randint(2, 4)):
            scale = rng.uniform(0.8, 1.6) if odd else rng.choice([1.0, 1.5])
            stages.append((max(3, int(width * 2**i * scale)), rng.randint(1, 3), 2 if i else rng.choice([1, 2])))
        spec = ConvNetSpec(
            name=f"convnet-odd-{seed:03d}" if odd else f"convnet-{seed:03d}",
            resolution=rng.choice([64, 96, 128, 160, 192, 224, 256]),
            stem=rng.randint(5, 32) if odd else rng.choice([8, 16, 24, 32]),
            stages=tuple(stages),
            kernel=rng.choice([3, 3, 5, 7]) if depthwise else rng.choice([1, 3, 3, 5]),
            depthwise=depthwise,
            residual=rng.random() < 0.5,
            act="hardswish" if odd and rng.random() < 0.5 else rng.choice(list(ACTS)),
            warp=rng.random() < 0.25,
            decoder=rng.random() < 0.3,
        )
        if mmacs[0] * 1e6 <= convnet_macs(spec) <= mmacs[1] * 1e6:
            return spec


def count_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Conv and linear multiply-accumulates of one forward pass (a quick filter; the cost model counts from ONNX)."""
    total = 0

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total


def export_onnx(model: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    """Eval-mode ONNX export (BatchNorm folds into the convs, as in a deployed model)."""
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, constant-folding notes
        torch.onnx.export(model, inputs, str(path), opset_version=17, dynamo=False, do_constant_folding=True)
    return path

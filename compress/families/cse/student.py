"""The mobile CSE student: detection-free, one person crop in, the teacher's outputs out.

crop [B, 3, S, S] (RGB in [0, 1], the person box resized to a square as DensePose pools it) ->
MobileNet v2 inverted residuals to stride 32 -> image-level context -> a light FPN back to
stride 4 -> 1x1 heads -> bilinear x2: {"embedding": [B, 16, S/2, S/2], "coarse_segm": [B, 2,
S/2, S/2]}, the teacher's grid (S = 224 gives its 112x112). The embedding lives in the
teacher's space: the student keeps the teacher's vertex table (`lookup`) and is trained to
point where the teacher points, so a pixel's vertex is found exactly as the teacher's is.

Built for int8 on a phone CPU: no ConvTranspose (onnxruntime has no int8 kernel for it),
upsampling by resize, BatchNorm everywhere (it folds), no GroupNorm. Forward passes read
channel counts from tensors, never from the config: structured pruning shrinks the layers.

The vertex lookup (`VertexLookup`) is a separate deployable part: embedding -> vertex id
per pixel, the argmax of the dot product with the unit vertex embeddings (the argmin of
DensePose's squared distance, since the vertex rows have unit norm), -1 on the background.

Config: {"kind": "student", "size": S, "width": w, "fpn_channels": F, "embed_size": 16,
"num_coarse_segm_channels": 2}. Widths are MobileNet v2's times w, rounded to multiples of 8.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError
from compress.families.mobile_blocks import ConvBlock, SeparableConv, make_divisible

# MobileNet v2's stages after the stem: (expansion, channels, blocks, stride).
STAGES = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 3, 2), (4, 64, 3, 2), (4, 96, 2, 1), (4, 160, 2, 2))
# The stages whose outputs the FPN reads: strides 4, 8, 16 and 32.
FPN_STAGES = (1, 2, 4, 5)
OUTPUT_STRIDE = 2  # the teacher's 112x112 grid for a 224x224 crop
STUDENT_CONFIGS: dict[str, dict[str, Any]] = {
    "mobile-224": {
        "kind": "student",
        "size": 224,
        "width": 1.0,
        "fpn_channels": 64,
        "embed_size": 16,
        "num_coarse_segm_channels": 2,
    },
    "mobile-128": {
        "kind": "student",
        "size": 128,
        "width": 0.75,
        "fpn_channels": 48,
        "embed_size": 16,
        "num_coarse_segm_channels": 2,
    },
    "mobile-64": {
        "kind": "student",
        "size": 64,
        "width": 0.5,
        "fpn_channels": 32,
        "embed_size": 16,
        "num_coarse_segm_channels": 2,
    },
}
DEFAULT_STUDENT = "mobile-224"


class InvertedResidual(nn.Module):
    """MobileNet v2: 1x1 expansion -> depthwise 3x3 (stride s) -> linear 1x1 projection, with a
    residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        hidden = in_channels * expansion
        expand = (
            [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
            if expansion > 1
            else []
        )
        self.body = nn.Sequential(
            *expand,
            SeparableConv(hidden, out_channels, stride=stride, last_relu=False),
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class Lateral(nn.Sequential):
    """1x1 conv + BN: a backbone level mapped to the FPN's width."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class CseStudent(nn.Module):
    """`student(crop)` -> {"embedding", "coarse_segm"} at S/2 (see the module docstring);
    `lookup` holds the vertex table and maps embeddings to vertex ids."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = check_student_config(config)
        width, fpn = config["width"], config["fpn_channels"]
        channels = make_divisible(32 * width)
        self.stem = ConvBlock(3, channels, stride=2)
        self.stages = nn.ModuleList()
        for expansion, out, blocks, stride in STAGES:
            out = make_divisible(out * width)
            layers = []
            for i in range(blocks):
                layers.append(InvertedResidual(channels, out, expansion, stride if i == 0 else 1))
                channels = out
            self.stages.append(nn.Sequential(*layers))
        level_channels = [make_divisible(STAGES[i][1] * width) for i in FPN_STAGES]
        self.laterals = nn.ModuleList(Lateral(c, fpn) for c in level_channels)
        # What the whole crop shows (which way the figure faces) decides left from right: a
        # global-pool vector added to the coarsest level reaches every pixel.
        self.context = nn.Sequential(nn.Conv2d(level_channels[-1], fpn, 1), nn.ReLU(inplace=True))
        self.smooth = nn.ModuleList(SeparableConv(fpn, fpn) for _ in FPN_STAGES[:-1])
        self.head = SeparableConv(fpn, fpn)
        self.predictor = nn.Conv2d(fpn, config["embed_size"] + config["num_coarse_segm_channels"], 1)
        self.lookup = VertexLookup(torch.zeros(1, config["embed_size"]))

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.config["size"], self.config["size"])

    def forward(self, crop: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(crop)
        levels = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in FPN_STAGES:
                levels.append(x)
        top = self.laterals[-1](levels[-1]) + self.context(levels[-1].mean((2, 3), keepdim=True))
        for lateral, smooth, level in zip(reversed(self.laterals[:-1]), reversed(self.smooth), reversed(levels[:-1])):
            top = smooth(F.interpolate(top, scale_factor=2.0, mode="nearest") + lateral(level))
        out = F.interpolate(self.predictor(self.head(top)), scale_factor=2.0, mode="bilinear", align_corners=False)
        embed = self.config["embed_size"]
        return {"embedding": out[:, :embed], "coarse_segm": out[:, embed:]}


class VertexLookup(nn.Module):
    """(embedding [B, D, H, W], coarse_segm [B, 2, H, W]) -> vertex ids [B, H, W] as float (-1: background).

    The table is a frozen 1x1 convolution (weight [V, D, 1, 1], unit rows): scores = embedding . v
    for every vertex, argmax over V. Ids are float so every runtime's output is one type; float32
    holds integers exactly up to 2^24 vertices. A saved model's vertex count is its `similarity`
    layer's width (the structure spec), so loading restores any mesh's table.
    """

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.similarity = nn.Conv2d(table.shape[1], table.shape[0], 1, bias=False)
        self.set_table(table)

    @property
    def table(self) -> torch.Tensor:
        """[V, D] the unit vertex embeddings."""
        return self.similarity.weight[:, :, 0, 0]

    def set_table(self, table: torch.Tensor) -> None:
        self.similarity.out_channels = table.shape[0]
        self.similarity.weight = nn.Parameter(table.detach().clone()[:, :, None, None], requires_grad=False)

    def forward(self, embedding: torch.Tensor, coarse_segm: torch.Tensor) -> torch.Tensor:
        ids = self.similarity(embedding).argmax(dim=1).float()
        return torch.where(coarse_segm[:, 1] > coarse_segm[:, 0], ids, torch.full_like(ids, -1.0))


def check_student_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a student config, or CompressError naming what does not fit."""
    expected = set(STUDENT_CONFIGS[DEFAULT_STUDENT])
    if set(config) != expected:
        raise CompressError(
            f"cse student config: unknown keys {sorted(set(config) - expected)}, "
            f"missing keys {sorted(expected - set(config))}"
        )
    if config["size"] % 32:
        raise CompressError(f"cse student config: size {config['size']} must be a multiple of 32 (stride 32)")
    return copy.deepcopy(config)


def build_student(config: dict[str, Any]) -> CseStudent:
    return CseStudent(config)

"""LivePortrait's motion extractor (its M, `motion_extractor.pth`): a ConvNeXt-V2 with keypoint,
pose, translation, expression and scale heads (public `src/modules/convnextv2.py`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ConvNeXt-V2 sizes by backbone name (Woo et al. 2023); LivePortrait ships the tiny one.
BACKBONES = {"convnextv2_tiny": {"depths": [3, 3, 9, 3], "dims": [96, 192, 384, 768]}}


class LayerNorm(nn.Module):
    """LayerNorm over channels of [B, C, H, W] ("channels_first", written out as in ConvNeXt) or
    [..., C] ("channels_last", torch's)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6, data_format: str = "channels_last"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.channels_first = data_format == "channels_first"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.channels_first:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation of [B, H, W, C]: each channel scaled by its L2 norm over
    the image relative to the mean over channels."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class Block(nn.Module):
    """ConvNeXt-V2 block: depthwise 7x7, LayerNorm, 4x MLP with GELU and GRN, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        out = self.pwconv2(self.grn(self.act(self.pwconv1(out))))
        return x + out.permute(0, 3, 1, 2)


class ConvNeXtV2(nn.Module):
    """Four stages (stride-4 stem, then stride-2 downsampling), global average pool, LayerNorm, heads:
    kp [3K] (canonical keypoints), pitch / yaw / roll [num_bins], t [3], exp [3K], scale [1]."""

    def __init__(self, depths: list[int], dims: list[int], num_kp: int, num_bins: int = 66, in_chans: int = 3):
        super().__init__()
        stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm(dims[0], data_format="channels_first")
        )
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm(dims[i], data_format="channels_first"), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)
                )
            )
        self.stages = nn.ModuleList(nn.Sequential(*(Block(dim) for _ in range(n))) for dim, n in zip(dims, depths))
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc_kp = nn.Linear(dims[-1], 3 * num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], num_bins)
        self.fc_yaw = nn.Linear(dims[-1], num_bins)
        self.fc_roll = nn.Linear(dims[-1], num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        x = self.norm(x.mean([-2, -1]))
        heads = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")
        return {name: getattr(self, f"fc_{name}")(x) for name in heads}


class MotionExtractor(nn.Module):
    """LivePortrait's M: the ConvNeXt-V2 under `detector` (the checkpoint's key prefix).

    `depths` and `dims` override the backbone's sizes (small test teachers).
    """

    def __init__(
        self,
        num_kp: int,
        backbone: str = "convnextv2_tiny",
        num_bins: int = 66,
        depths: list[int] | None = None,
        dims: list[int] | None = None,
    ):
        super().__init__()
        sizes = BACKBONES[backbone]
        self.detector = ConvNeXtV2(depths or sizes["depths"], dims or sizes["dims"], num_kp, num_bins)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.detector(x)

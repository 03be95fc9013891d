"""The DensePose heads on the 28x28 ROI features: V1ConvX (plain conv stack) and DeepLab (ASPP + GroupNorm,
optionally a non-local block).

Both end in `body_conv_fcn1..N` with ReLU after every conv, the last one included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.families.cse.layers import Conv2dNorm

GN_GROUPS = 32  # detectron2 fixes 32 groups in every DeepLab GroupNorm


class V1ConvXHead(nn.Module):
    """`num_stacked_convs` convs kxk (with bias) at `conv_head_dim` channels, ReLU after each."""

    def __init__(self, in_channels: int, conv_head_dim: int, num_stacked_convs: int, kernel: int):
        super().__init__()
        for i in range(num_stacked_convs):
            cin = in_channels if i == 0 else conv_head_dim
            self.add_module(
                f"body_conv_fcn{i + 1}", Conv2dNorm(cin, conv_head_dim, kernel, padding=kernel // 2, relu=True)
            )
        self.n_stacked_convs = num_stacked_convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_stacked_convs):
            x = getattr(self, f"body_conv_fcn{i + 1}")(x)
        return x


def conv_gn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    # nn.Sequential, not Conv2dNorm: ASPP keys are `convs.<i>.0.weight`, `convs.<i>.1.{weight,bias}`.
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.GroupNorm(GN_GROUPS, cout),
        nn.ReLU(),
    )


class ASPPPooling(nn.Sequential):
    """Global average, 1x1 conv, GN, ReLU, upsampled back (bilinear from 1x1: a broadcast)."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *conv_gn_relu(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3): 1x1, three dilated 3x3 and image pooling, concatenated
    and projected by a 1x1 conv (no norm) and ReLU."""

    def __init__(self, channels: int, atrous_rates: tuple[int, int, int] = (6, 12, 56)):
        super().__init__()
        self.convs = nn.ModuleList(
            [conv_gn_relu(channels, channels, 1)]
            + [conv_gn_relu(channels, channels, 3, rate) for rate in atrous_rates]
            + [ASPPPooling(channels, channels)]
        )
        self.project = nn.Sequential(nn.Conv2d(5 * channels, channels, 1, bias=False), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class NonLocalBlock2D(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018) at half width, keys and values max-pooled 2x2,
    the output projection followed by GroupNorm, added to the input."""

    def __init__(self, channels: int):
        super().__init__()
        inter = max(channels // 2, 1)
        self.g = nn.Sequential(nn.Conv2d(channels, inter, 1), nn.MaxPool2d(2))
        self.theta = nn.Conv2d(channels, inter, 1)
        self.phi = nn.Sequential(nn.Conv2d(channels, inter, 1), nn.MaxPool2d(2))
        self.W = nn.Sequential(nn.Conv2d(inter, channels, 1), nn.GroupNorm(GN_GROUPS, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = self.g(x).flatten(2).transpose(1, 2)  # [B, h*w/4, inter]
        queries = self.theta(x).flatten(2).transpose(1, 2)  # [B, h*w, inter]
        attention = F.softmax(queries @ self.phi(x).flatten(2), dim=-1)
        y = (attention @ values).transpose(1, 2).unflatten(2, x.shape[-2:])
        return self.W(y) + x


class DeepLabHead(nn.Module):
    """ASPP at the input width, an optional non-local block, then `num_stacked_convs` convs kxk at
    `conv_head_dim` with GroupNorm (no bias; norm "" gives plain convs with bias) and ReLU."""

    def __init__(
        self,
        in_channels: int,
        conv_head_dim: int,
        num_stacked_convs: int,
        kernel: int,
        norm: str = "GN",
        nonlocal_on: bool = False,
    ):
        super().__init__()
        self.ASPP = ASPP(in_channels)
        self.NLBlock = NonLocalBlock2D(in_channels) if nonlocal_on else None
        for i in range(num_stacked_convs):
            cin = in_channels if i == 0 else conv_head_dim
            gn = nn.GroupNorm(GN_GROUPS, conv_head_dim) if norm == "GN" else None
            conv = Conv2dNorm(cin, conv_head_dim, kernel, padding=kernel // 2, bias=gn is None, norm=gn, relu=True)
            self.add_module(f"body_conv_fcn{i + 1}", conv)
        self.n_stacked_convs = num_stacked_convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ASPP(x)
        if self.NLBlock is not None:
            x = self.NLBlock(x)
        for i in range(self.n_stacked_convs):
            x = getattr(self, f"body_conv_fcn{i + 1}")(x)
        return x

"""The SPADE decoder of face-vid2vid's "spade" generator and of LivePortrait (its `spade_generator.pth`).

Park et al.'s SPADE blocks (public `modules/util.py`), conditioned on the warped feature map
itself. The public face-vid2vid decoder hard-codes 256 input and 64 output channels; this is
LivePortrait's parameterised version, which builds the same layers for those widths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

SPADE_HIDDEN = 128  # channels of the conv that reads the conditioning map, fixed in the public code


class SPADE(nn.Module):
    """Instance norm without affine, then `(1 + gamma(segmap)) * x + beta(segmap)`, per pixel."""

    def __init__(self, norm_nc: int, label_nc: int):
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, SPADE_HIDDEN, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """Residual block of two SPADE-normalised, spectrally normalised 3x3 convs (LeakyReLU 0.2);
    a SPADE + 1x1 conv shortcut when the width changes.

    Spectral norm is torch's original hook (keys `weight_orig`, `weight_u`, `weight_v`, as in the
    checkpoints). In eval mode it divides by the stored singular-value estimate; train mode
    would run a power iteration that changes `weight_u`, so a teacher stays in eval mode.
    """

    def __init__(self, fin: int, fout: int, label_nc: int):
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = spectral_norm(nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1))
        self.conv_1 = spectral_norm(nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = spectral_norm(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class SPADEDecoder(nn.Module):
    """Warped features [B, C, h, w] -> image [B, 3, 4h, 4w] in [0, 1] (8h x 8w with upscale 2).

    C = min(max_features, block_expansion * 2**num_down_blocks); six SPADE blocks at 2C, then two
    upsampling ones (to C, then `out_channels`). upscale 2 (LivePortrait) ends in a 12-channel
    conv and a pixel shuffle.
    """

    def __init__(
        self,
        upscale: int = 1,
        max_features: int = 256,
        block_expansion: int = 64,
        out_channels: int = 64,
        num_down_blocks: int = 2,
    ):
        super().__init__()
        ic = min(max_features, block_expansion * 2**num_down_blocks)
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, ic))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, ic)
        self.up_1 = SPADEResnetBlock(ic, out_channels, ic)
        if upscale <= 1:
            self.conv_img = nn.Conv2d(out_channels, 3, kernel_size=3, padding=1)
        else:
            self.conv_img = nn.Sequential(
                nn.Conv2d(out_channels, 3 * 2 * 2, kernel_size=3, padding=1), nn.PixelShuffle(upscale_factor=2)
            )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))

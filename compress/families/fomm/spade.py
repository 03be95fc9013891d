"""SPADE refinement conditioned on face-region masks (eyes, mouth) for the mobile FOMM student.

Oquab et al. (arXiv 2012.00328) refine the regions viewers look at, eyes and lips, with SPADE
blocks (Park et al., "Semantic Image Synthesis with Spatially-Adaptive Normalization"): the
normalised features get a per-pixel scale and shift predicted from a segmentation map. Here the
map is soft region masks (channel 0: eyes, 1: mouth), derived from the driving keypoints or
given by the data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compress.families.fomm.ops import make_coordinate_grid, separable_gaussians


@dataclass(frozen=True)
class SpadeParams:
    """The `generator_params.spade_params` of a student config.

    num_regions: mask channels (0: eyes, 1: mouth). hidden: width of the conv that reads the
    masks. kp_variance: of the keypoint gaussians the masks are mixed from. levels: decoder
    levels refined by a SPADE block; level 0 is the bottleneck output (1 / 2**D of the frame
    for D down blocks), level l the output of up block l (1 / 2**(D - l)). mask_stride: the
    masks are computed at 1 / mask_stride of the frame (at most the finest level's stride:
    full-resolution masks only to be pooled down cost a phone more than the blocks reading them).
    """

    num_regions: int = 2
    hidden: int = 16
    levels: tuple[int, ...] = (0, 1, 2)
    kp_variance: float = 0.01
    mask_stride: int = 1


class RegionMasks(nn.Module):
    """Soft region masks [B, R, h, w] from keypoints: K gaussian heatmaps on an h x w grid mixed by a
    1x1 conv, sigmoid.

    Which keypoints land on the eyes or the mouth is not known in advance (FOMM keypoints are
    unsupervised), so the mixing is learnt; distillation can match it against data masks.
    """

    def __init__(self, num_kp: int, num_regions: int, shape: tuple[int, int], kp_variance: float):
        super().__init__()
        self.kp_variance = kp_variance
        grid = make_coordinate_grid(shape)
        self.register_buffer("xs", grid[0, :, 0].contiguous(), persistent=False)
        self.register_buffer("ys", grid[:, 0, 1].contiguous(), persistent=False)
        self.mix = nn.Conv2d(num_kp, num_regions, kernel_size=1)

    def forward(self, kp_value: torch.Tensor) -> torch.Tensor:
        heatmaps = separable_gaussians(kp_value, self.xs, self.ys, self.kp_variance)  # separable: no [h, w, 2] grid
        return torch.sigmoid(self.mix(heatmaps))


class SPADE(nn.Module):
    """BN without affine, then `(1 + gamma(masks)) * x + beta(masks)`, per pixel.

    The shared 3x3 conv reads the few mask channels; gamma and beta are 1x1 so that the
    modulation stays cheap at full resolution.
    """

    def __init__(self, channels: int, label_channels: int, hidden: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(label_channels, hidden, kernel_size=3, padding=1), nn.ReLU(inplace=True))
        self.gamma = nn.Conv2d(hidden, channels, kernel_size=1)
        self.beta = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        h = self.shared(masks)
        return self.norm(x) * (1 + self.gamma(h)) + self.beta(h)


class SPADERefineBlock(nn.Module):
    """`x + pw(dw(relu(SPADE(x, masks))))`: a residual correction steered by the region masks.

    `mask_stride` is the ratio of the mask resolution to the feature resolution, a static int,
    so the masks shrink with an average pool (anti-aliased, no shape-dependent resize).
    """

    def __init__(self, channels: int, label_channels: int, hidden: int, mask_stride: int):
        super().__init__()
        self.mask_stride = mask_stride
        self.spade = SPADE(channels, label_channels, hidden)
        self.dw = nn.Conv2d(channels, channels, kernel_size=3, padding=1, groups=channels, bias=False)
        self.pw = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if self.mask_stride > 1:
            masks = F.avg_pool2d(masks, self.mask_stride)
        return x + self.pw(self.dw(F.relu(self.spade(x, masks))))

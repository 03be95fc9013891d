"""FOMM's geometric operations, written so that they export.

The official code (Siarohin et al., torch 1.0) builds coordinate grids on every call, inverts
jacobians with `torch.inverse` and multiplies rank-6 tensors. `torch.inverse` exports neither to
ONNX opset 17 nor to Core ML, and Core ML allows rank <= 5. Here each network builds its grid
once, as a non-persistent buffer of a static size; the 2x2 inverse is closed-form and 2x2
products are written per element.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Keypoints = dict[str, torch.Tensor]  # {"value": [B, K, 2], "jacobian": [B, K, 2, 2] (optional)}


def make_coordinate_grid(spatial_size: tuple[int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[H, W, 2] grid of (x, y) in [-1, 1]; -1 and 1 are the centres of the border pixels."""
    h, w = spatial_size
    x = 2 * (torch.arange(w, dtype=dtype) / (w - 1)) - 1
    y = 2 * (torch.arange(h, dtype=dtype) / (h - 1)) - 1
    return torch.stack([x.view(1, w).expand(h, w), y.view(h, 1).expand(h, w)], dim=-1)


def kp2gaussian(value: torch.Tensor, grid: torch.Tensor, kp_variance: float) -> torch.Tensor:
    """Gaussian-like heatmaps [B, K, *S] centred on keypoints `value` [B, K, n]; `grid` is [*S, n].

    Any number of dimensions n: [H, W, 2] grids for 2-D keypoints, [D, H, W, 3] for 3-D ones.
    """
    for _ in range(grid.dim() - 1):
        value = value.unsqueeze(-2)
    diff = grid - value
    return torch.exp(-0.5 * (diff**2).sum(-1) / kp_variance)


def separable_gaussians(value: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, kp_variance: float) -> torch.Tensor:
    """`kp2gaussian` on the grid spanned by 1-D coordinates `xs` [W] and `ys` [H], as an outer product.

    exp(-(dx^2 + dy^2) / 2v) = exp(-dx^2 / 2v) * exp(-dy^2 / 2v): an exported file then stores
    H + W coordinates instead of an [H, W, 2] grid (512 KB at 256x256), and computes 2K(H + W)
    exponentials instead of K*H*W.
    """
    gx = torch.exp(-0.5 * (xs - value[..., 0:1]) ** 2 / kp_variance)  # [B, K, W]
    gy = torch.exp(-0.5 * (ys - value[..., 1:2]) ** 2 / kp_variance)  # [B, K, H]
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def inverse_2x2(m: torch.Tensor) -> torch.Tensor:
    """Inverse of [..., 2, 2] matrices by the adjugate formula (no LU, so it exports)."""
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = (a * d - b * c)[..., None, None]
    return torch.stack([torch.stack([d, -b], dim=-1), torch.stack([-c, a], dim=-1)], dim=-2) / det


def transform_points(m: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """`m @ p` for every point: m [B, K, 2, 2], points [B, K, H, W, 2] -> [B, K, H, W, 2].

    Per element rather than `torch.matmul` on broadcast [B, K, H, W, 2, 2] tensors (rank 6).
    """
    x, y = points[..., 0], points[..., 1]
    a, b, c, d = (m[..., i, j, None, None] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))  # [B, K, 1, 1]
    return torch.stack([a * x + b * y, c * x + d * y], dim=-1)


def sparse_motions(grid: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints) -> torch.Tensor:
    """FOMM's eq. 4, T_{s<-d}(z) = kp_s + J_s J_d^-1 (z - kp_d) per keypoint, identity first: [B, K+1, h, w, 2].

    `grid` [h, w, 2] is the coordinate grid z; jacobians are used when `kp_driving` has them.
    """
    offsets = grid - kp_driving["value"][:, :, None, None, :]
    if "jacobian" in kp_driving:
        offsets = transform_points(torch.matmul(kp_source["jacobian"], inverse_2x2(kp_driving["jacobian"])), offsets)
    motions = offsets + kp_source["value"][:, :, None, None, :]
    return torch.cat([grid.expand(motions.shape[0], 1, *grid.shape), motions], dim=1)


def warp(inp: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear sampling of `inp` at `grid` ([B, H, W, 2] of (x, y) in [-1, 1]).

    align_corners=True: FOMM was trained with torch 1.0, whose grid_sample had these semantics
    (the default changed to False in torch 1.3), and matches `make_coordinate_grid`.
    """
    return F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


class AntiAliasInterpolation2d(nn.Module):
    """Band-limited downsampling: gaussian blur (sigma from the scale), then keep every n-th pixel.

    The kernel is a persistent buffer named `weight`, as in official checkpoints. Its size is
    odd, so the official padding (ka, kb) is symmetric and becomes the conv's own padding:
    one Conv node, no Pad (which the dynamo ONNX exporter cannot write at opset 17).
    """

    def __init__(self, channels: int, scale: float):
        super().__init__()
        sigma = (1 / scale - 1) / 2
        kernel_size = 2 * round(sigma * 4) + 1
        self.ka = kernel_size // 2
        coords = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
        gauss = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = gauss[:, None] * gauss[None, :]
        kernel = kernel / kernel.sum()
        self.register_buffer("weight", kernel.expand(channels, 1, kernel_size, kernel_size).clone())
        self.groups = channels
        self.scale = scale
        self.int_inv_scale = int(1 / scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        # Blurring every pixel then keeping every n-th (the official slicing) equals a strided conv.
        return F.conv2d(x, weight=self.weight, stride=self.int_inv_scale, padding=self.ka, groups=self.groups)

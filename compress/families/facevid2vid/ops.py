"""Coordinate grids, keypoint heatmaps and the 3-D warp of face-vid2vid's networks.

Grids are built from the tensor being sampled, on every call, as the public code does: the
networks then run at any frame size (LivePortrait at 256, its decoder writing 512).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def make_coordinate_grid(spatial_size: tuple[int, int, int], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[D, H, W, 3] grid of (x, y, z) in [-1, 1]; -1 and 1 are the centres of the border voxels."""
    d, h, w = spatial_size
    x, y, z = (2 * (torch.arange(n, dtype=dtype) / (n - 1)) - 1 for n in (w, h, d))
    return torch.stack(
        [x.view(1, 1, w).expand(d, h, w), y.view(1, h, 1).expand(d, h, w), z.view(d, 1, 1).expand(d, h, w)], dim=-1
    )


def heatmap_to_keypoints(heatmap: torch.Tensor) -> torch.Tensor:
    """Expected (x, y, z) under each of the K normalised heatmaps [B, K, D, H, W]: [B, K, 3]."""
    grid = make_coordinate_grid(heatmap.shape[2:], heatmap.dtype).to(heatmap.device)
    return (heatmap.unsqueeze(-1) * grid).sum(dim=(2, 3, 4))


def warp_volume(volume: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sampling of `volume` [B, C, D, H, W] at `grid` ([B, D, H, W, 3] of (x, y, z) in [-1, 1]).

    align_corners=False, although the grids put voxel centres at +-1 (align_corners=True's
    convention): the public face-vid2vid code calls grid_sample with torch >= 1.3's default
    (False) and LivePortrait passes False; the released weights were trained so. The identity
    grid therefore samples half a voxel inwards from each border.
    """
    return F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

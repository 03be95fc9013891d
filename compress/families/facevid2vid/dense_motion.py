"""face-vid2vid's 3-D dense motion network (public `modules/dense_motion.py`, shared by LivePortrait)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.families.facevid2vid.blocks import Hourglass
from compress.families.facevid2vid.ops import make_coordinate_grid, warp_volume
from compress.families.fomm.ops import kp2gaussian


class DenseMotionNetwork(nn.Module):
    """Dense 3-D motion (mask-weighted mix of K+1 translations) and a 2-D occlusion map from keypoints.

    The sparse motions are pure translations, x - x_d,k + x_s,k: the public code has no
    rotation or jacobian term here ("there lacks an one-order flow", LivePortrait notes).
    """

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        feature_channel: int,
        reshape_depth: int,
        compress: int,
        estimate_occlusion_map: bool = False,
        kp_variance: float = 0.01,
    ):
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion=block_expansion,
            in_features=(num_kp + 1) * (compress + 1),
            max_features=max_features,
            num_blocks=num_blocks,
        )
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
        else:
            self.occlusion = None
        self.kp_variance = kp_variance

    def create_sparse_motions(
        self, grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """Where each driving voxel comes from under each keypoint's translation, identity first:
        [B, K+1, D, H, W, 3]."""
        motions = grid - kp_driving[:, :, None, None, None, :] + kp_source[:, :, None, None, None, :]
        return torch.cat([grid.expand(motions.shape[0], 1, *grid.shape), motions], dim=1)

    def create_deformed_feature(self, feature: torch.Tensor, sparse_motions: torch.Tensor) -> torch.Tensor:
        """The feature volume warped by each sparse motion: [B, K+1, C, D, H, W]."""
        n = sparse_motions.shape[1]
        feature_repeat = feature.unsqueeze(1).expand(-1, n, -1, -1, -1, -1).flatten(0, 1)
        return warp_volume(feature_repeat, sparse_motions.flatten(0, 1)).unflatten(0, (-1, n))

    def create_heatmap_representations(
        self, grid: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """Driving minus source gaussians, plus a zero background map: [B, K+1, 1, D, H, W]."""
        heatmap = kp2gaussian(kp_driving, grid, self.kp_variance) - kp2gaussian(kp_source, grid, self.kp_variance)
        heatmap = torch.cat([torch.zeros_like(heatmap[:, :1]), heatmap], dim=1)
        return heatmap.unsqueeze(2)

    def forward(
        self, feature: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """feature [B, C, D, H, W]; keypoints [B, K, 3] -> mask [B, K+1, D, H, W], deformation
        [B, D, H, W, 3] and, when estimated, occlusion_map [B, 1, H, W]."""
        feature = F.relu(self.norm(self.compress(feature)))
        grid = make_coordinate_grid(feature.shape[2:], feature.dtype).to(feature.device)
        sparse_motion = self.create_sparse_motions(grid, kp_driving, kp_source)
        deformed_feature = self.create_deformed_feature(feature, sparse_motion)
        heatmap = self.create_heatmap_representations(grid, kp_driving, kp_source)

        prediction = self.hourglass(torch.cat([heatmap, deformed_feature], dim=2).flatten(1, 2))
        mask = F.softmax(self.mask(prediction), dim=1)
        deformation = (sparse_motion * mask.unsqueeze(-1)).sum(dim=1)
        out = {"mask": mask, "deformation": deformation}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction.flatten(1, 2)))
        return out

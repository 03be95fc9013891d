"""The warping module: feature volume + keypoints -> warped, occlusion-masked 2-D features.

LivePortrait's `warping_module.pth` (its W); in face-vid2vid the same layers sit in the generator
between the appearance features and the decoder, under the same names.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.families.facevid2vid.dense_motion import DenseMotionNetwork
from compress.families.facevid2vid.ops import warp_volume
from compress.families.fomm.blocks import SameBlock2d

# DenseMotionNetwork arguments that WarpingNetwork passes itself (not read from dense_motion_params).
DENSE_MOTION_SUPPLIED = frozenset({"num_kp", "feature_channel", "estimate_occlusion_map"})


class WarpingNetwork(nn.Module):
    """Dense motion, the volume warped by it and flattened over depth, `third` (3x3, BN, LeakyReLU) and
    `fourth` (1x1) to block_expansion * 2**num_down_blocks channels, times the occlusion map.

    forward returns {"out", "deformation", "mask", "occlusion_map" (when estimated)}.
    """

    def __init__(
        self,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        reshape_channel: int,
        estimate_occlusion_map: bool,
        dense_motion_params: dict[str, Any],
    ):
        super().__init__()
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp,
            feature_channel=reshape_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            **dense_motion_params,
        )
        width = block_expansion * 2**num_down_blocks
        self.third = SameBlock2d(max_features, width, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(width, width, kernel_size=1)

    def forward(
        self, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return warp_features(self, feature_3d, kp_driving, kp_source)


def warp_features(
    net: nn.Module, feature_3d: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The warping of a module that has `dense_motion_network`, `third` and `fourth` (a WarpingNetwork
    or a face-vid2vid generator, which keeps these layers at its top level)."""
    out = net.dense_motion_network(feature=feature_3d, kp_driving=kp_driving, kp_source=kp_source)
    warped = warp_volume(feature_3d, out["deformation"]).flatten(1, 2)
    warped = net.fourth(net.third(warped))
    if "occlusion_map" in out:
        warped = warped * out["occlusion_map"]
    out["out"] = warped
    return out

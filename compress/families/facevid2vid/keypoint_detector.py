"""face-vid2vid's canonical keypoint detector (public `modules/keypoint_detector.py` KPDetector)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.families.facevid2vid.blocks import KPHourglass
from compress.families.facevid2vid.ops import heatmap_to_keypoints
from compress.families.fomm.ops import AntiAliasInterpolation2d


class KPDetector(nn.Module):
    """K canonical 3-D keypoints: the softmax-weighted mean of K heatmaps over a [D, H, W] volume.

    The public class also accepts `estimate_jacobian`; no released checkpoint uses jacobians
    (the head is taken as rigid), so they are refused by the config check rather than built.
    """

    def __init__(
        self,
        block_expansion: int,
        num_kp: int,
        image_channel: int,
        max_features: int,
        reshape_channel: int,
        reshape_depth: int,
        num_blocks: int,
        temperature: float,
        scale_factor: float = 1,
    ):
        super().__init__()
        self.predictor = KPHourglass(
            block_expansion,
            in_features=image_channel,
            max_features=max_features,
            reshape_features=reshape_channel,
            reshape_depth=reshape_depth,
            num_blocks=num_blocks,
        )
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(image_channel, scale_factor)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            x = self.down(x)
        prediction = self.kp(self.predictor(x))
        heatmap = F.softmax(prediction.flatten(2) / self.temperature, dim=2).unflatten(2, prediction.shape[2:])
        return {"value": heatmap_to_keypoints(heatmap)}

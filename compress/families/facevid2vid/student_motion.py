"""The mobile student's motion networks: head pose and expression (sender), canonical keypoints (receiver).

Both keep the teacher's interfaces (`HEEstimator`, `KPDetector`) so that the family's forward,
the keypoint transformation and the distillation terms treat teacher and student alike, and
both are 2-D: MobileNet v1 blocks on a downscaled frame (`compress.families.fomm.student`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.families.fomm.blocks import hourglass_width
from compress.families.fomm.student import MobileEncoder, MobileKPDetector, downscale, scale_stride


class MobileHeadPose(nn.Module):
    """Yaw, pitch and roll as `num_bins` logits (the teacher's 66 bins of 3 degrees: the pose can be
    distilled as distributions), translation t [3] and expression deltas [3K] of a frame in [0, 1].

    A separable encoder, global average pooling, one linear head per output. The expression head
    starts at zero: at initialisation the keypoints are the rotated canonical ones.
    """

    def __init__(
        self,
        num_kp: int,
        num_channels: int,
        block_expansion: int,
        max_features: int,
        num_blocks: int,
        scale_factor: float,
        num_bins: int = 66,
    ):
        super().__init__()
        self.stride = scale_stride(scale_factor, "he_estimator_params")
        self.encoder = MobileEncoder(block_expansion, num_channels, num_blocks, max_features)
        width = hourglass_width(block_expansion, max_features, num_blocks)
        self.fc_yaw = nn.Linear(width, num_bins)
        self.fc_pitch = nn.Linear(width, num_bins)
        self.fc_roll = nn.Linear(width, num_bins)
        self.fc_t = nn.Linear(width, 3)
        self.fc_exp = nn.Linear(width, 3 * num_kp)
        nn.init.zeros_(self.fc_exp.weight)
        nn.init.zeros_(self.fc_exp.bias)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = self.encoder(downscale(image, self.stride))[-1].mean(dim=(2, 3))
        return {
            "yaw": self.fc_yaw(feature),
            "pitch": self.fc_pitch(feature),
            "roll": self.fc_roll(feature),
            "t": self.fc_t(feature),
            "exp": self.fc_exp(feature),
        }


class MobileCanonicalKPDetector(MobileKPDetector):
    """K canonical 3-D keypoints [B, K, 3]: (x, y) by soft-argmax of K heatmaps over the 2-D map, as
    FOMM's detector; depth z in [-1, 1] as a per-pixel depth map averaged under each heatmap.

    No depth axis in the features: the teacher's softmax over a D x H x W volume becomes an
    H x W softmax plus one depth value per keypoint.
    """

    def __init__(self, num_kp: int, **kwargs: object):
        super().__init__(num_kp=num_kp, estimate_jacobian=False, **kwargs)  # type: ignore[arg-type]
        self.depth = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feature = self.predictor(downscale(image, self.stride))
        heatmap = F.softmax(self.kp(feature).flatten(2) / self.temperature, dim=2)  # [B, K, h*w]
        xy = torch.matmul(heatmap, self.grid)
        z = (torch.tanh(self.depth(feature)).flatten(2) * heatmap).sum(dim=2, keepdim=True)
        return {"value": torch.cat([xy, z], dim=2)}

"""face-vid2vid's head pose and expression estimator (public `modules/keypoint_detector.py` HEEstimator)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.families.facevid2vid.blocks import ResBottleneck


class HEEstimator(nn.Module):
    """A ResNet-50-like net: yaw, pitch and roll as `num_bins` logits, translation t [3], expression [3K].

    The public class hard-codes the stage widths 256, 512, 1024, 2048; here they are
    max_features / 8, / 4, / 2 and max_features, which is the same for every public config
    (max_features 2048) and lets small teachers shrink them.
    `yaw` is read from `fc_roll` and `roll` from `fc_yaw`, as in the public code: the released
    weights were trained with that mapping, so a head named `fc_yaw` predicts the roll.
    """

    def __init__(
        self,
        block_expansion: int,
        num_kp: int,
        image_channel: int,
        max_features: int,
        num_bins: int = 66,
    ):
        super().__init__()
        width = [max_features // 8, max_features // 4, max_features // 2, max_features]
        self.conv1 = nn.Conv2d(image_channel, block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion, affine=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.conv2 = nn.Conv2d(block_expansion, width[0], kernel_size=1)
        self.norm2 = nn.BatchNorm2d(width[0], affine=True)
        self.block1 = _bottlenecks("b1", width[0], 3)

        self.conv3 = nn.Conv2d(width[0], width[1], kernel_size=1)
        self.norm3 = nn.BatchNorm2d(width[1], affine=True)
        self.block2 = ResBottleneck(width[1], stride=2)
        self.block3 = _bottlenecks("b3", width[1], 3)

        self.conv4 = nn.Conv2d(width[1], width[2], kernel_size=1)
        self.norm4 = nn.BatchNorm2d(width[2], affine=True)
        self.block4 = ResBottleneck(width[2], stride=2)
        self.block5 = _bottlenecks("b5", width[2], 5)

        self.conv5 = nn.Conv2d(width[2], width[3], kernel_size=1)
        self.norm5 = nn.BatchNorm2d(width[3], affine=True)
        self.block6 = ResBottleneck(width[3], stride=2)
        self.block7 = _bottlenecks("b7", width[3], 2)

        self.fc_roll = nn.Linear(width[3], num_bins)
        self.fc_pitch = nn.Linear(width[3], num_bins)
        self.fc_yaw = nn.Linear(width[3], num_bins)
        self.fc_t = nn.Linear(width[3], 3)
        self.fc_exp = nn.Linear(width[3], 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.maxpool(F.relu(self.norm1(self.conv1(x))))
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return {
            "yaw": self.fc_roll(out),  # sic: see the class docstring
            "pitch": self.fc_pitch(out),
            "roll": self.fc_yaw(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }


def _bottlenecks(prefix: str, width: int, count: int) -> nn.Sequential:
    """`count` stride-1 bottlenecks named `{prefix}_0`, `{prefix}_1`, ... (the public keys)."""
    blocks = nn.Sequential()
    for i in range(count):
        blocks.add_module(f"{prefix}_{i}", ResBottleneck(width, stride=1))
    return blocks

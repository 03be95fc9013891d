"""face-vid2vid's generators (public `modules/generator.py`): OcclusionAwareSPADEGenerator ("spade",
the released vox-256 checkpoint's) and OcclusionAwareGenerator ("original", the Beta checkpoint's).

Both keep the appearance extractor's and the warping module's layers at their top level (the
checkpoint keys `generator.first...`, `generator.dense_motion_network...`): they are built by
AppearanceFeatureExtractor (the base class) and WarpingNetwork (whose layers are adopted).
`forward(source, kp_driving, kp_source)` = `animate(encode_source(source), kp_source, kp_driving)`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.families.facevid2vid.appearance import AppearanceFeatureExtractor
from compress.families.facevid2vid.spade import SPADEDecoder
from compress.families.facevid2vid.warping import WarpingNetwork, warp_features
from compress.families.fomm.blocks import ResBlock2d, UpBlock2d
from compress.families.fomm.ops import Keypoints


class VolumeWarpGenerator(AppearanceFeatureExtractor):
    """Source -> feature volume (per call); volume + keypoints -> warped 2-D features (per frame)."""

    def __init__(
        self,
        image_channel: int,
        feature_channel: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        reshape_channel: int,
        reshape_depth: int,
        num_resblocks: int,
        estimate_occlusion_map: bool,
        dense_motion_params: dict[str, Any],
        first_kernel_size: int = 3,
    ):
        super().__init__(
            image_channel,
            block_expansion,
            num_down_blocks,
            max_features,
            reshape_channel,
            reshape_depth,
            num_resblocks,
            first_kernel_size,
        )
        warping = WarpingNetwork(
            num_kp=num_kp,
            block_expansion=block_expansion,
            max_features=max_features,
            num_down_blocks=num_down_blocks,
            reshape_channel=feature_channel,
            estimate_occlusion_map=estimate_occlusion_map,
            dense_motion_params=dense_motion_params,
        )
        self.dense_motion_network, self.third, self.fourth = warping.dense_motion_network, warping.third, warping.fourth

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """The per-call half: the source's feature volume [B, reshape_channel, D, h, w]."""
        return super().forward(source_image)

    def decode(self, warped: torch.Tensor) -> torch.Tensor:
        """Warped, occlusion-masked features [B, C, h, w] -> image [B, 3, H, W] in [0, 1] (per generator)."""
        raise NotImplementedError

    def animate(self, feature_3d: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints) -> dict[str, torch.Tensor]:
        """The per-frame half: {"prediction", "mask", "deformation", "occlusion_map"}; keypoints
        {"value": [B, K, 3]}, as `FaceVid2VidModel.transform_keypoints` returns them."""
        out = warp_features(self, feature_3d, kp_driving["value"], kp_source["value"])
        out["prediction"] = self.decode(out.pop("out"))
        return out

    def forward(
        self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints
    ) -> dict[str, torch.Tensor]:
        return self.animate(self.encode_source(source_image), kp_source, kp_driving)


class OcclusionAwareSPADEGenerator(VolumeWarpGenerator):
    """The released vox-256 generator: warped features -> SPADE decoder (`decoder`)."""

    def __init__(self, block_expansion: int, max_features: int, num_down_blocks: int, **kwargs: Any):
        super().__init__(
            block_expansion=block_expansion, max_features=max_features, num_down_blocks=num_down_blocks, **kwargs
        )
        self.decoder = SPADEDecoder(
            upscale=1,
            max_features=max_features,
            block_expansion=block_expansion,
            out_channels=block_expansion,
            num_down_blocks=num_down_blocks,
        )

    def decode(self, warped: torch.Tensor) -> torch.Tensor:
        return self.decoder(warped)


class OcclusionAwareGenerator(VolumeWarpGenerator):
    """The Beta generator: 7x7 first conv; warped features -> 2-D residual blocks, up blocks, 7x7 conv, sigmoid."""

    def __init__(
        self, image_channel: int, block_expansion: int, num_down_blocks: int, num_resblocks: int, **kwargs: Any
    ):
        super().__init__(
            image_channel=image_channel,
            block_expansion=block_expansion,
            num_down_blocks=num_down_blocks,
            num_resblocks=num_resblocks,
            first_kernel_size=7,
            **kwargs,
        )
        width = block_expansion * 2**num_down_blocks
        self.resblocks_2d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_2d.add_module(f"2dr{i}", ResBlock2d(width, kernel_size=3, padding=1))
        self.up_blocks = nn.ModuleList(
            UpBlock2d(block_expansion * 2 ** (num_down_blocks - i), block_expansion * 2 ** (num_down_blocks - i - 1))
            for i in range(num_down_blocks)
        )
        self.final = nn.Conv2d(block_expansion, image_channel, kernel_size=7, padding=3)

    def decode(self, warped: torch.Tensor) -> torch.Tensor:
        out = self.resblocks_2d(warped)
        for block in self.up_blocks:
            out = block(out)
        return torch.sigmoid(self.final(out))

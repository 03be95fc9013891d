"""The First Order Motion Model (Siarohin et al., NeurIPS 2019), key-compatible with official checkpoints.

Same constructor arguments, attribute names and outputs as the official `modules/`, plus
`frame_shape` (the frame size the coordinate-grid buffers are built for) and a generator split
into `encode_source` (once per call) and `animate` (once per frame).
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError
from compress.families.fomm.blocks import DownBlock2d, Hourglass, ResBlock2d, SameBlock2d, UpBlock2d, hourglass_width
from compress.families.fomm.configs import frame_shape
from compress.families.fomm.ops import (
    AntiAliasInterpolation2d,
    Keypoints,
    kp2gaussian,
    make_coordinate_grid,
    sparse_motions,
    warp,
)


class KPDetector(nn.Module):
    """Keypoints (softmax-weighted mean of K heatmaps) and, optionally, a jacobian near each."""

    def __init__(
        self,
        block_expansion: int,
        num_kp: int,
        num_channels: int,
        max_features: int,
        num_blocks: int,
        temperature: float,
        estimate_jacobian: bool = False,
        scale_factor: float = 1,
        single_jacobian_map: bool = False,
        pad: int = 0,
        frame_shape: tuple[int, int] = (256, 256),
    ):
        super().__init__()
        self.predictor = Hourglass(
            block_expansion, in_features=num_channels, max_features=max_features, num_blocks=num_blocks
        )
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=(7, 7), padding=pad)
        if estimate_jacobian:
            num_jacobian_maps = 1 if single_jacobian_map else num_kp
            self.jacobian = nn.Conv2d(
                self.predictor.out_filters, 4 * num_jacobian_maps, kernel_size=(7, 7), padding=pad
            )
            # Start from identity jacobians, as the official code does.
            self.jacobian.weight.data.zero_()
            self.jacobian.bias.data.copy_(torch.tensor([1, 0, 0, 1] * num_jacobian_maps, dtype=torch.float))
        else:
            self.jacobian = None
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)
        # Static shapes: the heatmap grid is built for `frame_shape` frames (7x7 kp conv, `pad`).
        heatmap_shape = [math.ceil(n * scale_factor) + 2 * pad - 6 for n in frame_shape]
        self.register_buffer("grid", make_coordinate_grid(heatmap_shape), persistent=False)

    def gaussian2kp(self, heatmap: torch.Tensor) -> Keypoints:
        """Keypoint = expected coordinate under the heatmap [B, K, h, w]."""
        return {"value": (heatmap.unsqueeze(-1) * self.grid).sum(dim=(2, 3))}

    def forward(self, x: torch.Tensor) -> Keypoints:
        if self.scale_factor != 1:
            x = self.down(x)
        feature_map = self.predictor(x)
        prediction = self.kp(feature_map)
        # flatten/unflatten rather than view(b, k, h * w): size arithmetic traces to ops Core ML rejects.
        heatmap = F.softmax(prediction.flatten(2) / self.temperature, dim=2).unflatten(2, prediction.shape[2:])
        out = self.gaussian2kp(heatmap)
        if self.jacobian is not None:
            jacobian_map = self.jacobian(feature_map).unflatten(1, (-1, 4))  # [B, K or 1, 4, h, w]
            jacobian = (heatmap.unsqueeze(2) * jacobian_map).flatten(3).sum(dim=-1)
            out["jacobian"] = jacobian.unflatten(-1, (2, 2))
        return out


class DenseMotionNetwork(nn.Module):
    """Dense motion (mask-weighted mix of K+1 local motions) and occlusion map from sparse keypoints."""

    def __init__(
        self,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        num_channels: int,
        estimate_occlusion_map: bool = False,
        scale_factor: float = 1,
        kp_variance: float = 0.01,
        frame_shape: tuple[int, int] = (256, 256),
    ):
        super().__init__()
        self.hourglass = Hourglass(
            block_expansion=block_expansion,
            in_features=(num_kp + 1) * (num_channels + 1),
            max_features=max_features,
            num_blocks=num_blocks,
        )
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=(7, 7), padding=(3, 3))
        if estimate_occlusion_map:
            self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=(7, 7), padding=(3, 3))
        else:
            self.occlusion = None
        self.scale_factor = scale_factor
        self.kp_variance = kp_variance
        if scale_factor != 1:
            self.down = AntiAliasInterpolation2d(num_channels, scale_factor)
        self.register_buffer(
            "grid", make_coordinate_grid([math.ceil(n * scale_factor) for n in frame_shape]), persistent=False
        )

    def create_heatmap_representations(self, kp_driving: Keypoints, kp_source: Keypoints) -> torch.Tensor:
        """Eq. 6: H_k(z), driving minus source gaussians, plus a zero background map: [B, K+1, 1, h, w]."""
        gaussian_driving = kp2gaussian(kp_driving["value"], self.grid, self.kp_variance)
        heatmap = gaussian_driving - kp2gaussian(kp_source["value"], self.grid, self.kp_variance)
        heatmap = torch.cat([torch.zeros_like(heatmap[:, :1]), heatmap], dim=1)
        return heatmap.unsqueeze(2)

    def create_sparse_motions(self, kp_driving: Keypoints, kp_source: Keypoints) -> torch.Tensor:
        """Eq. 4: T_{s<-d}(z) = kp_s + J_s J_d^-1 (z - kp_d) per keypoint, identity first: [B, K+1, h, w, 2]."""
        return sparse_motions(self.grid, kp_source, kp_driving)

    def create_deformed_source_image(self, source_image: torch.Tensor, sparse_motions: torch.Tensor) -> torch.Tensor:
        """Eq. 7: the source warped by each sparse motion: [B, K+1, C, h, w]."""
        n = sparse_motions.shape[1]
        source_repeat = source_image.unsqueeze(1).expand(-1, n, -1, -1, -1).flatten(0, 1)
        sparse_deformed = warp(source_repeat, sparse_motions.flatten(0, 1))
        return sparse_deformed.unflatten(0, sparse_motions.shape[:2])

    def forward(
        self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints
    ) -> dict[str, torch.Tensor]:
        if self.scale_factor != 1:
            source_image = self.down(source_image)
        heatmap_representation = self.create_heatmap_representations(kp_driving, kp_source)
        sparse_motion = self.create_sparse_motions(kp_driving, kp_source)
        deformed_source = self.create_deformed_source_image(source_image, sparse_motion)
        out = {"sparse_deformed": deformed_source}

        inp = torch.cat([heatmap_representation, deformed_source], dim=2).flatten(1, 2)
        prediction = self.hourglass(inp)
        mask = F.softmax(self.mask(prediction), dim=1)
        out["mask"] = mask
        deformation = (sparse_motion.permute(0, 1, 4, 2, 3) * mask.unsqueeze(2)).sum(dim=1)
        out["deformation"] = deformation.permute(0, 2, 3, 1)
        if self.occlusion is not None:  # Sec. 3.2
            out["occlusion_map"] = torch.sigmoid(self.occlusion(prediction))
        return out


class OcclusionAwareGenerator(nn.Module):
    """Encoder, warp of the source features by the dense motion, occlusion masking, decoder (Johnson-style).

    `forward(source, kp_driving, kp_source)` = `animate(source, encode_source(source), kp_source, kp_driving)`.
    """

    def __init__(
        self,
        num_channels: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        num_bottleneck_blocks: int,
        estimate_occlusion_map: bool = False,
        dense_motion_params: dict[str, Any] | None = None,
        estimate_jacobian: bool = False,
        frame_shape: tuple[int, int] = (256, 256),
    ):
        super().__init__()
        if dense_motion_params is not None:
            self.dense_motion_network = DenseMotionNetwork(
                num_kp=num_kp,
                num_channels=num_channels,
                estimate_occlusion_map=estimate_occlusion_map,
                frame_shape=frame_shape,
                **dense_motion_params,
            )
        else:
            self.dense_motion_network = None
        self.first = SameBlock2d(num_channels, block_expansion, kernel_size=(7, 7), padding=(3, 3))
        width = functools.partial(hourglass_width, block_expansion, max_features)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(width(i), width(i + 1), kernel_size=(3, 3), padding=(1, 1)) for i in range(num_down_blocks)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(width(num_down_blocks - i), width(num_down_blocks - i - 1), kernel_size=(3, 3), padding=(1, 1))
            for i in range(num_down_blocks)
        )
        self.bottleneck = nn.Sequential()
        for i in range(num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(width(num_down_blocks), kernel_size=(3, 3), padding=(1, 1)))
        self.final = nn.Conv2d(block_expansion, num_channels, kernel_size=(7, 7), padding=(3, 3))

    @staticmethod
    def deform_input(inp: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        """Warp `inp` by `deformation` [B, h, w, 2], resized bilinearly if its size differs."""
        _, h_old, w_old, _ = deformation.shape
        _, _, h, w = inp.shape
        if h_old != h or w_old != w:
            deformation = F.interpolate(
                deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False
            )
            deformation = deformation.permute(0, 2, 3, 1)
        return warp(inp, deformation)

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """The per-call half: source features (first block + down blocks)."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def animate(
        self, source_image: torch.Tensor, source_feature: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints
    ) -> dict[str, torch.Tensor]:
        """The per-frame half: dense motion, warp and occlusion of the source features, decoder."""
        out = source_feature
        output_dict: dict[str, torch.Tensor] = {}
        if self.dense_motion_network is not None:
            dense_motion = self.dense_motion_network(
                source_image=source_image, kp_driving=kp_driving, kp_source=kp_source
            )
            output_dict["mask"] = dense_motion["mask"]
            output_dict["sparse_deformed"] = dense_motion["sparse_deformed"]
            deformation = dense_motion["deformation"]
            out = self.deform_input(out, deformation)
            if "occlusion_map" in dense_motion:
                occlusion_map = dense_motion["occlusion_map"]
                output_dict["occlusion_map"] = occlusion_map
                if out.shape[2:] != occlusion_map.shape[2:]:
                    occlusion_map = F.interpolate(
                        occlusion_map, size=out.shape[2:], mode="bilinear", align_corners=False
                    )
                out = out * occlusion_map
            output_dict["deformed"] = self.deform_input(source_image, deformation)

        out = self.bottleneck(out)
        for block in self.up_blocks:
            out = block(out)
        output_dict["prediction"] = torch.sigmoid(self.final(out))
        return output_dict

    def forward(
        self, source_image: torch.Tensor, kp_driving: Keypoints, kp_source: Keypoints
    ) -> dict[str, torch.Tensor]:
        return self.animate(source_image, self.encode_source(source_image), kp_source, kp_driving)


class FommModel(nn.Module):
    """Both networks of an official checkpoint; `config` is the JSON-able dict it was built from.

    config: {"kind": "teacher", "common_params": {num_kp, num_channels, estimate_jacobian,
    frame_shape: [H, W]}, "kp_detector_params": {...}, "generator_params": {...}}: the official
    YAML's `model_params`, with the frame size (official `dataset_params.frame_shape`) added.
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(config)
        kp_args, generator_args = network_arguments(config)
        self.kp_detector = KPDetector(**kp_args)
        self.generator = OcclusionAwareGenerator(**generator_args)


# Arguments the generator passes to its DenseMotionNetwork itself.
_FROM_GENERATOR = frozenset({"num_kp", "num_channels", "estimate_occlusion_map", "frame_shape"})


def network_arguments(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Constructor arguments of (KPDetector, OcclusionAwareGenerator), checked so that a typo is named."""
    sections = {}
    for name in ("common_params", "kp_detector_params", "generator_params"):
        if not isinstance(config.get(name), dict):
            raise CompressError(
                f"fomm config: missing section {name!r} (a dict like the official YAML's model_params.{name})"
            )
        sections[name] = dict(config[name])
    common = {**sections["common_params"], "frame_shape": frame_shape(config)}
    kp_args = {**common, **sections["kp_detector_params"]}
    generator_args = {**common, **sections["generator_params"]}
    check_arguments(KPDetector, kp_args, "kp_detector_params")
    check_arguments(OcclusionAwareGenerator, generator_args, "generator_params")
    if generator_args.get("dense_motion_params") is not None:
        check_arguments(
            DenseMotionNetwork,
            generator_args["dense_motion_params"],
            "generator_params.dense_motion_params",
            _FROM_GENERATOR,
        )
    return kp_args, generator_args


def check_arguments(
    cls: type, args: dict[str, Any], section: str, supplied: frozenset[str] = frozenset(), family: str = "fomm"
) -> None:
    """Raise CompressError naming the unknown and missing constructor arguments of `cls` in `args`;
    `supplied` are the arguments the caller adds itself (neither accepted from nor required in `args`)."""
    params = inspect.signature(cls).parameters
    accepted = set(params) - supplied
    required = {n for n, p in params.items() if p.default is p.empty} - supplied
    unknown, missing = sorted(set(args) - accepted), sorted(required - set(args))
    if unknown or missing:
        raise CompressError(
            f"{family} config: {section} (with common_params): unknown keys {unknown}, missing keys {missing}; "
            f"accepted: {', '.join(sorted(accepted))}"
        )

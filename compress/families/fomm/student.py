"""The mobile FOMM student ("Mob M-SPADE" style, Oquab et al., arXiv 2012.00328).

Same interfaces as the teacher (`teacher.FommModel`: `.config`, `.kp_detector`, `.generator`
with `encode_source` / `animate`), built for a phone CPU:
- depthwise-separable hourglasses (MobileNet v1 blocks) with a width multiplier,
- keypoints and dense motion computed at a reduced resolution,
- a decoder refined by SPADE blocks conditioned on eye and mouth masks (`spade.py`),
- an image skip: the decoder also predicts a blend mask between the source frame warped at
  full resolution and its own RGB. Most of a frame is the source moved; a small decoder then
  spends its capacity on what motion cannot explain (disocclusions, mouth, eyes) instead of
  redrawing every pixel through a 16-channel bottleneck,
- optionally (`output_stride: 2`) a decoder that stops at half resolution and predicts each
  2x2 block of RGB and blend mask as channels (depth-to-space): the only full-resolution work
  per frame is then the source warp and the blend, costs that pruning cannot shrink.

Export rules kept throughout: static shapes, coordinate grids as non-persistent buffers, no
torch.inverse / affine_grid, grid_sample through `ops.warp` (align_corners=True, as the
teacher), tensors of rank <= 5 (Core ML). Forward passes read channel counts from tensors,
never from the config, because structured pruning shrinks the layers after construction.

Config (JSON-able, the teacher's layout plus student keys):
{"kind": "student", "width_multiplier": w,
 "common_params": {num_kp, num_channels, estimate_jacobian, frame_shape: [H, W]},
 "kp_detector_params": {block_expansion, max_features, num_blocks, scale_factor, temperature},
 "generator_params": {block_expansion, max_features, num_down_blocks, num_bottleneck_blocks,
     estimate_occlusion_map, image_skip, output_stride, dense_motion_params: {block_expansion,
     max_features, num_blocks, scale_factor, kp_variance},
     spade_params: {num_regions, hidden, levels, kp_variance, mask_stride}}}
Widths (block_expansion, max_features, spade hidden) are multiplied by `width_multiplier`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError
from compress.families.fomm.blocks import decode, decoder_widths, encode, encoder_widths, hourglass_width
from compress.families.fomm.configs import frame_shape
from compress.families.fomm.ops import Keypoints, kp2gaussian, make_coordinate_grid, sparse_motions, warp
from compress.families.fomm.spade import RegionMasks, SpadeParams, SPADERefineBlock
from compress.families.fomm.teacher import check_arguments
from compress.families.mobile_blocks import ConvBlock, SeparableConv, make_divisible


# -- building blocks -------------------------------------------------------------------------
class UpBlock(nn.Sequential):
    """FOMM's UpBlock2d made separable: pointwise conv, nearest x2 upsampling, depthwise 3x3.

    The pointwise conv, where the channels mix and the MACs are, runs before the upsampling on
    a quarter of the pixels; the depthwise conv then smooths the nearest-neighbour blocks.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2.0, mode="nearest"),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, groups=out_channels, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ResBlock(nn.Module):
    """`relu(x + sep(sep(x)))`: the bottleneck block, two separable convs."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(SeparableConv(channels, channels), SeparableConv(channels, channels, last_relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class MobileEncoder(nn.Module):
    """Hourglass encoder: stride-2 convs (full on the input, separable after); returns the input
    and every level (the skips)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            (ConvBlock if i == 0 else SeparableConv)(c_in, c_out, stride=2)
            for i, (c_in, c_out) in enumerate(encoder_widths(block_expansion, in_features, num_blocks, max_features))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return encode(self.down_blocks, x)


class MobileDecoder(nn.Module):
    """Hourglass decoder: up block, then concatenation with the skip of the same resolution."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.up_blocks = nn.ModuleList(
            UpBlock(c_in, c_out) for c_in, c_out in decoder_widths(block_expansion, num_blocks, max_features)
        )
        self.out_filters = block_expansion + in_features

    def forward(self, skips: list[torch.Tensor]) -> torch.Tensor:
        return decode(self.up_blocks, skips)


class MobileHourglass(nn.Module):
    """FOMM's hourglass (same widths, skips and `out_filters` = block_expansion + in_features), separable."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.encoder = MobileEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = MobileDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def downscale(image: torch.Tensor, stride: int) -> torch.Tensor:
    # A box filter is the anti-aliasing: FOMM's 13x13 gaussian at full resolution would cost
    # more than the whole keypoint detector; AvgPool exports everywhere.
    return F.avg_pool2d(image, stride) if stride > 1 else image


def scale_grid(grid: torch.Tensor, factor: float) -> torch.Tensor:
    """A [B, h, w, 2] sampling grid resized by `factor`; align_corners=True as the grid's coordinates.

    A constant factor, not a target size: sizes read from traced tensors become `int` casts
    that Core ML's converter rejects.
    """
    if factor == 1:
        return grid
    return F.interpolate(grid.permute(0, 3, 1, 2), scale_factor=factor, mode="bilinear", align_corners=True).permute(
        0, 2, 3, 1
    )


def scale_stride(scale_factor: float, section: str) -> int:
    stride = round(1 / scale_factor) if scale_factor > 0 else 0
    if stride < 1 or abs(stride * scale_factor - 1) > 1e-6:
        raise CompressError(
            f"fomm student config: {section}.scale_factor {scale_factor} must be 1/n for an integer n >= 1"
        )
    return stride


def _output_level(output_stride: int, num_down_blocks: int) -> int:
    """log2(output_stride): the decoder level the frame is predicted from."""
    level = output_stride.bit_length() - 1
    if output_stride < 1 or 2**level != output_stride or level > num_down_blocks:
        raise CompressError(
            f"fomm student config: generator_params.output_stride {output_stride} must be a power of two "
            f"up to 2**num_down_blocks ({2**num_down_blocks})"
        )
    return level


def _reduced_shape(frame: tuple[int, int], stride: int, levels: int, section: str) -> tuple[int, int]:
    """Frame size divided by `stride`, checked to halve cleanly `levels` times."""
    if any(n % (stride * 2**levels) for n in frame):
        raise CompressError(
            f"fomm student config: {section}: frame_shape {list(frame)} must be divisible by "
            f"{stride * 2**levels} (1/scale_factor x 2**num_blocks)"
        )
    return frame[0] // stride, frame[1] // stride


# -- keypoint detector -----------------------------------------------------------------------
class MobileKPDetector(nn.Module):
    """Keypoints [B, K, 2] in [-1, 1] and jacobians [B, K, 2, 2] of an RGB frame in [0, 1].

    FOMM's recipe on a downscaled frame: hourglass, K heatmaps, softmax with a temperature,
    soft-argmax; jacobian maps averaged under each heatmap. The kp head is 3x3 and the jacobian
    head 1x1: FOMM's 7x7 heads alone would cost several times the mobile budget.
    """

    def __init__(
        self,
        num_kp: int,
        num_channels: int,
        frame_shape: tuple[int, int],
        estimate_jacobian: bool,
        block_expansion: int,
        max_features: int,
        num_blocks: int,
        scale_factor: float,
        temperature: float,
    ):
        super().__init__()
        self.stride = scale_stride(scale_factor, "kp_detector_params")
        self.temperature = temperature
        self.predictor = MobileHourglass(block_expansion, num_channels, num_blocks, max_features)
        self.kp = nn.Conv2d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        self.jacobian: nn.Conv2d | None = None
        if estimate_jacobian:
            self.jacobian = nn.Conv2d(self.predictor.out_filters, 4 * num_kp, kernel_size=1)
            nn.init.zeros_(self.jacobian.weight)  # start from identity jacobians, as FOMM does
            with torch.no_grad():
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(num_kp))
        size = _reduced_shape(frame_shape, self.stride, num_blocks, "kp_detector_params")
        self.register_buffer("grid", make_coordinate_grid(size).reshape(-1, 2), persistent=False)

    def forward(self, image: torch.Tensor) -> Keypoints:
        feature = self.predictor(downscale(image, self.stride))
        # Shapes by flatten/-1, never by size arithmetic (h * w): traced products of sizes
        # become `int` casts that Core ML's converter rejects.
        heatmap = F.softmax(self.kp(feature).flatten(2) / self.temperature, dim=2)  # [B, K, h*w]
        out = {"value": torch.matmul(heatmap, self.grid)}
        if self.jacobian is not None:
            b, k, _ = heatmap.shape
            maps = self.jacobian(feature).flatten(2).reshape(b, k, 4, -1)
            out["jacobian"] = (maps * heatmap.unsqueeze(2)).sum(dim=-1).reshape(b, k, 2, 2)
        return out


# -- dense motion ----------------------------------------------------------------------------
class MobileDenseMotion(nn.Module):
    """FOMM's dense motion network at a reduced resolution, with a separable hourglass.

    Per keypoint (plus the background): the heatmap difference and the source warped by that
    keypoint's local affine motion go in; the softmax mask that blends the K + 1 motions into
    one deformation, and the occlusion map, come out.
    """

    def __init__(
        self,
        num_kp: int,
        num_channels: int,
        frame_shape: tuple[int, int],
        estimate_occlusion_map: bool,
        block_expansion: int,
        max_features: int,
        num_blocks: int,
        scale_factor: float,
        kp_variance: float = 0.01,
    ):
        super().__init__()
        self.stride = scale_stride(scale_factor, "generator_params.dense_motion_params")
        self.kp_variance = kp_variance
        self.hourglass = MobileHourglass(block_expansion, (num_kp + 1) * (num_channels + 1), num_blocks, max_features)
        self.mask = nn.Conv2d(self.hourglass.out_filters, num_kp + 1, kernel_size=3, padding=1)
        self.occlusion = (
            nn.Conv2d(self.hourglass.out_filters, 1, kernel_size=3, padding=1) if estimate_occlusion_map else None
        )
        size = _reduced_shape(frame_shape, self.stride, num_blocks, "generator_params.dense_motion_params")
        self.register_buffer("grid", make_coordinate_grid(size), persistent=False)

    def forward(
        self, source_image: torch.Tensor, kp_source: Keypoints, kp_driving: Keypoints
    ) -> dict[str, torch.Tensor]:
        image = downscale(source_image, self.stride)
        b, c, h, w = image.shape
        heatmap = kp2gaussian(kp_driving["value"], self.grid, self.kp_variance) - kp2gaussian(
            kp_source["value"], self.grid, self.kp_variance
        )
        heatmap = torch.cat([torch.zeros_like(heatmap[:, :1]), heatmap], dim=1)  # background
        motions = sparse_motions(self.grid, kp_source, kp_driving)
        n = motions.shape[1]
        repeated = image.unsqueeze(1).expand(b, n, c, h, w).flatten(0, 1)
        sparse_deformed = warp(repeated, motions.flatten(0, 1)).reshape(b, n, c, h, w)
        feature = self.hourglass(torch.cat([heatmap.unsqueeze(2), sparse_deformed], dim=2).flatten(1, 2))
        mask = F.softmax(self.mask(feature), dim=1)
        out = {
            "sparse_deformed": sparse_deformed,
            "mask": mask,
            "deformation": (motions * mask.unsqueeze(-1)).sum(dim=1),
        }
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(feature))
        return out


# -- generator -------------------------------------------------------------------------------
class MobileGenerator(nn.Module):
    """Occlusion-aware generator: per-call source encoder; per-frame dense motion, warp,
    separable bottleneck and decoder refined by SPADE blocks on eye and mouth masks.

    `forward(source_image, kp_driving, kp_source)` == `animate(source_image,
    encode_source(source_image), kp_source, kp_driving)`, argument order as the teacher's.
    """

    def __init__(
        self,
        num_kp: int,
        num_channels: int,
        frame_shape: tuple[int, int],
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        num_bottleneck_blocks: int,
        dense_motion_params: dict[str, Any],
        spade_params: dict[str, Any],
        estimate_occlusion_map: bool = True,
        image_skip: bool = False,
        output_stride: int = 1,
    ):
        super().__init__()
        spade = SpadeParams(**spade_params)
        self.image_skip = image_skip
        self.output_stride = output_stride
        _reduced_shape(frame_shape, 1, num_down_blocks, "generator_params")
        output_level = _output_level(output_stride, num_down_blocks)
        decoder_levels = num_down_blocks - output_level
        bad_levels = sorted(set(spade.levels) - set(range(decoder_levels + 1)))
        if bad_levels:
            raise CompressError(
                f"fomm student config: generator_params.spade_params.levels {bad_levels} out of range: "
                f"levels are 0 (bottleneck) to num_down_blocks - log2(output_stride) ({decoder_levels})"
            )
        finest_stride = 2 ** (num_down_blocks - max(spade.levels, default=0))
        if finest_stride % spade.mask_stride:
            raise CompressError(
                f"fomm student config: generator_params.spade_params.mask_stride {spade.mask_stride} must divide "
                f"the finest SPADE level's stride ({finest_stride})"
            )
        width = [hourglass_width(block_expansion, max_features, i) for i in range(num_down_blocks + 1)]
        self.first = ConvBlock(num_channels, width[0])
        self.down_blocks = nn.ModuleList(
            SeparableConv(width[i], width[i + 1], stride=2) for i in range(num_down_blocks)
        )
        self.dense_motion_network = MobileDenseMotion(
            num_kp, num_channels, frame_shape, estimate_occlusion_map, **dense_motion_params
        )
        # from the dense-motion resolution to the source features' and to the frame's
        self.feature_scale = self.dense_motion_network.stride / 2**num_down_blocks
        self.image_scale = float(self.dense_motion_network.stride)
        self.bottleneck = nn.Sequential(*(ResBlock(width[-1]) for _ in range(num_bottleneck_blocks)))
        self.up_blocks = nn.ModuleList(
            UpBlock(width[i + 1], width[i]) for i in reversed(range(output_level, num_down_blocks))
        )
        # RGB and blend mask from two convs: slicing one conv's output would cost a full pass over it.
        self.final = nn.Conv2d(width[output_level], num_channels * output_stride**2, kernel_size=3, padding=1)
        self.blend = nn.Conv2d(width[output_level], output_stride**2, kernel_size=3, padding=1) if image_skip else None
        self.mask_stride = spade.mask_stride
        mask_shape = (frame_shape[0] // spade.mask_stride, frame_shape[1] // spade.mask_stride)
        self.region_masks = RegionMasks(num_kp, spade.num_regions, mask_shape, spade.kp_variance)
        self.spade_blocks = nn.ModuleDict(
            {
                str(level): SPADERefineBlock(
                    width[num_down_blocks - level],
                    spade.num_regions,
                    spade.hidden,
                    2 ** (num_down_blocks - level) // spade.mask_stride,
                )
                for level in sorted(set(spade.levels))
            }
        )

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        """The per-call half: source features at 1 / 2**num_down_blocks of the frame."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        return out

    def animate(
        self,
        source_image: torch.Tensor,
        source_feature: torch.Tensor,
        kp_source: Keypoints,
        kp_driving: Keypoints,
        region_masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The per-frame half. `region_masks` [B, R, H, W] (frame size; eyes, mouth) from the
        data replaces the masks derived from the driving keypoints (pooled to their resolution)."""
        motion = self.dense_motion_network(source_image, kp_source, kp_driving)
        deformation = motion["deformation"]  # [B, h, w, 2] at the dense-motion resolution
        out = warp(source_feature, scale_grid(deformation, self.feature_scale))
        if "occlusion_map" in motion:
            occlusion = motion["occlusion_map"]
            if self.feature_scale != 1:
                occlusion = F.interpolate(
                    occlusion, scale_factor=self.feature_scale, mode="bilinear", align_corners=False
                )
            out = out * occlusion
        if region_masks is None:
            region_masks = self.region_masks(kp_driving["value"])
        elif region_masks.shape[2:] != source_image.shape[2:]:
            raise CompressError(
                f"fomm student: region_masks {list(region_masks.shape)} "
                f"must have the frame size {list(source_image.shape[2:])}"
            )
        elif self.mask_stride > 1:
            region_masks = F.avg_pool2d(region_masks, self.mask_stride)
        out = self._refine(0, self.bottleneck(out), region_masks)
        for level, block in enumerate(self.up_blocks, start=1):
            out = self._refine(level, block(out), region_masks)
        deformed = warp(source_image, scale_grid(deformation, self.image_scale))
        rgb = self._to_frame(torch.sigmoid(self.final(out)))
        if self.blend is not None:
            alpha = self._to_frame(torch.sigmoid(self.blend(out)))
            rgb = rgb + alpha * (deformed - rgb)  # alpha * deformed + (1 - alpha) * rgb, in three passes
        out = rgb
        result = {
            "prediction": out,
            "mask": motion["mask"],
            "sparse_deformed": motion["sparse_deformed"],
            "deformed": deformed,
            "region_masks": region_masks,
        }
        if "occlusion_map" in motion:
            result["occlusion_map"] = motion["occlusion_map"]
        return result

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
        # Students saved before `blend` existed predicted [mask, RGB] from one `final` conv.
        weight, bias = state_dict.get(f"{prefix}final.weight"), state_dict.get(f"{prefix}final.bias")
        if (
            self.blend is not None
            and weight is not None
            and bias is not None
            and f"{prefix}blend.weight" not in state_dict
        ):
            if weight.shape[0] == self.final.out_channels + 1:
                state_dict[f"{prefix}blend.weight"], state_dict[f"{prefix}final.weight"] = weight[:1], weight[1:]
                state_dict[f"{prefix}blend.bias"], state_dict[f"{prefix}final.bias"] = bias[:1], bias[1:]
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _to_frame(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(x, self.output_stride) if self.output_stride > 1 else x

    def _refine(self, level: int, x: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        key = str(level)
        return self.spade_blocks[key](x, masks) if key in self.spade_blocks else x

    def forward(
        self,
        source_image: torch.Tensor,
        kp_driving: Keypoints,
        kp_source: Keypoints,
        region_masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return self.animate(source_image, self.encode_source(source_image), kp_source, kp_driving, region_masks)


# -- model and configs -----------------------------------------------------------------------
class MobileFomm(nn.Module):
    """The student: `.kp_detector` and `.generator`, interchangeable with the teacher's FommModel."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(config)
        kp_args, generator_args = student_arguments(config)
        self.kp_detector = MobileKPDetector(**kp_args)
        self.generator = MobileGenerator(**generator_args)


_FROM_GENERATOR = frozenset({"num_kp", "num_channels", "frame_shape", "estimate_occlusion_map"})


def student_arguments(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Constructor arguments of (MobileKPDetector, MobileGenerator), widths scaled, keys checked."""
    if config.get("kind") != "student":
        raise CompressError(f"fomm student config: 'kind' must be 'student', not {config.get('kind')!r}")
    for name in ("common_params", "kp_detector_params", "generator_params"):
        if not isinstance(config.get(name), dict):
            raise CompressError(f"fomm student config: missing section {name!r} (see STUDENT_CONFIGS['mobile-256'])")
    width = config.get("width_multiplier", 1.0)
    if not isinstance(width, (int, float)) or width <= 0:
        raise CompressError(f"fomm student config: width_multiplier must be a positive number, not {width!r}")
    common = {**config["common_params"], "frame_shape": frame_shape(config)}
    kp_args = _scaled({**common, **config["kp_detector_params"]}, width)
    generator_args = _scaled(
        {**{k: v for k, v in common.items() if k != "estimate_jacobian"}, **config["generator_params"]}, width
    )
    check_arguments(MobileKPDetector, kp_args, "kp_detector_params")
    check_arguments(MobileGenerator, generator_args, "generator_params")
    dense = generator_args["dense_motion_params"] = _scaled(dict(generator_args["dense_motion_params"]), width)
    check_arguments(MobileDenseMotion, dense, "generator_params.dense_motion_params", _FROM_GENERATOR)
    spade = {**asdict(SpadeParams()), **generator_args["spade_params"]}
    check_arguments(SpadeParams, spade, "generator_params.spade_params")
    spade["hidden"] = make_divisible(spade["hidden"] * width)
    spade["levels"] = tuple(spade["levels"])
    generator_args["spade_params"] = spade
    return kp_args, generator_args


def _scaled(args: dict[str, Any], width: float) -> dict[str, Any]:
    for key in ("block_expansion", "max_features"):
        if key in args:
            args[key] = make_divisible(args[key] * width)
    return args


def _mobile(
    frame_size: int,
    max_features: int,
    num_blocks: int,
    kp_scale_factor: float,
    generator: dict[str, Any],
    motion_scale_factor: float = 0.25,
    spade: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A student preset for `frame_size` frames: the kp detector and the dense motion share one
    hourglass size (32 channels doubling up to `max_features` over `num_blocks` levels)."""
    hourglass = {"block_expansion": 32, "max_features": max_features, "num_blocks": num_blocks}
    return {
        "kind": "student",
        "width_multiplier": 1.0,
        "common_params": {
            "num_kp": 10,
            "num_channels": 3,
            "estimate_jacobian": True,
            "frame_shape": [frame_size, frame_size],
        },
        "kp_detector_params": {**hourglass, "scale_factor": kp_scale_factor, "temperature": 0.1},
        "generator_params": {
            "block_expansion": 16,
            "max_features": 128,
            "num_down_blocks": 2,
            "estimate_occlusion_map": True,
            "image_skip": True,
            **generator,
            "dense_motion_params": {**hourglass, "scale_factor": motion_scale_factor, "kp_variance": 0.01},
            "spade_params": {"num_regions": 2, "hidden": 16, "kp_variance": 0.01, **(spade or {})},
        },
    }


STUDENT_CONFIGS: dict[str, dict[str, Any]] = {
    # The default, built for an iPhone 8 CPU at 256x256 (issue #22; its predicted and measured
    # costs: docs/models/fomm.md). Fixed work (what pruning every channel cannot remove) stays
    # small and capacity sits where it is cheap: the dense motion runs at 1/4 of the frame (its
    # hourglass down to 1x1 holds most parameters), the decoder's bottleneck at 1/16 (2 blocks,
    # 128 channels), SPADE refines eyes and mouth at 1/16, 1/8 and 1/4 from masks computed at 1/4,
    # and the decoder stops at 1/2 and predicts 2x2 pixel blocks, so the only full-resolution
    # work is the source warp and blend. In one-seed trials in the architectures bench's setting
    # (from scratch at 256x256, 1500 steps), motion at 1/8 lost 0.3 dB of PSNR, and 8 bottleneck
    # blocks instead of 2 lost 1.0 dB while adding 5.8 ms predicted.
    "mobile-256": _mobile(
        256,
        max_features=512,
        num_blocks=5,
        kp_scale_factor=0.25,
        generator={
            "block_expansion": 8,
            "num_down_blocks": 4,
            "num_bottleneck_blocks": 2,
            "output_stride": 2,
        },
        spade={"levels": [0, 1, 2], "mask_stride": 4},
    ),
    # The first product-size preset, kept for comparison (docs/models/fomm.md): 88 ms per frame
    # predicted on profile:iphone8, 13.7 ms of it fixed (full-resolution decoding, masks and
    # blend); reaching 30 fps took pruning its generator to 6 % of its weights.
    "mobile-256-v1": _mobile(
        256,
        max_features=512,
        num_blocks=5,
        kp_scale_factor=0.25,
        generator={"num_bottleneck_blocks": 6},
        spade={"levels": [0, 1]},
    ),
    # The 64x64 CPU demo (its teacher, "demo-64", is a reduced FOMM: 10 keypoints, jacobians).
    "mobile-64": _mobile(
        64,
        max_features=256,
        num_blocks=3,
        kp_scale_factor=0.5,
        generator={"num_bottleneck_blocks": 2},
        spade={"levels": [1, 2]},
    ),
}


def build_student(config: dict[str, Any]) -> MobileFomm:
    return MobileFomm(config)

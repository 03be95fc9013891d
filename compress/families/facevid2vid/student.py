"""The mobile face-vid2vid student: 3-D keypoint motion, 2-D warping (no Conv3d, no 5-D tensors).

Same interfaces as the teacher (`teacher.FaceVid2VidModel`): `.config`, `.kp_detector(image)`
(canonical keypoints [B, K, 3]), `.he_estimator(image)` (66-bin yaw/pitch/roll logits, t, exp),
`.transform_keypoints(kp_canonical, he)` (x = R x_c + t + delta, the teacher's conventions) and
`.generator` with `encode_source` / `animate`. What changes is where the motion is applied:

- the teacher warps a C x D x H x W feature volume with a 3-D flow (5-D grid_sample, Conv3d);
- the student projects the transformed keypoints onto the image plane (orthographic: z dropped)
  and runs the mobile FOMM generator on them (`compress.families.fomm.student.MobileGenerator`):
  2-D dense motion at a reduced resolution, a 2-D feature map warped by a 4-D grid_sample,
  occlusion, separable bottleneck and decoder, SPADE refinement and the image skip.

The sparse motions are translations of the projected keypoints, as the teacher's are
translations of the 3-D ones (the public code has no first-order term either).

Config (JSON-able): {"kind": "student", "variant": "mobile", "width_multiplier": w,
 "common_params": {num_kp, num_channels, frame_shape: [H, W]},
 "he_estimator_params": {block_expansion, max_features, num_blocks, scale_factor, num_bins},
 "kp_detector_params": FOMM student's (block_expansion, max_features, num_blocks, scale_factor, temperature),
 "generator_params": FOMM student's (dense_motion_params, spade_params, image_skip, ...)}
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.families.facevid2vid.student_motion import MobileCanonicalKPDetector, MobileHeadPose
from compress.families.facevid2vid.teacher import FaceVid2VidModel
from compress.families.fomm.ops import Keypoints
from compress.families.fomm.student import MobileGenerator, make_divisible, student_arguments
from compress.families.fomm.teacher import check_arguments


def project(kp: Keypoints) -> Keypoints:
    """3-D keypoints {"value": [B, K, 3]} -> their image-plane (x, y) {"value": [B, K, 2]}."""
    return {"value": kp["value"][..., :2]}


class ProjectedGenerator(MobileGenerator):
    """The mobile FOMM generator driven by 3-D keypoints, projected to the image plane."""

    def animate(  # type: ignore[override]
        self,
        source_image: torch.Tensor,
        source_feature: torch.Tensor,
        kp_source: Keypoints,
        kp_driving: Keypoints,
        region_masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return super().animate(source_image, source_feature, project(kp_source), project(kp_driving), region_masks)


class MobileFaceVid2Vid(nn.Module):
    """The student: `.kp_detector`, `.he_estimator`, `.generator`, interchangeable with the teacher's."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(config)
        kp_args, he_args, generator_args = student_arguments_3d(config)
        self.kp_detector = MobileCanonicalKPDetector(**kp_args)
        self.he_estimator = MobileHeadPose(**he_args)
        self.generator = ProjectedGenerator(**generator_args)

    # The teacher's: degrees from the bins unless given (free view), then x = R x_c + t + delta.
    transform_keypoints = FaceVid2VidModel.transform_keypoints


def student_arguments_3d(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Constructor arguments of (MobileCanonicalKPDetector, MobileHeadPose, ProjectedGenerator),
    widths scaled by `width_multiplier`, keys checked. The keypoint detector and the generator are
    the FOMM student's, so their sections are checked by its `student_arguments`."""
    if config.get("kind") != "student" or config.get("variant") != "mobile":
        raise CompressError(
            "facevid2vid student config: 'kind' must be 'student' and 'variant' 'mobile', "
            f"not {config.get('kind')!r} / {config.get('variant')!r}"
        )
    if not isinstance(config.get("he_estimator_params"), dict):
        raise CompressError("facevid2vid student config: missing section 'he_estimator_params'")
    fomm_shaped = {
        **{k: v for k, v in config.items() if k not in ("variant", "he_estimator_params")},
        "common_params": {**config.get("common_params", {}), "estimate_jacobian": False},
    }
    kp_args, generator_args = student_arguments(fomm_shaped)
    kp_args.pop("estimate_jacobian")
    common = config["common_params"]
    width = config.get("width_multiplier", 1.0)
    he_args = {"num_kp": common["num_kp"], "num_channels": common["num_channels"], **config["he_estimator_params"]}
    check_arguments(MobileHeadPose, he_args, "he_estimator_params", family="facevid2vid")
    for key in ("block_expansion", "max_features"):
        he_args[key] = make_divisible(he_args[key] * width)
    return kp_args, he_args, generator_args


def _mobile(frame_size: int, num_kp: int, motion: dict[str, Any], generator: dict[str, Any]) -> dict[str, Any]:
    """A preset for `frame_size` frames and `num_kp` keypoints (the teacher's count): the FOMM
    student's keypoint hourglass and generator, and a head-pose encoder at 1/2 of the frame.
    `motion`: the hourglass of the canonical keypoints (per call) and of the dense motion (per frame,
    at 1/4 of the frame); `generator`: its widths, levels, bottleneck and SPADE levels."""
    hourglass = {k: motion[k] for k in ("block_expansion", "max_features", "num_blocks")}
    return {
        "kind": "student",
        "variant": "mobile",
        "width_multiplier": 1.0,
        "common_params": {"num_kp": num_kp, "num_channels": 3, "frame_shape": [frame_size, frame_size]},
        "he_estimator_params": {
            "block_expansion": 16,
            "max_features": 256,
            "num_blocks": motion["num_blocks"],
            "scale_factor": 0.5,
            "num_bins": 66,
        },
        "kp_detector_params": {**hourglass, "scale_factor": motion["scale_factor"], "temperature": 0.1},
        "generator_params": {
            "block_expansion": generator["block_expansion"],
            "max_features": 128,
            "num_down_blocks": generator["num_down_blocks"],
            "num_bottleneck_blocks": generator["num_bottleneck_blocks"],
            "estimate_occlusion_map": True,
            "image_skip": True,
            "dense_motion_params": {**motion.get("dense_motion", hourglass), "scale_factor": 0.25, "kp_variance": 0.01},
            "spade_params": {"num_regions": 2, "hidden": 16, "levels": generator["spade_levels"], "kp_variance": 0.01},
        },
    }


STUDENT_CONFIGS: dict[str, dict[str, Any]] = {
    # For the vox-256 checkpoint (15 keypoints, 256x256). Sized by the profile:iphone8 cost model
    # for 30 fps per frame at float32: the decoder's full-resolution layers are 8 channels wide, the
    # source features sit at 1/8 of the frame (32x32, 64 channels) with two bottleneck blocks, one
    # SPADE block refines the bottleneck, and the dense-motion hourglass (64x64) starts at 16
    # channels. The canonical keypoints run once per call, so their hourglass can be wider.
    "mobile-256": _mobile(
        256,
        15,
        motion={
            "block_expansion": 32,
            "max_features": 512,
            "num_blocks": 5,
            "scale_factor": 0.25,
            "dense_motion": {"block_expansion": 16, "max_features": 256, "num_blocks": 4},
        },
        generator={"block_expansion": 8, "num_down_blocks": 3, "num_bottleneck_blocks": 2, "spade_levels": [0]},
    ),
    # For the 64x64 demo teacher ("demo-64", 10 keypoints): the FOMM demo student's sizes.
    "mobile-64": _mobile(
        64,
        10,
        motion={"block_expansion": 32, "max_features": 256, "num_blocks": 3, "scale_factor": 0.5},
        generator={"block_expansion": 16, "num_down_blocks": 2, "num_bottleneck_blocks": 2, "spade_levels": [1, 2]},
    ),
}


def build_student(config: dict[str, Any]) -> MobileFaceVid2Vid:
    return MobileFaceVid2Vid(config)

"""The face-vid2vid teacher (Wang et al., CVPR 2021), key-compatible with the public re-implementation's
checkpoints (zhanglonghao1992/One-Shot_Free-View_Neural_Talking_Head_Synthesis, 00000189 "Vox-256-New")."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.families.facevid2vid.configs import FACEVID2VID_SECTIONS, GENERATORS
from compress.families.facevid2vid.dense_motion import DenseMotionNetwork
from compress.families.facevid2vid.generator import (
    OcclusionAwareGenerator,
    OcclusionAwareSPADEGenerator,
    VolumeWarpGenerator,
)
from compress.families.facevid2vid.he_estimator import HEEstimator
from compress.families.facevid2vid.keypoint_detector import KPDetector
from compress.families.facevid2vid.pose import keypoint_transformation
from compress.families.facevid2vid.warping import DENSE_MOTION_SUPPLIED
from compress.families.fomm.ops import Keypoints
from compress.families.fomm.teacher import check_arguments

GENERATOR_CLASSES = {"spade": OcclusionAwareSPADEGenerator, "original": OcclusionAwareGenerator}


class FaceVid2VidModel(nn.Module):
    """The three networks of a checkpoint, as the public demo.py uses them:

        kp_canonical = model.kp_detector(source)                      # {"value": [B, K, 3]}
        kp_source = model.transform_keypoints(kp_canonical, model.he_estimator(source))
        kp_driving = model.transform_keypoints(kp_canonical, model.he_estimator(driving))
        model.generator(source, kp_source=kp_source, kp_driving=kp_driving)["prediction"]

    `config` is the JSON-able dict it was built from (configs.py).
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(config)
        kp_args, he_args, generator_args = network_arguments(config)
        self.kp_detector = KPDetector(**kp_args)
        self.he_estimator = HEEstimator(**he_args)
        self.generator = GENERATOR_CLASSES[config["generator"]](**generator_args)

    def transform_keypoints(
        self,
        kp_canonical: Keypoints,
        he: dict[str, torch.Tensor],
        yaw: torch.Tensor | None = None,
        pitch: torch.Tensor | None = None,
        roll: torch.Tensor | None = None,
    ) -> Keypoints:
        """The public `keypoint_transformation`: {"value": R x_c + t + delta}. yaw, pitch, roll: degrees
        [B] replacing the estimated pose (the public free view). No "jacobian": no checkpoint has one."""
        return {"value": keypoint_transformation(kp_canonical["value"], he, yaw, pitch, roll)}


def network_arguments(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Constructor arguments of (KPDetector, HEEstimator, generator), checked so that a typo is named."""
    sections = {}
    for name in FACEVID2VID_SECTIONS:
        if not isinstance(config.get(name), dict):
            raise CompressError(
                f"facevid2vid config: missing section {name!r} (a dict like the public YAML's model_params.{name})"
            )
        sections[name] = dict(config[name])
    if config.get("generator") not in GENERATORS:
        raise CompressError(
            f"facevid2vid config: 'generator' must be one of {GENERATORS}, not {config.get('generator')!r}"
        )
    common = sections["common_params"]
    if common.pop("estimate_jacobian", False):
        raise CompressError(
            "facevid2vid config: estimate_jacobian: true is not supported; no released checkpoint has jacobians"
        )
    image = {k: common[k] for k in ("num_kp", "image_channel") if k in common}
    kp_args = {**image, **sections["kp_detector_params"]}
    he_args = {**image, **sections["he_estimator_params"]}
    generator_args = {**common, **sections["generator_params"]}
    check_arguments(KPDetector, kp_args, "kp_detector_params", family="facevid2vid")
    check_arguments(HEEstimator, he_args, "he_estimator_params", family="facevid2vid")
    check_arguments(
        VolumeWarpGenerator, generator_args, "generator_params", frozenset({"first_kernel_size"}), "facevid2vid"
    )
    check_arguments(
        DenseMotionNetwork,
        generator_args.get("dense_motion_params") or {},
        "generator_params.dense_motion_params",
        DENSE_MOTION_SUPPLIED,
        "facevid2vid",
    )
    return kp_args, he_args, generator_args

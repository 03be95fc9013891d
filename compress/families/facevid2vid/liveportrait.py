"""The LivePortrait teacher (Guo et al. 2024, KwaiVGI/LivePortrait): its five networks and the inference
calls of its `src/live_portrait_wrapper.py`, with the same inputs and outputs."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.families.facevid2vid.appearance import AppearanceFeatureExtractor
from compress.families.facevid2vid.dense_motion import DenseMotionNetwork
from compress.families.facevid2vid.motion_extractor import MotionExtractor
from compress.families.facevid2vid.pose import LIVEPORTRAIT_BIN_OFFSET, headpose_pred_to_degree, liveportrait_rotation
from compress.families.facevid2vid.spade import SPADEDecoder
from compress.families.facevid2vid.stitching import StitchingRetargetingNetwork
from compress.families.facevid2vid.warping import DENSE_MOTION_SUPPLIED, WarpingNetwork
from compress.families.fomm.teacher import check_arguments

NETWORKS = {
    "appearance_feature_extractor": AppearanceFeatureExtractor,
    "motion_extractor": MotionExtractor,
    "warping_module": WarpingNetwork,
    "spade_generator": SPADEDecoder,
}
# Names of the three MLPs in our module (the wrapper's) and in stitching_retargeting_module.pth.
STITCHING_NETWORKS = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}


class LivePortraitModel(nn.Module):
    """appearance_feature_extractor (F), motion_extractor (M), warping_module (W), spade_generator (G)
    and, when the config has them, the stitching and retargeting MLPs (S) in a ModuleDict.

        feature_3d = model.extract_feature_3d(source)
        x_s = model.transform_keypoint(model.get_kp_info(source))
        x_d = model.stitching(x_s, model.transform_keypoint(model.get_kp_info(driving)))
        model.warp_decode(feature_3d, x_s, x_d)["out"]          # [B, 3, 512, 512] for 256 input
    """

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = copy.deepcopy(config)
        for name, cls in NETWORKS.items():
            if not isinstance(config.get(f"{name}_params"), dict):
                raise CompressError(f"liveportrait config: missing section {name}_params (as in models.yaml)")
            check_arguments(cls, config[f"{name}_params"], f"{name}_params", family="liveportrait")
        check_arguments(
            DenseMotionNetwork,
            config["warping_module_params"]["dense_motion_params"],
            "warping_module_params.dense_motion_params",
            DENSE_MOTION_SUPPLIED,
            "liveportrait",
        )
        for name, cls in NETWORKS.items():
            self.add_module(name, cls(**config[f"{name}_params"]))
        stitching = config.get("stitching_retargeting_module_params")
        if stitching is None:
            self.stitching_retargeting_module = None
        else:
            self.stitching_retargeting_module = nn.ModuleDict(
                {name: StitchingRetargetingNetwork(**stitching[name]) for name in STITCHING_NETWORKS}
            )

    def extract_feature_3d(self, x: torch.Tensor) -> torch.Tensor:
        """Source image [B, 3, H, W] in [0, 1] -> appearance feature volume [B, 32, 16, H/4, W/4]."""
        return self.appearance_feature_extractor(x)

    def get_kp_info(self, x: torch.Tensor, flag_refine_info: bool = True) -> dict[str, torch.Tensor]:
        """Image -> {"pitch", "yaw", "roll", "t", "exp", "scale", "kp"}. With flag_refine_info the
        angles are degrees [B, 1] and kp, exp are [B, K, 3]; else the raw head outputs."""
        kp_info = self.motion_extractor(x)
        if flag_refine_info:
            for angle in ("pitch", "yaw", "roll"):
                kp_info[angle] = _degrees(kp_info[angle])[:, None]
            kp_info["kp"] = kp_info["kp"].unflatten(1, (-1, 3))
            kp_info["exp"] = kp_info["exp"].unflatten(1, (-1, 3))
        return kp_info

    def transform_keypoint(self, kp_info: dict[str, torch.Tensor]) -> torch.Tensor:
        """Eq. 2, x = s (x_c R + delta) + t with t's z dropped: [B, K, 3]. Angles in degrees or bin logits."""
        kp = kp_info["kp"]
        bs = kp.shape[0]
        rotation = liveportrait_rotation(*(_degrees(kp_info[angle]) for angle in ("pitch", "yaw", "roll")))
        transformed = kp.reshape(bs, -1, 3) @ rotation + kp_info["exp"].reshape(bs, -1, 3)
        transformed = transformed * kp_info["scale"][..., None]
        shift = torch.cat([kp_info["t"][:, None, 0:2], torch.zeros_like(kp_info["t"][:, None, 2:3])], dim=2)
        return transformed + shift

    def warp_decode(
        self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """{"out": image [B, 3, 2H, 2W] in [0, 1], "occlusion_map", "deformation", "mask"}."""
        out = self.warping_module(feature_3d, kp_source=kp_source, kp_driving=kp_driving)
        out["out"] = self.spade_generator(out["out"])
        return out

    def stitch(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """The stitching MLP's delta [B, 3K + 2] (expression, then tx, ty)."""
        return self._retarget("stitching", kp_source, kp_driving)

    def stitching(self, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> torch.Tensor:
        """Driving keypoints [B, K, 3] moved by the stitching delta; unchanged without stitching weights."""
        if self.stitching_retargeting_module is None:
            return kp_driving
        bs, num_kp = kp_source.shape[:2]
        delta = self.stitch(kp_source, kp_driving)
        delta_exp = delta[..., : 3 * num_kp].reshape(bs, num_kp, 3)
        delta_tx_ty = delta[..., 3 * num_kp : 3 * num_kp + 2].reshape(bs, 1, 2)
        shift = torch.cat([delta_tx_ty, torch.zeros_like(delta_tx_ty[..., :1])], dim=2)
        return kp_driving + delta_exp + shift

    def retarget_eye(self, kp_source: torch.Tensor, eye_close_ratio: torch.Tensor) -> torch.Tensor:
        """Keypoint delta [B, K, 3] for the eye-close ratios [B, 3]."""
        return self._retarget("eye", kp_source, eye_close_ratio).reshape(-1, kp_source.shape[1], 3)

    def retarget_lip(self, kp_source: torch.Tensor, lip_close_ratio: torch.Tensor) -> torch.Tensor:
        """Keypoint delta [B, K, 3] for the lip-close ratios [B, 2]."""
        return self._retarget("lip", kp_source, lip_close_ratio).reshape(-1, kp_source.shape[1], 3)

    def _retarget(self, name: str, kp_source: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if self.stitching_retargeting_module is None:
            raise CompressError("liveportrait: no stitching_retargeting_module.pth was loaded")
        feature = torch.cat([kp_source.flatten(1), condition.flatten(1)], dim=1)
        return self.stitching_retargeting_module[name](feature)


def _degrees(angle: torch.Tensor) -> torch.Tensor:
    """Degrees from bin logits [B, bins]; degrees ([B] or [B, 1]) pass through, as in LivePortrait."""
    if angle.ndim > 1 and angle.shape[1] > 1:
        return headpose_pred_to_degree(angle, LIVEPORTRAIT_BIN_OFFSET)
    return angle

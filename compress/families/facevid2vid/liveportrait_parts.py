"""The LivePortrait teacher's deployable parts: the family's split by cadence, for lint, export and host
profiling (the teacher does not ship; its parts show what a phone would have to run).

  he_estimator         sender,   per frame: camera frame -> yaw, pitch, roll (degrees, LivePortrait's
                                            convention), t [3], expression [3K], scale [1]
  generator.per_call   receiver, per call:  reference frame -> appearance volume [32, 16, H/4, W/4] and
                                            the reference's canonical keypoints
  generator.per_frame  receiver, per frame: volume, canonical keypoints, the reference's and the camera
                                            frame's payloads -> x_s, x_d (both from the reference's
                                            canonical keypoints, as LivePortrait's pipeline animates a
                                            source), stitching when the model has it, warp, SPADE decoder
                                            -> frame at the decoder's upscale (2x: 512x512 for 256 input)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.families.base import Part, TensorSpec
from compress.families.facevid2vid.family import ANGLES, VOLUME_GRID_SAMPLE_OPSET, Payload, kp_spec, prefixed
from compress.families.facevid2vid.family import pose_specs as facevid2vid_pose_specs
from compress.families.fomm.family import FlatForward, image_spec

LIVEPORTRAIT_PAYLOAD = Payload(
    angle_range=(-97.5, 97.5),
    angle_convention="LivePortrait's: R = (Rz(roll) Ry(yaw) Rx(pitch))^T applied to row vectors, x R",
    t_range=(-0.2, 0.2),
    t_meaning="translation; only (tx, ty) moves the keypoints",
    exp_range=(-0.05, 0.05),
    exp_meaning="expression deltas, (x, y, z) per keypoint",
)


class LivePortraitPoseModule(FlatForward):
    """he_estimator: image -> (yaw, pitch, roll [1] in degrees, t [1, 3], exp [1, 3K], scale [1, 1])."""

    network = "model"

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        info = self.model.get_kp_info(image)
        return (*(info[a].reshape(-1) for a in ANGLES), info["t"], info["exp"].flatten(1), info["scale"])


class LivePortraitEncoderModule(FlatForward):
    """generator.per_call: source -> (appearance volume, canonical keypoints [1, K, 3])."""

    network = "model"

    def forward(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.extract_feature_3d(source), self.model.get_kp_info(source)["kp"]


class LivePortraitAnimateModule(FlatForward):
    """generator.per_frame: (volume, kp_canonical, source yaw, pitch, roll, t, exp, scale, driving ...) ->
    (prediction,)."""

    network = "model"
    reads_source = False  # the runtime feeds no source image: the volume carries the appearance

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor]:
        feature, kp_canonical, pose = inputs[0], inputs[1], inputs[2:]
        fields = len(ANGLES) + 3
        x_s = self.model.transform_keypoint(_kp_info(kp_canonical, pose[:fields]))
        x_d = self.model.stitching(x_s, self.model.transform_keypoint(_kp_info(kp_canonical, pose[fields:])))
        return (self.model.warp_decode(feature, x_s, x_d)["out"],)


def _kp_info(kp_canonical: torch.Tensor, pose: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    yaw, pitch, roll, t, exp, scale = pose
    return {"kp": kp_canonical, "yaw": yaw, "pitch": pitch, "roll": roll, "t": t, "exp": exp, "scale": scale}


def pose_specs(prefix: str, num_kp: int, frame: str) -> list[TensorSpec]:
    """LivePortrait's payload of one frame: face-vid2vid's fields in its own ranges, and scale [1, 1]."""
    return facevid2vid_pose_specs(prefix, num_kp, frame, LIVEPORTRAIT_PAYLOAD) + [
        TensorSpec(
            prefixed(prefix, "scale"),
            (1, 1),
            layout="NC",
            value_range=(0.8, 2.0),
            normalization="keypoint scale s in x = s (x_c R + delta) + t",
            description=f"scale of the {frame}",
        )
    ]


@torch.no_grad()
def _probe(model: nn.Module, size: tuple[int, int]) -> dict[str, Any]:
    """Keypoint count and volume shape from one eval pass (modes restored); the output size from the decoder's
    two 2x upsamplings and its upscale."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        param = next(model.parameters())
        image = torch.zeros(1, 3, *size, dtype=param.dtype, device=param.device)
        feature, kp = LivePortraitEncoderModule(model)(image)
    finally:
        for m, training in modes.items():
            m.training = training
    factor = 4 * (2 if model.config["spade_generator_params"].get("upscale", 1) > 1 else 1)
    return {
        "num_kp": kp.shape[1],
        "feature": tuple(feature.shape),
        "out": tuple(n * factor for n in feature.shape[-2:]),
    }


def liveportrait_parts(model: nn.Module, size: tuple[int, int]) -> list[Part]:
    """The three parts of a LivePortrait teacher at frame `size`."""
    shapes = _probe(model, size)
    k = shapes["num_kp"]
    feature = TensorSpec(
        "source_feature",
        shapes["feature"],
        value_range=None,
        normalization="generator.per_call output, passed through unchanged",
        description="appearance feature volume of the reference frame, computed once per call",
    )
    canonical = kp_spec("kp_canonical", k, "canonical keypoints of the reference frame, computed once per call")
    return [
        Part(
            name="he_estimator",
            role="sender",
            cadence="per_frame",
            module=LivePortraitPoseModule(model),
            inputs=[image_spec("image", 3, size, "camera frame (also run once on the reference frame)")],
            outputs=pose_specs("", k, "image"),
            description="LivePortrait's motion extractor: head pose, translation, expression and scale per frame",
        ),
        Part(
            name="generator.per_call",
            role="receiver",
            cadence="per_call",
            module=LivePortraitEncoderModule(model),
            inputs=[image_spec("source", 3, size, "reference frame")],
            outputs=[feature, canonical],
            description="appearance feature volume and canonical keypoints of the reference frame, once per call",
        ),
        Part(
            name="generator.per_frame",
            role="receiver",
            cadence="per_frame",
            module=LivePortraitAnimateModule(model),
            inputs=[
                feature,
                canonical,
                *pose_specs("source", k, "reference frame"),
                *pose_specs("driving", k, "camera frame (override yaw, pitch, roll for free view)"),
            ],
            outputs=[image_spec("prediction", 3, shapes["out"], "the reference frame animated to the camera frame")],
            description="x = s (x_c R + delta) + t, stitching, 3-D dense motion, volume warp, SPADE decoder",
            min_opset=VOLUME_GRID_SAMPLE_OPSET,
        ),
    ]

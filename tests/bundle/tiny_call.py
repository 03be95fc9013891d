"""A tiny sender/receiver model shaped like FOMM (32x32 frames), its parts, and their ONNX exports."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.bundle.stage import BundleSource, ShippedFile
from compress.families.base import Family, Part, TensorSpec
from compress.families.task import LossWeights, Metric, Task

SIZE, KP, FEAT = 32, 5, 8
FRAME = (1, 3, SIZE, SIZE)
TASK = Task(
    description="reconstruct the camera frame from the reference frame and keypoints",
    flow="video_call",
    metrics=(
        Metric("psnr", "dB", True, "PSNR of the predicted frame"),
        Metric("l1", "", False),
        Metric("ssim", "", True),
    ),
    loss=LossWeights,
)


class KpDetector(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, FEAT, 4, stride=4)
        self.value = nn.Linear(FEAT, KP * 2)
        self.jacobian = nn.Linear(FEAT, KP * 4)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = F.relu(self.conv(image)).mean((2, 3))
        return torch.tanh(self.value(f)).view(1, KP, 2), self.jacobian(f).view(1, KP, 2, 2)


class PerCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, FEAT, 4, stride=4)

    def forward(self, source_image: torch.Tensor) -> tuple[torch.Tensor]:
        return (F.relu(self.conv(source_image)),)


class PerFrame(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.motion = nn.Linear(KP * 2, FEAT)
        self.out = nn.Conv2d(FEAT, 3, 1)

    def forward(
        self, source_features: torch.Tensor, kp_source_value: torch.Tensor, kp_driving_value: torch.Tensor
    ) -> tuple[torch.Tensor]:
        motion = self.motion((kp_driving_value - kp_source_value).flatten(1))[:, :, None, None]
        x = F.interpolate(self.out(source_features + motion), scale_factor=4.0, mode="nearest")
        return (torch.sigmoid(x),)


def _kp(name: str, shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(
        name,
        shape,
        layout="NK2" if len(shape) == 3 else "NK22",
        value_range=(-1.0, 1.0),
        normalization="keypoint coordinates",
    )


class TinyModel(nn.Module):
    """All networks of the tiny family, as a family "model" holds them."""

    def __init__(self) -> None:
        super().__init__()
        self.kp_detector, self.per_call, self.per_frame = KpDetector(), PerCall(), PerFrame()


def make_parts(model: TinyModel) -> list[Part]:
    feat = TensorSpec("source_features", (1, FEAT, SIZE // 4, SIZE // 4), value_range=None, normalization="features")
    return [
        Part(
            "kp_detector",
            "sender",
            "per_frame",
            model.kp_detector,
            [TensorSpec("image", FRAME)],
            [_kp("kp_value", (1, KP, 2)), _kp("kp_jacobian", (1, KP, 2, 2))],
        ),
        Part("generator.per_call", "receiver", "per_call", model.per_call, [TensorSpec("source_image", FRAME)], [feat]),
        Part(
            "generator.per_frame",
            "receiver",
            "per_frame",
            model.per_frame,
            [feat, _kp("kp_source_value", (1, KP, 2)), _kp("kp_driving_value", (1, KP, 2))],
            [TensorSpec("prediction", FRAME)],
        ),
    ]


class TinyFamily(Family):
    """Just enough of a family for the bundle stage: build the model, list its parts."""

    name = "tiny"
    task = TASK

    def build_teacher(self, config: dict[str, Any]) -> nn.Module:
        return TinyModel()

    build_student = build_teacher

    def parts(self, model: nn.Module) -> list[Part]:
        return make_parts(model)  # type: ignore[arg-type]


def export_onnx(part: Part, path: Path) -> Path:
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and the fastest for tiny models
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            part.module,
            part.example_inputs(),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=[s.name for s in part.inputs],
            output_names=[s.name for s in part.outputs],
        )
    return path


@dataclass
class Tiny:
    """Exported parts of a family's model and the defaults of a bundle of them."""

    parts: list[Part]
    onnx: dict[str, Path]
    teacher: Path
    name: str = "tiny-call"
    family: str = "tiny"
    task: Task = TASK

    def source(self, **overrides: object) -> BundleSource:
        fields = dict(
            name=self.name,
            version="1.2.3",
            family=self.family,
            recipe_sha256="0" * 64,
            stages=["export", "bundle"],
            teacher=self.teacher,
            teacher_source="random-init",
            task=self.task,
            parts=self.parts,
            files={name: {"onnx": ShippedFile(path, "fp32")} for name, path in self.onnx.items()},
            quality={
                "vs_ground_truth": {"l1": 0.05, "psnr": 24.0, "ssim": 0.8},
                "vs_teacher": {"l1": 0.01, "psnr": 35.0, "ssim": 0.97},
            },
            snippets=["python", "kotlin"],
            size_target_mb=1.0,
        )
        fields.update(overrides)
        return BundleSource(**fields)  # type: ignore[arg-type]

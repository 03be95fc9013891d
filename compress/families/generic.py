"""A small generic family: an image-to-image conv net (frame restoration).

It gives the runner, the stages and the tests something real and fast to run; it is not
a face model. The task: restore a frame from a noisy, blurred copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from compress.errors import CompressError
from compress.families.base import Batch, OnePartPipeline, Part, Prunable, Scores, TensorSpec, split_seed
from compress.families.registry import register_family
from compress.families.small import TableFamily, Tupled
from compress.families.task import LossWeights, Metric, Task
from compress.metrics import frame_metrics

CONFIGS: dict[str, dict[str, Any]] = {
    "teacher-32": {"width": 32, "depth": 4, "size": 32},
    "student-32": {"width": 8, "depth": 2, "size": 32},
    "teacher-64": {"width": 48, "depth": 6, "size": 64},
    "student-64": {"width": 16, "depth": 3, "size": 64},
}
DEFAULTS = {"teacher": "teacher-32", "student": "student-32"}


class RestorationWeights(LossWeights):
    output_l1: float = 1.0
    ground_truth: float = 0.0


TASK = Task(
    description="restore a frame from a noisy, blurred copy",
    flow="on_device",
    metrics=(
        Metric("psnr", "dB", True, "PSNR of the restored frame", default_max_drop=0.3),
        Metric("l1", "", False, "mean absolute error, pixels in [0, 1]"),
        Metric("ssim", "", True, "SSIM of the restored frame"),
    ),
    loss=RestorationWeights,
    teacher_loss=LossWeights,  # plain L1 to the clean frame: no weights to set
    baseline_label="output = degraded input",
)


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class RestorationNet(nn.Module):
    """Encoder (stride 2) -> residual body -> decoder; predicts a residual added to the input."""

    def __init__(self, width: int, depth: int, size: int):
        super().__init__()
        self.size = size
        self.config = {"width": width, "depth": depth, "size": size}
        self.stem = ConvBlock(3, width)
        self.down = nn.Sequential(
            nn.Conv2d(width, width * 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU()
        )
        self.body = nn.ModuleList(ConvBlock(width * 2, width * 2) for _ in range(depth))
        self.up = ConvBlock(width * 2, width)
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        y = self.down(x)
        for block in self.body:
            y = y + block(y)
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        return (image + self.head(self.up(y) + x)).clamp(0, 1)


class NoisyFrames(Dataset):
    """Smooth random frames (upsampled low-res noise) and their degraded copies; deterministic by seed."""

    def __init__(self, size: int, seed: int, samples: int):
        self.size, self.seed, self.samples = size, seed, samples

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        low = torch.rand(1, 3, 4, 4, generator=g)
        clean = F.interpolate(low, size=(self.size, self.size), mode="bicubic", align_corners=False).clamp(0, 1)[0]
        noisy = (F.avg_pool2d(clean[None], 3, 1, 1)[0] + 0.05 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
        return {"input": noisy, "target": clean}


@register_family
class GenericFamily(TableFamily):
    name = "generic"
    description = "small image-to-image conv net (frame restoration) for tests and the smallest demo"
    task = TASK
    default_input_size = (32, 32)
    checkpoint_layout = "a flat state dict of the restoration net (stem., down., body., up., head.)"
    config_table, default_configs, network = CONFIGS, DEFAULTS, RestorationNet

    def _size(self, model: nn.Module) -> int:
        return model.size  # type: ignore[return-value]

    def parts(self, model: nn.Module) -> list[Part]:
        s = self._size(model)
        return [
            Part(
                name="net",
                role="app",
                cadence="per_frame",
                module=Tupled(model),
                inputs=[TensorSpec("image", (1, 3, s, s), description="degraded frame")],
                outputs=[TensorSpec("output", (1, 3, s, s), description="restored frame")],
            )
        ]

    def prunables(self, model: nn.Module) -> list[Prunable]:
        s = self._size(model)
        return [Prunable("net", model, (torch.rand(1, 3, s, s),), protected=[model.head])]

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"prediction": model(batch["input"])}

    def distill_loss(self, teacher_out, student_out, batch, weights):  # type: ignore[no-untyped-def]
        terms = {"output_l1": F.l1_loss(student_out["prediction"], teacher_out["prediction"])}
        if weights["ground_truth"]:
            terms["ground_truth"] = F.l1_loss(student_out["prediction"], batch["target"])
        loss = sum(weights[k] * v for k, v in terms.items())
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    def teacher_loss(self, model, batch, weights, generator):  # type: ignore[no-untyped-def]
        loss = F.l1_loss(model(batch["input"]), batch["target"])
        return loss, {"l1": float(loss.detach())}

    def score(
        self, outputs: dict[str, torch.Tensor], batch: Batch, reference: dict[str, torch.Tensor] | None = None
    ) -> Scores:
        scores = {"vs_ground_truth": frame_metrics(outputs["prediction"], batch["target"])}
        if reference is not None:
            scores["vs_teacher"] = frame_metrics(outputs["prediction"], reference["prediction"])
        return scores

    def baseline(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"prediction": batch["input"]}  # the degraded frame, unrestored

    def pipeline(self, parts):  # type: ignore[no-untyped-def]
        return OnePartPipeline(parts["net"], "image")

    def dataset(self, source: str, split: str, size: tuple[int, int], seed: int, samples: int) -> Dataset:
        if source != "synthetic":
            raise CompressError(f"generic family: data {source!r}: only 'synthetic' is supported")
        return NoisyFrames(size[0], split_seed(seed, split), samples)

    def calibration_inputs(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]
    ) -> Iterator[dict[str, tuple[torch.Tensor, ...]]]:
        for b in batches:
            for i in range(b["input"].shape[0]):
                yield {"net": (b["input"][i : i + 1],)}

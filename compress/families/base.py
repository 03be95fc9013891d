"""The one abstraction every stage goes through: a model family.

A family knows its networks (what gets trained, pruned and saved) and its deployable
parts (what gets exported, quantized, profiled and bundled). Stages never import a model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal

import torch
from torch import nn

Role = Literal["sender", "receiver"]
Cadence = Literal["per_call", "per_frame"]


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a deployable part, as an app developer must feed it."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    value_range: tuple[float, float] | None = (0.0, 1.0)
    normalization: str = "RGB, float in [0, 1]"
    description: str = ""

    def random(self, generator: torch.Generator | None = None) -> torch.Tensor:
        lo, hi = self.value_range or (-1.0, 1.0)
        return lo + (hi - lo) * torch.rand(self.shape, generator=generator)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "value_range": list(self.value_range) if self.value_range else None,
            "normalization": self.normalization,
            "description": self.description,
        }


@dataclass
class Part:
    """A deployable network: one file per format in the bundle.

    `module.forward(*inputs)` takes tensors in `inputs` order and returns a tuple of tensors
    in `outputs` order; it must be export-friendly (static shapes, no torch.inverse,
    no affine_grid). `module` shares its weights with the family model.
    """

    name: str  # e.g. "kp_detector", "generator.per_frame"
    role: Role
    cadence: Cadence
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    description: str = ""

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(spec.random(g) for spec in self.inputs)


@dataclass
class Prunable:
    """A network that structured pruning may shrink, traced through a flat-tensor forward.

    `module` holds the real sub-network(s) (pruned in place); `example_inputs` drive the
    dependency-graph trace; `protected` are sub-modules whose output channels are part of
    an interface (keypoint heads, output convolutions) and must keep their width.
    """

    name: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    protected: list[nn.Module] = field(default_factory=list)
    # Custom ops that DepGraph cannot see through, mapped to torch-pruning pruners.
    customized_pruners: dict[Any, Any] = field(default_factory=dict)


class Family:
    """Base class of a model family; subclasses register with `@register_family`.

    A family "model" is one nn.Module holding every network (e.g. FOMM: kp_detector and
    generator). Configs are plain dicts validated by the family.
    """

    name: str = ""
    description: str = ""
    # Size (H, W) of the frames the family works on, for GFLOPs and data loading.
    default_input_size: tuple[int, int] = (256, 256)

    # -- construction -------------------------------------------------------------------
    def configs(self) -> dict[str, dict[str, Any]]:
        """Named configs (teacher and student), e.g. {"vox-256": {...}}."""
        raise NotImplementedError

    def resolve_config(self, config: str | dict[str, Any] | None, role: str) -> dict[str, Any]:
        """A config name, a dict, or None (the family's default for `role`) -> full dict."""
        raise NotImplementedError

    def build_teacher(self, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def build_student(self, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def teacher_state_dict(self, raw: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
        """Map an official checkpoint layout (already safely loaded) onto build_teacher's keys."""
        return raw

    # -- what stages operate on --------------------------------------------------------
    def parts(self, model: nn.Module) -> list[Part]:
        raise NotImplementedError

    def prunables(self, model: nn.Module) -> list[Prunable]:
        raise NotImplementedError

    # -- training and evaluation -------------------------------------------------------
    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Run the whole model on a training/eval batch (e.g. reconstruct driving from source)."""
        raise NotImplementedError

    def distill_loss(
        self,
        teacher_out: dict[str, torch.Tensor],
        student_out: dict[str, torch.Tensor],
        batch: dict[str, torch.Tensor],
        weights: dict[str, float],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def ground_truth(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The frame that `forward(model, batch)["prediction"]` should reproduce."""
        raise NotImplementedError

    @torch.no_grad()
    def quality(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]], teacher: nn.Module | None = None) -> dict[str, dict[str, float]]:
        """L1/PSNR/SSIM of the model's prediction vs ground truth and (given a teacher) vs the teacher's,
        plus the keypoint distance to the teacher's when the family predicts keypoints."""
        from compress.metrics import frame_metrics, keypoint_distance

        rows: dict[str, list[tuple[int, dict[str, float]]]] = {"vs_ground_truth": [], "vs_teacher": []}
        for batch in batches:
            out = self.forward(model.eval(), batch)
            n = out["prediction"].shape[0]
            rows["vs_ground_truth"].append((n, frame_metrics(out["prediction"], self.ground_truth(batch))))
            if teacher is not None:
                ref = self.forward(teacher.eval(), batch)
                row = frame_metrics(out["prediction"], ref["prediction"])
                if "kp_driving_value" in out and "kp_driving_value" in ref:
                    row["keypoint_distance"] = float(keypoint_distance(out["kp_driving_value"], ref["kp_driving_value"]))
                rows["vs_teacher"].append((n, row))
        # frame-weighted: evaluation protocols yield batches of different sizes
        return {k: {m: sum(n * r[m] for n, r in v) / sum(n for n, _ in v) for m in v[0][1]} for k, v in rows.items() if v}

    def baseline(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The trivial prediction a model must beat (FOMM: output = source frame)."""
        raise NotImplementedError

    def eval_batches(self, source: str, size: tuple[int, int], seed: int, videos: int) -> Iterable[dict[str, torch.Tensor]]:
        """Held-out batches for `compress eval` under the family's evaluation protocol."""
        from compress.batches import iterate_batches

        return iterate_batches(self.dataset(source, "test", size, seed, videos * 8), 8)

    def onnx_model(self, parts: dict[str, Callable[..., tuple[torch.Tensor, ...]]]) -> Any:
        """An object that `forward` accepts in place of a torch model, backed by exported parts
        (callables taking and returning tensors in the parts' I/O order)."""
        raise NotImplementedError

    def model_input_size(self, model: Any) -> tuple[int, int]:
        """(H, W) a torch model or an `onnx_model` takes."""
        return getattr(model, "input_size", None) or tuple(self.parts(model)[0].inputs[0].shape[-2:])  # type: ignore[return-value]

    def evaluate(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Quality vs ground truth (l1, psnr, ssim)."""
        return self.quality(model, batches)["vs_ground_truth"]

    def input_size(self, config: dict[str, Any]) -> tuple[int, int]:
        """(H, W) of the frames a model built from `config` takes."""
        return self.default_input_size

    def dataset(self, source: str, split: str, size: tuple[int, int], seed: int, samples: int) -> Any:
        """A torch Dataset of `samples` items (dicts of tensors) of `split` from `source` ("synthetic" or a path)."""
        raise NotImplementedError

    def calibration_inputs(self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, tuple[torch.Tensor, ...]]]:
        """For each batch, the inputs of every part: {part name: tuple of tensors}."""
        raise NotImplementedError

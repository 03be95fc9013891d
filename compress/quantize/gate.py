"""The accuracy gate of int8 vs fp32, and the layer-by-layer fallback that makes a model pass it.

Gates, from the most to the least faithful:

* `PipelineGate`, the family's quality drop: PSNR (dB) of the family's whole pipeline
  (`family.forward` on `family.onnx_model(parts)`, as `compress eval` runs it) vs ground truth,
  fp32 parts minus the same with one part int8; must stay <= `max_psnr_drop_db`;
* `OutputGate` on the part alone (families without `onnx_model`, or the bare API):
  - a part that produces the final frame, with its ground truth: PSNR drop of its output,
    mean PSNR(fp32, truth) - mean PSNR(int8, truth) <= `max_psnr_drop_db`;
  - an intermediate output (keypoints, features) has no ground truth of its own: its
    SQNR (dB) = 10 log10(sum fp32^2 / sum (int8 - fp32)^2) must stay >= `min_sqnr_db`.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch

from compress.errors import CompressError
from compress.families.base import Family
from compress.metrics import psnr

Feeds = dict[str, np.ndarray]


@dataclass
class EvalSet:
    """Inputs of one part and, when the part produces the final frame, the ground truth of its first output."""

    inputs: list[Feeds]
    targets: list[np.ndarray] | None = None
    peak: float = 1.0  # PSNR peak: the width of the output's value range

    def __post_init__(self) -> None:
        if not self.inputs:
            raise CompressError("quantize: the eval set is empty; raise stages.quantize.eval_batches")
        if self.targets is not None and len(self.targets) != len(self.inputs):
            raise CompressError(f"quantize: {len(self.targets)} ground-truth frames for {len(self.inputs)} eval inputs")


def sqnr_db(reference: list[np.ndarray], noisy: list[np.ndarray]) -> float:
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    noise = sum(float(np.sum((n.astype(np.float64) - r) ** 2)) for r, n in zip(reference, noisy))
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-30) / noise)


def first_outputs(model: onnx.ModelProto | Path, inputs: list[Feeds]) -> list[np.ndarray]:
    """The first output of `model` (run with onnxruntime on CPU) for each input."""
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    name = session.get_outputs()[0].name
    return [session.run([name], feeds)[0] for feeds in inputs]


class QualityGate:
    """A bound an int8 model must meet vs its fp32 original: `passes(measure(model))`."""

    metric: str = "psnr_drop_db"
    bound: float = 0.0

    def measure(self, model: onnx.ModelProto | Path) -> float:
        raise NotImplementedError

    def passes(self, value: float) -> bool:
        return value <= self.bound if self.metric == "psnr_drop_db" else value >= self.bound

    def badness(self, value: float) -> float:
        """Larger is worse, whichever the metric."""
        return value if self.metric == "psnr_drop_db" else -value

    def describe(self) -> dict[str, Any]:
        rule = "<=" if self.metric == "psnr_drop_db" else ">="
        return {"metric": self.metric, "rule": f"{self.metric} {rule} {self.bound}", "bound": self.bound}


class OutputGate(QualityGate):
    """The part's own first output on an eval set: PSNR drop vs ground truth, or SQNR vs fp32 without one."""

    def __init__(self, fp32: onnx.ModelProto | Path, evaluation: EvalSet, max_psnr_drop_db: float, min_sqnr_db: float):
        self.evaluation = evaluation
        self.reference = first_outputs(fp32, evaluation.inputs)
        if evaluation.targets is not None:
            self.metric, self.bound = "psnr_drop_db", max_psnr_drop_db
            self.fp32_psnr = self._mean_psnr(self.reference)
        else:
            self.metric, self.bound = "sqnr_db", min_sqnr_db
            self.fp32_psnr = None

    def _mean_psnr(self, outputs: list[np.ndarray]) -> float:
        assert self.evaluation.targets is not None
        per_sample = [psnr(torch.from_numpy(o), torch.from_numpy(t), self.evaluation.peak) for o, t in zip(outputs, self.evaluation.targets)]
        return float(np.mean(per_sample))

    def measure(self, model: onnx.ModelProto | Path) -> float:
        outputs = first_outputs(model, self.evaluation.inputs)
        if self.fp32_psnr is not None:
            return self.fp32_psnr - self._mean_psnr(outputs)
        return sqnr_db(self.reference, outputs)

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "basis": "part output", "samples": len(self.evaluation.inputs)}
        return out if self.fp32_psnr is None else {**out, "fp32_psnr_db": self.fp32_psnr}


def pipeline_psnr(family: Family, parts: dict[str, Any], batches: list[dict[str, torch.Tensor]]) -> float:
    """Mean PSNR vs ground truth of the family's pipeline built from `parts` (callables as compress.evaluate.OnnxPart)."""
    from compress.evaluate import evaluate

    return evaluate(family, family.onnx_model(parts), batches)["model"]["psnr"]


class PipelineGate(QualityGate):
    """The family's quality drop with one part int8 and the others fp32, through the whole pipeline."""

    def __init__(self, family: Family, fp32_parts: dict[str, Path], part: str, batches: list[dict[str, torch.Tensor]], max_psnr_drop_db: float):
        from compress.evaluate import OnnxPart

        self.family, self.part, self.batches, self.bound = family, part, batches, max_psnr_drop_db
        self.fp32 = {name: OnnxPart(path) for name, path in fp32_parts.items()}
        self.fp32_psnr = pipeline_psnr(family, self.fp32, batches)

    def measure(self, model: onnx.ModelProto | Path) -> float:
        if isinstance(model, Path):
            return self._drop(model)
        with tempfile.TemporaryDirectory(prefix="quantize-gate-") as tmp:
            path = Path(tmp) / "candidate.onnx"
            onnx.save(model, str(path))
            return self._drop(path)

    def _drop(self, path: Path) -> float:
        from compress.evaluate import OnnxPart

        return self.fp32_psnr - pipeline_psnr(self.family, {**self.fp32, self.part: OnnxPart(path)}, self.batches)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "basis": f"family pipeline: {self.part} int8, the other parts fp32, vs ground truth",
                "samples": len(self.batches), "fp32_psnr_db": self.fp32_psnr}


@dataclass
class Fallback:
    """Which nodes went back to float, in order, and the gate metric after each."""

    method: str
    sensitivity: dict[str, float]  # node -> gate metric with only that node int8, worst first
    excluded: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    passed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "float_nodes": self.excluded, "metric_after_each": self.values, "passed": self.passed, "sensitivity": self.sensitivity}


# Building a model with only one node quantized costs the same as building one with all but
# that node, and it isolates the node's own error from the noise of the others.
SENSITIVITY_METHOD = "only-this-node: the gate metric with only this node int8, everything else float"


def sensitivity_fallback(
    build: Callable[[Collection[str]], onnx.ModelProto],
    candidates: Sequence[str],
    gate: QualityGate,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[onnx.ModelProto, Fallback]:
    """Return the most sensitive nodes to float, one at a time, until `gate` passes.

    `build(exclude)` quantizes the model with the nodes in `exclude` left in float.
    Sensitivity of a node = the gate metric when only that node is quantized.
    """
    if not candidates:
        raise CompressError("quantize: the gate failed but the int8 model has no quantized node to return to float")
    measured = {node: gate.measure(build([c for c in candidates if c != node])) for node in candidates}
    worst_first = sorted(candidates, key=lambda n: gate.badness(measured[n]), reverse=True)
    fallback = Fallback(SENSITIVITY_METHOD, {n: measured[n] for n in worst_first})
    for node in worst_first:
        fallback.excluded.append(node)
        model = build(fallback.excluded)
        value = gate.measure(model)
        fallback.values.append(value)
        log(f"{node} back to float: {gate.metric} {value:.3f}")
        if gate.passes(value):
            fallback.passed = True
            break
    return model, fallback

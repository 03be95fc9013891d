"""The accuracy gate of int8 vs fp32, and the layer-by-layer fallback that makes a model pass it.

Gates, from the most to the least faithful:

* `PipelineGate`, the task's quality drop: the family's primary metric (its task's first) of the
  whole pipeline (`family.forward` on `family.pipeline(parts)`, as `compress eval` runs it) vs
  ground truth, with every part fp32 and then with one part int8; the drop, in the metric's
  unit and direction, must stay <= `max_quality_drop`;
* `OutputGate` on the part alone (a part the pipeline cannot run, or the bare API): its first
  output's SQNR (dB) = 10 log10(sum fp32^2 / sum (int8 - fp32)^2) must stay >= `min_sqnr_db`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from compress.errors import CompressError
from compress.families.base import Family

Feeds = dict[str, np.ndarray]
# Quantizes the model with the named nodes left in float.
Builder = Callable[[Collection[str]], onnx.ModelProto]


@dataclass
class EvalSet:
    """Inputs of one part, on which its int8 output is compared with its fp32 output."""

    inputs: list[Feeds]

    def __post_init__(self) -> None:
        if not self.inputs:
            raise CompressError("quantize: the eval set is empty; raise stages.quantize.eval_batches")


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

    metric: str = ""
    bound: float = 0.0
    lower_is_better: bool = True  # a drop must stay under its bound, an SQNR over it

    def measure(self, model: onnx.ModelProto | Path) -> float:
        raise NotImplementedError

    def passes(self, value: float) -> bool:
        return value <= self.bound if self.lower_is_better else value >= self.bound

    def badness(self, value: float) -> float:
        """Larger is worse, whichever the metric."""
        return value if self.lower_is_better else -value

    def describe(self) -> dict[str, Any]:
        rule = "<=" if self.lower_is_better else ">="
        return {"metric": self.metric, "rule": f"{self.metric} {rule} {self.bound}", "bound": self.bound}


class OutputGate(QualityGate):
    """SQNR of the part's own first output, int8 vs fp32, on an eval set."""

    lower_is_better = False

    def __init__(self, fp32: onnx.ModelProto | Path, evaluation: EvalSet, min_sqnr_db: float):
        self.evaluation = evaluation
        self.reference = first_outputs(fp32, evaluation.inputs)
        self.metric, self.bound = "sqnr_db", min_sqnr_db

    def measure(self, model: onnx.ModelProto | Path) -> float:
        return sqnr_db(self.reference, first_outputs(model, self.evaluation.inputs))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "basis": "part output: SQNR of int8 vs fp32",
            "samples": len(self.evaluation.inputs),
        }


def pipeline_quality(family: Family, parts: dict[str, Any], batches: list[dict[str, torch.Tensor]]) -> float:
    """The primary metric vs ground truth of the family's pipeline built from `parts`
    (callables as compress.evaluate.OnnxPart).
    """
    return family.quality(family.pipeline(parts), batches)["vs_ground_truth"][family.task.primary.name]


class PipelineGate(QualityGate):
    """The task's quality drop with one part int8 and the others fp32, through the whole pipeline."""

    def __init__(
        self,
        family: Family,
        fp32_parts: dict[str, Path],
        part: str,
        batches: list[dict[str, torch.Tensor]],
        max_drop: float,
    ):
        from compress.evaluate import OnnxPart

        self.family, self.part, self.batches, self.bound = family, part, batches, max_drop
        self.primary = family.task.primary
        self.metric = f"{self.primary.name}_drop"
        self.fp32 = {name: OnnxPart(path) for name, path in fp32_parts.items()}
        self.fp32_value = pipeline_quality(family, self.fp32, batches)

    def measure(self, model: onnx.ModelProto | Path) -> float:
        if isinstance(model, Path):
            return self._drop(model)
        with tempfile.TemporaryDirectory(prefix="quantize-gate-") as tmp:
            path = Path(tmp) / "candidate.onnx"
            onnx.save(model, str(path))
            return self._drop(path)

    def _drop(self, path: Path) -> float:
        from compress.evaluate import OnnxPart

        return self.primary.drop(
            self.fp32_value, pipeline_quality(self.family, {**self.fp32, self.part: OnnxPart(path)}, self.batches)
        )

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "basis": f"family pipeline: {self.part} int8, the other parts fp32, vs ground truth",
            "samples": len(self.batches),
            "unit": self.primary.unit,
            f"fp32_{self.primary.name}": self.fp32_value,
        }


@dataclass
class Fallback:
    """Which nodes went back to float, in order, and the gate metric after each."""

    method: str
    sensitivity: dict[str, float]  # node -> gate metric with only that node int8, worst first
    excluded: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    passed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "float_nodes": self.excluded,
            "metric_after_each": self.values,
            "passed": self.passed,
            "sensitivity": self.sensitivity,
        }


# Building a model with only one node quantized costs the same as building one with all but
# that node, and it isolates the node's own error from the noise of the others.
SENSITIVITY_METHOD = "only-this-node: the gate metric with only this node int8, everything else float"


def sensitivity_fallback(
    build: Builder,
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

"""8-bit Core ML with coremltools.optimize: int8 weights (iOS16, runs on A11) or W8A8 (iOS17+).

    report = quantize_coreml("net.mlpackage", "net.int8.mlpackage", mode="auto", calibration=feeds)

8-bit weights are `constexpr_affine_dequantize` constants that the device expands on load, so
compute keeps the exported precision (fp16 on the Neural Engine). W8A8 adds quantize/dequantize
pairs on activations, calibrated by running the model: coremltools predicts only on macOS, so
elsewhere W8A8 falls back to 8-bit weights and the report says so.
"""

from __future__ import annotations

import os
import platform
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from compress.checkpoints import atomic_path
from compress.errors import CompressError

CoreMLMode = Literal["auto", "weights", "w8a8"]
# Core ML specification version -> the first iOS that runs it.
SPEC_IOS = {7: "iOS16", 8: "iOS17", 9: "iOS18"}
W8A8_MIN_SPEC = 8
FLOAT_TYPES = ("FLOAT16", "FLOAT32")
WEIGHT_OPS = ("conv", "conv_transpose", "linear")  # the MIL ops whose weights are quantized


@dataclass
class CoreMLQuantReport:
    path: Path
    mode: str  # "int8-weights" or "w8a8": what the file holds
    requested: str
    deployment_target: str
    fp_bytes: int
    fp_weights: str  # float type of the input's weights: FLOAT16 or FLOAT32
    int8_bytes: int
    weights: dict[str, int]  # element type -> weight elements in the output program
    notes: list[str] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        """Input bytes / output bytes."""
        return self.fp_bytes / self.int8_bytes

    @property
    def int8_weight_fraction(self) -> float:
        total = sum(self.weights.get(t, 0) for t in ("INT8", *FLOAT_TYPES))
        return self.weights.get("INT8", 0) / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "requested": self.requested,
            "deployment_target": self.deployment_target,
            "fp_bytes": self.fp_bytes,
            "fp_weights": self.fp_weights,
            "int8_bytes": self.int8_bytes,
            "fp_over_int8_size": self.size_ratio,
            "weight_elements": self.weights,
            "int8_weight_fraction": self.int8_weight_fraction,
            "notes": self.notes,
        }


def package_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def weight_elements(spec: Any) -> dict[str, int]:
    """Elements of every constant tensor (weights, scales, zero points) of an ML program, by element type."""
    from coremltools.proto import MIL_pb2

    counts: Counter[str] = Counter()

    def walk(block: Any) -> None:
        for op in block.operations:
            if op.type == "const" or op.type.startswith("constexpr_"):
                for value in op.attributes.values():
                    if value.type.WhichOneof("type") == "tensorType":
                        tensor = value.type.tensorType
                        counts[MIL_pb2.DataType.Name(tensor.dataType)] += int(
                            np.prod([d.constant.size for d in tensor.dimensions])
                        )
            for inner in op.blocks:
                walk(inner)

    for function in spec.mlProgram.functions.values():
        walk(function.block_specializations[function.opset])
    counts.pop("STRING", None)
    return dict(sorted(counts.items()))


def can_predict() -> bool:
    """coremltools runs models only on macOS (its native runtime is not built elsewhere)."""
    return platform.system() == "Darwin"


def resolve_mode(mode: str, spec_version: int, where: str = "stages.quantize.coreml_mode") -> tuple[str, list[str]]:
    """("weights" or "w8a8", notes) for a requested mode and the model's specification version."""
    target = SPEC_IOS.get(spec_version, f"specification {spec_version}")
    if mode == "weights":
        return "weights", []
    if mode not in ("auto", "w8a8"):
        raise CompressError(f"{where}: unknown mode {mode!r}; use auto, weights or w8a8")
    if spec_version < W8A8_MIN_SPEC:
        if mode == "w8a8":
            raise CompressError(
                f"{where}: w8a8 needs iOS17 or later, the exported model targets {target}: "
                "set stages.export.minimum_deployment_target: iOS17, or coreml_mode: weights"
            )
        return "weights", [f"{target} target: 8-bit weights (W8A8 needs iOS17)"]
    if not can_predict():
        return "weights", [
            f"W8A8 requested ({mode}) for {target}, but activation calibration runs the model and coremltools "
            f"predicts only on macOS (this host: {platform.system()}): shipped 8-bit weights only"
        ]
    return "w8a8", []


def quantize_coreml(
    mlpackage_path: str | Path,
    out_path: str | Path,
    mode: CoreMLMode = "auto",
    calibration: Iterable[dict[str, np.ndarray]] | None = None,
) -> CoreMLQuantReport:
    """Write an 8-bit copy of a float ML program: int8 weights, plus int8 activations for W8A8."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto

    src, out = Path(mlpackage_path), Path(out_path)
    if not src.exists():
        raise CompressError(f"{src}: Core ML model not found")
    model = ct.models.MLModel(str(src), skip_model_load=True)
    spec = model.get_spec()
    if spec.WhichOneof("Type") != "mlProgram":
        raise CompressError(
            f"{src}: 8-bit quantization needs an ML program (.mlpackage); export with convert_to=mlprogram"
        )
    resolved, notes = resolve_mode(mode, spec.specificationVersion)
    if resolved == "w8a8":
        samples = list(calibration or [])
        if not samples:
            raise CompressError(f"{src}: W8A8 needs calibration samples; raise stages.quantize.calibration_samples")
        activations = cto.OptimizationConfig(
            global_config=cto.experimental.OpActivationLinearQuantizerConfig(mode="linear_symmetric")
        )
        model = cto.experimental.linear_quantize_activations(ct.models.MLModel(str(src)), activations, samples)
    # Every conv / linear weight, however small: coremltools skips tensors under 2048 elements
    # by default, which in a mobile net is each depthwise kernel. Other constants (coordinate
    # grids, say) stay float: nothing on Linux can check what 8 bits would do to them.
    int8 = cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=0
    )
    weights = cto.OptimizationConfig(op_type_configs={op: int8 for op in WEIGHT_OPS})
    model = cto.linear_quantize_weights(model, weights)
    save_mlpackage(model, out)
    fp_weights = max(FLOAT_TYPES, key=lambda t: weight_elements(spec).get(t, 0))
    return CoreMLQuantReport(
        out,
        "w8a8" if resolved == "w8a8" else "int8-weights",
        mode,
        SPEC_IOS.get(spec.specificationVersion, str(spec.specificationVersion)),
        package_bytes(src),
        fp_weights,
        package_bytes(out),
        weight_elements(model.get_spec()),
        notes,
    )


def save_mlpackage(model: Any, path: Path) -> None:
    """Save atomically; coremltools insists on the .mlpackage suffix, so stage under one first."""
    with atomic_path(path) as tmp:
        staged = tmp.with_name(tmp.name + ".mlpackage")
        try:
            model.save(str(staged))
            os.replace(staged, tmp)
        finally:
            if staged.exists():
                import shutil

                shutil.rmtree(staged)

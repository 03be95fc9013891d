"""int8 deployables: one verb per format, config objects, a report (in the spirit of torchao).

    from compress.quantize import quantize_onnx, quantize_coreml, OnnxQuantConfig, EvalSet

    report = quantize_onnx(
        "net.onnx", "net.int8.onnx", calibration_feeds, OnnxQuantConfig(), EvalSet(eval_feeds, targets)
    )
    report.size_ratio, report.gate, report.fallback, report.mixed_precision, report.latency.ratio

    coreml = quantize_coreml("net.mlpackage", "net.int8.mlpackage", mode="auto")

`quantize_stage` is the recipe stage that runs both on every exported part.
"""

from compress.quantize.coreml import CoreMLQuantReport, quantize_coreml
from compress.quantize.gate import EvalSet, Fallback, OutputGate, PipelineGate, QualityGate, sensitivity_fallback
from compress.quantize.latency import Latency, MixedPrecision, host_timer, latency_fallback
from compress.quantize.onnx import OnnxQuantConfig, QuantReport, quantize_onnx
from compress.quantize.stage import quantize_stage
from compress.quantize.targets import Int8Types, int8_types

__all__ = [
    "CoreMLQuantReport",
    "EvalSet",
    "Fallback",
    "Int8Types",
    "Latency",
    "MixedPrecision",
    "OnnxQuantConfig",
    "OutputGate",
    "PipelineGate",
    "QualityGate",
    "QuantReport",
    "host_timer",
    "int8_types",
    "latency_fallback",
    "quantize_coreml",
    "quantize_onnx",
    "quantize_stage",
    "sensitivity_fallback",
]

"""Static int8 quantization of ONNX models into QDQ form: onnxruntime or NNCF, one gate, one report.

    report = quantize_onnx("net.onnx", "net.int8.onnx", calibration, OnnxQuantConfig(), evaluation)

Calibration is a list of feeds ({input name: array}); onnxruntime calibrates once and caches
the tensor ranges, so the rebuilds of the sensitivity fallback (nodes back to float for
accuracy) and of the latency fallback (regions back to float for speed, `latency.py`) cost only
the graph rewrite.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import onnx
from onnx import numpy_helper

from compress.checkpoints import atomic_path
from compress.errors import CompressError
from compress.quantize.gate import Builder, EvalSet, Fallback, Feeds, OutputGate, QualityGate, sensitivity_fallback
from compress.quantize.latency import Latency, MixedPrecision, Timer, host_timer, latency_fallback, time_files
from compress.quantize.targets import Int8Types, host_has_int8_dot_product, host_target, int8_types

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Activations that int8 kernels fuse into the node before them (Conv+Relu -> QLinearConv).
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")
# Nodes that compute nothing worth listing as "left in float".
NOT_COMPUTE = ("Constant", "Identity", "Shape", "Cast")
# How many leading inputs an int8 kernel needs quantized (weights included); None: all of them.
QUANTIZED_INPUTS = {
    "Conv": 2,
    "ConvTranspose": 2,
    "Gemm": 2,
    "MatMul": 2,
    "Add": None,
    "Mul": None,
    "Sub": None,
    "Concat": None,
}


@dataclass
class OnnxQuantConfig:
    engine: Literal["ort", "nncf"] = "ort"
    target: str = "auto"  # auto, x86, x86-vnni, arm
    per_channel: bool = True
    min_sqnr_db: float = 30.0  # gate of a part on its own output (no pipeline to judge it through)
    fallback: bool = True
    # Keep float the regions whose int8 is slower on this host (latency-aware mixed precision); needs latency_runs.
    latency_fallback: bool = True
    latency_runs: int = 30  # 0: do not measure
    latency_warmup: int = 5


@dataclass
class QuantReport:
    path: Path
    engine: str
    types: Int8Types
    fp32_bytes: int
    int8_bytes: int
    int8_nodes: list[str]
    float_ops: dict[str, int]  # op type -> nodes left in float
    constants: dict[str, Any] = field(default_factory=dict)  # what the int8 file's bytes are
    gate: dict[str, Any] | None = None
    fallback: Fallback | None = None
    mixed_precision: MixedPrecision | None = None
    latency: Latency | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def size_ratio(self) -> float:
        """fp32 bytes / int8 bytes."""
        return self.fp32_bytes / self.int8_bytes

    @property
    def passed(self) -> bool:
        return self.gate is None or self.gate["passed"]

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "types": self.types.to_json(),
            "fp32_bytes": self.fp32_bytes,
            "int8_bytes": self.int8_bytes,
            "fp32_over_int8_size": self.size_ratio,
            "int8_nodes": len(self.int8_nodes),
            "float_ops": self.float_ops,
            "int8_file": self.constants,
            "gate": self.gate,
            "fallback": self.fallback.to_json() if self.fallback else None,
            "mixed_precision": self.mixed_precision.to_json() if self.mixed_precision else None,
            "latency": self.latency.to_json() if self.latency else None,
            "notes": self.notes,
        }


# -- what a QDQ graph runs in int8 -----------------------------------------------------------
def _int8_op_types() -> set[str]:
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(QDQRegistry) | set(QLinearOpsRegistry)


def int8_and_float_nodes(model: onnx.ModelProto) -> tuple[list[str], list[onnx.NodeProto]]:
    """(names of the nodes that run in int8, the compute nodes left in float) of a QDQ model.

    A node runs in int8 when runtimes have int8 kernels for its op type and its data inputs
    (weights included) come from DequantizeLinear nodes, or when it is an activation fused
    into such a node. Anything else, GridSample for instance, computes in float between a
    DequantizeLinear and a QuantizeLinear even when its neighbours are quantized.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    constant = {init.name for init in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output
    }
    kernels = _int8_op_types()
    int8: list[str] = []
    floats: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.op_type in QDQ_OPS or node.op_type in NOT_COMPUTE or all(i in constant or not i for i in node.input):
            continue
        data = [i for i in node.input[: QUANTIZED_INPUTS.get(node.op_type, 1)] if i]
        from_dq = all(i in producer and producer[i].op_type == "DequantizeLinear" for i in data)
        source = producer.get(node.input[0]) if node.input else None
        fused = node.op_type in FUSED_ACTIVATIONS and source is not None and source.name in int8
        if node.op_type in kernels and (from_dq or fused):
            if not fused:
                int8.append(node.name)
        else:
            floats.append(node)
    return int8, floats


def constant_bytes(model: onnx.ModelProto, largest: int = 3) -> dict[str, Any]:
    """Bytes of the file's constants by element type, and its largest float constants.

    Weights shrink 4x; float constants that are not weights (coordinate grids, say) do not,
    so they explain a file that is less than 4x smaller.
    """
    by_type: Counter[str] = Counter()
    floats = []
    for init in model.graph.initializer:
        size = len(init.raw_data) or len(init.SerializeToString())
        by_type[onnx.TensorProto.DataType.Name(init.data_type)] += size
        if init.data_type == onnx.TensorProto.FLOAT:
            floats.append((size, init.name))
    floats.sort(reverse=True)
    return {
        "bytes_by_type": dict(sorted(by_type.items())),
        "largest_float": {name: size for size, name in floats[:largest]},
    }


def drop_zero_points(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the all-zero zero points of its constant DequantizeLinear inputs.

    Symmetric weights and int32 biases store one zero point per output channel, all zeros,
    which is DequantizeLinear's default: 5 bytes per channel of a file where a 3x3 depthwise
    channel has 9 bytes of weights. onnxruntime fuses the same int8 kernels without them.
    Activation Q/DQ pairs keep theirs: a QuantizeLinear without one outputs uint8.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    constants = {init.name: init for init in model.graph.initializer}
    dropped = set()
    for node in model.graph.node:
        if (
            node.op_type == "DequantizeLinear"
            and len(node.input) == 3
            and node.input[0] in constants
            and node.input[2] in constants
        ):
            if not numpy_helper.to_array(constants[node.input[2]]).any():
                dropped.add(node.input[2])
                del node.input[2]
    used = {name for node in model.graph.node for name in node.input}
    kept = [init for init in model.graph.initializer if init.name not in dropped or init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return model


def compact_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with short names (t0, t1, ...) for its internal tensors and for the Q/DQ nodes, and no value_info.

    QDQ graphs repeat long module-scope names in every tensor and Q/DQ node they add: in a
    small model that is a large share of the file. Graph inputs and outputs and the names of
    compute nodes (what profiles and the fallback list refer to) are kept.
    """
    if any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute
    ):
        return model  # subgraphs would reference the old names
    model = onnx.ModelProto.FromString(model.SerializeToString())
    keep = {v.name for v in (*model.graph.input, *model.graph.output)}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        return name if not name or name in keep else short.setdefault(name, f"t{len(short)}")

    for init in model.graph.initializer:
        init.name = rename(init.name)
    for i, node in enumerate(model.graph.node):
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        if node.op_type in QDQ_OPS:
            node.name = f"q{i}"
    del model.graph.value_info[:]
    return model


# -- engines ---------------------------------------------------------------------------------
def _ort_builder(
    fp32_path: Path, calibration: list[Feeds], types: Int8Types, per_channel: bool, workdir: Path
) -> Builder:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._samples = iter(calibration)

        def get_next(self) -> Feeds | None:
            return next(self._samples, None)

    prepared = workdir / "prepared.onnx"
    # Shape inference and constant folding first, as onnxruntime recommends: unknown shapes stay unquantized.
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    cache = workdir / "calibration.json"
    output = workdir / "int8.onnx"

    def build(exclude: Collection[str]) -> onnx.ModelProto:
        quantize_static(
            str(prepared),
            str(output),
            None if cache.exists() else Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=types.reduce_range,
            activation_type=qtype[types.activation],
            weight_type=qtype[types.weight],
            nodes_to_exclude=sorted(exclude),
            calibration_cache_path=str(cache),
        )
        return onnx.load(str(output))

    return build


def _trained_builder(model: onnx.ModelProto) -> Builder:
    """The builder of a model quantized by training: it is what it is, whatever the exclusions."""
    return lambda exclude: model


def _nncf_builder(fp32_path: Path, calibration: list[Feeds], types: Int8Types, per_channel: bool) -> Builder:
    import nncf
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
        QuantizationParameters,
    )

    model = onnx.load(str(fp32_path))
    # NNCF's overflow fix is its reduce_range: 7-bit weights where VPMADDUBSW could saturate.
    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE if types.reduce_range else OverflowFix.DISABLE,
        weights_quantization_params=QuantizationParameters(per_channel=per_channel),
    )

    def build(exclude: Collection[str]) -> onnx.ModelProto:
        return nncf.quantize(
            model,
            nncf.Dataset(calibration),
            subset_size=len(calibration),
            target_device=nncf.TargetDevice.CPU,
            ignored_scope=nncf.IgnoredScope(names=sorted(exclude), validate=False),
            advanced_parameters=advanced,
        )

    return build


def _engine_types(engine: str, target: str) -> Int8Types:
    types = int8_types(target)
    if engine == "nncf":  # NNCF picks each activation's signedness itself
        return Int8Types(
            types.target,
            "uint8 or int8 (nncf: by sign of the calibrated range)",
            "int8",
            types.reduce_range,
            types.reason + ("; nncf overflow_fix=enable" if types.reduce_range else "; nncf overflow_fix=disable"),
        )
    return types


# -- the verb --------------------------------------------------------------------------------
def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration: Iterable[Feeds],
    config: OnnxQuantConfig | None = None,
    evaluation: EvalSet | QualityGate | None = None,
    log: Callable[[str], None] = lambda msg: None,
    trained: onnx.ModelProto | None = None,
    timer: Timer | None = None,
) -> QuantReport:
    """Quantize an fp32 ONNX model to int8 QDQ, gate it, fall back layer by layer, keep float the regions
    whose int8 is slower on this host, time it.

    `evaluation`: an eval set (gated by `OutputGate` with the config's bounds), a ready gate
    (e.g. `PipelineGate`), or None to skip the accuracy gate (the report's gate is None).
    `trained`: an int8 model made by quantization-aware training (`compress.quantize.qat`),
    gated and timed in place of one quantized here; its layers cannot return to float.
    `timer`: how models are timed (default: this host's CPU, `config.latency_runs` interleaved rounds).
    """
    fp32_path, out_path, config = Path(fp32_path), Path(out_path), config or OnnxQuantConfig()
    if not fp32_path.is_file():
        raise CompressError(f"{fp32_path}: fp32 ONNX model not found")
    samples = list(calibration)
    if not samples:
        raise CompressError(f"{fp32_path}: no calibration samples; raise stages.quantize.calibration_samples")
    if config.engine not in ("ort", "nncf"):
        raise CompressError(f"stages.quantize.onnx_engine: unknown engine {config.engine!r}; use ort or nncf")
    types = _engine_types(config.engine, config.target)
    timer = timer or host_timer(config.latency_runs, config.latency_warmup)
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        if trained is not None:
            types = replace(
                _engine_types("nncf", config.target), reduce_range=False, reason="quantization-aware training (nncf)"
            )
            config = replace(config, fallback=False)
            build = _trained_builder(trained)
        elif config.engine == "ort":
            build = _ort_builder(fp32_path, samples, types, config.per_channel, Path(tmp))
        else:
            build = _nncf_builder(fp32_path, samples, types, config.per_channel)
        model = build([])
        gate, record, fallback, mixed, notes = None, None, None, None, []
        if evaluation is not None:
            gate = (
                evaluation
                if isinstance(evaluation, QualityGate)
                else OutputGate(fp32_path, evaluation, config.min_sqnr_db)
            )
            model, record, fallback = _gate(model, build, fp32_path, gate, config, log)
        if config.latency_fallback and config.latency_runs > 0 and (record is None or record["passed"]):
            why_not = _regions_untimed(types, trained is not None)
            if why_not:
                notes.append(why_not)
            else:
                log(f"{fp32_path.name}: timing each region int8 vs float")
                excluded = fallback.excluded if fallback else []
                model, mixed = latency_fallback(
                    model, int8_and_float_nodes(model)[0], build, excluded, timer, gate, log
                )
                if record is not None and mixed.kept_float:
                    record["value"] = mixed.gate_value  # the gate of the file that ships
        model = drop_zero_points(model)
        constants = constant_bytes(model)  # before compact_names, so that it names constants as the export did
        model = compact_names(model)
        with atomic_path(out_path) as staged:
            onnx.save(model, str(staged))
    int8, floats = int8_and_float_nodes(model)
    float_ops = dict(sorted(Counter(n.op_type for n in floats).items()))
    report = QuantReport(
        out_path,
        "nncf-qat" if trained is not None else config.engine,
        types,
        fp32_path.stat().st_size,
        out_path.stat().st_size,
        int8,
        float_ops,
        constants,
        record,
        fallback,
        mixed,
        notes=notes,
    )
    if config.latency_runs > 0:
        report.latency = time_files(
            fp32_path, out_path, timer, config.latency_runs, config.latency_warmup, host_has_int8_dot_product()
        )
        if types.target != host_target():
            report.notes.append(f"latency measured on this host ({host_target()}), not on the {types.target} target")
    return report


def _regions_untimed(types: Int8Types, trained: bool) -> str:
    """Why latency-aware mixed precision cannot run ("" when it can)."""
    if trained:
        return "latency-aware mixed precision not run: a model trained in int8 cannot return regions to float"
    if types.target != host_target():
        return (
            f"latency-aware mixed precision not run: the target is {types.target}, this host {host_target()}, "
            "so this host cannot tell which regions are slower there"
        )
    return ""


def _gate(
    model: onnx.ModelProto,
    build: Builder,
    fp32_path: Path,
    gate: QualityGate,
    config: OnnxQuantConfig,
    log: Callable[[str], None],
) -> tuple[onnx.ModelProto, dict[str, Any], Fallback | None]:
    first = gate.measure(model)
    value, fallback = first, None
    if not gate.passes(first) and config.fallback:
        log(f"{fp32_path.name}: {gate.metric} {first:.3f} misses {gate.bound}: measuring each node's sensitivity")
        model, fallback = sensitivity_fallback(build, int8_and_float_nodes(model)[0], gate, log)
        value = fallback.values[-1]
    record = {**gate.describe(), "value_all_int8": first, "value": value, "passed": gate.passes(value)}
    return model, record, fallback

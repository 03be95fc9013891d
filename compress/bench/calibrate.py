"""Calibrate a device profile: fit the cost model's coefficients to measured or published latencies.

    python -m compress.bench.calibrate iphone8            # from TFLite's published iPhone 8 figures
    python -m compress.bench.calibrate host --threads 1   # measure a set of conv nets here

The fit is non-negative least squares on relative error (each row divided by its latency), so a
562 ms network does not drown a 24 ms one. Feature groups share one coefficient, which is how a
profile with few reference points keeps its free parameters few.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import yaml
from onnx import helper, numpy_helper
from scipy.optimize import nnls

from compress.bench import costmodel, host, zoo
from compress.checkpoints import atomic_path
from compress.errors import CompressError

Columns = list[list[str]]

TFLITE_BENCHMARKS = "https://www.tensorflow.org/lite/performance/benchmarks"
# TensorFlow Lite performance benchmarks page (iOS benchmark app, num_threads 1, iPhone 8),
# models from the TFLite hosted-models list: (zoo network, precision, published mean ms).
IPHONE8_POINTS = [
    ("mobilenet_v1_1.0_224", "fp32", 32.2),
    ("mobilenet_v1_1.0_224", "int8", 24.4),
    ("nasnet_mobile", "fp32", 60.3),
    ("squeezenet_1.0", "fp32", 44.3),
    ("inception_resnet_v2", "fp32", 562.4),
]
# Five points, so four free parameters: dense fp32 conv, dense int8 conv, depthwise conv and
# the other memory-bound work (elementwise, pooling, concat; and GridSample, which no reference
# has). A per-layer overhead in place of the separate depthwise rate fits worse (it comes out 0).
IPHONE8_COLUMNS: Columns = [["conv.gmac"], ["conv_int8.gmac"], ["depthwise.mb"], ["memory.mb", "grid_sample.mb"]]
# The host has as many reference points as we care to measure, so every class gets its own
# terms, fitted in two steps: memory-bound ops and the per-layer overhead on single-op graphs
# (where nothing else runs), then the convs on whole networks less that memory-bound share.
HOST_OP_SPECIFIC = (
    "Sigmoid",
    "Exp",
    "HardSwish",
    "Pow",
    "GlobalAveragePool",
    "Resize",
    "AveragePool",
    "MaxPool",
    "Softmax",
    "ReduceSum",
)
HOST_MEMORY_COLUMNS: Columns = [["memory.mb"], ["memory.mseg"], ["grid_sample.mb"], ["layer"], ["run"]] + [
    [f"op:{t}.mb"] for t in HOST_OP_SPECIFIC
]
HOST_CONV_COLUMNS: Columns = [[f"{c}.{unit}"] for c in ("conv", "depthwise") for unit in ("gmac", "mtap", "mb")]
HOST_CHANNEL_BLOCK = 8  # onnxruntime's NCHWc blocking on AVX2 (16 on AVX-512)


@dataclass
class Fit:
    columns: Columns
    coefficients: dict[str, float]  # feature -> ms per unit
    predicted: list[float]
    measured: list[float]

    @property
    def residuals(self) -> list[float]:
        """Relative errors, predicted / measured - 1."""
        return [p / m - 1 for p, m in zip(self.predicted, self.measured)]

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(np.square(self.residuals))))


def design(features: Sequence[dict[str, float]], columns: Columns) -> np.ndarray:
    return np.array([[sum(f.get(k, 0.0) for k in group) for group in columns] for f in features])


def price(features: Sequence[dict[str, float]], coefficients: dict[str, float]) -> np.ndarray:
    return np.array([sum(coefficients.get(k, 0.0) * v for k, v in f.items()) for f in features])


def fit(
    features: Sequence[dict[str, float]],
    measured_ms: Sequence[float],
    columns: Columns,
    fixed: dict[str, float] | None = None,
) -> Fit:
    """Non-negative coefficients minimising the relative error of sum(coef * feature) vs measured.

    `fixed` coefficients (fitted earlier) are kept: their share is taken off the measurements first.
    """
    fixed = fixed or {}
    x, y = design(features, columns), np.asarray(measured_ms, dtype=float)
    rest = y - price(features, fixed)
    coef, _ = nnls(x / y[:, None], rest / y)
    coefficients = {**fixed, **{k: float(c) for group, c in zip(columns, coef) for k in group}}
    return Fit(columns, coefficients, [float(v) for v in price(features, coefficients)], [float(v) for v in y])


def machine_name() -> str:
    """CPU model and count, for the records of host measurements."""
    model = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{model}, {len(os.sched_getaffinity(0))} CPUs"


def write_profile(path: Path, header: dict[str, Any], fits: dict[int, Fit], extra: dict[int, dict[str, Any]]) -> Path:
    data = dict(header)
    data["calibrations"] = {
        threads: {
            "coefficients": {k: round(v, 6) for k, v in f.coefficients.items()},
            "fit": {
                "method": "nnls on relative error",
                "columns": [" + ".join(g) for g in f.columns],
                "free_parameters": len(f.columns),
                "points": len(f.measured),
                "rms_relative_error": round(f.rms, 4),
            },
            **extra.get(threads, {}),
        }
        for threads, f in fits.items()
    }
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, width=120))
    return path


# -- iPhone 8 from published figures ---------------------------------------------------------
def reference_models(workdir: Path, names: Sequence[str] | None = None) -> dict[str, Path]:
    """Export each zoo reference network (or those named) into `workdir` once: name -> ONNX path."""
    out = {}
    for name in names or zoo.REFERENCES:
        ref = zoo.REFERENCES[name]
        path = workdir / f"{name}.onnx"
        if not path.exists():
            zoo.export_onnx(ref.build(), (torch.zeros(1, 3, ref.resolution, ref.resolution),), path)
        out[name] = path
    return out


def calibrate_iphone8(workdir: Path, out: Path | None = None) -> Path:
    paths = reference_models(workdir)
    feats = [costmodel.totals(costmodel.analyse(paths[name], precision)) for name, precision, _ in IPHONE8_POINTS]
    result = fit(feats, [ms for _, _, ms in IPHONE8_POINTS], IPHONE8_COLUMNS)
    header = {
        "device": "iphone8",
        "description": "Apple iPhone 8 (A11 Bionic), TensorFlow Lite CPU, 1 thread: predicted, not measured",
        "channel_block": 1,
        # No int8 dot product on the A11, and iOS 16 Core ML runs 8-bit-weight models with float compute: the profile
        # stage predicts from the float graph, the quantize stage says int8 ships there for size (docs/latency.md)
        "int8_compute": False,
        "sources": [
            {
                "figures": f"{TFLITE_BENCHMARKS} "
                "(TensorFlow Lite performance benchmarks, iOS benchmark app, num_threads 1, iPhone 8)",
                "models": "TensorFlow Lite hosted models "
                "(Mobilenet_1.0_224 float and quant, NASNet mobile, SqueezeNet, Inception_ResNet_V2)",
            },
        ],
        "notes": [
            "Architectures re-written in compress/bench/zoo.py; the cost model needs only their shapes.",
            "SqueezeNet: the page does not say 1.0 or 1.1. We use 1.0 (0.82 GMACs): 1.1 (0.35 GMACs) could not take "
            "44.3 ms when MobileNetV1 (0.57 GMACs, mostly the same 1x1 convs) takes 32.2 ms on the same CPU.",
            "The quantized MobileNet is priced as the float graph with int8 convs and 1-byte tensors. It is the only "
            "int8 reference, so conv_int8.gmac is whatever makes that one point exact once the memory-bound term "
            "shrinks with 1-byte tensors: trust int8 predictions only for MobileNet-like networks.",
            "GridSample shares the memory-bound coefficient and FOMM's broadcasting keypoint arithmetic is priced by "
            "bytes only: no published reference has them, so FOMM predictions extrapolate.",
            "4 free parameters for 5 points: the residuals below are the honest in-sample error, not a validation.",
        ],
        "references": [
            {
                "network": name,
                "precision": precision,
                "published_ms": ms,
                "predicted_ms": round(pred, 2),
                "residual": f"{(pred / ms - 1) * 100:+.1f}%",
            }
            for (name, precision, ms), pred in zip(IPHONE8_POINTS, result.predicted)
        ],
    }
    return write_profile(out or costmodel.profile_path("iphone8"), header, {1: result}, {})


# -- the host, from measurements -------------------------------------------------------------
def convnet_set(seeds: Sequence[int], workdir: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """Export (or reuse) the varied conv nets of these seeds: (name, ONNX path, spec)."""
    out = []
    for seed in seeds:
        spec = zoo.random_convnet_spec(seed)
        digest = hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()[:8]
        path = workdir / f"{spec.name}-{digest}.onnx"  # a changed generator never reuses a stale export
        if not path.exists():
            zoo.export_onnx(zoo.build_convnet(spec), (torch.zeros(1, 3, spec.resolution, spec.resolution),), path)
        out.append((spec.name, path, spec.to_json()))
    return out


@dataclass
class HostTimes:
    """Each model's latency on this host by two estimators, and how well each repeats.

    Repeatability: |estimate from the first half of the rounds / from the second half - 1|.
    """

    fastest: list[float]  # fastest run over all rounds, ms
    fastest_repeat: list[float]
    median: list[float]  # median over rounds of each round's p50, ms
    median_repeat: list[float]


def host_latencies(
    paths: Sequence[Path], threads: int = 1, rounds: int = 4, warmup: int = 3, runs: int = 20
) -> HostTimes:
    """Measure every model in `rounds` interleaved rounds, so a busy spell hits them all.

    At one thread the runner thread's CPU time is used (onnxruntime computes on the calling
    thread), at real-time priority where allowed. On a shared 2-core machine whole rounds still
    slow down while the other core is busy (shared caches and memory): a median then measures
    the neighbours, the fastest run the network on a quiet machine. Calibration uses the fastest
    run; both are kept so that the choice can be checked.
    """
    if rounds < 2:
        raise CompressError(f"--rounds {rounds}: at least 2, to tell how well the measurement repeats")
    table = []
    for _ in range(rounds):
        results = host.measure(list(paths), threads=threads, warmup=warmup, runs=runs, top=0, priority="realtime")
        table.append([r["cpu_times_ms"] if threads == 1 else r["times_ms"] for r in results])
    values = np.array(table)  # rounds x models x runs
    half = rounds // 2

    def fastest(v: np.ndarray) -> np.ndarray:
        return v.min(axis=(0, 2))

    def median(v: np.ndarray) -> np.ndarray:
        return np.median(np.median(v, axis=2), axis=0)

    def repeat(estimate) -> list[float]:
        return [float(x) for x in np.abs(estimate(values[:half]) / estimate(values[half:]) - 1)]

    return HostTimes(
        [float(x) for x in fastest(values)], repeat(fastest), [float(x) for x in median(values)], repeat(median)
    )


HOST_CALIBRATION_SEEDS = range(0, 40)
MICRO_SHAPES = [(8, 128, 128), (16, 64, 64), (32, 32, 32), (64, 64, 64), (128, 16, 16), (32, 128, 128)]


def _single_op(
    node: onnx.NodeProto, inputs: dict[str, tuple[int, ...]], constants: dict[str, np.ndarray] | None = None
) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        node.op_type,
        [helper.make_tensor_value_info(k, onnx.TensorProto.FLOAT, list(v)) for k, v in inputs.items()],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in (constants or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _micro_ops(c: int, h: int, w: int) -> dict[str, onnx.ModelProto]:
    """One graph per memory-bound op that conv nets, NASNet and FOMM use, on a 1xCxHxW tensor."""
    x = {"x": (1, c, h, w)}
    k = max(1, c // 8)
    node = helper.make_node
    unary = {
        name: _single_op(node(name, ["x"], ["y"]), x) for name in ("Sigmoid", "Exp", "HardSwish", "GlobalAveragePool")
    }
    return {
        **{name.lower(): model for name, model in unary.items()},
        "add": _single_op(node("Add", ["x", "x2"], ["y"]), {**x, "x2": (1, c, h, w)}),
        "mul-per-channel": _single_op(node("Mul", ["x", "s"], ["y"]), x, {"s": np.ones((1, c, 1, 1), np.float32)}),
        "pow": _single_op(node("Pow", ["x", "e"], ["y"]), x, {"e": np.array(2.0, np.float32)}),
        "concat": _single_op(node("Concat", ["x", "x2"], ["y"], axis=1), {**x, "x2": (1, c, h, w)}),
        "resize-x2": _single_op(
            node("Resize", ["x", "", "scales"], ["y"], mode="nearest"),
            x,
            {"scales": np.array([1, 1, 2, 2], np.float32)},
        ),
        "avgpool-3x3": _single_op(node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]), x),
        "maxpool-2x2": _single_op(node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2]), x),
        "softmax-spatial": _single_op(node("Softmax", ["x"], ["y"], axis=-1), {"x": (1, c, h * w)}),
        "reducesum-spatial": _single_op(
            node("ReduceSum", ["x", "axes"], ["y"], keepdims=1), x, {"axes": np.array([2, 3], np.int64)}
        ),
        "gridsample": _single_op(
            node("GridSample", ["x", "grid"], ["y"], align_corners=1), {**x, "grid": (1, h, w, 2)}
        ),
        "sub-broadcast": _single_op(node("Sub", ["a", "b"], ["y"]), {"a": (1, k, h, w, 2), "b": (1, k, 1, 1, 2)}),
        "relu-chain-8": _chain(
            "Relu", 8, (1, c, h // 8, w // 8)
        ),  # tiny nodes: tells the per-node from the per-call cost
    }


def _chain(op: str, length: int, shape: tuple[int, ...]) -> onnx.ModelProto:
    names = ["x"] + [f"t{i}" for i in range(length - 1)] + ["y"]
    nodes = [helper.make_node(op, [a], [b]) for a, b in zip(names, names[1:])]
    graph = helper.make_graph(
        nodes,
        f"{op}-chain",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def memory_microbenchmarks(workdir: Path) -> list[tuple[str, Path]]:
    """Single-op ONNX graphs of memory-bound ops at several sizes: (name, path)."""
    out = []
    for c, h, w in MICRO_SHAPES:
        for op, model in _micro_ops(c, h, w).items():
            path = workdir / f"micro-{op}-{c}x{h}x{w}.onnx"
            if not path.exists():
                onnx.save(model, str(path))
            out.append((f"{op} {c}x{h}x{w}", path))
    return out


def host_features(paths: Sequence[Path]) -> list[dict[str, float]]:
    return [
        costmodel.totals(costmodel.analyse(p, channel_block=HOST_CHANNEL_BLOCK), frozenset(HOST_OP_SPECIFIC))
        for p in paths
    ]


def fit_host(
    micro_feats: Sequence[dict[str, float]],
    micro_ms: Sequence[float],
    net_feats: Sequence[dict[str, float]],
    net_ms: Sequence[float],
) -> Fit:
    """Memory-bound and per-layer terms from single-op graphs, then conv terms from networks."""
    memory = fit(micro_feats, micro_ms, HOST_MEMORY_COLUMNS)
    nets = fit(net_feats, net_ms, HOST_CONV_COLUMNS, fixed=memory.coefficients)
    return Fit(HOST_MEMORY_COLUMNS + HOST_CONV_COLUMNS, nets.coefficients, nets.predicted, nets.measured)


def calibrate_host(workdir: Path, threads: Sequence[int] = (1,), out: Path | None = None, rounds: int = 4) -> Path:
    micro = memory_microbenchmarks(workdir)
    nets = convnet_set(HOST_CALIBRATION_SEEDS, workdir)
    paths = [p for _, p in micro] + [p for _, p, _ in nets]
    feats = host_features(paths)
    fits, extra = {}, {}
    for t in threads:
        times = host_latencies(paths, t, rounds)
        m, measured = len(micro), times.fastest
        fits[t] = fit_host(feats[:m], measured[:m], feats[m:], measured[m:])
        extra[t] = {
            "single_op_graphs": m,
            "measurement_repeatability_median": round(float(np.median(times.fastest_repeat)), 4),
            "measured": f"fastest of {rounds} x 20 runs, "
            + ("runner thread CPU time (1 thread)" if t == 1 else "wall time"),
        }
    header = {
        "device": "host-x86",
        "description": f"the machine that ran the calibration ({machine_name()}), onnxruntime CPU",
        "channel_block": HOST_CHANNEL_BLOCK,
        "sources": [
            {
                "measured": f"python -m compress.bench.calibrate host: {len(micro)} single-op graphs "
                f"(memory-bound terms), then {len(nets)} varied conv nets "
                f"(zoo.random_convnet_spec seeds {HOST_CALIBRATION_SEEDS.start}-{HOST_CALIBRATION_SEEDS.stop - 1}); "
                f"fastest run of {rounds} rounds"
            }
        ],
    }
    return write_profile(out or costmodel.profile_path("host-x86"), header, fits, extra)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="calibrate a latency cost-model device profile")
    parser.add_argument("device", choices=["iphone8", "host"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--workdir", type=Path, default=Path("exported/bench/nets"), help="where exported nets are kept and reused"
    )
    parser.add_argument("--out", type=Path, help="profile YAML to write (default compress/bench/devices/<device>.yaml)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.device == "iphone8":
        path = calibrate_iphone8(args.workdir, args.out)
    else:
        path = calibrate_host(args.workdir, args.threads, args.out, args.rounds)
    print(path.read_text())


if __name__ == "__main__":
    main()

"""Calibrate a device profile: fit the cost model's coefficients to measured or published latencies.

    python -m compress.bench.calibrate iphone8            # from TFLite's published iPhone 8 figures
    python -m compress.bench.calibrate host --threads 1   # measure a set of conv nets here

The fit is non-negative least squares on relative error (each row divided by its latency), so a
562 ms network does not drown a 24 ms one. Feature groups share one coefficient, which is how a
profile with few reference points keeps its free parameters few. Every profile also records its
leave-one-out errors and the interval data derived from them (compress/bench/interval.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
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

from compress.bench import costmodel, executed, host, kernels, machine, zoo
from compress.bench.interval import LEVEL, error_bound
from compress.checkpoints import atomic_path
from compress.errors import CompressError

Columns = list[list[str]]

TFLITE_BENCHMARKS = "https://www.tensorflow.org/lite/performance/benchmarks"
# TensorFlow Lite performance benchmarks page (iOS benchmark app, num_threads 1, iPhone 8),
# models from the TFLite hosted-models list: (zoo network, precision, published mean ms).
# These six are every iPhone 8 (A11) figure the page published; no other published A11 CPU
# figure for a network we can rewrite was found.
IPHONE8_POINTS = [
    ("mobilenet_v1_1.0_224", "fp32", 32.2),
    ("mobilenet_v1_1.0_224", "int8", 24.4),
    ("nasnet_mobile", "fp32", 60.3),
    ("squeezenet_1.0", "fp32", 44.3),
    ("inception_resnet_v2", "fp32", 562.4),
    ("inception_v4", "fp32", 661.0),
]
# The later version of the same page: the same six model files on an iPhone XS (A12), 2 threads.
# Only a check of the model's form (fit alone, residuals and LOO errors), never iPhone 8 evidence.
IPHONE_XS_POINTS = [
    ("mobilenet_v1_1.0_224", "fp32", 14.8),
    ("mobilenet_v1_1.0_224", "int8", 11.0),
    ("nasnet_mobile", "fp32", 30.4),
    ("squeezenet_1.0", "fp32", 21.1),
    ("inception_resnet_v2", "fp32", 261.1),
    ("inception_v4", "fp32", 309.0),
]
# Six points, four free parameters: dense fp32 conv, dense int8 conv, depthwise conv and the other
# memory-bound work (elementwise, pooling, concat). Depthwise convs are priced per MAC: priced per
# byte instead (as this profile did with five points), the largest leave-one-out error is 59 %
# against 30 %; a per-layer overhead or a conv.mtap term as a fifth parameter leaves it at 56-59 %
# (swap the columns and rerun `calibrate iphone8` to see).
# (That choice looked at these six points, so its LOO errors are slightly optimistic.) GridSample
# keeps its own term, grid_sample.mb, but no reference has one, so the fit cannot tell it from the
# memory-bound rate: it stays tied to it, and its interval spans the rate carried from the host.
IPHONE8_COLUMNS: Columns = [["conv.gmac"], ["conv_int8.gmac"], ["depthwise.gmac"], ["memory.mb", "grid_sample.mb"]]
# The host has as many reference points as we care to measure, so every class gets its own
# terms, fitted in two steps: memory-bound ops and the per-layer overhead on single-op graphs
# (where nothing else runs), then the convs on whole networks less that memory-bound share.
HOST_OP_SPECIFIC = (
    "Sigmoid",
    "Exp",
    "HardSigmoid",  # onnxruntime runs HardSwish as HardSigmoid and Mul
    "Pow",
    "GlobalAveragePool",
    "Resize",
    "AveragePool",
    "MaxPool",
    "Softmax",
    "ReduceSum",
    "ArgMax",  # and its cache-aliasing strides (costmodel.REDUCTIONS)
    "DepthToSpace",  # an element at a time (about 1 ns each, some 15x an Add's rate): a CSE student's last layer
    "Where",
)
HOST_MEMORY_COLUMNS: Columns = (
    [["memory.mb"], ["memory.mseg"], ["grid_sample.mb"], ["layer"], ["run"]]
    + [[f"op:{t}.mb"] for t in HOST_OP_SPECIFIC]
    + [[feature] for feature in costmodel.REDUCTION_FEATURES]
    + [[feature] for feature in costmodel.GATHER_FEATURES.values()]
)
# Op types whose carried rate gets its own range instead of joining the memory-bound one (rate_range): an
# ArgMax's rate depends on the stride it reads at (3-6x on the host, costmodel.REDUCTIONS), DepthToSpace and
# Where move an element at a time (5-15x an Add's rate per byte), and carried into the range of every
# memory-bound op no reference has they would widen theirs several times over with no evidence about them.
OWN_RANGE = ("ArgMax", "DepthToSpace", "Where")
# The host prices the graph onnxruntime executes (executed.py): its convs by the per-kernel model
# (kernels.py) of their class (NCHWc or plain path, dense or depthwise), scaled by one coefficient
# fitted on whole networks (a kernel in a network runs with other data in the caches than alone; one
# shared scale, as plain-path convs are too rare in the networks to fit their own), and
# the activations fused into convs by their output bytes (costmodel.ACTIVATION_FEATURES; Relu is free), less
# the fixed cost a kernel timed alone carries (costmodel.KERNEL_ALONE: the k-fold share within ±10 % went
# from 89 % to 94 % with it on the same measurements, the tiny parts' over-prediction most of it), plus
# NCHWc kernels once more by the share of the cache their network's weights fill (costmodel.KERNEL_COLD).
# The per-node and per-call costs (`layer`, `run`) are fitted twice: on the single-op graphs, so that
# the memory-bound rates do not absorb them, then again on the networks, where a node's and a call's
# fixed cost are not those of a one-node graph (the k-fold validation scores better so: docs/latency.md).
HOST_NETWORK_COLUMNS: Columns = (
    [[f"{c}.kms" for c in kernels.CONV_CLASSES], ["activation.mb"]]
    + [[feature] for feature in costmodel.ACTIVATION_FEATURES.values()]
    + [[costmodel.KERNEL_ALONE], [costmodel.KERNEL_COLD], ["layer"], ["run"]]
)


def without_network_terms(coefficients: dict[str, float]) -> dict[str, float]:
    """The coefficients the network fit keeps fixed: all but HOST_NETWORK_COLUMNS'."""
    network = {k for group in HOST_NETWORK_COLUMNS for k in group}
    return {k: v for k, v in coefficients.items() if k not in network}


# int8 (QDQ) convs, fitted last on quantized copies of some calibration nets with every other
# term fixed. The depthwise convs of those nets stay priced as fp32 depthwise: one int8 class.
HOST_INT8_COLUMNS: Columns = [[f"conv_int8.{unit}"] for unit in ("gmac", "mtap", "mb")]


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


def leave_one_out(
    features: Sequence[dict[str, float]],
    measured_ms: Sequence[float],
    columns: Columns,
    fixed: dict[str, float] | None = None,
) -> list[float | None]:
    """Each point's relative error (predicted / measured - 1) when the fit is made without it.

    None where the point is the only one with some column (the quantized MobileNet is the only
    int8 reference): without it that coefficient is not fitted at all, so there is no error to report.
    """
    x = design(features, columns)
    errors: list[float | None] = []
    for i in range(len(features)):
        rest = [j for j in range(len(features)) if j != i]
        if any(x[i, c] > 0 and not x[rest, c].any() for c in range(len(columns))):
            errors.append(None)
            continue
        held_out = fit([features[j] for j in rest], [measured_ms[j] for j in rest], columns, fixed)
        errors.append(float(price([features[i]], held_out.coefficients)[0] / measured_ms[i] - 1))
    return errors


def rate_range(own: dict[str, float], carried: dict[str, float] | None = None) -> dict[str, list[float]]:
    """ms/MB ranges for the bytes of op types no reference has, by class (see interval.py).

    `carried` are the coefficients of another calibrated device (the host) that measured such op
    types: its rates, relative to its dense conv rate, are carried over at this device's conv rate
    (how much slower a memory-bound op is than a conv there is assumed to hold here too). A class's
    range spans this device's own rate and every carried rate of that class. Without `carried`, the
    device's own op-specific rates make the range (a host measured them all).
    """
    if carried is None:
        carried, scale = own, 1.0
    elif carried.get("conv.gmac", 0.0) <= 0:
        raise CompressError("rate_range: the device to carry rates from has no dense conv rate to scale them by")
    else:
        scale = own["conv.gmac"] / carried["conv.gmac"]
    own_range = {f"op:{t}.mb" for t in OWN_RANGE}
    memory = [v * scale for k, v in carried.items() if k == "memory.mb" or (k.startswith("op:") and k not in own_range)]
    gather = [carried["grid_sample.mb"] * scale, own["grid_sample.mb"]]
    ranges = {
        "memory": [round(min(own["memory.mb"], *memory), 6), round(max(own["memory.mb"], *memory), 6)],
        "grid_sample": [round(min(gather), 6), round(max(gather), 6)],
    }
    for t in OWN_RANGE:
        if f"op:{t}.mb" in carried:  # a reduction: up to its rate at an aliasing stride (the long-axis term left out)
            aliased = carried.get(costmodel.REDUCTION_FEATURES[0], 0.0) if t in costmodel.REDUCTIONS else 0.0
            rate = (carried[f"op:{t}.mb"] + aliased) * scale
            ranges[f"op:{t}"] = [round(min(own["memory.mb"], rate), 6), round(max(own["memory.mb"], rate), 6)]
    return ranges


def host_rates(profile: costmodel.DeviceProfile) -> dict[str, float]:
    """A host profile's 1-thread coefficients with its dense conv rate (`conv.gmac`) for rate_range: a
    profile with a per-kernel model has none of its own, so it is the model's dense rate times its scale."""
    coef = dict(profile.coef(1))
    if "conv.gmac" not in coef and profile.kernel_model is not None:
        coef["conv.gmac"] = kernels.dense_rate(profile.kernel_model.rows) * coef.get("conv.kms", 1.0)
    return coef


def interval_block(
    references: Sequence[str],
    errors: Sequence[float | None],
    op_types: set[str],
    ranges: dict[str, list[float]],
) -> dict[str, Any]:
    """A profile's `interval` entry: the LOO errors and what interval.py derives from them."""
    known = [e for e in errors if e is not None]
    bound, coverage = error_bound(known)
    return {
        "method": f"split-conformal bound on leave-one-out relative errors (level {LEVEL}): "
        "[ms / (1 + q), ms / (1 - q)]; extrapolated op types priced across rate_range first "
        "(compress/bench/interval.py)",
        "leave_one_out": [
            {"network": name, "relative_error": None if e is None else round(e, 4)}
            for name, e in zip(references, errors)
        ],
        "relative_error_bound": round(bound, 4),
        "nominal_coverage": round(coverage, 3),
        "reference_op_types": sorted(op_types),
        "rate_range": ranges,
    }


def op_types(costs: Sequence[costmodel.NodeCost]) -> set[str]:
    """The op types a network's priced nodes have."""
    return {c.op_type for c in costs if c.op_class != "free"}


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


def published_fit(points: Sequence[tuple[str, str, float]], costs: dict[tuple[str, str], list]) -> dict[str, Any]:
    """The fit to a list of published figures, its residuals and its leave-one-out errors."""
    feats = [costmodel.totals(costs[(name, precision)]) for name, precision, _ in points]
    measured = [ms for _, _, ms in points]
    result = fit(feats, measured, IPHONE8_COLUMNS)
    return {"fit": result, "loo": leave_one_out(feats, measured, IPHONE8_COLUMNS)}


def _percent(e: float | None) -> str | None:
    return None if e is None else f"{e * 100:+.1f}%"


def calibrate_iphone8(workdir: Path, out: Path | None = None, host_profile: str = "host-x86") -> Path:
    paths = reference_models(workdir)
    costs = {(name, precision): costmodel.analyse(paths[name], precision) for name, precision, _ in IPHONE8_POINTS}
    iphone8, xs = published_fit(IPHONE8_POINTS, costs), published_fit(IPHONE_XS_POINTS, costs)
    iphone8_ms = {(name, precision): ms for name, precision, ms in IPHONE8_POINTS}
    result = iphone8["fit"]
    host = host_rates(costmodel.load_profile(host_profile))
    names = [f"{name} {precision}" for name, precision, _ in IPHONE8_POINTS]
    reference_types = set().union(*(op_types(c) for c in costs.values()))
    interval = interval_block(names, iphone8["loo"], reference_types, rate_range(result.coefficients, host))
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
                "(Mobilenet_1.0_224 float and quant, NASNet mobile, SqueezeNet, Inception_ResNet_V2, Inception_V4)",
            },
            {
                "cross_check": f"{TFLITE_BENCHMARKS} (later version: the same six files on an iPhone XS, 2 threads)",
                "rate_range": f"profile:{host_profile} (1 thread), for op types no reference has",
            },
        ],
        "notes": [
            "Architectures re-written in compress/bench/zoo.py; the cost model needs only their shapes.",
            "SqueezeNet: the page does not say 1.0 or 1.1. We use 1.0 (0.82 GMACs): 1.1 (0.35 GMACs) could not take "
            "44.3 ms when MobileNetV1 (0.57 GMACs, mostly the same 1x1 convs) takes 32.2 ms on the same CPU.",
            "The quantized MobileNet is priced as the float graph with int8 convs and 1-byte tensors. It is the only "
            "int8 reference, so conv_int8.gmac is whatever makes that one point exact once the memory-bound term "
            "shrinks with 1-byte tensors, and leaving it out leaves no int8 evidence (its LOO error is null): "
            "trust int8 predictions only for MobileNet-like networks.",
            "GridSample has its own term (grid_sample.mb) but no reference has it, so it stays tied to the "
            "memory-bound rate; its interval spans rate_range.grid_sample, the host's GridSample rate carried over "
            "at this profile's conv rate. FOMM's broadcasting keypoint arithmetic is priced by bytes only.",
            "4 free parameters for 6 points: the residuals are in-sample; the leave-one-out errors under interval "
            "are the honest ones, and the prediction interval comes from them.",
        ],
        "references": [
            {
                "network": name,
                "precision": precision,
                "published_ms": ms,
                "predicted_ms": round(pred, 2),
                "residual": _percent(pred / ms - 1),
                "leave_one_out_error": _percent(loo),
            }
            for (name, precision, ms), pred, loo in zip(IPHONE8_POINTS, result.predicted, iphone8["loo"])
        ],
        "cross_check_iphone_xs": {
            "what": "the same columns fitted alone to the iPhone XS (A12, 2 threads) figures: does the form hold?",
            "coefficients": {k: round(v, 6) for k, v in xs["fit"].coefficients.items()},
            "rms_relative_error": round(xs["fit"].rms, 4),
            "rows": [
                {
                    "network": name,
                    "precision": precision,
                    "published_ms": ms,
                    "predicted_ms": round(pred, 2),
                    "residual": _percent(pred / ms - 1),
                    "leave_one_out_error": _percent(loo),
                    "xs_over_iphone8": round(ms / iphone8_ms[(name, precision)], 3),
                }
                for (name, precision, ms), pred, loo in zip(IPHONE_XS_POINTS, xs["fit"].predicted, xs["loo"])
            ],
        },
    }
    return write_profile(out or costmodel.profile_path("iphone8"), header, {1: result}, {1: {"interval": interval}})


# -- the host, from measurements -------------------------------------------------------------
def convnet_set(seeds: Sequence[int], workdir: Path, odd: bool = False) -> list[tuple[str, Path, dict[str, Any]]]:
    """Export (or reuse) the varied conv nets of these seeds (`odd` channel counts: zoo.random_convnet_spec):
    (name, ONNX path, spec)."""
    out = []
    for seed in seeds:
        spec = zoo.random_convnet_spec(seed, odd=odd)
        digest = hashlib.sha256(json.dumps(spec.to_json(), sort_keys=True).encode()).hexdigest()[:8]
        path = workdir / f"{spec.name}-{digest}.onnx"  # a changed generator never reuses a stale export
        if not path.exists():
            zoo.export_onnx(zoo.build_convnet(spec), (torch.zeros(1, 3, spec.resolution, spec.resolution),), path)
        out.append((spec.name, path, spec.to_json()))
    return out


REFERENCE_SEED = 903  # the reference network: a depthwise-separable conv net of 47 MMACs (HardSwish, 192 px)
REFERENCE_EVERY = 16  # models timed between two timings of the reference
DISTURBED = 0.05  # a reference timing this much slower than its quietest flags its stretch of a round


def reference_network(workdir: Path) -> tuple[str, Path]:
    """The network timed between every REFERENCE_EVERY models of every round (host_latencies)."""
    spec = zoo.random_convnet_spec(REFERENCE_SEED, mmacs=(40.0, 80.0))
    path = workdir / f"reference-{spec.name}.onnx"
    if not path.exists():
        zoo.export_onnx(zoo.build_convnet(spec), (torch.zeros(1, 3, spec.resolution, spec.resolution),), path)
    return spec.name, path


@dataclass
class Reference:
    """The reference network's timings: how much each stretch of each round was slowed by load.

    `slowdown[r][s]`: the reference's fastest run at the s-th timing of round r over its fastest
    anywhere, minus 1. Stretch s of a round (the models between timings s and s + 1) is priced by
    the mean of its two ends' slowdowns."""

    network: str
    ms: float  # its fastest run over every timing
    slowdown: list[list[float]]

    @property
    def disturbed_share(self) -> float:
        """The share of reference timings slowed by more than DISTURBED."""
        return float(np.mean(np.array(self.slowdown) > DISTURBED))

    def to_json(self) -> dict[str, Any]:
        s = np.array(self.slowdown)
        return {
            "network": self.network,
            "ms": self.ms,
            "timings_per_round": s.shape[1],
            "median_slowdown": float(np.median(s)),
            "max_slowdown": float(np.max(s)),
            "disturbed_share": self.disturbed_share,
            "disturbed_threshold": DISTURBED,
        }


@dataclass
class HostTimes:
    """Each model's latency on this host by two estimators, and how well each repeats.

    Repeatability: |estimate from the first half of the rounds / from the second half - 1|.
    With a reference network, `fastest` is normalised by the slowdown the reference saw in each
    round (Reference); `unreferenced_repeat` is how well the plain fastest run repeats.
    """

    fastest: list[float]  # fastest run over all rounds, ms
    fastest_repeat: list[float]
    median: list[float]  # median over rounds of each round's p50, ms
    median_repeat: list[float]
    reference: Reference | None = None
    unreferenced_repeat: list[float] | None = None


def referenced_fastest(values: np.ndarray, slowdown: np.ndarray, every: int) -> np.ndarray:
    """Each model's fastest run, each round's runs divided by the load that round's reference saw.

    `values`: rounds x models x runs; `slowdown`: rounds x timings (Reference.slowdown), timing s
    taken before model s * every and one after the last. A model's runs in a round are divided by
    1 + the mean slowdown of the two timings around it."""
    segment = np.arange(values.shape[1]) // every
    factor = 1 + (slowdown[:, segment] + slowdown[:, segment + 1]) / 2  # rounds x models
    return (values.min(axis=2) / factor).min(axis=0)


def host_latencies(
    paths: Sequence[Path],
    threads: int = 1,
    rounds: int = 4,
    warmup: int = 3,
    runs: int = 20,
    reference: tuple[str, Path] | None = None,
) -> HostTimes:
    """Measure every model in `rounds` interleaved rounds, so a busy spell hits them all.

    At one thread the runner thread's CPU time is used (onnxruntime computes on the calling
    thread), at real-time priority where allowed. On a shared 2-core machine whole rounds still
    slow down while the other core is busy (shared caches and memory): a median then measures
    the neighbours, the fastest run the network on a quiet machine. Calibration uses the fastest
    run; both are kept so that the choice can be checked. A `reference` network (name, path) is
    timed before every REFERENCE_EVERY models of a round and after the last: what it loses to
    load in a stretch of a round is taken off that stretch's models (referenced_fastest).
    """
    if rounds < 2:
        raise CompressError(f"--rounds {rounds}: at least 2, to tell how well the measurement repeats")
    order, is_reference = list(paths), [False] * len(paths)
    if reference is not None:
        order, is_reference = [], []
        for start in range(0, len(paths), REFERENCE_EVERY):
            chunk = paths[start : start + REFERENCE_EVERY]
            order += [reference[1], *chunk]
            is_reference += [True] + [False] * len(chunk)
        order.append(reference[1])
        is_reference.append(True)
    table = []
    for _ in range(rounds):
        results = host.measure(order, threads=threads, warmup=warmup, runs=runs, top=0, priority="realtime")
        table.append([r["cpu_times_ms"] if threads == 1 else r["times_ms"] for r in results])
    timed = np.array(table)  # rounds x (models and reference timings) x runs
    values = timed[:, ~np.array(is_reference)]
    half = rounds // 2

    def fastest(v: np.ndarray) -> np.ndarray:
        return v.min(axis=(0, 2))

    def median(v: np.ndarray) -> np.ndarray:
        return np.median(np.median(v, axis=2), axis=0)

    def repeat(estimate) -> list[float]:
        return [float(x) for x in np.abs(estimate(values[:half]) / estimate(values[half:]) - 1)]

    times = HostTimes(
        [float(x) for x in fastest(values)], repeat(fastest), [float(x) for x in median(values)], repeat(median)
    )
    if reference is None:
        return times
    best = timed[:, np.array(is_reference)].min(axis=2)  # rounds x timings
    slowdown = best / best.min() - 1
    first, second = (
        referenced_fastest(values[h], slowdown[h], REFERENCE_EVERY) for h in (slice(half), slice(half, None))
    )
    times.unreferenced_repeat = times.fastest_repeat
    times.fastest = [float(x) for x in np.minimum(first, second)]
    times.fastest_repeat = [float(x) for x in np.abs(first / second - 1)]
    times.reference = Reference(reference[0], float(best.min()), slowdown.tolist())
    return times


HOST_CALIBRATION_SEEDS = range(0, 40)
MICRO_SHAPES = [(8, 128, 128), (16, 64, 64), (32, 32, 32), (64, 64, 64), (128, 16, 16), (32, 128, 128)]
# ArgMax across the channels of 1xCxHxW, the CSE lookup's search: plane strides on and off multiples of
# 4 KiB, channel counts each side of costmodel.ALIASED_LONG (the costmodel.REDUCTIONS terms)
ARGMAX_SHAPES = [
    (64, 28, 28),
    (256, 24, 24),
    (256, 32, 32),
    (512, 48, 48),
    (768, 32, 32),
    (1536, 28, 28),
    (1536, 32, 32),
    (4096, 32, 32),  # past costmodel.ALIASED_SATURATED
    (8192, 32, 32),
]


def _single_op(
    node: onnx.NodeProto,
    inputs: dict[str, tuple[int, ...]],
    constants: dict[str, np.ndarray] | None = None,
    types: dict[str, int] | None = None,
) -> onnx.ModelProto:
    """A graph of one node; its inputs are float unless `types` (input name -> TensorProto type) says."""
    graph = helper.make_graph(
        [node],
        node.op_type,
        [
            helper.make_tensor_value_info(k, (types or {}).get(k, onnx.TensorProto.FLOAT), list(v))
            for k, v in inputs.items()
        ],
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
        **_gathers(c, h, w),
        "depthtospace": _single_op(node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD"), x),
        "where": _single_op(
            node("Where", ["c", "x", "x2"], ["y"]), {"c": x["x"], **x, "x2": x["x"]}, types={"c": onnx.TensorProto.BOOL}
        ),
        "argmax-channels": _argmax(c, h, w),
        "relu-chain-8": _chain(
            "Relu", 8, (1, c, h // 8, w // 8)
        ),  # tiny nodes: tells the per-node from the per-call cost
    }


def _gathers(c: int, h: int, w: int) -> dict[str, onnx.ModelProto]:
    """Gathers as a CSE lookup runs them: rows of a table by a map of indices, one float at a time along
    the last axis, and GatherElements along the channels of a channels-last map (indices are constants
    in range, the data the graph's input so that onnxruntime cannot fold them)."""
    rng = np.random.default_rng(0)
    node = helper.make_node
    return {
        "gather-rows": _single_op(
            node("Gather", ["x", "i"], ["y"], axis=0),
            {"x": (h * w, c)},
            {"i": rng.integers(0, h * w, (1, h, w)).astype(np.int64)},
        ),
        "gather-last": _single_op(
            node("Gather", ["x", "i"], ["y"], axis=-1), {"x": (1, c, h, w)}, {"i": np.array(0, np.int64)}
        ),
        "gatherelements": _single_op(
            node("GatherElements", ["x", "i"], ["y"], axis=3),
            {"x": (1, h, w, c)},
            {"i": rng.integers(0, c, (1, h, w, 1)).astype(np.int64)},
        ),
    }


def _argmax(c: int, h: int, w: int) -> onnx.ModelProto:
    """ArgMax across the channels of a 1xCxHxW input (its output is int64, unlike _single_op's)."""
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=1)],
        "ArgMax",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.INT64, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


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


def memory_microbenchmarks(
    workdir: Path,
    shapes: Sequence[tuple[int, int, int]] = tuple(MICRO_SHAPES),
    argmax_shapes: Sequence[tuple[int, int, int]] = tuple(ARGMAX_SHAPES),
) -> list[tuple[str, Path]]:
    """Single-op ONNX graphs of memory-bound ops at several sizes, and ArgMax at `argmax_shapes`: (name, path)."""
    graphs = [(op, shape, model) for shape in shapes for op, model in _micro_ops(*shape).items()]
    graphs += [("argmax-channels", shape, _argmax(*shape)) for shape in argmax_shapes]
    out = []
    for op, (c, h, w), model in graphs:
        path = workdir / f"micro-{op}-{c}x{h}x{w}.onnx"
        if not path.exists():
            onnx.save(model, str(path))
        out.append((f"{op} {c}x{h}x{w}", path))
    return out


def int8_convnet_set(seeds: Sequence[int], workdir: Path) -> list[tuple[str, Path]]:
    """QDQ int8 copies (onnxruntime static quantization, its defaults) of the conv nets of these seeds."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class RandomFrames(CalibrationDataReader):
        def __init__(self, name: str, resolution: int):
            rng = np.random.default_rng(0)
            self.frames = iter([{name: rng.random((1, 3, resolution, resolution), np.float32)} for _ in range(2)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.frames, None)

    out = []
    for name, path, spec in convnet_set(seeds, workdir):
        quantized = path.with_name(f"{path.stem}-int8.onnx")
        if not quantized.exists():
            reader = RandomFrames(onnx.load(str(path)).graph.input[0].name, spec["resolution"])
            with atomic_path(quantized) as tmp:
                quantize_static(str(path), str(tmp), reader, quant_format=QuantFormat.QDQ)
        out.append((f"{name} int8", quantized))
    return out


def host_features(
    paths: Sequence[Path], channel_block: int, kernel_model: kernels.KernelModel | None = None
) -> list[dict[str, float]]:
    """Each model's cost features on the graph onnxruntime executes here, its convs priced by `kernel_model`."""
    specific = frozenset(HOST_OP_SPECIFIC)
    return [costmodel.totals(executed.analyse(p, channel_block, kernel_model=kernel_model), specific) for p in paths]


@dataclass
class KernelSample:
    """Single-conv measurements: the convs (kernels.py's data) and the layout reorders around them."""

    measured: list[tuple[kernels.Config, kernels.Measured]]
    reorders: list[tuple[float, float]]  # (MB copied, fastest profiled ms) of each ReorderInput/ReorderOutput

    @property
    def rows(self) -> list[kernels.Measured]:
        return [row for _, row in self.measured]

    def reorder_rates(self) -> dict[str, float]:
        """ms per MB a layout reorder copies (`reorder.mb`) and per MB beyond costmodel.REORDER_SPILL
        (`reorder_spill.mb`), by NNLS on relative error with a per-node constant (which the single-op
        graphs fit as `layer`, so it is left out here); zeros without reorders."""
        if not self.reorders:
            return {"reorder.mb": 0.0, "reorder_spill.mb": 0.0}
        mb, ms = np.array(self.reorders).T
        spill = np.maximum(0.0, mb - costmodel.REORDER_SPILL / 1e6)
        coef, _ = nnls(np.stack([mb, spill, np.ones_like(mb)], 1) / ms[:, None], np.ones_like(ms))
        return {"reorder.mb": float(coef[0]), "reorder_spill.mb": float(coef[1])}


KERNEL_BATCH = 200  # single-conv graphs per runner process (a thousand sessions at once take gigabytes)


def measure_kernels(configs: Sequence[kernels.Config], workdir: Path, channel_block: int, rounds: int) -> KernelSample:
    """Each single-conv graph's conv as onnxruntime runs it here and its profiled time (the fastest
    profiled run of `rounds` interleaved rounds), and the same for the reorders around it; a graph whose
    conv onnxruntime turned into something else is left out."""
    paths = []
    for config in configs:
        path = workdir / f"kernel-{config.name}.onnx"
        if not path.exists():
            onnx.save(kernels.graph(config), str(path))
        paths.append(path)
    fastest: list[dict[str, float]] = [{} for _ in paths]  # node name -> ms
    for _ in range(rounds):
        for start in range(0, len(paths), KERNEL_BATCH):
            batch = paths[start : start + KERNEL_BATCH]
            results = host.measure(batch, threads=1, warmup=3, runs=5, top=20, priority="realtime", interleave=True)
            for best, result in zip(fastest[start:], results):
                for op in result["ops"]:
                    best[op["node"]] = min(best.get(op["node"], float("inf")), op["min_ms"])
    sample = KernelSample([], [])
    for config, path, best in zip(configs, paths, fastest):
        costs = [c for c in executed.analyse(path, channel_block) if c.name in best]
        convs = [c for c in costs if c.kernel is not None]
        if len(convs) == 1:
            sample.measured.append((config, kernels.Measured(convs[0].kernel, best[convs[0].name])))
        sample.reorders += [(c.bytes / 1e6, best[c.name]) for c in costs if c.op_class == "reorder"]
    return sample


KERNEL_SAMPLE = 240  # first draw of single-conv graphs
ADAPTIVE_ROUNDS = 2  # then, twice: neighbours of the worst-predicted tenth
NEIGHBOURS = 4


def sample_kernels(
    workdir: Path,
    channel_block: int,
    rounds: int,
    networks: Sequence[Path] = (),
    count: int = KERNEL_SAMPLE,
    adaptive: int = ADAPTIVE_ROUNDS,
) -> KernelSample:
    """Measure a first sample of single convs (every conv of the calibration `networks`, then `count` random
    ones), then `adaptive` times the neighbours of the kernels the cross-validated per-kernel model
    predicts worst (kernels.py)."""
    first = list(dict.fromkeys(c for p in networks for c in kernels.network_configs(onnx.load(str(p)))))
    first += [c for c in kernels.initial_sample(count) if c not in first]
    sample = measure_kernels(first, workdir, channel_block, rounds)
    seen = {config for config, _ in sample.measured}
    for step in range(adaptive):
        errors = kernels.cross_validated_errors(sample.rows)
        new = []
        for i in np.argsort(-np.abs(errors))[: max(1, len(sample.measured) // 10)]:
            for config in kernels.neighbours(sample.measured[i][0], NEIGHBOURS, seed=1000 * step + int(i)):
                if config not in seen:
                    seen.add(config)
                    new.append(config)
        more = measure_kernels(new, workdir, channel_block, rounds)
        sample.measured += more.measured
        sample.reorders += more.reorders
    return sample


def fit_host(
    micro_feats: Sequence[dict[str, float]],
    micro_ms: Sequence[float],
    net_feats: Sequence[dict[str, float]],
    net_ms: Sequence[float],
    int8_feats: Sequence[dict[str, float]] = (),
    int8_ms: Sequence[float] = (),
    reorder_rates: dict[str, float] | None = None,
) -> Fit:
    """Memory-bound and per-layer terms from single-op graphs (with the layout reorders' `reorder_rates`,
    measured around single convs, fixed), then the network terms (convs, fused activations, per-node and
    per-call costs) from networks less the memory-bound share, then (given int8 networks) the int8 conv
    terms with all the others fixed."""
    memory = fit(micro_feats, micro_ms, HOST_MEMORY_COLUMNS, fixed=reorder_rates or {})
    nets = fit(net_feats, net_ms, HOST_NETWORK_COLUMNS, fixed=without_network_terms(memory.coefficients))
    columns = HOST_MEMORY_COLUMNS + [g for g in HOST_NETWORK_COLUMNS if g not in HOST_MEMORY_COLUMNS]
    coefficients = nets.coefficients
    if int8_feats:
        columns = columns + HOST_INT8_COLUMNS
        coefficients = fit(int8_feats, int8_ms, HOST_INT8_COLUMNS, fixed=coefficients).coefficients
    return Fit(columns, coefficients, nets.predicted, nets.measured)


HOST_INT8_SEEDS = range(0, 12)


def calibrate_host(
    workdir: Path,
    threads: Sequence[int] = (1,),
    out: Path | None = None,
    rounds: int = 4,
    seeds: Sequence[int] = HOST_CALIBRATION_SEEDS,
    int8_seeds: Sequence[int] = HOST_INT8_SEEDS,
    micro_shapes: Sequence[tuple[int, int, int]] = tuple(MICRO_SHAPES),
    argmax_shapes: Sequence[tuple[int, int, int]] = tuple(ARGMAX_SHAPES),
    kernel_sample: int = KERNEL_SAMPLE,
    adaptive_rounds: int = ADAPTIVE_ROUNDS,
) -> Path:
    """Measure and fit the host profile (written to `out`) and its kernel measurements (next to it,
    `<profile>-kernels.csv`, which the profile names and refits its per-kernel model from at load)."""
    out = out or costmodel.profile_path("host-x86")
    here = machine.this_host()
    block = machine.channel_block(here.flags)
    nets = convnet_set(seeds, workdir)
    sample = sample_kernels(workdir, block, rounds, [p for _, p, _ in nets], kernel_sample, adaptive_rounds)
    kernels_csv = kernels.write_csv(out.with_name(f"{out.stem}-kernels.csv"), sample.rows)
    micro = memory_microbenchmarks(workdir, micro_shapes, argmax_shapes)
    int8_nets = int8_convnet_set(int8_seeds, workdir)
    paths = [p for _, p in micro] + [p for _, p, _ in nets] + [p for _, p in int8_nets]
    feats = host_features(paths, block, kernels.KernelModel(sample.rows))
    m, n = len(micro), len(micro) + len(nets)
    reference_types = set().union(*(op_types(executed.analyse(p, block)) for p in paths))
    fits, extra = {}, {}
    reference = reference_network(workdir)
    for t in threads:
        times = host_latencies(paths, t, rounds, reference=reference)
        measured = times.fastest
        fits[t] = fit_host(
            feats[:m], measured[:m], feats[m:n], measured[m:n], feats[n:], measured[n:], sample.reorder_rates()
        )
        coef = fits[t].coefficients
        memory_terms = without_network_terms({k: coef[k] for group in HOST_MEMORY_COLUMNS for k in group})
        loo = leave_one_out(feats[m:n], measured[m:n], HOST_NETWORK_COLUMNS, fixed=memory_terms)
        extra[t] = {
            "single_op_graphs": m,
            "int8_networks": len(int8_nets),
            "measurement_repeatability_median": round(float(np.median(times.fastest_repeat)), 4),
            "reference_network": {
                k: round(v, 4) if isinstance(v, float) else v for k, v in times.reference.to_json().items()
            },
            "measured": f"fastest of {rounds} x 20 runs normalised by the reference network's slowdown, "
            + ("runner thread CPU time (1 thread)" if t == 1 else "wall time"),
            "interval": interval_block([name for name, _, _ in nets], loo, reference_types, rate_range(coef)),
        }
    header = {
        "device": "host-x86",
        "description": f"the machine that ran the calibration ({machine_name()}), onnxruntime CPU",
        # what the coefficients hold for; its flags set the NCHWc channel block (machine.channel_block)
        "machine": here.to_json(),
        "graph": costmodel.EXECUTED_GRAPH,  # prices onnxruntime's optimised graph on this machine
        "kernels": kernels_csv.name,  # single-conv measurements (1 thread) the per-kernel model is refitted from
        "sources": [
            {
                "measured": f"python -m compress.bench.calibrate host: {len(sample.measured)} single-conv graphs "
                f"(the calibration nets' convs and {kernel_sample} drawn, then neighbours of the worst-predicted "
                f"in {adaptive_rounds} adaptive rounds: the per-kernel model; the reorders around them give "
                f"reorder.mb), {len(micro)} single-op graphs "
                f"(memory-bound terms), then {len(nets)} varied conv nets "
                f"(zoo.random_convnet_spec seeds {_span(seeds)}), then {len(int8_nets)} of them quantized "
                f"(QDQ, seeds {_span(int8_seeds)}) for the int8 conv terms; fastest run of {rounds} rounds; "
                f"channel block {block} from the CPU flags"
            }
        ],
    }
    return write_profile(out, header, fits, extra)


def _span(seeds: Sequence[int]) -> str:
    return f"{min(seeds)}-{max(seeds)}" if len(seeds) > 1 else str(seeds[0])


def machine_name() -> str:
    """CPU model and count, for the records of host measurements."""
    return f"{machine.this_host().cpu}, {len(os.sched_getaffinity(0))} CPUs"


IPHONE8_DOC_MARKERS = ("<!-- iphone8:begin -->", "<!-- iphone8:end -->")


def iphone8_docs_section(profile: costmodel.DeviceProfile, workdir: Path) -> str:
    """The generated part of docs/latency.md about profile:iphone8: its fit, leave-one-out errors,
    interval, the iPhone XS cross-check, and its predictions for the FOMM parts (validate.fomm_nets)."""
    from compress.bench import validate

    meta, block = profile.meta, profile.meta["calibrations"][1]["interval"]
    ranges = block["rate_range"]
    lines = [
        IPHONE8_DOC_MARKERS[0],
        "Generated by `python -m compress.bench.calibrate iphone8 --update-docs docs/latency.md` from "
        "`compress/bench/devices/iphone8.yaml`. Published figures are measured (by TensorFlow Lite); every other "
        "ms is predicted.",
        "",
        "| reference (iPhone 8, TFLite, 1 thread) | published ms | fitted ms | in-sample residual "
        "| leave-one-out error |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['network']} {r['precision']} | {r['published_ms']:g} | {r['predicted_ms']:.1f} | {r['residual']} "
            f"| {r['leave_one_out_error'] or 'no int8 evidence left'} |"
            for r in meta["references"]
        ),
        "",
        f"Interval: q = {block['relative_error_bound'] * 100:.1f} % (the split-conformal bound on "
        f"{sum(r['relative_error'] is not None for r in block['leave_one_out'])} leave-one-out errors, nominal "
        f"coverage {block['nominal_coverage'] * 100:.0f} %), so a prediction P spans "
        f"[P / {1 + block['relative_error_bound']:.3f}, P / {1 - block['relative_error_bound']:.3f}] before "
        f"extrapolated op types widen it. Their bytes are priced across {ranges['memory'][0]:.3f}-"
        f"{ranges['memory'][1]:.3f} ms/MB (memory-bound), {ranges['grid_sample'][0]:.3f}-"
        f"{ranges['grid_sample'][1]:.3f} ms/MB (GridSample)"
        + "".join(f", {r[0]:.3f}-{r[1]:.3f} ms/MB ({k[3:]})" for k, r in ranges.items() if k.startswith("op:"))
        + f" instead of the fitted {profile.coef(1)['memory.mb']:.3f} ms/MB.",
        "",
        "Cross-check of the model's form: the same four columns fitted alone to the same files on an iPhone XS "
        f"(A12, 2 threads; rms in-sample error {meta['cross_check_iphone_xs']['rms_relative_error'] * 100:.1f} %).",
        "",
        "| reference (iPhone XS, TFLite, 2 threads) | published ms | XS / iPhone 8 | fitted ms | in-sample residual "
        "| leave-one-out error |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {r['network']} {r['precision']} | {r['published_ms']:g} | {r['xs_over_iphone8']:.3f} "
            f"| {r['predicted_ms']:.1f} | {r['residual']} | {r['leave_one_out_error'] or 'no int8 evidence left'} |"
            for r in meta["cross_check_iphone_xs"]["rows"]
        ),
        "",
        "FOMM parts (the validation set's teacher and students, fp32 graphs) on `profile:iphone8`, all predicted:",
        "",
        "| part | predicted ms | interval ms | extrapolated share | op types no reference has |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, path, _ in validate.fomm_nets(workdir):
        pred = costmodel.predict(path, profile)
        low, high = pred["interval_ms"]
        lines.append(
            f"| {name.removeprefix('fomm ')} | {pred['ms']:.1f} | {low:.1f}-{high:.1f} "
            f"| {pred['extrapolated_share'] * 100:.0f} % | {', '.join(pred['extrapolated_op_types']) or '-'} |"
        )
    return "\n".join([*lines, IPHONE8_DOC_MARKERS[1]])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="calibrate a latency cost-model device profile")
    parser.add_argument("device", choices=["iphone8", "host"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--workdir", type=Path, default=Path("exported/bench/nets"), help="where exported nets are kept and reused"
    )
    parser.add_argument("--out", type=Path, help="profile YAML to write (default compress/bench/devices/<device>.yaml)")
    parser.add_argument("--update-docs", type=Path, help="iphone8: rewrite the generated section of this markdown file")
    args = parser.parse_args(argv)
    if args.update_docs and args.device != "iphone8":
        parser.error("--update-docs: only the iphone8 profile has a generated docs section")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.device == "iphone8":
        path = calibrate_iphone8(args.workdir, args.out)
    else:
        path = calibrate_host(args.workdir, args.threads, args.out, args.rounds)
    print(path.read_text())
    if args.update_docs:
        from compress.bench.validate import update_docs

        section = iphone8_docs_section(costmodel.load_profile("iphone8", path), args.workdir)
        update_docs(args.update_docs, section, IPHONE8_DOC_MARKERS)
        print(f"updated {args.update_docs}")


if __name__ == "__main__":
    main()

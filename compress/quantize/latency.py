"""int8 never slower than float on this host: paired timings and latency-aware mixed precision.

Timings are paired: the models run in rounds, one run of each per round (`host.measure(...,
interleave=True)`), so whatever else loads the machine at a moment slows all of them alike, and
the ratio of two models is taken round by round. The ratio is the median over rounds; its noise
is the spread of the rounds, their middle half (lower to upper quartile). A model is slower than
another beyond noise when it is slower in three rounds of four or more (the lower quartile is
above 1), and in more rounds than a coin tossed per round would give one time in twenty (a
one-sided sign test; 3 rounds can never show it, 20 need 15). The margin is what the repeats
make it, and does not shrink to nothing with more rounds, so a difference that rounds of the
same run barely resolve is not taken for a real one.

A region is the quantized compute nodes under one module: the module path the exporter writes
into node names, one level below the path that every int8 node shares (`/bottleneck/bottleneck.0/
conv/Conv` is in `/bottleneck`; in a model whose nodes all sit under `/kp_detector`, in
`/kp_detector/predictor`). Nodes of that shared module's own forward (`/Add_3`) form its own
region (`/`).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compress.quantize.gate import Builder, QualityGate

# Per model, the ms of each round's run: round i of every model ran at about the same moment.
Timer = Callable[[Sequence[Path]], list[list[float]]]
MIXED_METHOD = (
    "each region (the int8 nodes under one module) timed against the same file with that region float, in "
    "interleaved rounds; regions slower in int8 beyond noise (in three rounds of four or more, and in more than "
    "a one-sided sign test gives by chance at 5 %) stay float, but for their weighted ops (Conv, ConvTranspose, "
    "Gemm, MatMul) where that file is no slower than the one with those regions wholly float"
)
SIGN_TEST_LEVEL = 0.05
# Ops whose int8 kernels compute on int8 weights; the others of a slow region are what makes it slow.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def chance_of_at_least(slower: int, rounds: int) -> float:
    """The chance that a coin tossed once per round comes up "slower" in at least `slower` of `rounds`."""
    return sum(math.comb(rounds, k) for k in range(slower, rounds + 1)) / 2**rounds


@dataclass(frozen=True)
class Comparison:
    """Model `a` vs model `b` timed in the same rounds: their median ms, and the per-round ratio a/b:
    its median, its lower and upper quartiles, and in how many rounds `a` was the slower."""

    a_ms: float
    b_ms: float
    ratio: float
    low: float
    high: float
    rounds_slower: int
    rounds: int

    @property
    def slower(self) -> bool:
        """`a` is slower than `b` beyond the noise of the rounds: in three rounds of four or more, and in more
        rounds than chance gives one time in twenty."""
        return self.low > 1.0 and chance_of_at_least(self.rounds_slower, self.rounds) < SIGN_TEST_LEVEL

    def describe(self) -> str:
        return (
            f"{self.ratio:.2f}x (quartiles {self.low:.2f}-{self.high:.2f}, "
            f"slower in {self.rounds_slower} of {self.rounds} rounds)"
        )


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison:
    ratios = [x / y for x, y in zip(a, b)]
    low, ratio, high = np.percentile(ratios, [25, 50, 75])
    return Comparison(
        float(np.median(a)),
        float(np.median(b)),
        float(ratio),
        float(low),
        float(high),
        sum(r > 1 for r in ratios),
        len(ratios),
    )


def host_timer(runs: int, warmup: int) -> Timer:
    """Times models on this host's CPU, one thread, in `runs` interleaved rounds after `warmup` runs each.

    The time of a run is the runner thread's CPU time: at one thread onnxruntime computes on the
    calling thread, so time the core spent on other processes is left out (what the load of the
    moment still changes, caches and memory bandwidth, the pairing cancels).
    """

    def time(paths: Sequence[Path]) -> list[list[float]]:
        from compress.bench.host import measure

        results = measure(list(paths), threads=1, warmup=warmup, runs=runs, top=0, interleave=True)
        return [r["cpu_times_ms"] for r in results]

    return time


@dataclass
class Latency:
    """The int8 file vs its fp32 file on this host, 1 thread, `runs` interleaved rounds after `warmup`."""

    int8_vs_fp32: Comparison
    runs: int
    warmup: int
    host_int8_dot_product: bool

    @property
    def fp32_ms(self) -> float:
        return self.int8_vs_fp32.b_ms

    @property
    def int8_ms(self) -> float:
        return self.int8_vs_fp32.a_ms

    @property
    def ratio(self) -> float:
        return self.int8_vs_fp32.ratio

    @property
    def slower(self) -> bool:
        return self.int8_vs_fp32.slower

    def to_json(self) -> dict[str, Any]:
        c = self.int8_vs_fp32
        return {
            "fp32_ms": self.fp32_ms,
            "int8_ms": self.int8_ms,
            "int8_over_fp32": self.ratio,
            "int8_over_fp32_quartiles": [c.low, c.high],
            "rounds_int8_slower": c.rounds_slower,
            "int8_slower": self.slower,
            "threads": 1,
            "runs": self.runs,
            "warmup": self.warmup,
            "measured": "interleaved rounds, runner thread CPU time",
            "host_int8_dot_product": self.host_int8_dot_product,
        }


def time_files(fp32: Path, int8: Path, timer: Timer, runs: int, warmup: int, host_int8_dot_product: bool) -> Latency:
    fp32_ms, int8_ms = timer([fp32, int8])
    return Latency(compare(int8_ms, fp32_ms), runs, warmup, host_int8_dot_product)


# -- regions ---------------------------------------------------------------------------------
def scope(node: str) -> list[str]:
    """The module path of a node from its exported name: `/spade_blocks.1/conv/Conv` -> [spade_blocks.1, conv]."""
    return node.split("/")[1:-1]


def region_of(node: str, shared: int = 0) -> str:
    """The module `shared` + 1 levels down that a node belongs to: `/spade_blocks.1/conv/Conv` -> `/spade_blocks.1`;
    a node of the shared module's own forward (`/Add_3` with `shared` 0) -> that module (`/`)."""
    return "/" + "/".join(scope(node)[: shared + 1])


def regions(nodes: Sequence[str]) -> dict[str, list[str]]:
    """The nodes grouped by region, one level below the module path they all share; regions in the order
    of their first node."""
    shared = len(os.path.commonprefix([scope(n) for n in nodes])) if nodes else 0
    grouped: dict[str, list[str]] = {}
    for node in nodes:
        grouped.setdefault(region_of(node, shared), []).append(node)
    return grouped


@dataclass
class RegionLatency:
    """The whole file with one region int8 (as in the int8 file) and with that region float."""

    region: str
    int8_nodes: int
    int8_vs_float: Comparison
    kept_float: bool = False

    def to_json(self) -> dict[str, Any]:
        c = self.int8_vs_float
        return {
            "int8_nodes": self.int8_nodes,
            "int8_ms": c.a_ms,
            "float_ms": c.b_ms,
            "int8_over_float": c.ratio,
            "quartiles": [c.low, c.high],
            "rounds_int8_slower": c.rounds_slower,
            "kept_float": self.kept_float,
        }


@dataclass
class MixedPrecision:
    """Which regions stayed float because their int8 is slower on this host, and what that cost in quality."""

    regions: list[RegionLatency]
    float_nodes: list[str] = field(default_factory=list)
    gate_value: float | None = None  # the gate metric with those regions float (None: not gated)
    note: str = ""
    # The file with only the kept regions' unweighted ops float vs with those regions wholly float; None
    # when they have no weighted op. `weights_int8`: that lighter file ships.
    weights_int8_vs_float: Comparison | None = None
    weights_int8: bool = False

    @property
    def kept_float(self) -> list[str]:
        return [r.region for r in self.regions if r.kept_float]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": MIXED_METHOD,
            "regions": {r.region: r.to_json() for r in self.regions},
            "kept_float": self.kept_float,
            "float_nodes": self.float_nodes,
            "gate_value": self.gate_value,
            "note": self.note,
            "weights_int8": self.weights_int8,
            "weights_int8_vs_float": asdict(self.weights_int8_vs_float) if self.weights_int8_vs_float else None,
        }


def latency_fallback(
    model: onnx.ModelProto,
    int8_nodes: Sequence[str],
    build: Builder,
    excluded: Collection[str],
    timer: Timer,
    gate: QualityGate | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[onnx.ModelProto, MixedPrecision]:
    """Keep float every region of `model` whose int8 is slower on this host; the model that ships and the record.

    `build(exclude)` quantizes with the nodes in `exclude` left float; `excluded` are the nodes the
    accuracy fallback already returned to float. Each region is judged against the same file with
    only that region float; the regions found slower go float together, and the result must still
    pass `gate`, else every region stays int8 (the record says why).
    """
    grouped = regions(int8_nodes)
    if not grouped:
        return model, MixedPrecision([], note="no node runs in int8")
    with tempfile.TemporaryDirectory(prefix="quantize-latency-") as tmp:
        paths = [Path(tmp) / "int8.onnx"]
        onnx.save(model, str(paths[0]))
        for i, nodes in enumerate(grouped.values()):
            paths.append(Path(tmp) / f"region{i}.onnx")
            onnx.save(build([*excluded, *nodes]), str(paths[-1]))
        times = timer(paths)
    mixed = MixedPrecision(
        [RegionLatency(name, len(nodes), compare(times[0], t)) for (name, nodes), t in zip(grouped.items(), times[1:])]
    )
    for r in mixed.regions:
        log(
            f"region {r.region}: int8 {r.int8_vs_float.a_ms:.3f} ms, float {r.int8_vs_float.b_ms:.3f} ms, "
            f"int8/float {r.int8_vs_float.describe()}"
        )
    slower = [r for r in mixed.regions if r.int8_vs_float.slower]
    if not slower:
        mixed.note = "no region is slower in int8 beyond noise: every region stays int8"
        return model, mixed
    float_nodes = [n for r in slower for n in grouped[r.region]]
    candidate = build([*excluded, *float_nodes])
    candidate, float_nodes = _weights_int8(model, candidate, float_nodes, build, excluded, timer, mixed)
    if gate is not None:
        mixed.gate_value = gate.measure(candidate)
        if not gate.passes(mixed.gate_value):
            mixed.note = (
                f"{', '.join(r.region for r in slower)} slower in int8, but with them float the gate fails "
                f"({gate.metric} {mixed.gate_value:.3f}, bound {gate.bound}): every region stays int8"
            )
            return model, mixed
    for r in slower:
        r.kept_float = True
    mixed.float_nodes = float_nodes
    mixed.note = f"{len(slower)} of {len(mixed.regions)} regions kept float: slower in int8 on this host"
    if mixed.weights_int8 and mixed.weights_int8_vs_float:
        lighter = mixed.weights_int8_vs_float.describe()
        mixed.note += f"; their weighted ops stay int8, the file {lighter} of the one with them wholly float"
    return candidate, mixed


def _weights_int8(
    model: onnx.ModelProto,
    regions_float: onnx.ModelProto,
    float_nodes: list[str],
    build: Builder,
    excluded: Collection[str],
    timer: Timer,
    mixed: MixedPrecision,
) -> tuple[onnx.ModelProto, list[str]]:
    """The file to ship for regions slower in int8, and its float nodes: the regions wholly float
    (`regions_float`), or with only their unweighted ops float when that file is no slower beyond noise.

    A slow region's convolutions are often still faster in int8 (FOMM's dense motion network at 1/4
    on an AVX-512 host: its hourglass 0.98 ms in int8 against 1.23 in float) while its elementwise ops
    are slower (QLinearAdd and QLinearMul broadcasting over keypoints, uint8 Resize). Keeping its
    weights int8 also keeps the file a quarter of the size.
    """
    op_types = {node.name: node.op_type for node in model.graph.node}
    unweighted = [n for n in float_nodes if op_types.get(n) not in WEIGHTED_OPS]
    if len(unweighted) == len(float_nodes):
        return regions_float, float_nodes
    lighter = build([*excluded, *unweighted])
    with tempfile.TemporaryDirectory(prefix="quantize-latency-") as tmp:
        paths = [Path(tmp) / "weights_int8.onnx", Path(tmp) / "regions_float.onnx"]
        onnx.save(lighter, str(paths[0]))
        onnx.save(regions_float, str(paths[1]))
        times = timer(paths)
    mixed.weights_int8_vs_float = compare(times[0], times[1])
    mixed.weights_int8 = not mixed.weights_int8_vs_float.slower
    return (lighter, unweighted) if mixed.weights_int8 else (regions_float, float_nodes)

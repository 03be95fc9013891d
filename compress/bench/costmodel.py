"""Per-layer latency cost model: walk an ONNX graph, count work per node, price it per device.

Every node gets an op class and its work, from the shapes onnx.shape_inference gives:
  conv / conv_int8   dense Conv, ConvTranspose, Gemm, MatMul (int8 when fed by DequantizeLinear
                     or when the whole graph is priced as int8)
  depthwise          Conv with one input channel per group
  memory             everything else that moves data (elementwise, pooling, concat, resize, ...)
  grid_sample        GridSample (gathers: its own throughput)
  free               shape-only ops, Q/DQ pairs, and activations / BatchNorm fused into the
                     conv before them (as onnxruntime and TFLite fuse them)

A device profile prices a node as  ms = sum_k coef[k] * feature[k]  with the features
  <class>.gmac  MACs / 1e9                 <class>.mb    input + weight + output bytes / 1e6
  <class>.mtap  conv output positions x kernel taps / 1e6
  memory.mseg   inner-loop runs of a broadcasting elementwise op / 1e6
  layer         1 per priced node
and a network as the sum over its nodes plus "run", the fixed cost of one inference call. A
profile may price an op type's bytes on their own ("op:Softmax.mb") where one memory-bound rate
would not fit them all. Coefficients come from `calibrate` (YAML under compress/bench/devices/),
one set per thread count, each with the data for a prediction interval (compress/bench/interval.py).
A host profile records the machine it was calibrated on (compress/bench/machine.py): its CPU
flags set the channel block, and predicting with it on another machine warns. A host profile
prices the graph onnxruntime executes (executed.py: NCHWc and plain-path convs, layout reorders,
fused activations) rather than the exported one, its convs by a per-kernel model refitted from
measurements stored next to it (kernels.py; feature <class>.kms, the model's ms, times a scale).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property, reduce
from pathlib import Path
from typing import Any

import onnx
import yaml
from onnx import shape_inference

from compress.bench import machine
from compress.bench.interval import INTERVAL_KEYS, IntervalModel, widen
from compress.errors import CompressError

DEVICES_DIR = Path(__file__).with_name("devices")
# conv_nchw, depthwise_nchw and reorder occur only in the graph onnxruntime executes (executed.py)
CLASSES = ("conv", "conv_int8", "depthwise", "conv_nchw", "depthwise_nchw", "reorder", "memory", "grid_sample")
# kms: a conv's time from the profile's per-kernel model (kernels.py), in ms; its coefficient is a scale
# A kernel timed alone (a single-conv graph) carries a fixed cost that the same conv inside a network does
# not (1.2-1.4 us in the k-fold fits of docs/latency.md); its feature is -1 per conv the per-kernel model
# prices, so that a non-negative coefficient takes it off (ms per conv).
KERNEL_ALONE = "kernel_alone"
# The output bytes of an activation fused into a conv (executed graph): Relu costs nothing in the conv's output
# loop; Clip (Relu6) and HardSwish each have their own rate, every other one (Sigmoid, Tanh, ...) `activation.mb`.
ACTIVATION_FEATURES = {"Clip": "activation_clip.mb", "HardSwish": "activation_hardswish.mb"}
# An ArgMax/ArgMin over an axis that is not the innermost walks the reduced elements `stride` apart; when
# that stride is a multiple of 4 KiB every reduced element of one output falls in the same cache set, and
# once there are more of them than the set has ways they evict each other (measured on the AMD EPYC host:
# 0.15-0.2 ms/MB otherwise, about 0.43 with such a stride, rising to about 1.4 from 512 to 2048 aliasing
# elements and flat beyond: 1.4-1.6 ms/MB up to the 27 554 planes of an exact CSE lookup).
# The bytes of such a reduction are priced once more by `reduction_aliased.mb`, and by
# `reduction_aliased_long.mb` times how far the reduced length exceeds ALIASED_LONG (in units of it),
# counted up to ALIASED_SATURATED.
REDUCTIONS = {"ArgMax", "ArgMin"}
ALIASING_STRIDE = 4096
ALIASED_WAYS = 8  # ways of an x86 L1 set (8-12): that many aliasing elements do not evict each other
ALIASED_LONG = 512
ALIASED_SATURATED = 2048
REDUCTION_FEATURES = ("reduction_aliased.mb", "reduction_aliased_long.mb")
# A kernel timed alone finds its weights in the caches from the run before; inside a network whose conv weights
# fill the last-level cache, each NCHWc conv finds them evicted by the others' and runs slower (large nets ran
# 15-25 % slower than their kernels alone on the host; plain-path convs, whose GEMM packs the weights anyway,
# did not). Such a conv's kernel time counts once more as `kernel_cold.kms`, times the share of the cache the
# network's conv weights fill (NodeCost.cold_share, up to 1).
KERNEL_COLD = "kernel_cold.kms"
# A layout reorder (executed graph) copies from the caches at one rate up to a few MB and slows as it outgrows
# them (single-conv graphs on the AMD EPYC host, 32 MB L3: 0.012 ms/MB at 1-4 MB, 0.020 at 8-16, 0.031 past
# 64): its bytes beyond REORDER_SPILL are priced once more by `reorder_spill.mb`.
REORDER_SPILL = 8_000_000
# A gather copies block by block, a few ns each whatever the block's length (the host: 2.6-3 ns for blocks of
# 4-3072 bytes): Gather one block per index and leading element (a CSE lookup's `scores[..., 0]` gathers
# one float at a time), GatherElements one per output element. Their counts are priced on their own.
GATHER_FEATURES = {"Gather": "gather.mblock", "GatherElements": "gather_elements.mblock"}
FEATURES = tuple(f"{c}.{unit}" for c in CLASSES for unit in ("gmac", "mb", "mtap", "mseg", "kms")) + (
    "activation.mb",
    *ACTIVATION_FEATURES.values(),
    *REDUCTION_FEATURES,
    *GATHER_FEATURES.values(),
    "reorder_spill.mb",
    KERNEL_ALONE,
    KERNEL_COLD,
    "layer",
    "run",
)
DENSE_CLASSES = {"conv", "conv_int8", "depthwise"}
# a profile's `graph:` value when it prices onnxruntime's optimised graph (host profiles) rather than the export
EXECUTED_GRAPH = "onnxruntime-optimized"
ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Where",
    "Max",
    "Min",
    "Equal",
    "Greater",
    "Less",
    "And",
    "Or",
    "PRelu",
    "Sum",
    "Mean",
}
SHAPE_ONLY = {
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Shape",
    "Constant",
    "ConstantOfShape",
    "Identity",
    "Dropout",
    "Size",
}
QUANT = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
FUSED_INTO_CONV = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "BatchNormalization"}
DENSE = {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger"}
ELEM_SIZE = {1: 4, 10: 2, 11: 8, 6: 4, 7: 8, 2: 1, 3: 1, 9: 1, 16: 2}  # ONNX TensorProto dtype -> bytes


@dataclass
class NodeCost:
    """The work of one ONNX node."""

    name: str
    op_type: str
    op_class: str  # one of CLASSES or "free"
    macs: int = 0
    bytes: int = 0
    taps: int = 0  # output positions x kernel taps of a conv: the work that does not shrink with fewer channels
    segments: int = 0  # inner-loop runs of a broadcasting elementwise op (output elements / contiguous span)
    activation_bytes: int = 0  # output bytes of an activation fused into a conv (executed graph), Relu left out
    activation: str = ""  # that activation's op type
    kernel: Any = None  # a conv's kernels.Kernel (executed graph): what a per-kernel model prices
    kernel_ms: float | None = None  # that model's price, set by the profile that has one
    aliased_bytes: int = 0  # bytes a reduction reads with a cache-aliasing stride (REDUCTIONS)
    reduced: int = 0  # that reduction's axis length
    blocks: int = 0  # contiguous blocks a gather copies (GATHER_FEATURES)
    cold_share: float = 0.0  # share of the last-level cache its network's conv weights fill (KERNEL_COLD)

    def features(self, op_specific: frozenset[str] = frozenset()) -> dict[str, float]:
        """Work as cost features; the bytes of an op type in `op_specific` go to its own "op:TYPE.mb"."""
        if self.op_class == "free":
            return {}
        mb = f"op:{self.op_type}.mb" if self.op_type in op_specific else f"{self.op_class}.mb"
        if self.kernel_ms is not None:  # priced by the per-kernel model instead of the linear terms
            out = {f"{self.op_class}.kms": self.kernel_ms, "layer": 1.0, KERNEL_ALONE: -1.0}
            if self.cold_share:
                out[KERNEL_COLD] = self.kernel_ms * self.cold_share
        else:
            out = {
                f"{self.op_class}.gmac": self.macs / 1e9,
                mb: self.bytes / 1e6,
                f"{self.op_class}.mtap": self.taps / 1e6,
                f"{self.op_class}.mseg": self.segments / 1e6,
                "layer": 1.0,
            }
            if self.blocks:
                out[GATHER_FEATURES[self.op_type]] = self.blocks / 1e6
            if self.op_class == "reorder" and self.bytes > REORDER_SPILL:
                out["reorder_spill.mb"] = (self.bytes - REORDER_SPILL) / 1e6
        if self.activation_bytes:
            out[ACTIVATION_FEATURES.get(self.activation, "activation.mb")] = self.activation_bytes / 1e6
        if self.aliased_bytes:
            aliased, long = REDUCTION_FEATURES
            out[aliased] = self.aliased_bytes / 1e6
            out[long] = self.aliased_bytes / 1e6 * max(0.0, min(self.reduced, ALIASED_SATURATED) / ALIASED_LONG - 1)
        return out


def prod(dims: Iterable[int]) -> int:
    return reduce(lambda a, b: a * b, dims, 1)


class Shapes:
    """Static shapes and element sizes of every tensor of a graph; `int8` counts 1 byte per element."""

    def __init__(self, info: dict[str, tuple[list[int], int]], int8: bool):
        self.int8 = int8
        self.info = info

    @classmethod
    def from_model(cls, model: onnx.ModelProto, int8: bool = False) -> Shapes:
        """The shapes of a shape-inferred model (symbolic dimensions taken as 1)."""
        info: dict[str, tuple[list[int], int]] = {}
        g = model.graph
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            t = vi.type.tensor_type
            if t.HasField("shape"):
                info[vi.name] = ([d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim], t.elem_type)
        for init in g.initializer:
            info[init.name] = (list(init.dims), init.data_type)
        return cls(info, int8)

    def shape(self, name: str) -> list[int] | None:
        return self.info[name][0] if name in self.info else None

    def nbytes(self, name: str) -> int:
        if name not in self.info:
            return 0
        dims, dtype = self.info[name]
        return prod(dims) * (1 if self.int8 else ELEM_SIZE.get(dtype, 4))


def load_model(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise CompressError(f"{path}: ONNX model not found")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a bad file
        raise CompressError(f"{path}: not a readable ONNX model ({exc})") from None


def is_quantized(model: onnx.ModelProto) -> bool:
    return any(
        n.op_type in QUANT or n.op_type.startswith("QLinear") or n.op_type.endswith("Integer") for n in model.graph.node
    )


def analyse(model: str | Path | onnx.ModelProto, precision: str = "auto", channel_block: int = 1) -> list[NodeCost]:
    """Per-node work of a model; `precision` "int8" prices a float graph as fully quantized.

    `channel_block` is the device's SIMD channel blocking (8 for onnxruntime's NCHWc kernels on
    AVX2): conv channel counts round up to it, as the kernels compute the padded channels.
    """
    proto = load_model(model)
    int8_graph = precision == "int8"
    inferred = shape_inference.infer_shapes(proto, data_prop=True)
    shapes = Shapes.from_model(inferred, int8_graph)
    graph = inferred.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1
    fused_outputs: set[str] = set()
    costs = []
    for n in graph.node:
        cost = _node_cost(n, shapes, producer, consumers, fused_outputs, int8_graph, channel_block)
        if cost.op_class in DENSE_CLASSES or (cost.op_class == "free" and n.op_type in FUSED_INTO_CONV):
            fused_outputs.update(n.output)  # an activation after this node fuses into it
        costs.append(cost)
    return costs


def _node_cost(
    n: onnx.NodeProto,
    shapes: Shapes,
    producer: dict,
    consumers: dict,
    fused_outputs: set[str],
    int8_graph: bool,
    channel_block: int,
) -> NodeCost:
    name, op = n.name or n.output[0], n.op_type
    if op in SHAPE_ONLY or op in QUANT:
        return NodeCost(name, op, "free")
    if op in FUSED_INTO_CONV and n.input and n.input[0] in fused_outputs and consumers.get(n.input[0], 0) == 1:
        return NodeCost(name, op, "free")
    moved = sum(shapes.nbytes(i) for i in n.input if i) + sum(shapes.nbytes(o) for o in n.output)
    out = shapes.shape(n.output[0]) or []
    if op in DENSE:
        macs, depthwise = _dense_macs(n, shapes, out, channel_block)
        w = shapes.shape(n.input[1]) if len(n.input) > 1 and n.op_type in {"Conv", "ConvInteger"} else None
        taps = prod(out[2:]) * prod(w[2:]) if w and len(out) > 2 else 0
        fed_by_dq = any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input[:1])
        quantized = int8_graph or fed_by_dq or op.startswith("QLinear") or op.endswith("Integer")
        op_class = "depthwise" if depthwise else ("conv_int8" if quantized else "conv")
        return NodeCost(name, op, op_class, macs, moved, taps)
    if op == "GridSample":
        return NodeCost(name, op, "grid_sample", 0, moved)
    segments = broadcast_segments(n, shapes, out) if op in ELEMENTWISE else 0
    return NodeCost(name, op, "memory", 0, moved, 0, segments, **strided_reduction(n, shapes), **gathered(n, shapes))


def strided_reduction(n: onnx.NodeProto, shapes: Shapes) -> dict[str, int]:
    """NodeCost's `aliased_bytes` and `reduced` of an ArgMax/ArgMin whose reduced elements lie a multiple
    of ALIASING_STRIDE bytes apart (see REDUCTIONS); {} for any other node."""
    x = shapes.shape(n.input[0]) if n.op_type in REDUCTIONS and n.input else None
    if not x:
        return {}
    axis = _attr(n, "axis", 0) % len(x)
    itemsize = shapes.nbytes(n.input[0]) // max(1, prod(x))
    stride = prod(x[axis + 1 :]) * itemsize
    if stride == itemsize or stride % ALIASING_STRIDE or x[axis] <= ALIASED_WAYS:
        return {}
    return {"aliased_bytes": shapes.nbytes(n.input[0]), "reduced": x[axis]}


def gathered(n: onnx.NodeProto, shapes: Shapes) -> dict[str, int]:
    """NodeCost's `blocks` of a Gather or GatherElements (GATHER_FEATURES); {} for any other node."""
    if n.op_type not in GATHER_FEATURES or len(n.input) < 2:
        return {}
    data, indices, out = shapes.shape(n.input[0]), shapes.shape(n.input[1]), shapes.shape(n.output[0])
    if n.op_type == "GatherElements":
        return {"blocks": prod(out)} if out is not None else {}
    if data is None or indices is None:
        return {}
    return {"blocks": prod(data[: _attr(n, "axis", 0) % len(data)]) * prod(indices)}


def broadcast_segments(n: onnx.NodeProto, shapes: Shapes, out: list[int]) -> int:
    """How many separate inner loops an elementwise op runs when an input broadcasts.

    An input is walked in runs as long as its trailing block of dimensions that all match the
    output, or all broadcast: 1xCx1x1 against 1xCxHxW runs H*W long, but 1xKx1x1x2 against
    1xKxHxWx2 (FOMM's keypoint offsets) only 2 long, and short runs make per-run overhead
    dominate. Scalars and same-shape inputs stream in one run.
    """
    worst = 0
    for name in n.input:
        shape = shapes.shape(name) if name else None
        if shape is None or prod(shape) == 1:
            continue
        shape = [1] * (len(out) - len(shape)) + shape
        if shape == out:
            continue
        span, mode = 1, None
        for d_out, d_in in zip(reversed(out), reversed(shape)):
            if d_out == 1:
                continue
            kind = "same" if d_in == d_out else "broadcast"  # along a broadcast block the input value is constant
            if mode is not None and kind != mode:
                break
            mode, span = kind, span * d_out
        worst = max(worst, prod(out) // span)
    return worst


def _attr(n: onnx.NodeProto, key: str, default: Any) -> Any:
    for a in n.attribute:
        if a.name == key:
            return onnx.helper.get_attribute_value(a)
    return default


def round_up(c: int, block: int) -> int:
    return -(-c // block) * block


def _dense_macs(n: onnx.NodeProto, shapes: Shapes, out: list[int], block: int) -> tuple[int, bool]:
    """(MACs, is depthwise) of a conv or matrix product from its weight and output shapes."""
    op = n.op_type
    weight_index = 3 if op in {"QLinearConv", "QLinearMatMul"} else 1
    w = shapes.shape(n.input[weight_index]) if len(n.input) > weight_index else None
    if w is None or not out:
        return 0, False
    if op in {"Conv", "QLinearConv", "ConvInteger"}:
        group = _attr(n, "group", 1)
        if group > 1 and w[1] == 1:
            return round_up(out[1], block) * prod(out[2:]) * prod(w[2:]), True
        cin = w[1] if w[1] * group < block else round_up(w[1], block)  # a 3-channel image input is not padded
        return out[0] * round_up(out[1], block) * prod(out[2:]) * cin * prod(w[2:]), False
    if op == "ConvTranspose":
        x = shapes.shape(n.input[0]) or out
        return prod(x) * prod(w[1:]), False
    k = w[0] if op in {"MatMul", "QLinearMatMul", "MatMulInteger"} or not _attr(n, "transB", 0) else w[1]
    if op in {"MatMul", "QLinearMatMul", "MatMulInteger"} and len(w) >= 2:
        k = w[-2]
    return prod(out) * k, False


def totals(costs: list[NodeCost], op_specific: frozenset[str] = frozenset()) -> dict[str, float]:
    """Sum of every feature over the nodes, and "run" 1 (the fixed cost of one inference call)."""
    out = dict.fromkeys(FEATURES, 0.0)
    out["run"] = 1.0
    for c in costs:
        for k, v in c.features(op_specific).items():
            out[k] = out.get(k, 0.0) + v
    return out


def is_feature(key: str) -> bool:
    return key in FEATURES or (key.startswith("op:") and key.endswith(".mb"))


# -- device profiles -------------------------------------------------------------------------
@dataclass
class DeviceProfile:
    """Calibrated coefficients of one device, per thread count (from a YAML file)."""

    name: str
    path: Path
    coefficients: dict[int, dict[str, float]]
    meta: dict[str, Any] = field(default_factory=dict)

    def coef(self, threads: int) -> dict[str, float]:
        if threads not in self.coefficients:
            have = ", ".join(str(t) for t in sorted(self.coefficients))
            raise CompressError(
                f"{self.path}: device profile {self.name!r} is calibrated for threads {have}, not {threads}; "
                f"use one of those or calibrate it (python -m compress.bench.calibrate)"
            )
        return self.coefficients[threads]

    @property
    def describes_host(self) -> bool:
        """A profile of an onnxruntime host (calibrate host), as opposed to a phone's published figures."""
        return "machine" in self.meta or self.name.startswith("host")

    @property
    def channel_block(self) -> int:
        """The recorded machine's NCHWc block (from its CPU flags), else the profile's `channel_block`."""
        if "machine" in self.meta:
            return machine.channel_block(self.meta["machine"].get("flags") or [])
        return int(self.meta.get("channel_block", 1))

    @property
    def prices_executed_graph(self) -> bool:
        """Whether the profile prices the graph onnxruntime executes here (executed.py), not the exported one."""
        return self.meta.get("graph") == EXECUTED_GRAPH

    def analyse(self, model: str | Path | onnx.ModelProto, precision: str = "auto") -> list[NodeCost]:
        """Per-node work of `model` as this profile prices it."""
        if not self.prices_executed_graph:
            return analyse(model, precision, self.channel_block)
        from compress.bench import executed

        cache = int((self.meta.get("machine") or {}).get("cache_bytes") or 0)  # the machine it describes, else here
        return executed.analyse(model, self.channel_block, precision, self.kernel_model, cache or None)

    @cached_property
    def kernel_model(self) -> Any:
        """The per-kernel model refitted from the measurements the profile names (`kernels:`), else None."""
        if "kernels" not in self.meta:
            return None
        from compress.bench import kernels

        return kernels.fitted(self.path.parent / self.meta["kernels"])

    def interval_model(self, threads: int) -> IntervalModel | None:
        """The interval data calibrated with this thread count's coefficients (None in a profile without it)."""
        self.coef(threads)
        data = (self.meta.get("calibrations") or {}).get(threads, {}).get("interval")
        return IntervalModel.from_json(data) if data else None

    def interval(self, costs: list[NodeCost], threads: int) -> dict[str, Any] | None:
        """The prediction interval of a network and the share of its predicted ms that extrapolates
        (op types no reference network contains); None when the profile has no interval data."""
        model = self.interval_model(threads)
        if model is None:
            return None
        coef, specific = self.coef(threads), self.op_specific(threads)
        low = high = total = self.run_ms(threads)
        extrapolated: dict[str, float] = {}
        for c in costs:
            feats = c.features(specific)
            if not feats:
                continue
            ms = self.node_ms(c, threads)
            # a node's bytes term (none for a conv priced by the per-kernel model)
            mb = next((k for k in feats if k.endswith(".mb") and not k.startswith("activation")), None)
            node_mb, rate = (feats[mb], coef.get(mb, 0.0)) if mb else (0.0, 0.0)
            node_low, node_high = model.node_range(c.op_class, c.op_type, ms, node_mb, rate)
            low, high, total = low + node_low, high + node_high, total + ms
            if model.extrapolated(c.op_type):
                extrapolated[c.op_type] = extrapolated.get(c.op_type, 0.0) + ms
        low_ms, high_ms = widen(low, high, model.bound)
        share = sum(extrapolated.values()) / total if total else 0.0
        return dict(zip(INTERVAL_KEYS, ([low_ms, high_ms], model.coverage, share, sorted(extrapolated))))

    def op_specific(self, threads: int) -> frozenset[str]:
        """Op types this profile prices on their own."""
        return frozenset(k[3:-3] for k in self.coef(threads) if k.startswith("op:"))

    def node_ms(self, node: NodeCost, threads: int) -> float:
        coef = self.coef(threads)
        return sum(coef.get(k, 0.0) * v for k, v in node.features(self.op_specific(threads)).items())

    def run_ms(self, threads: int) -> float:
        """The fixed cost of one inference call (feeding inputs, allocating outputs)."""
        return self.coef(threads).get("run", 0.0)

    def predict_ms(self, costs: list[NodeCost], threads: int) -> float:
        return self.run_ms(threads) + sum(self.node_ms(c, threads) for c in costs)


def profile_path(name: str) -> Path:
    return DEVICES_DIR / f"{name}.yaml"


def load_profile(name: str, path: Path | None = None) -> DeviceProfile:
    """A device profile by name (compress/bench/devices/NAME.yaml) or from an explicit file."""
    path = path or profile_path(name)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in DEVICES_DIR.glob("*.yaml"))) or "none"
        raise CompressError(
            f"profile:{name}: no device profile {path} (known: {known}); "
            f"create one with python -m compress.bench.calibrate"
        )
    data = yaml.safe_load(path.read_text()) or {}
    try:
        coefficients = {
            int(t): {k: float(v) for k, v in c["coefficients"].items()} for t, c in data["calibrations"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CompressError(
            f"{path}: expected calibrations: {{THREADS: {{coefficients: {{feature: ms per unit}}}}}} ({exc})"
        ) from None
    unknown = {k for c in coefficients.values() for k in c if not is_feature(k)}
    if unknown:
        raise CompressError(f"{path}: unknown cost features {sorted(unknown)}; known: {', '.join(FEATURES)}")
    return DeviceProfile(data.get("device", name), path, coefficients, data)


def predict(
    model: str | Path | onnx.ModelProto, device: str | DeviceProfile, threads: int = 1, precision: str = "auto"
) -> dict[str, Any]:
    """Predicted latency of a model on a device profile, with the per-node breakdown and its interval
    (`interval_ms`, `interval_coverage`, `extrapolated_share`, `extrapolated_op_types`: see DeviceProfile.interval).

    A host profile used on a machine other than the one it records warns (machine.HostMismatchWarning).
    """
    profile = device if isinstance(device, DeviceProfile) else load_profile(device.removeprefix("profile:"))
    if profile.describes_host:
        machine.warn_if_elsewhere(profile.name, profile.meta.get("machine"))
    costs = profile.analyse(model, precision)
    per_node = [(c, profile.node_ms(c, threads)) for c in costs if c.op_class != "free"]
    total = profile.run_ms(threads) + sum(ms for _, ms in per_node)
    interval = profile.interval(costs, threads) or dict.fromkeys(INTERVAL_KEYS)
    return {
        "device": f"profile:{profile.name}",
        "threads": threads,
        "ms": total,
        "nodes": per_node,
        "totals": totals(costs, profile.op_specific(threads)),
        **interval,
    }

"""Per-kernel latency models of a host's convs, refitted at load from single-kernel measurements.

One linear model per conv class (cost per MAC, per output tap, per byte) does not follow how
onnxruntime's kernels speed up and slow down with shape (channel counts against the NCHWc block,
small spatial maps, stride, kernel size). `calibrate host` therefore measures single-conv graphs
and keeps the raw measurements as data next to the profile (`<profile>-kernels.csv`: one row per
kernel, its shape and its onnxruntime-profiled time). The model is refitted from that file
whenever a profile is loaded (no pickled predictors): per class, non-negative least squares
on the linear terms, then gradient-boosted trees on shape features for the log ratio of measured
to linear time. The trees only correct the linear model, so a kernel outside the measured range
is priced by the linear terms times a bounded correction. The fit is deterministic (fixed seeds,
no early stopping) and takes about a second.

Sampling: a first draw of random single-conv configurations (channel counts on and off the
block's multiples, kernel sizes 1-7, strides 1-2, maps 4-256 px), then adaptive rounds that
measure neighbours of the worst cross-validated kernels (nn-Meter's scheme: channels around the
bad configuration, the rest fixed).
"""

from __future__ import annotations

import csv
import functools
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from scipy.optimize import nnls

from compress.errors import CompressError

CONV_CLASSES = ("conv", "depthwise", "conv_nchw", "depthwise_nchw")
MIN_ROWS = 8  # fewer measured kernels of a class than this: its trees are not fitted (linear only)


@dataclass(frozen=True)
class Kernel:
    """A conv as onnxruntime runs it: channels as the executed graph has them (NCHWc ones padded)."""

    op_class: str
    cin: int
    cout: int
    groups: int
    k: int
    stride: int
    h: int  # output height and width
    w: int

    @property
    def macs(self) -> int:
        return self.cout * self.h * self.w * (self.cin // self.groups) * self.k * self.k

    @property
    def taps(self) -> int:
        return self.h * self.w * self.k * self.k

    @property
    def bytes(self) -> int:
        """fp32 input (from the output size and stride) + weights + output."""
        x = self.cin * self.h * self.stride * self.w * self.stride
        return 4 * (x + self.cout * (self.cin // self.groups) * self.k * self.k + self.cout * self.h * self.w)

    @property
    def columns(self) -> int:
        """Elements of the im2col buffer the plain path builds (input channels per group x taps)."""
        return self.macs // self.cout

    def linear_features(self) -> list[float]:
        return [self.macs / 1e9, self.taps / 1e6, self.columns / 1e6, self.bytes / 1e6, 1.0]

    def shape_features(self) -> list[float]:
        return [
            math.log2(self.cin),
            math.log2(self.cout),
            math.log2(self.cin // self.groups),
            self.k,
            self.stride,
            math.log2(self.h * self.w),
            self.cin % 16,
            self.cout % 16,
            math.log2(self.macs + 1),
            math.log2(self.bytes),
        ]


@dataclass(frozen=True)
class Measured:
    kernel: Kernel
    ms: float  # onnxruntime-profiled kernel time, fastest round


COLUMNS = [f.name for f in fields(Kernel)] + ["ms"]


def write_csv(path: Path, rows: Sequence[Measured]) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        for r in rows:
            out.writerow([*asdict(r.kernel).values(), f"{r.ms:.6f}"])
    return path


def read_csv(path: Path) -> list[Measured]:
    """The measured kernels of a profile; a malformed file is an error that names the file and the line."""
    if not path.is_file():
        raise CompressError(f"{path}: kernel measurements not found; re-run python -m compress.bench.calibrate host")
    rows = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != COLUMNS:
            raise CompressError(f"{path}: expected the header {','.join(COLUMNS)}, found {header}")
        for line, values in enumerate(reader, start=2):
            try:
                if len(values) != len(COLUMNS):
                    raise ValueError(f"{len(values)} fields, expected {len(COLUMNS)}")
                op_class, *ints, ms = values
                if op_class not in CONV_CLASSES:
                    raise ValueError(f"unknown class {op_class!r} (known: {', '.join(CONV_CLASSES)})")
                dims = [int(v) for v in ints]
                kernel = Kernel(op_class, *dims)
                if min(dims) < 1 or kernel.cin % kernel.groups:
                    raise ValueError(f"impossible shape {dims}")
                value = float(ms)
                if not value > 0:
                    raise ValueError(f"time {ms!r} is not positive")
            except ValueError as exc:
                raise CompressError(f"{path}:{line}: malformed kernel measurement ({exc})") from None
            rows.append(Measured(kernel, value))
    if not rows:
        raise CompressError(f"{path}: no kernel measurements")
    return rows


class ClassModel:
    """One conv class: linear terms (NNLS on relative error) times a tree correction."""

    def __init__(self, rows: Sequence[Measured]):
        from sklearn.ensemble import HistGradientBoostingRegressor

        x = np.array([r.kernel.linear_features() for r in rows])
        y = np.array([r.ms for r in rows])
        self.coef, _ = nnls(x / y[:, None], np.ones(len(y)))
        self.trees = None
        if len(rows) >= MIN_ROWS:
            shapes = np.array([r.kernel.shape_features() for r in rows])
            self.trees = HistGradientBoostingRegressor(
                max_iter=150,
                learning_rate=0.05,
                max_leaf_nodes=8,
                min_samples_leaf=4,
                early_stopping=False,
                random_state=0,
            ).fit(shapes, np.log(y / np.maximum(x @ self.coef, 1e-6)))

    def predict(self, kernels: Sequence[Kernel]) -> np.ndarray:
        base = np.array([k.linear_features() for k in kernels]) @ self.coef
        if self.trees is None:
            return base
        return base * np.exp(self.trees.predict(np.array([k.shape_features() for k in kernels])))


class KernelModel:
    """The per-class models of one host, fitted from its measured kernels."""

    def __init__(self, rows: Sequence[Measured]):
        self.rows = list(rows)
        self.classes = {
            c: ClassModel(of_class) for c in CONV_CLASSES if (of_class := [r for r in rows if r.kernel.op_class == c])
        }

    def predict(self, kernels: Sequence[Kernel]) -> np.ndarray:
        """Predicted ms of each kernel; a class without measurements is an error."""
        out = np.zeros(len(kernels))
        for c in {k.op_class for k in kernels}:
            if c not in self.classes:
                raise CompressError(f"no measured kernels of class {c}: re-run python -m compress.bench.calibrate host")
            idx = [i for i, k in enumerate(kernels) if k.op_class == c]
            out[idx] = self.classes[c].predict([kernels[i] for i in idx])
        return out


def fitted(path: Path) -> KernelModel:
    """The model of the measurements in `path`, fitted once per version of the file in a process: a
    profile is loaded for every prediction, and the pruner predicts many times."""
    return _fitted(str(path), path.stat().st_mtime_ns if path.is_file() else 0)


@functools.lru_cache(maxsize=4)
def _fitted(path: str, mtime_ns: int) -> KernelModel:
    return KernelModel(read_csv(Path(path)))


def dense_rate(rows: Sequence[Measured]) -> float:
    """Median ms per GMAC of the measured NCHWc dense convs of at least 1 MMAC: a host's dense conv rate,
    by which another device's profile carries the host's memory-bound rates over (calibrate.rate_range)."""
    rates = [r.ms / (r.kernel.macs / 1e9) for r in rows if r.kernel.op_class == "conv" and r.kernel.macs >= 1e6]
    if not rates:
        raise CompressError("no measured dense NCHWc convs of 1 MMAC or more to take the dense conv rate from")
    return float(np.median(rates))


def cross_validated_errors(rows: Sequence[Measured], folds: int = 5) -> np.ndarray:
    """Each kernel's relative error when predicted by a model fitted without its fold (deterministic folds)."""
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    errors = np.zeros(len(rows))
    for f in range(folds):
        held = order[f::folds]
        rest = sorted(set(order) - set(held))
        model = KernelModel([rows[i] for i in rest])
        for i in held:
            kernel = rows[i].kernel
            if kernel.op_class in model.classes:
                errors[i] = model.predict([kernel])[0] / rows[i].ms - 1
    return errors


# -- sampling ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """A single-conv graph to measure: exported-graph channels; onnxruntime picks the path."""

    cin: int
    cout: int
    k: int
    stride: int
    size: int  # input height = width
    depthwise: bool

    @property
    def name(self) -> str:
        kind = "dw" if self.depthwise else "conv"
        return f"{kind}-{self.cin}x{self.cout}-k{self.k}s{self.stride}-{self.size}px"

    @property
    def macs(self) -> int:
        side = -(-self.size // self.stride)  # output height = width
        out = side * side
        return out * self.cout * (1 if self.depthwise else self.cin) * self.k * self.k


def network_configs(model: onnx.ModelProto) -> list[Config]:
    """The square, undilated 2-D convs of a network as single-conv configurations (dense or depthwise)."""
    from onnx import shape_inference

    from compress.bench import costmodel

    shapes = costmodel.Shapes.from_model(shape_inference.infer_shapes(model))
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2:
            continue
        x, w = shapes.shape(n.input[0]), shapes.shape(n.input[1])
        if not x or not w or len(w) != 4 or w[2] != w[3] or len(x) != 4 or x[2] != x[3]:
            continue
        a = {attr.name: helper.get_attribute_value(attr) for attr in n.attribute}
        group, strides = a.get("group", 1), a.get("strides") or [1, 1]
        if any(d != 1 for d in a.get("dilations") or [1]) or strides[0] != strides[1]:
            continue
        if group == 1 or (group == x[1] and w[1] == 1 and w[0] == x[1]):
            out.append(Config(x[1], w[0], w[2], strides[0], x[2], group > 1))
    return out


def _channels(rng: random.Random) -> int:
    """Half on multiples of 8 (what unpruned networks use), half anywhere (what pruning leaves)."""
    return 8 * rng.randint(1, 32) if rng.random() < 0.5 else rng.randint(3, 200)


def _fits(c: Config) -> bool:
    """Within the sizes calibration can afford to measure and still resolve (0.02-120 MMACs)."""
    return 2e4 <= c.macs <= 1.2e8


def initial_sample(count: int, seed: int = 0) -> list[Config]:
    rng, out = random.Random(seed), []
    while len(out) < count:
        depthwise = rng.random() < 0.4
        cin = 3 if not depthwise and rng.random() < 0.1 else _channels(rng)  # a tenth are image stems
        config = Config(
            cin,
            cin if depthwise else _channels(rng),
            rng.choice([3, 3, 5, 7]) if depthwise else rng.choice([1, 1, 3, 3, 5, 7]),
            rng.choice([1, 1, 1, 2]),
            rng.choice([4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256]),
            depthwise,
        )
        if _fits(config) and config not in out:
            out.append(config)
    return out


def neighbours(config: Config, count: int, seed: int) -> list[Config]:
    """Configurations around a badly predicted one: channels scaled 0.6-1.4 x or moved by 1-3, rest fixed."""
    rng, out = random.Random(seed), []
    for _ in range(count * 10):
        if len(out) >= count:
            break

        def move(c: int) -> int:
            return max(
                2, round(c * rng.uniform(0.6, 1.4)) if rng.random() < 0.5 else c + rng.choice([-3, -2, -1, 1, 2, 3])
            )

        cin = move(config.cin)
        candidate = Config(
            cin, cin if config.depthwise else move(config.cout), config.k, config.stride, config.size, config.depthwise
        )
        if _fits(candidate) and candidate != config and candidate not in out:
            out.append(candidate)
    return out


def graph(config: Config) -> onnx.ModelProto:
    """The single Conv (random weights, a bias) of `config`, fed by a graph input."""
    groups = config.cin if config.depthwise else 1
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((config.cout, config.cin // groups, config.k, config.k)).astype(np.float32)
    node = helper.make_node(
        "Conv",
        ["x", "w", "b"],
        ["y"],
        name="kernel",
        kernel_shape=[config.k, config.k],
        strides=[config.stride] * 2,
        pads=[config.k // 2] * 4,
        group=groups,
    )
    g = helper.make_graph(
        [node],
        config.name,
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, config.cin, config.size, config.size])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.zeros(config.cout, np.float32), "b"),
        ],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model

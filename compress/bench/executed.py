"""The graph onnxruntime executes on this CPU, as cost-model nodes: what a host profile prices.

onnxruntime rewrites an exported graph before running it, at the level `host` timings run at
(ORT_ENABLE_ALL, onnxruntime's default): BatchNorm folds into convs, Relu/Clip/Sigmoid/Tanh fuse
into them, and on x86 the NCHWc transformer moves convs, pools and Upsample into blocked
layouts (`com.microsoft.nchwc` ops) with ReorderInput/ReorderOutput copies at every boundary.
A conv stays on the plain NCHW path (im2col + GEMM; for depthwise, one GEMM per channel) when its
input channels do not fit the blocked kernels (22 or 35 channels, say; 24 is padded to 32 on AVX-512).
HardSwish fuses into some NCHWc convs and elsewhere runs as its function, HardSigmoid then Mul.
Which of these happened cannot be guessed reliably from the exported graph, so the host cost model asks
onnxruntime: it saves the optimised graph (`SessionOptions.optimized_model_filepath`) and prices
its nodes, each class in its own terms:

  conv / depthwise           NCHWc convs (channels padded to the block by onnxruntime itself)
  conv_nchw / depthwise_nchw convs left on the plain path (FusedConv, Conv), Gemm, MatMul
  conv_int8                  QLinearConv, ConvInteger, MatMulInteger, QLinearMatMul
  reorder                    ReorderInput / ReorderOutput: bytes copied between layouts
  memory / grid_sample       as in the exported graph (an unfused activation is its own memory op)
A conv's fused activation adds its output bytes: it runs inside the conv's output loop, not as
a pass of its own, and only Relu is free there. Clip (Relu6) and HardSwish, the two conv nets
use most, are priced by their own terms (`activation_clip.mb`, `activation_hardswish.mb`), every
other one (Sigmoid, Tanh, ...) by `activation.mb`. Given the
profile's per-kernel model (kernels.py), each conv also gets that model's price (`<class>.kms`).

onnxruntime writes no shapes into the optimised graph, so they are propagated here: from the
exported graph's shape inference for tensors that keep their names, by the NCHWc ops' own rules,
and by onnx's per-node inference for the rest.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnx
from onnx import defs, shape_inference

from compress.bench import costmodel, kernels, machine
from compress.errors import CompressError

NCHWC = "com.microsoft.nchwc"
NCHWC_CLASSES = ("conv", "depthwise")  # convs onnxruntime runs blocked; the plain path's are conv_nchw, depthwise_nchw
MICROSOFT = "com.microsoft"
REORDERS = {"ReorderInput", "ReorderOutput"}
PLAIN_DENSE = {"Gemm", "MatMul", "FusedGemm", "FusedMatMul"}
INT8_DENSE = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeMatMul"}
FREE_ACTIVATIONS = {"Relu"}  # fused into a conv's output loop at no measurable cost


def optimized_graph(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    """The graph onnxruntime runs for `model` on this CPU, with the session options host timings use."""
    import onnxruntime as ort

    from compress.bench import remote_runner

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        opts = remote_runner.session_options(ort, 1)
        opts.optimized_model_filepath = str(out)
        try:
            ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unloadable graphs
            raise CompressError(f"onnxruntime cannot load the model to price its optimised graph ({exc})") from None
        return onnx.load(str(out))


def _window(size: int, k: int, stride: int, dilation: int, pads: int, ceil_mode: int = 0) -> int:
    span = size + pads - dilation * (k - 1) - 1
    return (-(-span // stride) if ceil_mode else span // stride) + 1


def _attrs(n: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}


def _spatial(n: onnx.NodeProto, x: list[int], kernel: list[int]) -> list[int]:
    """Output H, W of a conv or pool window over input `x` (NCHW)."""
    a = _attrs(n)
    dims = len(kernel)
    strides = a.get("strides") or [1] * dims
    dilations = a.get("dilations") or [1] * dims
    pads = a.get("pads") or [0] * (2 * dims)
    auto_pad = a.get("auto_pad", b"NOTSET")
    if auto_pad in (b"SAME_UPPER", b"SAME_LOWER"):
        return [-(-s // st) for s, st in zip(x[2:], strides)]
    return [
        _window(s, k, st, d, pads[i] + pads[i + dims], a.get("ceil_mode", 0))
        for i, (s, k, st, d) in enumerate(zip(x[2:], kernel, strides, dilations))
    ]


def _nchwc_shape(n: onnx.NodeProto, x: list[int], weight: list[int] | None, block: int) -> list[int]:
    """Output shape of an NCHWc op; NCHWc tensors are 4-D with the channels padded to the block."""
    a, op = _attrs(n), n.op_type
    if op == "ReorderInput":
        c, hw = (x[3], x[1:3]) if a.get("channels_last") else (x[1], x[2:])
        return [x[0], costmodel.round_up(c, block), *hw]
    if op == "ReorderOutput":
        c = a["channels"]
        return [x[0], *x[2:], c] if a.get("channels_last") else [x[0], c, *x[2:]]
    if op == "Conv":
        return [x[0], weight[0], *_spatial(n, x, weight[2:])]
    if op in {"MaxPool", "AveragePool"}:
        return [x[0], x[1], *_spatial(n, x, a["kernel_shape"])]
    if op in {"GlobalAveragePool", "GlobalMaxPool"}:
        return [x[0], x[1], 1, 1]
    if op == "Upsample":
        return [s * f for s, f in zip(x, a["scales"])]  # one integer scale per dimension, N and C included
    raise CompressError(f"{n.name}: no shape rule for NCHWc op {op}")


def _type(dims: list[int], dtype: int) -> onnx.TypeProto:
    return onnx.helper.make_tensor_type_proto(dtype, dims)


def executed_shapes(optimized: onnx.ModelProto, exported: onnx.ModelProto, block: int) -> costmodel.Shapes:
    """Static shapes of every tensor of the optimised graph (see the module docstring)."""
    inferred = shape_inference.infer_shapes(exported, data_prop=True)
    info = costmodel.Shapes.from_model(inferred).info
    for init in optimized.graph.initializer:
        info[init.name] = (list(init.dims), init.data_type)
    constants = {init.name: init for init in optimized.graph.initializer}
    opsets = {o.domain or "": o.version for o in optimized.opset_import}
    for n in optimized.graph.node:
        if all(o in info for o in n.output if o):
            continue
        x = info.get(n.input[0]) if n.input else None
        if n.domain == NCHWC or (n.domain == MICROSOFT and n.op_type == "FusedConv"):
            if x is None:
                continue
            weight = info.get(n.input[1], (None,))[0] if len(n.input) > 1 else None
            op = "Conv" if n.op_type == "FusedConv" else n.op_type
            shape = _nchwc_shape(onnx.helper.make_node(op, [], [], **_attrs(n)), x[0], weight, block)
            info[n.output[0]] = (shape, x[1])
            continue
        try:
            schema = defs.get_schema(n.op_type, opsets.get(n.domain or "", 1), n.domain or "")
            types = {i: _type(*info[i]) for i in n.input if i in info}
            data = {i: constants[i] for i in n.input if i in constants}
            outputs = shape_inference.infer_node_outputs(schema, n, types, data)
        except Exception:  # an op onnx cannot infer (a contrib op): its outputs stay unknown, priced by inputs only
            continue
        for name, t in outputs.items():
            tt = t.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                info[name] = ([d.dim_value for d in tt.shape.dim], tt.elem_type)
    return costmodel.Shapes(info, int8=False)


def kernel_class(n: onnx.NodeProto, shapes: costmodel.Shapes) -> str:
    """The cost-model class of one node of the optimised graph."""
    op = n.op_type
    if op in INT8_DENSE:
        return "conv_int8"
    if op in REORDERS and n.domain == NCHWC:
        return "reorder"
    if op in {"Conv", "FusedConv"}:
        w = shapes.shape(n.input[1]) or [0, 0]
        depthwise = _attrs(n).get("group", 1) > 1 and w[1] == 1
        path = "" if n.domain == NCHWC else "_nchw"
        return ("depthwise" if depthwise else "conv") + path
    if op in PLAIN_DENSE:
        return "conv_nchw"
    if op == "GridSample":
        return "grid_sample"
    if op in costmodel.SHAPE_ONLY:
        return "free"
    return "memory"


def analyse(
    model: str | Path | onnx.ModelProto,
    block: int,
    precision: str = "auto",
    kernel_model: kernels.KernelModel | None = None,
    cache_bytes: int | None = None,
) -> list[costmodel.NodeCost]:
    """Per-node work of the graph onnxruntime executes for `model` on this CPU.

    `precision` "int8" prices a float graph as if quantized (dense convs as conv_int8, 1-byte
    tensors), the exported-graph model's convention for a device that computes in int8. With a
    `kernel_model`, every conv it knows gets its price (`kernel_ms`, the feature `<class>.kms`).
    NCHWc convs get the share of the last-level cache (`cache_bytes`, this host's when None) that
    the network's conv weights fill (`cold_share`, costmodel.KERNEL_COLD).
    """
    exported = costmodel.load_model(model)
    optimized = optimized_graph(model)
    shapes = executed_shapes(optimized, exported, block)
    shapes.int8 = precision == "int8"
    costs = []
    for n in optimized.graph.node:
        op_class = kernel_class(n, shapes)
        if op_class == "free":
            costs.append(costmodel.NodeCost(n.name or n.output[0], n.op_type, "free"))
            continue
        if shapes.int8 and op_class in {"conv", "conv_nchw"}:
            op_class = "conv_int8"
        costs.append(_node_cost(n, op_class, shapes))
    cache_bytes = machine.last_level_cache_bytes() if cache_bytes is None else cache_bytes
    weights = sum(4 * k.cout * k.cin // k.groups * k.k * k.k for k in (c.kernel for c in costs) if k is not None)
    for c in costs:
        if c.kernel is not None and c.op_class in NCHWC_CLASSES and cache_bytes:
            c.cold_share = min(1.0, weights / cache_bytes)
    if kernel_model is not None:
        priced = [c for c in costs if c.kernel is not None]
        for c, ms in zip(priced, kernel_model.predict([c.kernel for c in priced])):
            c.kernel_ms = float(ms)
    return costs


def _kernel(n: onnx.NodeProto, op_class: str, w: list[int], out: list[int]) -> kernels.Kernel | None:
    """The shape a per-kernel model prices: a conv as it runs, a matrix product as a 1x1 conv over its rows."""
    if n.op_type in {"Conv", "FusedConv"}:
        if len(out) != 4 or len(w) != 4:
            return None
        group = _attrs(n).get("group", 1)
        stride = (_attrs(n).get("strides") or [1])[0]
        return kernels.Kernel(op_class, w[1] * group, w[0], group, w[2], stride, out[2], out[3])
    k, cols = _matmul_dims(n, w)
    return kernels.Kernel(op_class, k, cols, 1, 1, 1, max(1, costmodel.prod(out) // cols), 1)


def _matmul_dims(n: onnx.NodeProto, w: list[int]) -> tuple[int, int]:
    """(shared dimension, output columns) of a matrix product from its weight's shape."""
    transposed = n.op_type == "Gemm" and _attrs(n).get("transB", 0)
    return (w[-1], w[-2]) if transposed else (w[-2], w[-1])


def _node_cost(n: onnx.NodeProto, op_class: str, shapes: costmodel.Shapes) -> costmodel.NodeCost:
    name = n.name or n.output[0]
    moved = sum(shapes.nbytes(i) for i in n.input if i) + sum(shapes.nbytes(o) for o in n.output if o)
    out = shapes.shape(n.output[0]) or []
    if op_class in {"conv", "depthwise", "conv_nchw", "depthwise_nchw", "conv_int8"}:
        weight_index = 3 if n.op_type in {"QLinearConv", "QLinearMatMul"} else 1
        w = shapes.shape(n.input[weight_index]) if len(n.input) > weight_index else None
        macs = taps = 0
        if w and out:
            if n.op_type in {"Conv", "FusedConv", "QLinearConv", "ConvInteger"} and len(out) > 2:
                macs = costmodel.prod(out) * costmodel.prod(w[1:])
                taps = costmodel.prod(out[2:]) * costmodel.prod(w[2:])
            else:  # a matrix product: every output element sums over the shared dimension
                macs = costmodel.prod(out) * _matmul_dims(n, w)[0]
        activation = _attrs(n).get("activation", b"")
        activation = activation.decode() if isinstance(activation, bytes) else activation
        priced = shapes.nbytes(n.output[0]) if activation and activation not in FREE_ACTIVATIONS else 0
        kernel = _kernel(n, op_class, w, out) if op_class in kernels.CONV_CLASSES and w and out else None
        return costmodel.NodeCost(
            name, n.op_type, op_class, macs, moved, taps, activation_bytes=priced, activation=activation, kernel=kernel
        )
    segments = costmodel.broadcast_segments(n, shapes, out) if n.op_type in costmodel.ELEMENTWISE else 0
    return costmodel.NodeCost(
        name,
        n.op_type,
        op_class,
        0,
        moved,
        0,
        segments,
        **costmodel.strided_reduction(n, shapes),
        **costmodel.gathered(n, shapes),
    )

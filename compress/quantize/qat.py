"""Quantization-aware training through distillation (`stages.quantize.qat`), on NNCF.

BatchNorms are folded into their convolutions first, so that the int8 weights trained are the
ones that ship. NNCF then puts fake quantizers (per-channel int8 weights, per-tensor
activations, ranges from the calibration samples) into a copy of every deployable part, and
the parts are fine-tuned against the teacher as they run in a call: through the family's
`pipeline`, where each part's quantized output feeds the next. Each part is then
written as an int8 QDQ ONNX file, which the quantize stage gates and times like a
post-training one.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.data import Dataset

from compress.distill import DistillReport, distill
from compress.families.base import Family, Part
from compress.recipe import DistillConfig

# NNCF compiles its CPU fake-quantize kernels on first use; on a busy 2-core machine that takes
# longer than its default 60 s limit, after which it gives up.
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")


def fold_batchnorms(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution in an nn.Sequential into it (in place)."""
    for child in module.children():
        if isinstance(child, nn.Sequential):
            for i in range(len(child) - 1):
                conv, bn = child[i], child[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                    child[i], child[i + 1] = fuse_conv_bn_eval(conv.eval(), bn.eval()), nn.Identity()
        fold_batchnorms(child)
    return module


class QuantizedPipeline(nn.Module):
    """Quantized part modules behind the family's pipeline object, so `Family.forward` and
    the distillation loop drive them like a model (and train their parameters)."""

    def __init__(self, family: Family, parts: list[Part], input_size: tuple[int, int]):
        super().__init__()
        self.part_modules = nn.ModuleDict({p.name.replace(".", "__"): p.module for p in parts})
        self.pipeline = family.pipeline({p.name: p.module for p in parts})
        self.input_size = input_size  # as Family.model_input_size reads it

    def train(self, mode: bool = True) -> QuantizedPipeline:
        super().train(mode)
        for m in self.modules():  # the pipeline runs one sample at a time: batch statistics would be one frame's
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # families whose model is a plain callable
        return self.pipeline(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["pipeline"], name)  # kp_detector(...), generator(...)


def quantize_parts(
    family: Family, model: nn.Module, calibration: dict[str, list[tuple[torch.Tensor, ...]]]
) -> list[Part]:
    """The model's parts (BatchNorms folded, on a copy) with NNCF fake quantizers calibrated on `calibration`."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    # Per-tensor activations: onnxruntime's int8 convolutions take one input zero point.
    advanced = AdvancedQuantizationParameters(activations_quantization_params=QuantizationParameters(per_channel=False))
    folded = fold_batchnorms(copy.deepcopy(model).eval())
    parts = []
    for part in family.parts(folded):
        samples = calibration[part.name]
        with _quiet():
            module = nncf.quantize(
                part.module, nncf.Dataset(samples), subset_size=len(samples), advanced_parameters=advanced
            )
        parts.append(Part(part.name, part.role, part.cadence, module, part.inputs, part.outputs, part.description))
    return parts


def qat_finetune(
    family: Family,
    parts: list[Part],
    teacher: nn.Module,
    cfg: DistillConfig,
    train: Dataset,
    out_dir: Path | None,
    progress: bool = False,
) -> DistillReport:
    """Distil the quantized parts against the teacher, in place (one process; `cfg` as for `distill`)."""
    pipeline = QuantizedPipeline(family, parts, family.model_input_size(teacher))  # both see the same frames
    return distill(pipeline, teacher, family, cfg, train, out_dir, progress=progress)


def export_int8(part: Part, opset: int = 17) -> onnx.ModelProto:
    """A quantized part as an ONNX QDQ model whose weights are stored as int8."""
    from compress.export import onnx_model

    return fake_quantize_to_qdq(onnx_model(part, opset))


def fake_quantize_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """NNCF's exported FakeQuantize nodes (OpenVINO's op) as standard ONNX QDQ.

    A fake-quantized constant (a weight) becomes an int8 initializer -> DequantizeLinear, as
    onnxruntime's quantizer writes it; an activation becomes QuantizeLinear -> DequantizeLinear.
    FakeQuantize(x, low, high, levels) rounds x to `levels` steps of (high - low) / (levels - 1)
    from `low`: a signed grid when low < 0 (int8, zero point q_min - low / scale), else uint8.
    """
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:  # Constant nodes and Identity copies of constants, as the exporter writes them
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    nodes, inits = [], []
    for node in graph.node:
        if node.op_type != "FakeQuantize":
            nodes.append(node)
            continue
        x, low, high = node.input[:3]
        levels = next(a.i for a in node.attribute if a.name == "levels")
        scale, zero, axis = _qdq_params(consts[low], consts[high], levels)
        tag = node.output[0]
        inits += [numpy_helper.from_array(scale, f"{tag}.scale"), numpy_helper.from_array(zero, f"{tag}.zero_point")]
        axis_attr = {"axis": axis} if scale.ndim else {}
        if x in consts:  # a weight: store it quantized
            inits.append(numpy_helper.from_array(_quantize(consts[x], scale, zero, axis), f"{tag}.int8"))
            quantized = f"{tag}.int8"
        else:
            quantized = f"{tag}.q"
            nodes.append(
                onnx.helper.make_node(
                    "QuantizeLinear", [x, f"{tag}.scale", f"{tag}.zero_point"], [quantized], **axis_attr
                )
            )
        nodes.append(
            onnx.helper.make_node(
                "DequantizeLinear", [quantized, f"{tag}.scale", f"{tag}.zero_point"], [tag], **axis_attr
            )
        )
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    kept = [o for o in model.opset_import if o.domain != "org.openvinotoolkit"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return _drop_unused(model)


def _qdq_params(low: np.ndarray, high: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale, zero point, axis) of FakeQuantize's grid; per-channel when the range has one axis longer than 1."""
    axis = next((i for i, n in enumerate(low.shape) if n > 1), 0)
    low, high = low.reshape(-1).astype(np.float32), high.reshape(-1).astype(np.float32)
    scale = (high - low) / (levels - 1)
    signed = bool((low < 0).any())
    q_min, dtype = (-(levels // 2), np.int8) if signed else (0, np.uint8)
    zero = np.clip(np.rint(q_min - low / scale), np.iinfo(dtype).min, np.iinfo(dtype).max).astype(dtype)
    if scale.size == 1:
        return scale.reshape(()), zero.reshape(()), axis
    return scale, zero, axis


def _quantize(x: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    if scale.ndim:
        shape[axis] = -1
    info = np.iinfo(zero.dtype)
    return np.clip(np.rint(x / scale.reshape(shape)) + zero.astype(np.int32).reshape(shape), info.min, info.max).astype(
        zero.dtype
    )


def _drop_unused(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes and initializers nothing reads any more (walking back from the outputs)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    return model


@contextmanager
def _quiet() -> Iterator[None]:
    """NNCF draws progress bars on stdout and logs hints; the stage log says what matters."""
    from compress.export import quiet_stdout

    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), quiet_stdout():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)

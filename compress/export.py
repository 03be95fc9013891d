"""Stage `export`: every deployable part to ONNX and to a Core ML ML program, with parity checks.

ONNX: the TorchScript exporter (`dynamo=False`). torch 2.13 defaults to the dynamo exporter,
but that one builds opset 18 and down-converts (through a fallback that keeps 18 when the
conversion fails), takes ~10x longer on small nets (8 s vs 0.9 s for the generic student), and
names nodes `node_Conv_22` instead of by module scope. The TorchScript exporter writes opset 17
natively, GridSample (opset 16+) included.

Parity (ONNX everywhere, Core ML on macOS only, where coremltools can predict): the part's
torch module and the exported file run on the same inputs, several random (`part.example_inputs`)
and several real ones (the family's eval data through `calibration_inputs`). Per output:
  max_abs_err = max |exported - torch|
  max_rel_err = max_abs_err / max |torch|        (relative to the output's peak magnitude)
  passed      = max_abs_err <= atol + rtol * max |torch|   on every input
On Linux the Core ML program is inspected instead (ops, I/O names and shapes, weight dtypes).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import os
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compress.checkpoints import atomic_path, read_model_meta
from compress.errors import CompressError
from compress.families.base import Part, TensorSpec
from compress.recipe import ExportConfig
from compress.run import RunContext, StageResult

REL_ERR_DEFINITION = "max|exported - torch| / max|torch| per output, worst over the inputs"
COREML_NO_PREDICT = "coremltools predicts only on macOS"
# MIL ops Core ML runs on the CPU only, not on the GPU or the Neural Engine (resample: grid_sample).
COREML_CPU_ONLY_OPS = frozenset({"resample"})
# Core ML fp16 programs compute in half precision: parity against fp32 torch needs a looser floor.
FP16_RTOL = 2e-2


# -- helpers shared with compress.lint ---------------------------------------------------------
@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BN statistics, dropout) for the block, every sub-module's mode restored after."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


@contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence fd 1: on a failed op the TorchScript exporter prints its whole IR graph there from
    C++ (not through Python logging); the exception already names the op."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def spectral_norm_modules(module: nn.Module) -> list[str]:
    """Paths (in `module`) of the sub-modules whose weight is spectrally normalised: the
    torch.nn.utils.spectral_norm hook (weight_orig, weight_u, weight_v) or the parametrization."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm

    found = []
    for name, m in module.named_modules():
        hooked = any(isinstance(h, SpectralNorm) for h in m._forward_pre_hooks.values())
        parametrized = parametrize.is_parametrized(m, "weight") and any(
            type(p).__name__ == "_SpectralNorm"
            for p in m.parametrizations.weight  # type: ignore[union-attr]
        )
        if hooked or parametrized:
            found.append(name)
    return found


def spectral_norm_baked(module: nn.Module) -> nn.Module:
    """A copy of `module` with spectral norm baked into plain weights (weight_orig / sigma, as an
    eval-mode forward computes it); `module` itself when it has none."""
    from torch.nn.utils import parametrize, remove_spectral_norm

    paths = spectral_norm_modules(module)
    if not paths:
        return module
    module = copy.deepcopy(module)
    with eval_mode(module), torch.no_grad():
        for path in paths:
            m = module.get_submodule(path)
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            else:
                remove_spectral_norm(m)
    return module


def baked(part: Part) -> Part:
    """The part with spectral norm baked, on a copy: the family model keeps its hooks. What the
    exporters trace, so the files hold one constant weight per conv, not the normalisation ops."""
    module = spectral_norm_baked(part.module)
    return part if module is part.module else dataclasses.replace(part, module=module)


def onnx_model(part: Part, opset: int = 17) -> Any:
    """The part as an in-memory onnx.ModelProto (TorchScript exporter, static shapes, spectral norm baked)."""
    import onnx

    part = baked(part)
    buffer = io.BytesIO()
    with eval_mode(part.module), torch.no_grad(), warnings.catch_warnings(), quiet_stdout():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer warnings
        torch.onnx.export(
            part.module,
            part.example_inputs(),
            buffer,
            input_names=[s.name for s in part.inputs],
            output_names=[s.name for s in part.outputs],
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return onnx.load_from_string(buffer.getvalue())


def coreml_convert(part: Part, target: str = "iOS16", precision: str = "fp16", frontend_only: bool = False) -> Any:
    """ct.convert of the traced part (spectral norm baked) to an MLModel (ML program).

    frontend_only: stop at the MIL program the torch frontend builds, without optimisation
    passes or backend (2-3x faster): enough to find ops that have no Core ML lowering.
    """
    ct = _coremltools()
    part = baked(part)
    if frontend_only:
        passes = ct.PassPipeline.EMPTY
    else:
        # Every conv repeats its small constants (strides, pads, dilations, axes), each a const op
        # in the program, and coremltools shares only those of 100+ elements: in a small mobile
        # net those copies are a large share of the package.
        passes = ct.PassPipeline.DEFAULT
        passes.set_options("common::const_deduplication", {"const_threshold": 0})
    with eval_mode(part.module), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(part.module, part.example_inputs(), check_trace=False)
        return ct.convert(
            traced,
            # fp32 I/O whatever the compute precision: the app feeds the same arrays as to ONNX.
            inputs=[ct.TensorType(name=s.name, shape=s.shape, dtype=np.dtype(s.dtype).type) for s in part.inputs],
            outputs=[ct.TensorType(name=s.name, dtype=np.dtype(s.dtype).type) for s in part.outputs],
            convert_to="milinternal" if frontend_only else "mlprogram",
            pass_pipeline=passes,
            minimum_deployment_target=getattr(ct.target, target),
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            skip_model_load=sys.platform != "darwin",  # only macOS can load (and predict)
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _coremltools() -> Any:
    """coremltools, imported on first use: its import prints warnings about missing native libs on Linux."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools

    return coremltools


# -- ONNX ------------------------------------------------------------------------------------
def export_onnx(
    part: Part, path: str | Path, opset: int = 17, simplify: bool = True, metadata: dict[str, str] | None = None
) -> Path:
    """Write `part` as an ONNX file: static shapes, simplified, checked, with metadata_props."""
    import onnx

    check_outputs(part)
    path = Path(path)
    try:
        model = onnx_model(part, max(opset, part.min_opset))
    except Exception as exc:
        raise CompressError(
            f"export: {part.name}: ONNX export failed ({_first_line(exc)}); `compress lint` names the module to fix"
        ) from exc
    if simplify:
        model = simplified(model, part.name)
    for value, spec in zip([*model.graph.input, *model.graph.output], [*part.inputs, *part.outputs]):
        value.doc_string = spec.description
    model.doc_string = part.description
    onnx.helper.set_model_props(model, part_metadata(part, metadata))
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def simplified(model: Any, name: str) -> Any:
    """onnxsim's simplification of an ONNX model: shape computations folded to constants, so every
    tensor has a static shape (the cost model prices convolutions from them)."""
    import onnxsim

    model, ok = onnxsim.simplify(model)
    if not ok:
        raise CompressError(
            f"export: {name}: onnxsim's simplified model does not match the original; set export.simplify: false"
        )
    return model


def part_metadata(part: Part, metadata: dict[str, str] | None = None) -> dict[str, str]:
    """Bundle metadata (name, version, family, ...) plus the part's role, cadence and input normalization."""
    normalization = {
        s.name: {
            "layout": s.layout,
            "value_range": list(s.value_range) if s.value_range else None,
            "normalization": s.normalization,
        }
        for s in part.inputs
    }
    return {
        **(metadata or {}),
        "part": part.name,
        "role": part.role,
        "cadence": part.cadence,
        "normalization": json.dumps(normalization),
    }


def check_outputs(part: Part) -> None:
    """The module's outputs must match the part's output specs in number and shape."""
    with eval_mode(part.module), torch.no_grad():
        outputs = part.module(*part.example_inputs())
    if not isinstance(outputs, tuple) or len(outputs) != len(part.outputs):
        got = f"a tuple of {len(outputs)}" if isinstance(outputs, tuple) else type(outputs).__name__
        raise CompressError(
            f"export: {part.name}: forward returns {got}, the part declares {len(part.outputs)} outputs "
            f"({', '.join(s.name for s in part.outputs)})"
        )
    for out, spec in zip(outputs, part.outputs):
        if tuple(out.shape) != tuple(spec.shape):
            raise CompressError(
                f"export: {part.name}: output {spec.name} has shape {tuple(out.shape)}, the part declares {spec.shape}"
            )


def onnx_parity(
    part: Part, onnx_path: str | Path, inputs: list[tuple[torch.Tensor, ...]], rtol: float, atol: float
) -> dict[str, dict[str, Any]]:
    """Torch vs onnxruntime per output: {output: {max_abs_err, max_rel_err, passed}}."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [s.name for s in part.outputs]

    def run(x: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        return session.run(names, {s.name: t.numpy() for s, t in zip(part.inputs, x)})

    return _parity(part, inputs, run, rtol, atol)


def _parity(
    part: Part, inputs: list[tuple[torch.Tensor, ...]], run: Any, rtol: float, atol: float
) -> dict[str, dict[str, Any]]:
    if not inputs:
        raise CompressError(
            f"export: {part.name}: no inputs to check parity on "
            "(set export.random_inputs or export.real_inputs above 0)"
        )
    stats = {s.name: {"max_abs_err": 0.0, "max_rel_err": 0.0, "passed": True} for s in part.outputs}
    with eval_mode(part.module), torch.no_grad():
        for x in inputs:
            expected = part.module(*x)
            for spec, want, got in zip(part.outputs, expected, run(x)):
                want = want.numpy().astype(np.float64)
                err = float(np.abs(np.asarray(got, dtype=np.float64).reshape(want.shape) - want).max())
                peak = float(np.abs(want).max())
                row = stats[spec.name]
                row["max_abs_err"] = max(row["max_abs_err"], err)
                row["max_rel_err"] = max(row["max_rel_err"], err / peak if peak > 0 else err)
                row["passed"] = row["passed"] and err <= atol + rtol * peak
    return stats


# -- Core ML ---------------------------------------------------------------------------------
def export_coreml(
    part: Part, path: str | Path, target: str = "iOS16", precision: str = "fp16", metadata: dict[str, str] | None = None
) -> Path:
    """Write `part` as a Core ML ML program (.mlpackage folder) with I/O descriptions and metadata."""
    check_outputs(part)
    path = Path(path)
    try:
        model = coreml_convert(part, target, precision)
    except Exception as exc:
        raise CompressError(
            f"export: {part.name}: Core ML conversion failed ({_first_line(exc)}); "
            "`compress lint` names the module to fix"
        ) from exc
    model.short_description = part.description or part.name
    for spec in part.inputs:
        model.input_description[spec.name] = _describe(spec)
    for spec in part.outputs:
        model.output_description[spec.name] = _describe(spec)
    meta = part_metadata(part, metadata)
    if "version" in meta:
        model.version = meta["version"]
    model.user_defined_metadata.update(meta)
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        # coremltools insists on the .mlpackage extension; atomic_path's temporary has none.
        package = Path(scratch) / "model.mlpackage"
        model.save(str(package))
        os.replace(package, tmp)
    return path


def _describe(spec: TensorSpec) -> str:
    text = spec.description or spec.name
    return f"{text} ({spec.layout}, {spec.normalization})" if spec.normalization else text


def inspect_coreml(path: str | Path) -> dict[str, Any]:
    """What a converted ML program contains, read without loading it (works on Linux).

    ops: histogram of MIL op types; unsupported_ops: types the program's spec version does not
    define; cpu_only_ops: types Core ML runs on the CPU only; weight_dtypes: elements of float
    constants of rank >= 1 per dtype; size_bytes: the package on disk.
    """
    ct = _coremltools()
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry
    from coremltools.proto import MIL_pb2

    path = Path(path)
    if not path.exists():
        raise CompressError(f"{path}: Core ML package not found")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    if not spec.HasField("mlProgram"):
        raise CompressError(f"{path}: not an ML program (mlprogram) package")
    main = spec.mlProgram.functions["main"]
    ops = list(_mil_ops(main.block_specializations[main.opset].operations))
    target = ct.target(spec.specificationVersion)
    available = {t: min(versions).value for t, versions in SSAOpRegistry.core_ops.items()}
    weights: Counter[str] = Counter()
    for op in ops:
        if op.type == "const":
            tensor = op.attributes["val"].type.tensorType
            dtype = MIL_pb2.DataType.Name(tensor.dataType)
            if tensor.rank >= 1 and dtype.startswith(("FLOAT", "BFLOAT")):
                weights[dtype] += int(np.prod([d.constant.size for d in tensor.dimensions]))
    histogram = Counter(op.type for op in ops)
    return {
        "spec_version": spec.specificationVersion,
        "target": target.name,
        "ops": dict(sorted(histogram.items())),
        "unsupported_ops": sorted(t for t in histogram if available.get(t, sys.maxsize) > target.value),
        "cpu_only_ops": sorted(t for t in histogram if t in COREML_CPU_ONLY_OPS),
        "inputs": [_feature(f) for f in spec.description.input],
        "outputs": [_feature(f) for f in spec.description.output],
        "weight_dtypes": dict(sorted(weights.items())),
        "size_bytes": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()),
        "short_description": spec.description.metadata.shortDescription,
        "metadata": dict(spec.description.metadata.userDefined),
    }


def _mil_ops(operations: Any) -> Iterator[Any]:
    for op in operations:
        yield op
        for block in op.blocks:  # cond / while bodies
            yield from _mil_ops(block.operations)


def _feature(feature: Any) -> dict[str, Any]:
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType

    array = feature.type.multiArrayType
    return {
        "name": feature.name,
        "shape": [int(n) for n in array.shape],
        "dtype": ArrayFeatureType.ArrayDataType.Name(array.dataType),
        "description": feature.shortDescription,
    }


def coreml_parity(
    part: Part, path: str | Path, inputs: list[tuple[torch.Tensor, ...]], rtol: float, atol: float
) -> dict[str, dict[str, Any]]:
    """Torch vs Core ML per output (macOS only: coremltools cannot predict elsewhere)."""
    if sys.platform != "darwin":
        raise CompressError(f"Core ML parity of {part.name}: {COREML_NO_PREDICT}")
    model = _coremltools().models.MLModel(str(path))

    def run(x: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
        out = model.predict({s.name: t.numpy() for s, t in zip(part.inputs, x)})
        return [out[s.name] for s in part.outputs]

    return _parity(part, inputs, run, rtol, atol)


def check_coreml_program(part: Part, info: dict[str, Any], path: Path) -> None:
    """The converted program must expose the part's I/O and use only ops its target defines."""
    declared = [(s.name, list(s.shape)) for s in part.inputs], [(s.name, list(s.shape)) for s in part.outputs]
    found = [(f["name"], f["shape"]) for f in info["inputs"]], [(f["name"], f["shape"]) for f in info["outputs"]]
    if declared != found:
        raise CompressError(f"export: {part.name}: {path} has inputs/outputs {found}, the part declares {declared}")
    if info["unsupported_ops"]:
        raise CompressError(
            f"export: {part.name}: {path} uses ops that {info['target']} does not define: {info['unsupported_ops']}; "
            "raise export.minimum_deployment_target"
        )


# -- the stage -------------------------------------------------------------------------------
def export_stage(cfg: ExportConfig, ctx: RunContext) -> StageResult:
    model, kind = ctx.model()
    parts = ctx.family.parts(model)
    real = real_inputs(ctx, model, cfg.real_inputs)
    bundle = {"name": ctx.recipe.name, "version": ctx.recipe.version, "family": ctx.recipe.family, "model_kind": kind}
    exported: dict[str, dict[str, str]] = {}
    shipped: dict[str, dict[str, dict[str, str]]] = {}
    records: dict[str, dict[str, Any]] = {}
    for part in parts:
        inputs = [part.example_inputs(seed) for seed in range(cfg.random_inputs)] + real.get(part.name, [])
        exported[part.name], shipped[part.name], records[part.name] = {}, {}, {}
        if "onnx" in cfg.formats:
            path = export_onnx(part, ctx.stage_dir / "onnx" / f"{part.name}.onnx", cfg.opset, cfg.simplify, bundle)
            parity = onnx_parity(part, path, inputs, cfg.rtol, cfg.atol)
            _require_parity(part, "ONNX", parity, cfg.rtol, cfg.atol)
            exported[part.name]["onnx"] = ctx.rel(path)
            shipped[part.name]["onnx"] = {"path": ctx.rel(path), "precision": "fp32"}
            records[part.name]["onnx"] = {"size_bytes": path.stat().st_size, "opset": cfg.opset, "parity": parity}
            ctx.log(f"{part.name}: onnx {_worst(parity)}")
        if "coreml" in cfg.formats:
            path = export_coreml(
                part,
                ctx.stage_dir / "coreml" / f"{part.name}.mlpackage",
                cfg.minimum_deployment_target,
                cfg.compute_precision,
                bundle,
            )
            info = inspect_coreml(path)
            check_coreml_program(part, info, path)
            record: dict[str, Any] = {"program": info}
            if sys.platform == "darwin":
                rtol = cfg.rtol if cfg.compute_precision == "fp32" else max(cfg.rtol, FP16_RTOL)
                record["parity"] = coreml_parity(part, path, inputs, rtol, cfg.atol)
                _require_parity(part, "Core ML", record["parity"], rtol, cfg.atol)
            else:
                record["parity_skipped"] = COREML_NO_PREDICT
            exported[part.name]["coreml"] = ctx.rel(path)
            shipped[part.name]["coreml"] = {"path": ctx.rel(path), "precision": cfg.compute_precision}
            records[part.name]["coreml"] = record
            ctx.log(f"{part.name}: coreml {info['size_bytes'] / 1e6:.2f} MB, {sum(info['ops'].values())} ops")
    metrics = {
        "rel_err_definition": REL_ERR_DEFINITION,
        "tolerance": {"rtol": cfg.rtol, "atol": cfg.atol},
        "inputs": {"random": cfg.random_inputs, "real": {p: len(v) for p, v in real.items()}},
        "parts": records,
    }
    summary = f"exported {len(parts)} parts to {', '.join(cfg.formats)}"
    return StageResult(artifacts={"exported": exported, "shipped": shipped}, metrics=metrics, summary=summary)


def real_inputs(ctx: RunContext, model: nn.Module, count: int) -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """`count` inputs per part from the recipe's eval data, through the family's calibration_inputs."""
    if count == 0:
        return {}
    from torch.utils.data import default_collate

    meta = read_model_meta(ctx.path(ctx.artifacts.get("model") or ctx.artifacts["teacher"])) or {}
    size = ctx.recipe.data.size or ctx.family.input_size(meta.get("config", {}))
    source = ctx.recipe.data.eval
    source = source if source == "synthetic" else str(ctx.recipe.resolve(source))
    data = ctx.family.dataset(source, "eval", tuple(size), ctx.recipe.data.seed, count)
    batches = (default_collate([data[i]]) for i in range(len(data)))
    out: dict[str, list[tuple[torch.Tensor, ...]]] = {}
    with eval_mode(model):
        for sample in ctx.family.calibration_inputs(model, batches):
            for name, inputs in sample.items():
                if len(out.setdefault(name, [])) < count:
                    out[name].append(tuple(t.detach() for t in inputs))
    return out


def _require_parity(part: Part, fmt: str, parity: dict[str, dict[str, Any]], rtol: float, atol: float) -> None:
    failed = {name: row for name, row in parity.items() if not row["passed"]}
    if failed:
        detail = "; ".join(
            f"output {n}: max abs err {r['max_abs_err']:.3g}, max rel err {r['max_rel_err']:.3g}"
            for n, r in failed.items()
        )
        raise CompressError(
            f"export: {part.name}: {fmt} output differs from torch beyond rtol={rtol} atol={atol} ({detail}); "
            "look for ops whose export changes semantics (align_corners, padding modes) or raise export.rtol"
        )


def _worst(parity: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{n} max rel err {r['max_rel_err']:.2e}" for n, r in parity.items())

"""The `quantize` stage: int8 copies of every exported part, gated on quality, timed on the host.

Reads `exported` ({part: {format: path}}), writes `quantized` ({part: {format: path}}) and
updates `shipped` with what the bundle should carry: int8 that is no slower than fp32 on this
host (regions slower in int8 kept float), unless the recipe's `ship_when_slower` says otherwise
or the float files would break the recipe's `targets.size_mb` (then int8 ships for size).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from compress.batches import iterate_batches, recipe_dataset
from compress.checkpoints import read_model_meta
from compress.distill import DistillReport
from compress.errors import CompressError
from compress.export import export_coreml
from compress.families.base import Family, Part
from compress.quantize.coreml import CoreMLQuantReport, package_bytes, quantize_coreml
from compress.quantize.gate import EvalSet, Feeds, PipelineGate, pipeline_quality
from compress.quantize.onnx import OnnxQuantConfig, QuantReport, quantize_onnx
from compress.recipe import DistillConfig, ProfileConfig, QuantizeConfig
from compress.run import Gate, RunContext, StageResult, measured_on

CALIBRATION_BATCH = 8


@dataclass
class PartData:
    """Calibration and eval inputs of one part (tensors in the part's input order)."""

    calibration: list[tuple[np.ndarray, ...]]
    eval_inputs: list[tuple[np.ndarray, ...]]


def _numpy(tensors: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, ...]:
    return tuple(t.detach().cpu().numpy().astype(np.float32) for t in tensors)


Batches = Iterable[dict[str, torch.Tensor]]


@torch.no_grad()
def part_data(
    family: Family,
    model: nn.Module,
    parts: list[Part],
    calibration_batches: Batches,
    eval_batches: Batches,
    calibration_samples: int,
) -> dict[str, PartData]:
    """Per part: calibration inputs and eval inputs, as `calibration_inputs` derives them from the data."""
    calibration: dict[str, list[tuple[np.ndarray, ...]]] = {p.name: [] for p in parts}
    for sample in islice(family.calibration_inputs(model, calibration_batches), calibration_samples):
        for name, tensors in sample.items():
            if name in calibration:
                calibration[name].append(_numpy(tensors))
    inputs: dict[str, list[tuple[np.ndarray, ...]]] = {p.name: [] for p in parts}
    for sample in family.calibration_inputs(model, eval_batches):
        for name, tensors in sample.items():
            if name in inputs:
                inputs[name].append(_numpy(tensors))
    return {p.name: PartData(calibration[p.name], inputs[p.name]) for p in parts}


def _feeds(names: list[str], samples: list[tuple[np.ndarray, ...]], where: str) -> list[Feeds]:
    if samples and len(samples[0]) != len(names):
        raise CompressError(
            f"{where}: the model takes {len(names)} inputs ({', '.join(names)}), the family gives {len(samples[0])}"
        )
    return [dict(zip(names, arrays)) for arrays in samples]


def onnx_input_names(path: Path) -> list[str]:
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers]


def coreml_input_names(path: Path) -> list[str]:
    import coremltools as ct

    return [i.name for i in ct.models.MLModel(str(path), skip_model_load=True).get_spec().description.input]


def ship_onnx(
    report: QuantReport, cfg: QuantizeConfig, rel: str, previous: dict[str, Any] | None, exported: str
) -> tuple[dict[str, Any], str]:
    """What the bundle carries for a part's ONNX, and why."""
    fp32, int8 = previous or {"path": exported, "precision": "fp32"}, {"path": rel, "precision": "int8"}
    if not report.passed:
        return fp32, f"fp32 ships: int8 misses the quality gate ({report.gate['rule']})"  # type: ignore[index]
    kept = report.mixed_precision.kept_float if report.mixed_precision else []
    if kept and not report.int8_nodes:
        return fp32, "fp32 ships: every region is slower in int8 on this host"
    what = f"int8 with {', '.join(kept)} kept float" if kept else "int8"
    if kept and report.mixed_precision and report.mixed_precision.weights_int8:
        what += " but for their weighted ops"
    lat = report.latency
    if lat is None:
        return int8, f"{what} ships (latency not measured)"
    ratio = lat.int8_vs_fp32.describe()
    if not lat.slower:
        return int8, f"{what} ships, not shown slower than fp32 beyond noise: {ratio} on this host"
    dot = "has" if lat.host_int8_dot_product else "has no"
    why = f"{ratio} fp32; the host {dot} int8 dot product"
    if cfg.ship_when_slower == "int8":
        return int8, f"int8 ships for size (ship_when_slower: int8, every region int8): slower on this host ({why})"
    return fp32, f"fp32 ships: {what} is slower on this host ({why})"


@dataclass
class OnnxShipping:
    """One part's ONNX after quantization: the report, what ships and why, and its int8 entry."""

    report: QuantReport
    entry: dict[str, Any]
    note: str
    int8: dict[str, Any]

    @property
    def bytes(self) -> int:
        return self.report.int8_bytes if self.entry["precision"] == "int8" else self.report.fp32_bytes


def fit_size_target(
    ships: dict[str, OnnxShipping], target_mb: float | None, all_int8: Callable[[str], OnnxShipping]
) -> None:
    """Ship int8 for size where choices made for host speed put the ONNX files over `target_mb`: a part
    shipped fp32, or int8 with regions kept float (those are quantized again with every region int8,
    `all_int8(name)`). The largest file as shipped first, until the files fit: the recipe's size target
    says that size matters more there. Parts kept fp32 for quality are never switched."""
    if target_mb is None:
        return

    def kept_float(s: OnnxShipping) -> list[str]:
        return s.report.mixed_precision.kept_float if s.report.mixed_precision else []

    for_speed = [
        name
        for name, s in ships.items()
        if s.report.passed
        and (kept_float(s) or (s.entry["precision"] != "int8" and s.report.latency and s.report.latency.slower))
    ]
    for name in sorted(for_speed, key=lambda n: ships[n].bytes, reverse=True):
        total = sum(s.bytes for s in ships.values())
        if total <= target_mb * 1e6:
            return
        ship = ships[name]
        if kept_float(ship):
            kept = ", ".join(kept_float(ship))
            ships[name] = ship = all_int8(name)
            ship.note = (
                f"every region int8 for size: with {kept} kept float the ONNX files were {total / 1e6:.2f} MB, "
                f"over targets.size_mb {target_mb:g}; {ship.note}"
            )
        else:
            ship.entry = ship.int8
            ship.note = (
                f"int8 ships for size: with this part fp32 the ONNX files are {total / 1e6:.2f} MB, over "
                f"targets.size_mb {target_mb:g} (was: {ship.note})"
            )


def int8_for_size(ctx: RunContext) -> dict[str, str]:
    """The devices this recipe profiles (its profile stage's, else that stage's defaults, and its fps targets')
    whose profile says int8 runs there with float compute, and what that means."""
    from compress.bench.stage import float_compute

    devices = [*profile_config(ctx).devices, *(t.device for t in ctx.recipe.targets.fps)]
    return {
        d: f"int8 ships on {d} for size, not speed: its device profile says int8_compute: false "
        "(no int8 dot product; the 8-bit weights are computed in float)"
        for d in dict.fromkeys(devices)
        if float_compute(d)
    }


def profile_config(ctx: RunContext) -> ProfileConfig:
    """The recipe's profile stage config (its defaults when the recipe has none): devices and timing runs."""
    profile = ctx.recipe.stage("profile")
    return profile.config if profile else ProfileConfig()  # type: ignore[return-value]


def quantize_stage(cfg: QuantizeConfig, ctx: RunContext) -> StageResult:
    exported: dict[str, dict[str, str]] | None = ctx.artifacts.get("exported")
    if not exported:
        raise CompressError(
            "stage quantize: nothing exported yet; put an export stage before quantize in the recipe's stages"
        )
    model, _ = ctx.model()
    config = read_model_meta(ctx.path(ctx.artifacts.get("model") or ctx.artifacts["teacher"]))["config"]  # type: ignore[index]
    parts = {p.name: p for p in ctx.family.parts(model)}
    unknown = sorted(set(exported) - set(parts))
    if unknown:
        raise CompressError(
            f"stage quantize: exported parts {unknown} are not parts of the {ctx.family.name} model "
            f"({', '.join(parts)})"
        )
    calib_ds = recipe_dataset(ctx.recipe, ctx.family, config, "calibration", cfg.calibration_samples)
    eval_batches = list(iterate_batches(recipe_dataset(ctx.recipe, ctx.family, config, "eval", cfg.eval_samples), 1))
    data = part_data(
        ctx.family,
        model,
        [parts[n] for n in exported],
        iterate_batches(calib_ds, CALIBRATION_BATCH),
        eval_batches,
        cfg.calibration_samples,
    )
    pipeline = pipeline_parts(ctx, exported, cfg, set(parts))
    max_drop = max_quality_drop(cfg, ctx.family)
    trained: dict[str, onnx.ModelProto] = {}
    if cfg.qat is not None:
        if "onnx" not in cfg.formats:
            raise CompressError(
                "stages.quantize.qat trains the ONNX int8 parts (Core ML keeps post-training 8-bit weights): "
                "add onnx to stages.quantize.formats, or remove qat"
            )
        trained, qat_report = _qat(cfg.qat, ctx, model, config, data)

    shipped: dict[str, dict[str, Any]] = copy.deepcopy(ctx.artifacts.get("shipped", {}))
    result = StageResult(
        metrics={
            "calibration_samples": {n: len(d.calibration) for n, d in data.items()},
            "eval_samples": {n: len(d.eval_inputs) for n, d in data.items()},
        }
    )
    if trained:
        result.metrics["qat"] = {
            "steps": qat_report.steps,
            "final_loss": qat_report.final_loss,
            "wall_s": round(qat_report.wall_s, 2),
        }
    quantized: dict[str, dict[str, str]] = {}
    quality: dict[str, dict[str, float]] = {}
    for_size = int8_for_size(ctx)
    if for_size:
        result.metrics["int8_for_size"] = for_size
    lines: list[str] = list(for_size.values())
    ships: dict[str, OnnxShipping] = {}

    def onnx_part(name: str, config: QuantizeConfig) -> OnnxShipping:
        gate_on = PipelineGate(ctx.family, pipeline, name, eval_batches, max_drop) if pipeline else None
        previous = shipped.get(name, {}).get("onnx")
        return _onnx_part(
            config, ctx, parts[name], data[name], exported[name]["onnx"], previous, gate_on, trained.get(name)
        )

    for name, files in exported.items():
        result.metrics[name] = {}
        if "onnx" in cfg.formats and "onnx" in files:
            ships[name] = onnx_part(name, cfg)
        if "coreml" in cfg.formats and "coreml" in files:
            creport, record = _coreml_part(cfg, ctx, parts[name], data[name], files["coreml"])
            quantized.setdefault(name, {})["coreml"] = ctx.rel(creport.path)
            shipped.setdefault(name, {})["coreml"] = {"path": ctx.rel(creport.path), "precision": creport.mode}
            result.metrics[name]["coreml"] = record
            lines.append(f"{name}.coreml {creport.mode} {record['fp32_over_int8_size']:.2f}x smaller than fp32")
    if cfg.ship_when_slower == "mixed":
        every_region_int8 = cfg.model_copy(update={"ship_when_slower": "int8"})
        fit_size_target(ships, ctx.recipe.targets.size_mb, lambda name: onnx_part(name, every_region_int8))
    as_shipped: dict[str, Path] = {}  # ONNX file of each part as it ships, for the whole-pipeline check
    for name, ship in ships.items():
        report, gate = ship.report, ship.report.gate
        assert gate is not None  # the stage always gates
        quantized.setdefault(name, {})["onnx"] = ctx.rel(report.path)
        shipped.setdefault(name, {})["onnx"] = ship.entry
        as_shipped[name] = report.path if ship.entry["precision"] == "int8" else ctx.path(exported[name]["onnx"])
        result.metrics[name]["onnx"] = {
            **report.to_json(),
            "gate_basis": gate["basis"],
            "shipped": ship.entry["precision"],
            "ship_note": ship.note,
        }
        result.gates.append(
            Gate(f"quantize.{name}.onnx.{gate['metric']}", gate["bound"], gate["value"], gate["passed"], gate["basis"])
        )
        quality[name] = {gate["metric"]: gate["value"]}
        lines.append(
            f"{name}.onnx {report.size_ratio:.2f}x smaller, {gate['metric']} {gate['value']:.3f}, "
            f"{len(report.fallback.excluded) if report.fallback else 0} nodes back to float for accuracy; {ship.note}"
        )
    if pipeline:
        metric = f"{ctx.family.task.primary.name}_drop"
        drop = pipeline_drop(ctx.family, pipeline, as_shipped, eval_batches)
        result.metrics["pipeline_as_shipped"] = {
            metric: drop,
            "unit": ctx.family.task.primary.unit,
            "parts": {n: shipped[n]["onnx"]["precision"] for n in as_shipped},
        }
        result.gates.append(
            Gate(f"quantize.pipeline.{metric}", max_drop, drop, drop <= max_drop, "every part as shipped")
        )
        quality["pipeline"] = {metric: drop}
    result.metrics["int8_vs_fp32"] = quality
    result.artifacts = {"quantized": quantized, "shipped": shipped}
    if pipeline:  # the bundle reports the quality of the files it ships
        result.artifacts["quality"] = shipped_quality(
            ctx, as_shipped, eval_batches, {n: shipped[n]["onnx"]["precision"] for n in as_shipped}
        )
    result.summary = "; ".join(lines)
    return result


def shipped_quality(
    ctx: RunContext, files: dict[str, Path], batches: list[dict[str, torch.Tensor]], precisions: dict[str, str]
) -> dict[str, Any]:
    """The task's metrics of the ONNX files as shipped, run through onnxruntime, vs ground truth and the teacher."""
    from compress.evaluate import OnnxPart

    pipeline = ctx.family.pipeline({n: OnnxPart(p) for n, p in files.items()})
    quality = ctx.family.quality(pipeline, batches, teacher=ctx.teacher())
    model = "the shipped ONNX files through onnxruntime (" + ", ".join(f"{n} {p}" for n, p in precisions.items()) + ")"
    return {**quality, "measured_on": measured_on(ctx, model, batches)}


def max_quality_drop(cfg: QuantizeConfig, family: Family) -> float:
    """The recipe's bound on the primary metric's int8 drop, else the family's default."""
    bound = cfg.max_quality_drop if cfg.max_quality_drop is not None else family.task.primary.default_max_drop
    if bound is None:
        raise CompressError(
            f"stages.quantize.max_quality_drop: the {family.name} family has no default; set the drop of "
            f"{family.task.primary.format(None)} that int8 may cost"
        )
    return bound


def pipeline_parts(
    ctx: RunContext, exported: dict[str, dict[str, str]], cfg: QuantizeConfig, parts: set[str]
) -> dict[str, Path] | None:
    """The fp32 ONNX file of every part, when every part was exported to ONNX (the pipeline needs them all),
    else None.
    """
    if "onnx" not in cfg.formats or set(exported) != parts or any("onnx" not in files for files in exported.values()):
        return None
    return {name: ctx.path(files["onnx"]) for name, files in exported.items()}


def pipeline_drop(
    family: Family, fp32: dict[str, Path], shipped: dict[str, Path], batches: list[dict[str, torch.Tensor]]
) -> float:
    """The primary metric's drop with every part as shipped vs every part fp32."""
    from compress.evaluate import OnnxPart

    before, after = (
        pipeline_quality(family, {n: OnnxPart(p) for n, p in files.items()}, batches) for files in (fp32, shipped)
    )
    return family.task.primary.drop(before, after)


def _qat(
    cfg: DistillConfig, ctx: RunContext, model: nn.Module, config: dict[str, Any], data: dict[str, PartData]
) -> tuple[dict[str, onnx.ModelProto], DistillReport]:
    """Quantization-aware training of every part against the teacher; the int8 ONNX model of each part."""
    from compress.quantize.qat import export_int8, qat_finetune, quantize_parts

    calibration = {
        name: [tuple(torch.from_numpy(a) for a in sample) for sample in d.calibration] for name, d in data.items()
    }
    ctx.log(f"qat: nncf fake quantizers in every part, then {cfg.steps} distillation steps")
    parts = quantize_parts(ctx.family, model, calibration)
    train = recipe_dataset(ctx.recipe, ctx.family, config, "train", cfg.train_samples)
    report = qat_finetune(ctx.family, parts, ctx.teacher(), cfg, train, ctx.stage_dir / "qat", progress=not ctx.quiet)
    return {p.name: export_int8(p) for p in parts}, report


def _onnx_part(
    cfg: QuantizeConfig,
    ctx: RunContext,
    part: Part,
    data: PartData,
    exported: str,
    previous: dict[str, Any] | None,
    gate: PipelineGate | None,
    trained: onnx.ModelProto | None = None,
) -> OnnxShipping:
    """Quantize one part's ONNX file (or take its QAT model), gated by `gate` or else on the part's own output;
    returns the report and what ships, with why.
    """
    src = ctx.path(exported)
    names = onnx_input_names(src)
    timing = profile_config(ctx)
    config = OnnxQuantConfig(
        engine=cfg.onnx_engine,
        target=cfg.target,
        per_channel=cfg.per_channel,
        latency_fallback=cfg.ship_when_slower == "mixed",
        latency_runs=timing.runs,
        latency_warmup=timing.warmup,
    )
    evaluation = gate or EvalSet(_feeds(names, data.eval_inputs, str(src)))
    ctx.log(
        f"{part.name}: onnx int8 ({'nncf-qat' if trained is not None else cfg.onnx_engine}, "
        f"{len(data.calibration)} calibration samples)"
    )
    if trained is not None:  # the exported file's doc strings and metadata, as onnxruntime's quantizer keeps them
        fp32 = onnx.load(str(src), load_external_data=False)
        trained.doc_string = fp32.doc_string
        onnx.helper.set_model_props(trained, {p.key: p.value for p in fp32.metadata_props})
    report = quantize_onnx(
        src,
        ctx.stage_dir / f"{part.name}.int8.onnx",
        _feeds(names, data.calibration, str(src)),
        config,
        evaluation,
        log=ctx.log,
        trained=trained,
    )
    if cfg.ship_when_slower == "int8":
        report.notes.append("latency-aware mixed precision off: ship_when_slower: int8 (size matters more)")
    entry, note = ship_onnx(report, cfg, ctx.rel(report.path), previous, exported)
    return OnnxShipping(report, entry, note, {"path": ctx.rel(report.path), "precision": "int8"})


def _coreml_part(
    cfg: QuantizeConfig, ctx: RunContext, part: Part, data: PartData, exported: str
) -> tuple[CoreMLQuantReport, dict[str, Any]]:
    """8-bit copy of one part's ML program; the record compares it with an fp32 program of the part."""
    src = ctx.path(exported)
    ctx.log(f"{part.name}: coreml 8-bit ({cfg.coreml_mode})")
    report = quantize_coreml(
        src,
        ctx.stage_dir / f"{part.name}.int8.mlpackage",
        cfg.coreml_mode,
        _feeds(coreml_input_names(src), data.calibration, str(src)),
    )
    fp32_bytes, basis = coreml_fp32_bytes(part, report)
    return report, {
        **report.to_json(),
        "fp32_bytes": fp32_bytes,
        "fp32_over_int8_size": fp32_bytes / report.int8_bytes,
        "fp32_basis": basis,
    }


def coreml_fp32_bytes(part: Part, report: CoreMLQuantReport) -> tuple[int, str]:
    """Size of the part as an fp32 ML program, the baseline of the 8-bit file, and where it comes from."""
    if report.fp_weights == "FLOAT32":
        return report.fp_bytes, "the exported program (fp32 weights)"
    with tempfile.TemporaryDirectory(prefix="quantize-fp32-") as tmp:
        path = export_coreml(part, Path(tmp) / "fp32.mlpackage", report.deployment_target, "fp32")
        return package_bytes(path), "an fp32 conversion of the same part, made for this comparison (the export is fp16)"

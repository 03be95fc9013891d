"""Op lint: which ops of each deployable part will not export, stay float under int8, or run CPU-only.

Per part, the module is traced once (torch.jit.trace: the graph both exporters start from), giving
every aten op with the module that called it and the Python line. Then:
  onnx, coreml      the part is really exported (ONNX, in memory) and converted (Core ML, to MIL);
                    when that fails, the failure is pinned on ops: known culprits (torch.inverse,
                    affine_grid) first, else the ops the error message names, else the part itself.
  int8_float        ops on feature maps (rank >= 4) whose ONNX op onnxruntime's quantizer has no
                    int8 kernel for (its QLinear and QDQ registries): they run in float between
                    dequantize and quantize.
  coreml_cpu_only   ops Core ML runs on the CPU only (grid_sample -> MIL resample).
  spectral_norm     convs whose weight is spectrally normalised: export bakes them (the trace sees
                    the baked copy, as the exporters do).
The first two are errors (`compress run` stops before training), the others warnings.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from compress.errors import CompressError
from compress.export import baked, coreml_convert, eval_mode, onnx_model, spectral_norm_modules
from compress.families.base import Family, Part
from compress.recipe import ExportConfig, LintConfig, Recipe
from compress.run import RunContext, StageResult

Category = Literal["onnx", "coreml", "int8_float", "coreml_cpu_only", "spectral_norm"]
Severity = Literal["error", "warning"]
SEVERITY: dict[str, Severity] = {
    "onnx": "error",
    "coreml": "error",
    "int8_float": "warning",
    "coreml_cpu_only": "warning",
    "spectral_norm": "warning",
}

_INVERSE_HINT = (
    "replace torch.inverse with a closed-form inverse (for 2x2 or 3x3 matrices: the adjugate over the determinant)"
)
_AFFINE_GRID_HINT = (
    "build the grid explicitly: a constant coordinate grid (torch.linspace in x and y, stacked) "
    "transformed by the affine matrix, instead of F.affine_grid"
)
# Ops that fail to export whatever their arguments (checked on tiny modules in tests/test_lint.py).
# Core ML's linalg_inv converter folds constant inputs only; its affine_grid converter only
# works when grid_sample consumes the grid directly, and then mis-binds it.
KNOWN_CULPRITS: dict[str, dict[str, str]] = {
    "onnx": {
        "inverse": _INVERSE_HINT,
        "linalg_inv": _INVERSE_HINT,
        "linalg_inv_ex": _INVERSE_HINT,
        "affine_grid_generator": _AFFINE_GRID_HINT,
    },
    "coreml": {
        "inverse": _INVERSE_HINT,
        "linalg_inv": _INVERSE_HINT,
        "linalg_inv_ex": _INVERSE_HINT,
        "affine_grid_generator": _AFFINE_GRID_HINT,
    },
}
ONNX_AFFINE_GRID_OPSET = 20  # AffineGrid joined ONNX in opset 20
# aten op -> the ONNX op the TorchScript exporter emits for it (compute ops that see feature maps).
ONNX_OP = {
    "grid_sampler": "GridSample",
    "exp": "Exp",
    "log": "Log",
    "pow": "Pow",
    "sqrt": "Sqrt",
    "rsqrt": "Sqrt",
    "div": "Div",
    "sub": "Sub",
    "rsub": "Sub",
    "abs": "Abs",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "softmax": "Softmax",
    "log_softmax": "LogSoftmax",
    "sum": "ReduceSum",
    "mean": "ReduceMean",
    "instance_norm": "InstanceNormalization",
    "layer_norm": "LayerNormalization",
    "group_norm": "InstanceNormalization",
}
COREML_CPU_ONLY = {
    "grid_sampler": (
        "Core ML runs grid_sample (MIL resample) on the CPU only: "
        "keep its input small (warp low-resolution features) "
        "and count the CPU time in the latency budget"
    )
}
SPECTRAL_NORM_HINT = (
    "spectral norm recomputes the weight (weight_orig / sigma from weight_u, weight_v) in every forward: "
    "bake it into a plain weight (torch.nn.utils.remove_spectral_norm); compress export does so on a copy"
)
FEATURE_MAP_RANK = 4
VOLUME_RANK = 5
COREML_MAX_RANK = 5
ONNX_VOLUME_GRID_SAMPLE_OPSET = 20  # GridSample took N-D inputs in opset 20
_TO_2D = (
    "rewrite it in 2-D: warp a 2-D feature map with keypoints projected to the image plane, "
    "or fold the depth axis into the batch or the channels"
)
# 3-D (volumetric, rank-5) ops that a mobile export cannot keep: {aten op: (category, why)}.
VOLUME_BLOCKERS: dict[str, tuple[Category, str]] = {
    "grid_sampler": ("coreml", "5-D grid_sample: Core ML's resample takes rank-4 inputs only"),
    "batch_norm": ("coreml", "BatchNorm3d: Core ML fails on it at runtime (coremltools #2276, #2572)"),
    "_convolution": (
        "coreml_cpu_only",
        "Conv3d: Core ML runs it on the CPU only before iOS 17 (the iPhone 8's last is iOS 16)",
    ),
}


@dataclass(frozen=True)
class Finding:
    part: str
    module_path: str  # path in the family model ("" for the model itself)
    op: str  # aten op, e.g. "aten::grid_sampler"
    category: Category
    severity: Severity
    hint: str
    location: str = ""  # file:line of the call in the model's source

    def to_json(self) -> dict[str, str]:
        return asdict(self)

    def line(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return (
            f"{self.severity:7} {self.category:15} {self.part}: {self.module_path or '<model>'}: {self.op}{where}\n"
            f"        {self.hint}"
        )


@dataclass(frozen=True)
class OpSite:
    """One aten op in a part's traced graph."""

    op: str  # "aten::linalg_inv"
    module_path: str
    rank: int  # largest rank among the op's tensor inputs and outputs
    location: str

    @property
    def name(self) -> str:
        """Canonical op name: no namespace, no in-place underscore ("aten::add_" -> "add")."""
        return self.op.split("::")[-1].rstrip("_").lower()


# -- tracing ---------------------------------------------------------------------------------
def op_sites(part: Part, model: nn.Module | None = None) -> list[OpSite]:
    """Every aten op of the part's traced graph with the model path of the module that ran it.

    The part is traced as the exporters trace it, spectral norm baked (on a copy of the part's
    module, whose sub-modules keep the model's names through their path in the part)."""
    traced = baked(part)
    names = _model_names(part, model, traced.module)
    with eval_mode(traced.module), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.jit.trace(traced.module, traced.example_inputs(), check_trace=False).inlined_graph
    return [
        OpSite(node.kind(), _module_path(traced.module, node.scopeName(), names), _rank(node), _location(node))
        for node in _nodes(graph)
        if node.kind().startswith("aten::")
    ]


def _model_names(part: Part, model: nn.Module | None, module: nn.Module | None = None) -> dict[int, str]:
    """{id of a sub-module of `module` (the part's module, or a copy of it): its name in the model}."""
    if model is None:
        return {}
    in_model = {id(m): name for name, m in model.named_modules()}
    same = dict((module or part.module).named_modules())
    return {id(same[path]): in_model[id(m)] for path, m in part.module.named_modules() if id(m) in in_model}


def _nodes(block: Any) -> Any:
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from _nodes(sub)


def _module_path(root: nn.Module, scope: str, names: dict[int, str]) -> str:
    """'__module.a/__module.a.b' -> the model's name for part module `a.b`.

    An op traced at the part's root runs in a method the part module calls on the network it
    wraps (e.g. `generator.animate`): it is put on that network when the part wraps exactly one.
    """
    relative = scope.rsplit("/", 1)[-1].removeprefix("__module").removeprefix(".") if scope else ""
    module = root.get_submodule(relative)
    if id(module) in names:
        return names[id(module)]
    wrapped = [names[id(child)] for child in module.children() if id(child) in names]
    if not relative and len(wrapped) == 1:
        return wrapped[0]
    return relative


def _rank(node: Any) -> int:
    ranks = [0]
    for value in [*node.inputs(), *node.outputs()]:
        kind = value.type()
        if isinstance(kind, torch._C.TensorType) and kind.dim() is not None:
            ranks.append(kind.dim())
    return max(ranks)


def _location(node: Any) -> str:
    """The innermost frame of the call stack outside torch itself, as file:line (function)."""
    torch_dir = str(Path(torch.__file__).parent)
    for line in node.sourceRange().splitlines():
        match = re.match(r"(.+)\((\d+)\): (\S+)$", line.strip())
        if match and not match.group(1).startswith(torch_dir):
            return f"{_short(match.group(1))}:{match.group(2)} ({match.group(3)})"
    return ""


def _short(file: str) -> str:
    try:
        return str(Path(file).relative_to(Path.cwd()))
    except ValueError:
        return file


# -- the checks ------------------------------------------------------------------------------
def lint_model(family: Family, model: nn.Module, *, opset: int = 17, target: str = "iOS16") -> list[Finding]:
    """Findings for every part of `model`: errors (will not export) first, then warnings."""
    findings: list[Finding] = []
    for part in family.parts(model):
        findings += lint_part(part, model, opset=opset, target=target)
    return sorted(_unique(findings), key=lambda f: (f.severity != "error", f.part, f.category, f.module_path))


def lint_part(part: Part, model: nn.Module | None = None, *, opset: int = 17, target: str = "iOS16") -> list[Finding]:
    sites = op_sites(part, model)
    findings = _volume_findings(part, sites, opset) + _spectral_norm_findings(part, model, sites)
    # An exporter failure these findings explain is not blamed again (its message names no op).
    explained = {f.category for f in findings if f.severity == "error"}
    onnx_error = None if "onnx" in explained else _onnx_error(part, opset)
    if onnx_error:
        culprits = dict(KNOWN_CULPRITS["onnx"])
        if opset >= ONNX_AFFINE_GRID_OPSET:
            culprits.pop("affine_grid_generator")
        findings += _blame(part, sites, onnx_error, "onnx", culprits)
    coreml_error = None if "coreml" in explained else _coreml_error(part, target)
    if coreml_error:
        findings += _blame(part, sites, coreml_error, "coreml", KNOWN_CULPRITS["coreml"])
    float_ops = _onnx_ops_left_float()
    for site in sites:
        onnx_op = ONNX_OP.get(site.name)
        if onnx_op in float_ops and site.rank >= FEATURE_MAP_RANK:
            hint = (
                f"onnxruntime's int8 quantizer has no kernel for ONNX {onnx_op}: "
                "it runs in float between dequantize/quantize; keep it off large feature maps"
            )
            findings.append(_finding(part, site, "int8_float", hint))
        if site.name in COREML_CPU_ONLY:
            findings.append(_finding(part, site, "coreml_cpu_only", COREML_CPU_ONLY[site.name]))
    return findings


def _volume_findings(part: Part, sites: list[OpSite], opset: int) -> list[Finding]:
    """3-D layers and tensors of rank > 5, named per op with the 2-D rewrite that removes them. The
    exporters' own errors on them name no op (ONNX: "GridSample with 5D volumetric input")."""
    findings = []
    for site in sites:
        if site.rank > COREML_MAX_RANK:
            findings.append(
                _finding(part, site, "coreml", f"a rank-{site.rank} tensor: Core ML allows rank 5 at most; {_TO_2D}")
            )
        elif site.rank == VOLUME_RANK and site.name in VOLUME_BLOCKERS:
            category, why = VOLUME_BLOCKERS[site.name]
            findings.append(_finding(part, site, category, f"{why}; {_TO_2D}"))
            if site.name == "grid_sampler" and opset < ONNX_VOLUME_GRID_SAMPLE_OPSET:
                why = f"5-D grid_sample: ONNX GridSample is 4-D only before opset {ONNX_VOLUME_GRID_SAMPLE_OPSET}"
                findings.append(_finding(part, site, "onnx", f"{why}; {_TO_2D}"))
    return findings


def _spectral_norm_findings(part: Part, model: nn.Module | None, sites: list[OpSite]) -> list[Finding]:
    """Spectrally normalised modules the part runs (one whose ops are in its trace)."""
    names = _model_names(part, model)
    modules = dict(part.module.named_modules())
    ran = {s.module_path for s in sites}
    return [
        Finding(
            part.name,
            names.get(id(modules[path]), path),
            "spectral_norm",
            "spectral_norm",
            SEVERITY["spectral_norm"],
            SPECTRAL_NORM_HINT,
        )
        for path in spectral_norm_modules(part.module)
        if names.get(id(modules[path]), path) in ran
    ]


def _finding(part: Part, site: OpSite, category: Category, hint: str) -> Finding:
    return Finding(part.name, site.module_path, site.op, category, SEVERITY[category], hint, site.location)


def _onnx_error(part: Part, opset: int) -> str | None:
    try:
        onnx_model(part, opset)
    except Exception as exc:  # any exporter failure is a finding, not a crash
        return f"{type(exc).__name__}: {exc}"
    return None


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().strip())


def _coreml_error(part: Part, target: str) -> str | None:
    logger = logging.getLogger("coremltools")
    collect = _Collect()
    logger.addHandler(collect)  # the converter logs which op failed ("converting 'int' op") apart from the exception
    try:
        coreml_convert(part, target, "fp32", frontend_only=True)
    except Exception as exc:
        return "\n".join([f"{type(exc).__name__}: {exc}", *collect.messages])
    finally:
        logger.removeHandler(collect)
    return None


def _blame(part: Part, sites: list[OpSite], error: str, category: Category, culprits: dict[str, str]) -> list[Finding]:
    first_line = error.strip().splitlines()[0][:300]
    known = [s for s in sites if s.name in culprits]
    if known:
        return [_finding(part, s, category, culprits[s.name]) for s in known]
    named = [s for s in sites if _names_op(error, s)]
    exporter = "the ONNX exporter" if category == "onnx" else "coremltools"
    hint = f"{exporter} failed on this op ({first_line}): rewrite it with supported ops"
    if named:
        return [_finding(part, s, category, hint) for s in named]
    return [
        Finding(
            part.name,
            "",
            "unknown",
            category,
            SEVERITY[category],
            f"{exporter} failed ({first_line}); no single op could be blamed",
        )
    ]


def _names_op(error: str, site: OpSite) -> bool:
    """Does the error message quote this op ('aten::linalg_inv', 'inverse', `linalg_inv`)?"""
    return re.search(rf"[`'\"](?:aten::)?{re.escape(site.name)}_?[`'\"]", error, re.IGNORECASE) is not None


def _onnx_ops_left_float() -> set[str]:
    """ONNX ops of ONNX_OP that onnxruntime's static quantizer (QOperator or QDQ) leaves in float."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return set(ONNX_OP.values()) - set(QDQRegistry) - set(QLinearOpsRegistry)


def _unique(findings: list[Finding]) -> list[Finding]:
    """One finding per (part, module, op, category): a module calling grid_sample twice is one line."""
    seen: dict[tuple[str, str, str, str], Finding] = {}
    for f in findings:
        seen.setdefault((f.part, f.module_path, f.op, f.category), f)
    return list(seen.values())


def format_findings(findings: list[Finding]) -> str:
    return "\n".join(f.line() for f in findings) if findings else "no findings"


def summarize_findings(findings: list[Finding]) -> list[str]:
    """Two lines per part with findings: counts per category, and the worst finding with its hint."""
    lines = []
    for part in dict.fromkeys(f.part for f in findings):
        mine = [f for f in findings if f.part == part]
        counts = ", ".join(f"{n} {c}" for c in SEVERITY if (n := sum(f.category == c for f in mine)))
        worst = min(mine, key=lambda f: (f.severity != "error", list(SEVERITY).index(f.category)))
        lines.append(
            f"{part}: {counts}; worst: {worst.severity} {worst.category} {worst.module_path or '<model>'}: {worst.op}"
        )
        lines.append(f"    {worst.hint}")
    return lines


# -- what to lint ----------------------------------------------------------------------------
def recipe_network(recipe: Recipe, family: Family) -> tuple[nn.Module, str]:
    """The network a recipe will export: the student when it distills, else the teacher.

    Ops do not depend on weights, so both are built from their configs (random init).
    """
    if recipe.stage("distill") is not None:
        return family.build_student(family.resolve_config(recipe.student.config, "student")).eval(), "student"
    return family.build_teacher(family.resolve_config(recipe.teacher.config, "teacher")).eval(), "teacher"


def _export_settings(recipe: Recipe) -> tuple[int, str]:
    stage = recipe.stage("export")
    cfg = stage.config if stage is not None else ExportConfig()
    return cfg.opset, cfg.minimum_deployment_target  # type: ignore[attr-defined]


def lint_stage(cfg: LintConfig, ctx: RunContext) -> StageResult:
    """Lint what will be exported; stop the run (exit 2) on errors of the `fail_on` categories."""
    if "model" in ctx.artifacts:
        model, kind = ctx.model()
    elif ctx.recipe.stage("distill") is not None:
        model, kind = recipe_network(ctx.recipe, ctx.family)
    else:
        model, kind = ctx.teacher(), "teacher"
    opset, target = _export_settings(ctx.recipe)
    findings = lint_model(ctx.family, model, opset=opset, target=target)
    failing = [f for f in findings if f.severity == "error" and f.category in cfg.fail_on]
    if failing:
        raise CompressError(
            f"lint: the {kind} ({ctx.recipe.family}) has ops that will not export; fix them before training:\n"
            + format_findings(failing)
        )
    for line in format_findings(findings).splitlines() if ctx.verbose else summarize_findings(findings):
        ctx.log(line)
    if findings and not ctx.verbose:
        ctx.log(f"every finding: {ctx.rel(ctx.stage_dir / 'record.json')} (or compress run --verbose)")
    counts = {c: sum(f.category == c for f in findings) for c in SEVERITY}
    warnings_ = sum(f.severity == "warning" for f in findings)
    return StageResult(
        metrics={
            "network": kind,
            "opset": opset,
            "target": target,
            "counts": counts,
            "findings": [f.to_json() for f in findings],
        },
        summary=f"linted the {kind}: {len(findings) - warnings_} errors, {warnings_} warnings",
    )


def lint_target(
    path_or_recipe: str | Path | Recipe, family: str | Family | None = None, config: str | dict[str, Any] | None = None
) -> list[Finding]:
    """`compress lint RECIPE|CHECKPOINT`: findings for a recipe's network or a checkpoint's model.

    A recipe lints what it will export (see `recipe_network`) at its export opset and target.
    A checkpoint is one of our .safetensors models (family in its metadata) or a public
    checkpoint (family and config recognised from its keys and shapes unless given).
    """
    from compress.families.loading import load_checkpoint
    from compress.families.registry import get_family
    from compress.recipe import is_recipe, load_recipe

    if isinstance(path_or_recipe, Recipe) or is_recipe(path_or_recipe):
        recipe = path_or_recipe if isinstance(path_or_recipe, Recipe) else load_recipe(path_or_recipe)
        fam = get_family(recipe.family)
        opset, target = _export_settings(recipe)
        return lint_model(fam, recipe_network(recipe, fam)[0], opset=opset, target=target)
    fam, model, _ = load_checkpoint(Path(path_or_recipe), family, config)
    return lint_model(fam, model)

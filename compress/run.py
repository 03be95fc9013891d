"""The stage runner: run folder, records, hashing, resume, atomic writes.

A stage is a plain function `(cfg, ctx) -> StageResult`. It reads the artifacts of earlier
stages from `ctx.artifacts`, writes its files under `ctx.stage_dir` (a temporary folder that
the runner renames into place only when the stage succeeds) and returns what it produced.
Artifacts are JSON-able values; file paths in them are relative to the run folder.

Artifact keys used by the stages:
  teacher        path of the teacher model file (always present)
  model          path of the current deployable model (distill and prune write it)
  exported       {part: {format: path}}          (export)
  quantized      {part: {format: path}}          (quantize)
  shipped        {part: {format: {path, precision}}} what the bundle ships (export, quantize)
  latency        [profile rows]                  (profile)
  quality        {metric: value}                 (distill, prune, quantize)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from torch import nn

from compress.checkpoints import atomic_path
from compress.errors import CompressError, GateFailed
from compress.families.base import Family
from compress.families.loading import load_model
from compress.families.registry import get_family
from compress.recipe import Recipe

RECORD = "record.json"
# Other stages' configs a stage reads besides its own, so that --resume reruns it when they change:
# quantize times int8 against float with the profile stage's runs and warmup, for its devices.
READS = {"quantize": ("profile",)}
PACKAGES = (
    "torch",
    "onnx",
    "onnxruntime",
    "onnxsim",
    "coremltools",
    "torch-pruning",
    "nncf",
    "numpy",
    "mobile-compress",
)


@dataclass
class Gate:
    """A target verdict: what was asked, what was measured, and whether it passed."""

    name: str
    target: float
    value: float | None
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        margin = None if self.value is None else self.value - self.target
        return {
            "name": self.name,
            "target": self.target,
            "value": self.value,
            "passed": self.passed,
            "margin": margin,
            "detail": self.detail,
        }


@dataclass
class StageResult:
    artifacts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    summary: str = ""
    external: list[Path] = field(
        default_factory=list
    )  # files written outside the run folder (the bundle): resume checks them too


@dataclass
class RunContext:
    recipe: Recipe
    family: Family
    run_dir: Path
    stage_dir: Path
    stage_name: str
    artifacts: dict[str, Any]
    trust_checkpoint: bool = False
    nproc: int = 1
    resume: bool = False
    quiet: bool = False
    verbose: bool = False  # stages print every finding, not a summary
    _cache: dict[str, Any] = field(default_factory=dict)

    def path(self, rel: str) -> Path:
        """Absolute path of a run-relative artifact path."""
        return self.run_dir / rel

    def rel(self, path: Path) -> str:
        """Run-relative name that a file written under `stage_dir` will have once the stage succeeds."""
        return f"{self.stage_name}/{Path(path).relative_to(self.stage_dir).as_posix()}"

    def teacher(self) -> nn.Module:
        if "teacher" not in self._cache:
            self._cache["teacher"] = load_model(self.path(self.artifacts["teacher"]), self.family)[0]
        return self._cache["teacher"]

    def model(self) -> tuple[nn.Module, str]:
        """The current deployable model and its kind ("teacher" when no stage has made one)."""
        key = self.artifacts.get("model") or self.artifacts["teacher"]
        model, meta = load_model(self.path(key), self.family)
        return model, meta["kind"]

    def log(self, msg: str) -> None:
        if not self.quiet and is_rank0():
            from rich.console import Console

            Console(stderr=True).print(f"  {msg}", highlight=False, soft_wrap=True)


def measured_on(ctx: RunContext, model: str, batches: list[dict[str, Any]]) -> dict[str, Any]:
    """What a quality figure describes: which model files, on which data, how many samples."""
    from compress.families.base import batch_size

    data = ctx.recipe.data.eval
    return {
        "model": model,
        "data": f"{data} (data.eval, held out, seed {ctx.recipe.data.seed})",
        "samples": sum(batch_size(b) for b in batches),
    }


def is_rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


StageFn = Callable[[Any, RunContext], StageResult]
STAGES: dict[str, str] = {
    "lint": "compress.lint:lint_stage",
    "distill": "compress.distill:distill_stage",
    "prune": "compress.prune:prune_stage",
    "export": "compress.export:export_stage",
    "quantize": "compress.quantize:quantize_stage",
    "profile": "compress.bench.stage:profile_stage",
    "bundle": "compress.bundle.stage:bundle_stage",
}


def stage_function(name: str) -> StageFn:
    module, fn = STAGES[name].split(":")
    return getattr(importlib.import_module(module), fn)


# -- hashing ---------------------------------------------------------------------------------
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    if path.is_dir():  # Core ML packages are folders: hash names and contents in order
        for p in sorted(path.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(path)).encode())
                h.update(bytes.fromhex(sha256_file(p)))
        return h.hexdigest()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _files_in(value: Any, run_dir: Path) -> list[Path]:
    """Every run-relative path mentioned in an artifact value that exists."""
    found: list[Path] = []
    if isinstance(value, str):
        p = run_dir / value
        if value and not os.path.isabs(value) and p.exists():
            found.append(p)
    elif isinstance(value, dict):
        for v in value.values():
            found += _files_in(v, run_dir)
    elif isinstance(value, list):
        for v in value:
            found += _files_in(v, run_dir)
    return found


def data_hashes(recipe: Recipe) -> dict[str, str]:
    """Content hash of each data source a recipe names ("synthetic" is generated from the seed)."""
    hashes = {}
    for split in ("train", "eval", "calibration"):
        path = recipe.resolve(getattr(recipe.data, split))
        hashes[split] = sha256_file(path) if path is not None else "synthetic"
    return hashes


def artifact_hashes(artifacts: dict[str, Any], run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): sha256_file(p) for p in sorted(set(_files_in(artifacts, run_dir)))}


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


# -- the runner ------------------------------------------------------------------------------
@dataclass
class RunSummary:
    recipe: str
    run_dir: Path
    stages: list[dict[str, Any]]
    gates: list[Gate]
    artifacts: dict[str, Any]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe,
            "run_dir": str(self.run_dir),
            "passed": self.passed,
            "stages": self.stages,
            "gates": [g.to_json() for g in self.gates],
            "artifacts": self.artifacts,
        }


def code_hash() -> str:
    """A hash of the compress package's source: what another version made is not "unchanged"."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def default_run_dir(recipe: Recipe, out: Path | None) -> Path:
    base = out or Path("exported/runs")
    return base / f"{recipe.name}-{recipe.sha256()[:8]}"


def latest_run_dir(recipe: Recipe, out: Path | None) -> Path | None:
    """The most recently written run folder of this recipe (any config), finished or not."""
    base = out or Path("exported/runs")
    runs = [
        p
        for p in base.glob(f"{recipe.name}-*")
        if re.fullmatch(rf"{re.escape(recipe.name)}-[0-9a-f]{{8}}", p.name) and p.is_dir()
    ]

    def written(run: Path) -> float:
        return max((f.stat().st_mtime for f in [run, *run.glob(f"*/{RECORD}")]), default=0.0)

    return max(runs, key=written, default=None)


def run_recipe(
    recipe: Recipe,
    *,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    until: str | None = None,
    trust_checkpoint: bool = False,
    nproc: int = 1,
    quiet: bool = False,
    verbose: bool = False,
    run_dir: str | Path | None = None,
) -> RunSummary:
    """Run a recipe's stages in order; `resume` skips stages whose inputs and config are unchanged."""
    family = get_family(recipe.family)
    if until is not None and recipe.stage(until) is None:
        raise CompressError(
            f"--until {until}: the recipe has no stage {until!r} (it has {', '.join(s.name for s in recipe.stages)})"
        )
    base = Path(out) if out else None
    # --resume continues the recipe's latest run even after a config change: the per-stage keys
    # below decide what reruns; without it, each config gets a folder of its own.
    run_dir = Path(run_dir) if run_dir else (resume and latest_run_dir(recipe, base)) or default_run_dir(recipe, base)
    if not is_rank0():  # under `torchrun -m compress run`: other ranks only join distillation and write nothing shared
        import tempfile

        run_dir = Path(tempfile.mkdtemp(prefix=f"compress-rank{os.environ['RANK']}-"))
    run_dir.mkdir(parents=True, exist_ok=True)

    artifacts: dict[str, Any] = {"teacher": _prepare_teacher(recipe, family, run_dir, checkpoint, trust_checkpoint)}
    base_key = {
        "family": recipe.family,
        "student": family.resolve_config(recipe.student.config, "student"),
        "data": recipe.data.model_dump(mode="json"),
        "data_content": data_hashes(recipe),
        "targets": recipe.targets.model_dump(mode="json"),
        "code": code_hash(),
    }
    stages_out: list[dict[str, Any]] = []
    gates: list[Gate] = []
    changed = not resume
    stages = list(recipe.stages)
    if not stages or stages[0].name != "lint":  # lint always runs first, so no training starts on an unexportable model
        from compress.recipe import LintConfig, Stage

        stages.insert(0, Stage.model_construct(name="lint", config=LintConfig()))
    for stage in stages:
        if not is_rank0() and stage.name != "distill":
            continue
        key = hashlib.sha256(
            json.dumps(
                {
                    "stage": stage.name,
                    "config": stage.config.model_dump(mode="json"),
                    "reads": {
                        name: read.config.model_dump(mode="json")
                        for name in READS.get(stage.name, ())
                        if (read := recipe.stage(name)) is not None
                    },
                    "base": base_key,
                    "inputs": artifact_hashes(artifacts, run_dir),
                },
                sort_keys=True,
            ).encode()
        ).hexdigest()
        final = run_dir / stage.name
        record = _read_record(final)
        if not changed and record and record.get("key") == key and _outputs_intact(record, run_dir):
            artifacts.update(record["artifacts"])
            gates += [
                Gate(**{k: g[k] for k in ("name", "target", "value", "passed", "detail")})
                for g in record.get("gates", [])
            ]
            stages_out.append(
                {
                    "stage": stage.name,
                    "status": "resumed",
                    "wall_s": record["wall_s"],
                    "summary": record.get("summary", ""),
                }
            )
            _say(quiet, f"[dim]{stage.name}: unchanged, kept from {final}[/dim]")
            if until == stage.name:
                break
            continue
        changed = True
        _say(quiet, f"[bold]{stage.name}[/bold]")
        start = time.perf_counter()
        with atomic_path(final) as tmp:
            tmp.mkdir()
            ctx = RunContext(
                recipe,
                family,
                run_dir,
                tmp,
                stage.name,
                dict(artifacts),
                trust_checkpoint,
                nproc,
                resume,
                quiet,
                verbose,
            )
            result = stage_function(stage.name)(stage.config, ctx)
            wall = time.perf_counter() - start
            rec = {
                "stage": stage.name,
                "key": key,
                "config": stage.config.model_dump(mode="json"),
                "inputs": artifact_hashes(artifacts, run_dir),
                "artifacts": result.artifacts,
                "outputs": {rel: sha for rel, sha in _stage_outputs(tmp, final, run_dir).items()},
                "external_outputs": {str(p.resolve()): sha256_file(p) for p in result.external},
                "metrics": result.metrics,
                "gates": [g.to_json() for g in result.gates],
                "summary": result.summary,
                "wall_s": round(wall, 3),
                "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "packages": package_versions(),
            }
            (tmp / RECORD).write_text(json.dumps(rec, indent=2, default=str))
        artifacts.update(result.artifacts)
        gates += result.gates
        stages_out.append({"stage": stage.name, "status": "ran", "wall_s": round(wall, 3), "summary": result.summary})
        if until == stage.name:
            break
    summary = RunSummary(recipe.name, run_dir, stages_out, gates, artifacts)
    (run_dir / "summary.json").write_text(json.dumps(summary.to_json(), indent=2, default=str))
    return summary


def _stage_outputs(tmp: Path, final: Path, run_dir: Path) -> dict[str, str]:
    return {
        str((final / p.relative_to(tmp)).relative_to(run_dir)): sha256_file(p)
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and p.name != RECORD
    }


def _read_record(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _outputs_intact(record: dict[str, Any], run_dir: Path) -> bool:
    files = [(run_dir / rel, sha) for rel, sha in record.get("outputs", {}).items()]
    files += [(Path(path), sha) for path, sha in record.get("external_outputs", {}).items()]
    return all(path.is_file() and sha256_file(path) == sha for path, sha in files)


def _prepare_teacher(recipe: Recipe, family: Family, run_dir: Path, checkpoint: str | Path | None, trust: bool) -> str:
    """Keep the teacher in the run as one of our safetensors model files (loaded safely once)."""
    from compress.checkpoints import read_model_meta, save_model
    from compress.families.loading import load_teacher_model

    path = Path(checkpoint) if checkpoint else recipe.resolve(recipe.teacher.checkpoint)
    target = run_dir / "teacher.safetensors"
    if path is not None and read_model_meta(path) is not None:  # already ours: config and structure inside
        load_model(path, family)  # validate before the run relies on it
        shutil.copyfile(path, target)
        return target.name
    model, config = load_teacher_model(family, path, recipe.teacher.config, trust=trust)
    save_model(
        target,
        model,
        family=family.name,
        kind="teacher",
        config=config,
        extra={"source": str(path) if path else "random-init"},
    )
    return target.name


def _say(quiet: bool, msg: str) -> None:
    if not quiet and is_rank0():
        from rich.console import Console

        Console(stderr=True).print(msg)


def check_gates(summary: RunSummary) -> None:
    failed = [g for g in summary.gates if not g.passed]
    if failed:
        raise GateFailed(
            "target missed: " + "; ".join(f"{g.name}: {g.value} vs {g.target} {g.detail}".strip() for g in failed)
        )

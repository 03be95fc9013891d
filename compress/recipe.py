"""The recipe schema: one pydantic model, defaults in one place, unknown keys are errors.

A recipe is YAML. Errors name the file, the key path and the YAML line. `--set a.b=c`
overrides any field (stages are addressed by name: `stages.distill.steps=200`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.errors import CompressError

SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")


def check_semver(v: str) -> str:
    """`v` if it is a semantic version (MAJOR.MINOR.PATCH[-pre][+build]); ValueError otherwise
    (for pydantic validators)."""
    if not SEMVER.match(v):
        raise ValueError(f"version {v!r} is not semver (MAJOR.MINOR.PATCH)")
    return v


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# -- stage configs -------------------------------------------------------------------------
class LintConfig(Strict):
    fail_on: list[Literal["onnx", "coreml"]] = ["onnx", "coreml"]


class DistillConfig(Strict):
    steps: int = Field(500, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = 0.0
    seed: int = 0
    loss: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "the family's loss-term weights (`compress families` lists them); omitted terms keep their defaults"
        ),
    )
    feature_layers: dict[str, str] = Field(
        default_factory=dict, description="student module path -> teacher module path, matched through 1x1 adapters"
    )
    feature_weight: float = Field(0.1, ge=0, description="weight of the feature-matching term (with feature_layers)")
    cache_teacher: bool = True
    memory_format: Literal["contiguous", "channels_last"] = Field(
        "contiguous",
        description="the student's layout while it trains: channels_last suits mkldnn's CPU convolutions "
        "(docs/stages/distill.md has a measurement); it is back to contiguous when training ends",
    )
    cache_data: bool = Field(
        False,
        description="keep each training sample in memory once drawn: synthetic data is otherwise rendered again "
        "every epoch (about 100 KB a sample at 64x64)",
    )
    checkpoint_every: int = Field(100, ge=1)
    eval_batches: int = Field(4, ge=1)
    device: Literal["cpu", "cuda", "mps"] = Field(
        "cpu", description="where training runs; models are evaluated and exported on the CPU afterwards"
    )
    train_samples: int = Field(512, ge=1, description="clip pairs drawn per epoch from the train split")


class PruneConfig(Strict):
    model: Literal["auto", "teacher", "model"] = "auto"
    importance: Literal["magnitude", "taylor", "bn_scale"] = "magnitude"
    scope: Literal["global", "uniform"] = "uniform"
    round_to: int = Field(8, ge=1)
    # Budget: at least one of these.
    size_mb: float | None = Field(None, gt=0)
    precision: Literal["fp32", "fp16", "int8"] = "int8"
    gflops: dict[str, float] = Field(default_factory=dict, description="network or part name -> GFLOPs budget")
    gflops_ratio: float | None = Field(None, gt=0, le=1, description="keep this fraction of each network's GFLOPs")
    latency_ms: dict[str, float] = Field(default_factory=dict, description="part name -> predicted ms")
    device: str = "profile:iphone8"
    iterations: int = Field(1, ge=1, description="prune -> fine-tune cycles")
    finetune: DistillConfig | None = None
    protect: list[str] = Field(default_factory=list, description="extra module paths pruning must not touch")


class ExportConfig(Strict):
    formats: list[Literal["onnx", "coreml"]] = ["onnx", "coreml"]
    opset: int = Field(17, ge=17)
    simplify: bool = True
    minimum_deployment_target: Literal["iOS16", "iOS17", "iOS18"] = "iOS16"
    compute_precision: Literal["fp16", "fp32"] = "fp16"
    rtol: float = Field(1e-3, gt=0)
    atol: float = Field(1e-4, ge=0)
    random_inputs: int = Field(3, ge=0)
    real_inputs: int = Field(3, ge=0)


RENAMED_QUANTIZE_KEYS = {
    "max_psnr_drop_db": "max_quality_drop: the drop of the family's primary metric, in its unit (dB for fomm's psnr); "
    "`compress families` lists each family's primary metric",
    "eval_batches": "eval_samples (it always counted samples)",
}


class QuantizeConfig(Strict):
    formats: list[Literal["onnx", "coreml"]] = ["onnx", "coreml"]
    onnx_engine: Literal["ort", "nncf"] = "ort"
    target: Literal["auto", "x86", "x86-vnni", "arm"] = "auto"
    per_channel: bool = True
    calibration_samples: int = Field(32, ge=1)
    eval_samples: int = Field(
        16, ge=1, description="held-out samples the int8 gates and the shipped files' quality are measured on"
    )
    max_quality_drop: float | None = Field(
        None, ge=0, description="int8 drop of the family's primary metric allowed, in its unit; default: the family's"
    )
    ship_when_slower: Literal["mixed", "int8", "fp32"] = Field(
        "mixed",
        description="where int8 is slower than fp32 on this host: `mixed` keeps float the regions whose int8 is "
        "slower (fp32 ships if the file is still slower, unless that breaks targets.size_mb: then int8 ships for "
        "size), `int8` ships full int8 (size matters more), `fp32` ships the fp32 file",
    )
    coreml_mode: Literal["auto", "weights", "w8a8"] = "auto"
    qat: DistillConfig | None = Field(
        None, description="quantization-aware training of the ONNX int8 parts (nncf), distilled against the teacher"
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        for old, new in RENAMED_QUANTIZE_KEYS.items():
            if isinstance(data, dict) and old in data:
                raise ValueError(f"{old} was renamed {new}")
        return data


class ProfileConfig(Strict):
    devices: list[str] = ["host", "profile:iphone8"]
    threads: list[int] = [1]
    warmup: int = Field(5, ge=0)
    runs: int = Field(30, ge=1)
    precision: Literal["fp32", "int8", "shipped"] = "shipped"


class BundleConfig(Strict):
    out: str | None = Field(None, description="bundle folder; default exported/<name>-<version>")
    formats: list[Literal["onnx", "coreml"]] = ["onnx", "coreml"]
    snippets: list[Literal["swift", "kotlin", "python"]] = ["swift", "kotlin", "python"]
    bitstream_clips: int | None = Field(
        None, ge=1, description="calibration clips a video-call bundle's bitstream format is fitted on; default 4"
    )
    bitstream_frames: int | None = Field(None, ge=8, description="frames of each of those clips; default 100")


STAGE_CONFIGS: dict[str, type[Strict]] = {
    "lint": LintConfig,
    "distill": DistillConfig,
    "prune": PruneConfig,
    "export": ExportConfig,
    "quantize": QuantizeConfig,
    "profile": ProfileConfig,
    "bundle": BundleConfig,
}
StageName = Literal["lint", "distill", "prune", "export", "quantize", "profile", "bundle"]


# -- recipe ---------------------------------------------------------------------------------
class TeacherSpec(Strict):
    checkpoint: str | None = Field(None, description="path (relative to the recipe) or None for random init")
    config: str | dict[str, Any] | None = None


class StudentSpec(Strict):
    config: str | dict[str, Any] | None = None


class DataSpec(Strict):
    train: str = "synthetic"
    eval: str = "synthetic"
    calibration: str = "synthetic"
    size: tuple[int, int] | None = Field(None, description="(H, W); default: the family's input size")
    seed: int = 0


class FpsTarget(Strict):
    device: str
    part: str
    fps: float = Field(gt=0)


class Targets(Strict):
    size_mb: float | None = Field(None, gt=0)
    fps: list[FpsTarget] = Field(default_factory=list)


class Stage(Strict):
    name: StageName
    config: Strict


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="bundle and run name (lower case, digits, . _ -)")
    version: str = Field("0.1.0", description="semver of the bundle this recipe makes")
    description: str = Field("", description="one line for `compress recipes`")
    family: str = Field(description="model family (`compress families` lists them)")
    teacher: TeacherSpec = Field(TeacherSpec(), description="teacher checkpoint and config")
    student: StudentSpec = Field(StudentSpec(), description="student config (the family's default when omitted)")
    data: DataSpec = Field(DataSpec(), description="train / eval / calibration sources")
    stages: list[Stage] = Field(description="ordered list of one-key mappings: `- distill: {steps: 200}`")
    targets: Targets = Field(Targets(), description="gates: bundle size and fps per device and part")
    # Where the recipe came from; relative paths resolve against it.
    source: Path | None = Field(None, exclude=True)

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        return check_semver(v)

    @field_validator("stages", mode="before")
    @classmethod
    def _stages(cls, items: Any) -> list[Stage]:
        if not isinstance(items, list):
            raise ValueError("stages must be a list such as [{distill: {steps: 200}}, {export: {}}]")
        stages, seen = [], set()
        for i, item in enumerate(items):
            if isinstance(item, Stage):
                stages.append(item)
                continue
            name, body = _stage_item(item, i)
            if name in seen:
                raise ValueError(f"stage {name!r} appears twice")
            seen.add(name)
            stages.append(Stage.model_construct(name=name, config=STAGE_CONFIGS[name].model_validate(body or {})))
        return stages

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def resolve(self, path: str | None) -> Path | None:
        if path is None or path == "synthetic":
            return None
        p = Path(path).expanduser()
        if not p.is_absolute() and self.source is not None:
            p = self.source.parent / p
        return p

    def to_json(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"stages", "source"})
        data["stages"] = [{s.name: s.config.model_dump(mode="json")} for s in self.stages]
        return data

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def _stage_item(item: Any, index: int) -> tuple[str, Any]:
    if isinstance(item, str):
        item = {item: {}}
    if not isinstance(item, dict) or len(item) != 1:
        raise ValueError(f"stages[{index}] must be a one-key mapping like {{export: {{}}}}")
    ((name, body),) = item.items()
    if name not in STAGE_CONFIGS:
        raise ValueError(f"stages[{index}]: unknown stage {name!r}; known: {', '.join(STAGE_CONFIGS)}")
    return name, body


# -- loading --------------------------------------------------------------------------------
# The recipes (and demo teachers) that ship inside the package: found by name from any folder.
SHIPPED_RECIPES = Path(__file__).parent / "recipes"


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe file: the path itself when it exists, else the shipped recipe of that name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SHIPPED_RECIPES / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise CompressError(
        f"{path}: recipe not found: neither a file nor a shipped recipe (`compress recipes` lists them)"
    )


def is_recipe(target: str | Path) -> bool:
    """Whether a command-line target names a recipe (a YAML file or a shipped recipe's name)."""
    path = Path(target)
    return path.suffix in (".yaml", ".yml") or (
        not path.exists() and path.parent == Path(".") and (SHIPPED_RECIPES / f"{path.name}.yaml").is_file()
    )


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe (a path or a shipped recipe's name); every error names
    file, key path and line."""
    path = find_recipe(path)
    text = path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CompressError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise CompressError(f"{path}: a recipe is a YAML mapping with name, family and stages")
    lines = _line_numbers(text)
    for item in overrides or []:
        _apply_override(data, item, path)
    errors = []
    if isinstance(data.get("stages"), list):
        data["stages"], errors = _validate_stages(path, data["stages"], lines)
    try:
        recipe = Recipe.model_validate({**data, "source": path.resolve()})
    except ValidationError as exc:
        errors += _format_errors(path, exc, lines)
    if not errors:
        errors = _loss_errors(path, recipe, lines)
    if errors:
        raise CompressError("invalid recipe\n  " + "\n  ".join(errors))
    for label, value in (("teacher.checkpoint", recipe.teacher.checkpoint),) + tuple(
        (f"data.{k}", getattr(recipe.data, k)) for k in ("train", "eval", "calibration")
    ):
        p = recipe.resolve(value)
        if p is not None and not p.exists():
            where = f":{lines[label]}" if label in lines else ""
            raise CompressError(f"{path}{where}: {label}: file not found: {p}")
    return recipe


def _apply_override(data: dict[str, Any], item: str, path: Path) -> None:
    if "=" not in item:
        raise CompressError(f"--set {item!r}: expected KEY=VALUE, e.g. stages.distill.steps=200")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    keys = key.split(".")
    node: Any = data
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):  # stages are addressed by name
            node[:] = [{s: {}} if isinstance(s, str) else s for s in node]
            match = [s for s in node if isinstance(s, dict) and k in s]
            if not match:
                raise CompressError(f"--set {key}: {path} has no stage {k!r}")
            if match[0][k] is None:
                match[0][k] = {}
            node = match[0][k]
            continue
        if not isinstance(node, dict):
            raise CompressError(f"--set {key}: {'.'.join(keys[:i])} is not a mapping")
        node = node.setdefault(k, {})
    if not isinstance(node, dict):
        raise CompressError(f"--set {key}: {'.'.join(keys[:-1])} is not a mapping")
    node[keys[-1]] = value


def _line_numbers(text: str) -> dict[str, int]:
    """Key path (stages addressed by name) -> 1-based YAML line."""
    out: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                path = f"{prefix}.{k.value}" if prefix else str(k.value)
                out[path] = k.start_mark.line + 1
                walk(v, path)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                out[f"{prefix}[{i}]"] = v.start_mark.line + 1
                walk(v, f"{prefix}[{i}]")

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return out
    if root is not None:
        walk(root, "")
    return out


def _validate_stages(path: Path, items: list[Any], lines: dict[str, int]) -> tuple[list[Any], list[str]]:
    """Validate each stage with its own config class, so errors carry `stages[i].name.field` and its line."""
    stages, errors = [], []
    for i, item in enumerate(items):
        try:
            name, body = _stage_item(item, i)
        except ValueError as exc:
            errors.append(f"{path}:{lines.get(f'stages[{i}]', '?')}: {exc}")
            continue
        try:
            stages.append(Stage.model_construct(name=name, config=STAGE_CONFIGS[name].model_validate(body or {})))
        except ValidationError as exc:
            errors += _format_errors(path, exc, lines, prefix=f"stages[{i}].{name}")
    return stages, errors


# The field of each stage that holds a distillation config (None: the stage config is one), whose
# `loss` the family validates.
LOSS_FIELDS: dict[str, str | None] = {"distill": None, "prune": "finetune", "quantize": "qat"}


def _loss_errors(path: Path, recipe: Recipe, lines: dict[str, int]) -> list[str]:
    """Each stage's loss weights checked against the family's loss schema, errors with key path and line."""
    from compress.families.registry import get_family

    try:
        schema = get_family(recipe.family).task.loss
    except CompressError as exc:
        return [f"{path}:{lines.get('family', '?')}: family: {exc}"]
    errors = []
    for i, stage in enumerate(recipe.stages):
        if stage.name not in LOSS_FIELDS:
            continue
        field = LOSS_FIELDS[stage.name]
        config = getattr(stage.config, field) if field else stage.config
        if config is None:
            continue
        try:
            schema.model_validate(config.loss)
        except ValidationError as exc:
            errors += _format_errors(
                path, exc, lines, prefix=".".join(filter(None, [f"stages[{i}]", stage.name, field, "loss"]))
            )
    return errors


def _format_errors(path: Path, exc: ValidationError, lines: dict[str, int], prefix: str = "") -> list[str]:
    msgs = []
    for err in exc.errors():
        loc = ([prefix] if prefix else []) + [str(x) for x in err["loc"]]
        key = ".".join(loc) if loc else "(top level)"
        line = lines.get(key) or _closest_line(key, lines)
        where = f"{path}:{line}" if line else str(path)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `compress run --help` and docs/recipes.md list the fields)"
        msgs.append(f"{where}: {key}: {msg}")
    return msgs


def _closest_line(key: str, lines: dict[str, int]) -> int | None:
    while key:
        if key in lines:
            return lines[key]
        key = key.rsplit(".", 1)[0] if "." in key else ""
    return None


def list_recipes(folder: str | Path = SHIPPED_RECIPES) -> list[tuple[Path, str]]:
    """(path, one-line description) for each recipe in `folder` (default: the shipped ones)."""
    rows = []
    for p in sorted(Path(folder).glob("*.yaml")):
        try:
            data = yaml.safe_load(p.read_text()) or {}
            desc = (
                f"{data.get('family', '?')}: "
                f"{data.get('description', '').strip().splitlines()[0] if data.get('description') else ''}"
            )
        except yaml.YAMLError:
            desc = "(not valid YAML)"
        rows.append((p, desc))
    return rows


def schema_markdown() -> str:
    """docs/recipes.md, generated from the schema so the reference never drifts from the code."""
    lines = [
        "# Recipe reference",
        "",
        "Generated by `python -m compress.recipe > docs/recipes.md` from `compress/recipe.py`.",
        "",
    ]

    def table(title: str, model: type[BaseModel]) -> None:
        lines.extend([f"## {title}", "", "| field | type | default | meaning |", "|---|---|---|---|"])
        for name, f in model.model_fields.items():
            if f.exclude:
                continue
            default = "required" if f.is_required() else (f.default_factory() if f.default_factory else f.default)  # type: ignore[call-arg]
            if isinstance(default, BaseModel):
                default = "see below"
            kind = (
                f.annotation.__name__
                if isinstance(f.annotation, type)
                else re.sub(r"[\w.]*\.(\w+)", r"\1", str(f.annotation))
            )
            kind = kind.replace("|", "\\|")
            lines.append(f"| `{name}` | {kind} | `{default}` | {f.description or ''} |")
        lines.append("")

    table("Top level", Recipe)
    for title, model in (
        ("teacher", TeacherSpec),
        ("student", StudentSpec),
        ("data", DataSpec),
        ("targets", Targets),
        ("targets.fps[]", FpsTarget),
    ):
        table(title, model)
    for name, model in STAGE_CONFIGS.items():
        table(f"stage `{name}`", model)
    from compress.families.registry import get_family, list_families

    for family in list_families():
        table(f"distill.loss for family `{family}`", get_family(family).task.loss)
    return "\n".join(lines)


if __name__ == "__main__":
    print(schema_markdown())

"""The bundle stage: the run's shipped models + metadata -> exported/<name>-<version>/.

`bundle_stage` gathers what earlier stages produced (see compress/run.py for the artifact
keys) into a `BundleSource`; `write_bundle` is a plain function of that source, so a bundle
can be written (and tested) without a run. The folder (models, assets, card, snippets and
manifest) is written to a temporary sibling and renamed into place only once it verifies, so a
failed run never leaves half a bundle or replaces a good one.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, get_args

import numpy as np

from compress import __version__
from compress.bench.interval import straddle_note, straddles
from compress.bundle.card import render_card
from compress.bundle.manifest import (
    ASSET_NAME,
    MANIFEST,
    AssetDtype,
    AssetFile,
    FileEntry,
    GateEntry,
    LatencyRow,
    Manifest,
    Metrics,
    ModelFile,
    Quality,
    RecipeRef,
    RowGate,
    Size,
    Teacher,
    Tool,
    part_entries,
    validate_manifest,
    write_manifest,
)
from compress.bundle.snippets import DIALECTS, render_snippet
from compress.bundle.verify import verify_bundle
from compress.checkpoints import atomic_path, read_model_meta
from compress.codec.fit import add_bitstream
from compress.errors import CompressError
from compress.families.base import Part
from compress.families.task import Asset, Task
from compress.recipe import BundleConfig, FpsTarget
from compress.run import Gate, RunContext, StageResult, sha256_file

MODELS = "models"
ASSETS = "assets"
# Zip entries get this timestamp (the zip format's earliest) so the same package zips to the same bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class ShippedFile:
    path: Path  # a model file, or a Core ML .mlpackage folder
    precision: str


@dataclass
class BundleSource:
    """Everything a bundle is made of; paths are absolute (or relative to the working directory)."""

    name: str
    version: str
    family: str
    recipe_sha256: str
    stages: list[str]
    teacher: Path
    task: Task | dict[str, Any]  # the family's task, or its JSON (Task.to_json); it says the flow
    parts: list[Part]
    files: dict[str, dict[str, ShippedFile]]  # part -> format -> file
    assets: list[Asset] = field(default_factory=list)
    description: str = ""
    teacher_source: str | None = None
    quality: dict[str, Any] | None = None
    latency: list[LatencyRow] = field(default_factory=list)
    fps_targets: list[FpsTarget] = field(default_factory=list)
    size_target_mb: float | None = None
    snippets: list[str] = field(default_factory=lambda: ["swift", "kotlin", "python"])
    created: datetime | None = None

    @property
    def task_json(self) -> dict[str, Any]:
        return self.task.to_json() if isinstance(self.task, Task) else self.task


# -- writing ---------------------------------------------------------------------------------
def write_bundle(out: str | Path, src: BundleSource) -> Manifest:
    """Write the bundle folder `out` atomically and return its manifest."""
    out = Path(out)
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise CompressError(f"{out}: exists and is not a bundle; refusing to replace it (choose another bundle.out)")
    with atomic_path(out) as tmp:
        (tmp / MODELS).mkdir(parents=True)
        files = {
            part: {fmt: _copy_model(f, tmp, part, fmt) for fmt, f in sorted(formats.items())}
            for part, formats in src.files.items()
        }
        manifest = build_manifest(src, files, [_write_asset(tmp, a) for a in src.assets])
        snippets = [_write_document(tmp, *render_snippet(manifest, language)) for language in src.snippets]
        # The card names the snippets, so it is rendered from a manifest that lists them.
        card = _write_document(tmp, "MODEL_CARD.md", render_card(manifest.model_copy(update={"documents": snippets})))
        manifest = manifest.model_copy(update={"documents": [card, *snippets]})
        write_manifest(manifest, tmp)
        verify_bundle(tmp)
    return manifest


def build_manifest(src: BundleSource, files: dict[str, dict[str, ModelFile]], assets: list[AssetFile]) -> Manifest:
    """The manifest of `src`; a source the schema refuses (e.g. roles that do not fit the flow) is a CompressError."""
    size = _size(files, src.size_target_mb)
    gates = [g for g in [size_gate(size)] if g] + fps_gates(src.latency, src.fps_targets)
    task = src.task_json
    return validate_manifest(
        {
            "name": src.name,
            "version": src.version,
            "family": src.family,
            "description": src.description,
            "created_utc": _created(src.created),
            "tool": Tool(version=__version__),
            "recipe": RecipeRef(name=src.name, sha256=src.recipe_sha256, stages=src.stages),
            "teacher": Teacher(
                sha256=sha256_file(src.teacher), bytes=src.teacher.stat().st_size, source=src.teacher_source
            ),
            "flow": task["flow"],
            "task": {k: task[k] for k in ("description", "primary_metric", "metrics")},
            "parts": part_entries(src.parts, files, task["flow"]),
            "assets": assets,
            "metrics": Metrics(
                quality=quality_entry(src.quality),
                latency=[_with_gate(r, src.fps_targets) for r in src.latency],
                gates=[GateEntry(**g.to_json()) for g in gates],
            ),
            "size": size,
        },
        f"bundle {src.name} {src.version}",
    )


def _created(when: datetime | None) -> str:
    """Creation time in UTC; SOURCE_DATE_EPOCH (reproducible builds) wins when set."""
    if when is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _copy_model(f: ShippedFile, root: Path, part: str, fmt: str) -> ModelFile:
    """Copy one shipped model into models/; Core ML packages (folders) become one deterministic zip."""
    src = Path(f.path)
    if not src.exists():
        raise CompressError(f"{src}: shipped {fmt} file of part {part!r} is missing; re-run the export/quantize stages")
    if src.is_dir():
        rel = f"{MODELS}/{part}.mlpackage.zip"
        zip_folder(src, root / rel, f"{part}.mlpackage")
    else:
        rel = f"{MODELS}/{part}{''.join(src.suffixes[-1:])}"
        shutil.copyfile(src, root / rel)
    target = root / rel
    return ModelFile(path=rel, sha256=sha256_file(target), bytes=target.stat().st_size, precision=f.precision)


def _write_asset(root: Path, asset: Asset) -> AssetFile:
    """One asset as raw little-endian bytes in C order under assets/: Swift and Kotlin read it
    without a numpy parser."""
    array = np.asarray(asset.array)
    if not re.fullmatch(ASSET_NAME, asset.name):
        raise CompressError(
            f"asset {asset.name!r}: names are letters, digits, '_', '.' and '-' (it becomes {ASSETS}/<name>.bin)"
        )
    if array.dtype.name not in get_args(AssetDtype):
        raise CompressError(
            f"asset {asset.name!r}: dtype {array.dtype} is not one apps read from raw bytes "
            f"({', '.join(get_args(AssetDtype))})"
        )
    rel = f"{ASSETS}/{asset.name}.bin"
    path = root / rel
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    return AssetFile(
        path=rel,
        sha256=sha256_file(path),
        bytes=path.stat().st_size,
        name=asset.name,
        dtype=array.dtype.name,
        shape=list(array.shape),
        description=asset.description,
        meta=asset.meta,
    )


def zip_folder(folder: Path, out: Path, top: str) -> None:
    """Zip a folder under `top/` with sorted entries and fixed times and modes: same files, same bytes."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                info = zipfile.ZipInfo(str(PurePosixPath(top) / p.relative_to(folder).as_posix()), date_time=ZIP_EPOCH)
                info.compress_type, info.create_system, info.external_attr = zipfile.ZIP_DEFLATED, 3, 0o644 << 16
                z.writestr(info, p.read_bytes())


def _write_document(root: Path, rel: str, text: str) -> FileEntry:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return FileEntry(path=rel, sha256=sha256_file(path), bytes=path.stat().st_size)


# -- metrics and gates -----------------------------------------------------------------------
def _size(files: dict[str, dict[str, ModelFile]], target_mb: float | None) -> Size:
    per_format: dict[str, int] = {}
    for formats in files.values():
        for fmt, f in formats.items():
            per_format[fmt] = per_format.get(fmt, 0) + f.bytes
    return Size(total_bytes=sum(per_format.values()), per_format=dict(sorted(per_format.items())), target_mb=target_mb)


def size_gate(size: Size) -> Gate | None:
    """An app ships one format, so the target applies to the largest per-format total."""
    if size.target_mb is None:
        return None
    fmt, largest = max(size.per_format.items(), key=lambda kv: kv[1])
    value = round(largest / 1e6, 4)
    return Gate("size_mb", size.target_mb, value, value <= size.target_mb, f"{fmt} model files, the largest format")


def fps_gates(rows: list[LatencyRow], targets: list[FpsTarget]) -> list[Gate]:
    """One gate per fps target: the best fps among the shipped files' rows for that device and part."""
    gates = []
    for t in targets:
        matching = [r for r in rows if r.device == t.device and r.part == t.part and r.fps is not None]
        best = max([r for r in matching if r.shipped] or matching, key=lambda r: r.fps or 0.0, default=None)
        if best is None:
            gates.append(Gate(f"fps:{t.part}@{t.device}", t.fps, None, False, "not profiled"))
            continue
        note = straddle_note(best.interval_ms, t.fps, best.extrapolated_share)
        gates.append(Gate(f"fps:{t.part}@{t.device}", t.fps, best.fps, (best.fps or 0.0) >= t.fps, note))
    return gates


def _with_gate(row: LatencyRow, targets: list[FpsTarget]) -> LatencyRow:
    target = next((t for t in targets if t.device == row.device and t.part == row.part), None)
    if target is None:
        return row
    gate = RowGate(
        target_fps=target.fps,
        passed=row.fps is not None and row.fps >= target.fps,
        straddles=straddles(row.interval_ms, target.fps),
    )
    return row.model_copy(update={"gate": gate})


def quality_entry(quality: dict[str, Any] | None) -> Quality:
    """The run's {"vs_ground_truth": {...}, "vs_teacher": {...}}; missing parts stay null."""
    quality = quality or {}

    def numbers(d: Any) -> dict[str, float | None] | None:
        if not isinstance(d, dict):
            return None
        kept = {k: (None if v is None else float(v)) for k, v in d.items() if v is None or isinstance(v, (int, float))}
        return kept or None

    return Quality(
        vs_ground_truth=numbers(quality.get("vs_ground_truth")),
        vs_teacher=numbers(quality.get("vs_teacher")),
        measured_on=quality.get("measured_on"),
    )


def latency_rows(latency: Any, run_files: dict[str, tuple[str, str, bool]]) -> list[LatencyRow]:
    """Profile rows (a list, or {"rows": [...]}) as manifest rows.

    `run_files` maps run-relative paths to (format, precision, shipped) so each row says
    which file it measured.
    """
    rows = latency.get("rows", []) if isinstance(latency, dict) else latency or []
    out = []
    for i, row in enumerate(rows):
        file = str(row.get("file", ""))
        fmt, precision, shipped = run_files.get(file, (_format_of(file), None, False))
        try:
            out.append(
                LatencyRow(
                    part=row["part"],
                    format=fmt,
                    precision=precision,
                    shipped=shipped,
                    device=row["device"],
                    source=row["source"],
                    threads=row.get("threads"),
                    p50_ms=row.get("p50_ms"),
                    p90_ms=row.get("p90_ms"),
                    p99_ms=row.get("p99_ms"),
                    fps=row.get("fps"),
                    interval_ms=row.get("interval_ms"),
                    extrapolated_share=row.get("extrapolated_share"),
                )
            )
        except (KeyError, ValueError) as exc:
            raise CompressError(
                f"latency artifact row {i} ({file or row}): {exc}; "
                "expected part, device, source (measured|predicted), p50_ms, fps"
            ) from None
    return out


def _format_of(file: str) -> str | None:
    if file.endswith(".onnx"):
        return "onnx"
    if ".mlpackage" in file or file.endswith(".mlmodel"):
        return "coreml"
    return None


# -- the stage -------------------------------------------------------------------------------
def bundle_stage(cfg: BundleConfig, ctx: RunContext) -> StageResult:
    recipe = ctx.recipe
    shipped = _shipped(ctx)
    files = {
        part: {
            fmt: ShippedFile(ctx.path(v["path"]), v["precision"]) for fmt, v in formats.items() if fmt in cfg.formats
        }
        for part, formats in shipped.items()
    }
    empty = sorted(p for p, formats in files.items() if not formats)
    if empty:
        raise CompressError(
            f"bundle.formats {cfg.formats}: parts {empty} have none of these formats "
            f"(shipped: {sorted({f for v in shipped.values() for f in v})})"
        )
    formats = {fmt for formats in files.values() for fmt in formats}
    snippets = [s for s in cfg.snippets if DIALECTS[s].format in formats]
    for s in sorted(set(cfg.snippets) - set(snippets)):
        ctx.log(f"no {s} snippet: it needs {DIALECTS[s].format} models, which this run did not ship")
    model, _ = ctx.model()
    teacher = ctx.path(ctx.artifacts["teacher"])
    meta = read_model_meta(teacher) or {}
    run_files = _run_files(ctx, shipped, cfg.formats)
    src = BundleSource(
        name=recipe.name,
        version=recipe.version,
        family=recipe.family,
        description=recipe.description.strip(),
        recipe_sha256=recipe.sha256(),
        stages=[s.name for s in recipe.stages],
        teacher=teacher,
        teacher_source=(meta.get("extra") or {}).get("source"),
        task=ctx.family.task,
        parts=ctx.family.parts(model),
        files=files,
        assets=ctx.family.assets(model),
        quality=ctx.artifacts.get("quality"),
        latency=latency_rows(ctx.artifacts.get("latency"), run_files),
        fps_targets=list(recipe.targets.fps),
        size_target_mb=recipe.targets.size_mb,
        snippets=snippets,
    )
    out = Path(cfg.out) if cfg.out else Path("exported") / f"{recipe.name}-{recipe.version}"
    manifest = write_bundle(out, src)
    manifest = add_bitstream(out, recipe.data.calibration, ctx.log, cfg.bitstream_clips, cfg.bitstream_frames)
    gate = size_gate(manifest.size)
    mb = ", ".join(f"{fmt} {n / 1e6:.2f} MB" for fmt, n in manifest.size.per_format.items())
    return StageResult(
        artifacts={"bundle": str(out)},
        metrics={
            "bundle": str(out),
            "bytes": manifest.size.total_bytes,
            "per_format_bytes": manifest.size.per_format,
            "files": len(list(manifest.files())),
        },
        gates=[gate] if gate else [],
        summary=(
            f"{out}: {manifest.flow}, {len(manifest.parts)} parts ({mb}), {len(manifest.assets)} assets, "
            f"snippets: {', '.join(snippets) or 'none'}"
        ),
        external=sorted(p for p in out.rglob("*") if p.is_file()),
    )


def _run_files(
    ctx: RunContext, shipped: dict[str, dict[str, dict[str, str]]], formats: list[str]
) -> dict[str, tuple[str, str | None, bool]]:
    """Run-relative model path -> (format, precision, in the bundle), for labelling latency rows."""
    files: dict[str, tuple[str, str | None, bool]] = {
        path: (fmt, "fp32", False)
        for by_format in (ctx.artifacts.get("exported") or {}).values()
        for fmt, path in by_format.items()
    }
    files.update(
        {
            v["path"]: (fmt, v["precision"], fmt in formats)
            for by_format in shipped.values()
            for fmt, v in by_format.items()
        }
    )
    return files


def _shipped(ctx: RunContext) -> dict[str, dict[str, dict[str, str]]]:
    """{part: {format: {path, precision}}}: what quantize/export chose, else the fp32 exports."""
    if ctx.artifacts.get("shipped"):
        return ctx.artifacts["shipped"]
    if ctx.artifacts.get("exported"):
        return {
            part: {fmt: {"path": path, "precision": "fp32"} for fmt, path in formats.items()}
            for part, formats in ctx.artifacts["exported"].items()
        }
    raise CompressError("the bundle stage needs exported models: add an export stage before bundle in the recipe")

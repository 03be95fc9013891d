"""`make bench`: measure the teacher, the comparison path and the shipped student in one run.

Runs a recipe (default recipes/fomm-mobile-demo.yaml) and its comparison recipe (default
recipes/fomm-teacher-pruned-demo.yaml, pruned to the student's size), then measures four models,
fp32 and int8, the same way: parameters, MB, GFLOPs per part, host latency (p50 of repeated
runs) at 1 and 2 threads, predicted iPhone 8 fps, and the family's task metrics vs ground truth
and vs the teacher on its held-out evaluation protocol. Everything family-specific comes from
the recipe's family: its parts (per-frame ones by `Part.cadence`), its task's metrics (the
primary one for the Pareto plot and the checks) and its baseline. Writes docs/results.json,
docs/results.md, docs/pareto.png and the README's headline table, under --root (default: the
current directory, the repository root when `make bench` runs it).

    python -m compress.results [--runs 30] [--limit 8] [--out exported/bench] [--root .]
    python -m compress.results --from-json docs/results.json   # re-render the reports only
    python -m compress.results --models-table [RECIPE ...]     # docs/models/<family>.md table
    python -m compress.results --recipe recipes/facevid2vid-mobile-demo.yaml --comparison none \
        --suffix=-facevid2vid --headline-doc docs/models/facevid2vid.md
        # another family: its own docs/results-facevid2vid.{json,md}, pareto-facevid2vid.png,
        # distill_loss-facevid2vid.png, and its headline in its model page; no pruned-teacher row
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.checkpoints import portable
from compress.families.base import Family, batch_size
from compress.families.task import Metric

DEMO = Path("recipes") / "fomm-mobile-demo.yaml"
COMPARISON = Path("recipes") / "fomm-teacher-pruned-demo.yaml"
MODELS_TABLE_RECIPES = (Path("recipes") / "fomm-mobile.yaml", DEMO)
# Acceptance targets of the checks: how much worse (relative to the reference's value, in the
# primary metric's direction) the distilled student may be than the teacher, and the pruned,
# fine-tuned student than before pruning.
MAX_WORSE = {"distill": 0.15, "prune": 0.05}


def latency(files: dict[str, Path], runs: int) -> dict[str, Any]:
    """p50 ms per part at 1 and 2 host threads, and predicted iPhone 8 fps per part."""
    from compress.bench.profile import profile

    out: dict[str, Any] = {"host_ms": {}, "iphone8_fps": {}}
    for part, path in files.items():
        out["host_ms"][part] = {
            str(t): profile(path, "host", threads=t, warmup=3, runs=runs, top_ops=0)[0]["p50_ms"] for t in (1, 2)
        }
        out["iphone8_fps"][part] = profile(path, "profile:iphone8", threads=1, runs=1, top_ops=0)[0]["fps"]
    return out


def calibration_feeds(
    family: Family, model: torch.nn.Module, files: dict[str, Path], batches: list[dict[str, torch.Tensor]], count: int
) -> dict[str, list[dict[str, np.ndarray]]]:
    from compress.evaluate import OnnxPart

    feeds: dict[str, list[dict[str, np.ndarray]]] = {p: [] for p in files}
    names = {p: OnnxPart(f).inputs for p, f in files.items()}
    for sample in family.calibration_inputs(model, batches):
        for part, tensors in sample.items():
            if part in files and len(feeds[part]) < count:
                feeds[part].append({n: t.numpy() for n, t in zip(names[part], tensors)})
    return feeds


def measure(
    label: str,
    family: Family,
    model_file: Path,
    teacher: torch.nn.Module,
    batches: list[dict[str, torch.Tensor]],
    work: Path,
    runs: int,
    shipped_int8: dict[str, Path] | None = None,
) -> list[dict[str, Any]]:
    """The fp32 row of a model file and its int8 row: the int8 files a run's quantize stage wrote, or quantized here
    with the quantize stage's function (no accuracy gate) for models no run quantized."""
    from compress.evaluate import OnnxPart
    from compress.export import export_onnx
    from compress.families.loading import load_model
    from compress.inspect import inspect_model
    from compress.quantize.onnx import OnnxQuantConfig, quantize_onnx

    model, meta = load_model(model_file, family)
    stats = inspect_model(family, model, per_module=False)
    fp32 = {p.name: export_onnx(p, work / f"{label}-{p.name}.onnx") for p in family.parts(model)}
    feeds = calibration_feeds(family, model, fp32, batches, count=32)
    int8 = shipped_int8 or {
        p: quantize_onnx(f, work / f"{label}-{p}.int8.onnx", feeds[p], OnnxQuantConfig(latency_runs=0)).path
        for p, f in fp32.items()
    }
    base = {
        "model": label,
        "kind": meta["kind"],
        "params": stats["params"],
        "gflops": {p["name"]: p["gflops"] for p in stats["parts"]},
    }
    rows = []
    for precision, files in (("fp32", fp32), ("int8", int8)):
        pipeline = family.pipeline({p: OnnxPart(f) for p, f in files.items()})
        rows.append(
            {
                **base,
                "precision": precision,
                "mb": round(sum(f.stat().st_size for f in files.values()) / 1e6, 3),
                **latency(files, runs),
                "quality": family.quality(model if precision == "fp32" else pipeline, batches, teacher=teacher),
            }
        )
    return rows


def part_records(family: Family, model: torch.nn.Module) -> list[dict[str, str]]:
    """Name, role and cadence of each deployable part: what the reports group and sum by."""
    return [{"name": p.name, "role": p.role, "cadence": p.cadence} for p in family.parts(model)]


def stage_walls(summary: Any) -> dict[str, float]:
    return {s["stage"]: s["wall_s"] for s in summary.stages}


def run(
    root: Path,
    out: Path,
    runs: int,
    limit: int,
    recipe_path: Path = DEMO,
    comparison_path: Path | None = COMPARISON,
    quiet: bool = False,
    nproc: int = 1,
) -> dict[str, Any]:
    """Measure the recipe's teacher, distilled student and shipped student (and, with a comparison
    recipe, the teacher pruned straight to the student's size); `nproc` distillation processes."""
    from compress.evaluate import evaluate
    from compress.families.loading import load_model
    from compress.families.registry import get_family
    from compress.recipe import load_recipe
    from compress.run import run_recipe

    recipe = load_recipe(root / recipe_path)
    family = get_family(recipe.family)
    demo = run_recipe(recipe, out=out / "runs", resume=True, quiet=quiet, nproc=nproc)
    student_file = demo.run_dir / demo.artifacts["model"]
    student, _ = load_model(student_file, family)
    student_mb = sum(p.numel() for p in student.parameters()) / 1e6  # int8: one byte per weight
    comparison = pruned = None
    if comparison_path is not None:
        comparison = load_recipe(root / comparison_path, [f"stages.prune.size_mb={student_mb:.4f}"])
        pruned = run_recipe(comparison, out=out / "runs", resume=True, quiet=quiet, nproc=nproc)
    teacher, _ = load_model(demo.run_dir / "teacher.safetensors", family)
    size = family.model_input_size(teacher)
    batches = list(family.eval_batches(recipe.data.eval, size, seed=0, limit=limit))
    models = [
        ("teacher", demo.run_dir / "teacher.safetensors"),
        *([("pruned teacher", pruned.run_dir / pruned.artifacts["model"])] if pruned is not None else []),
        ("distilled student", demo.run_dir / "distill" / "student.safetensors"),
        ("distilled + pruned", student_file),
    ]
    quantized = {p: demo.run_dir / f["onnx"] for p, f in demo.artifacts.get("quantized", {}).items() if "onnx" in f}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for label, path in models:
            rows += measure(
                label, family, path, teacher, batches, Path(tmp), runs, quantized if path == student_file else None
            )
    res = {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
        },
        "command": "make bench",
        "family": family.name,
        "task": family.task.to_json(),
        "parts": part_records(family, teacher),
        "recipe": {
            "name": recipe.name,
            "student": _config_label(recipe.student.config),
            "comparison": comparison.name if comparison is not None else None,
        },
        "eval": {
            "data": recipe.data.eval,
            "limit": limit,
            "samples": sum(batch_size(b) for b in batches),
            "input_size": list(size),
        },
        "latency_runs": runs,
        "baseline": evaluate(family, teacher, batches).get("baseline"),
        "rows": rows,
        "stage_wall_s": {
            recipe.name: stage_walls(demo),
            **({comparison.name: stage_walls(pruned)} if comparison is not None and pruned is not None else {}),
        },
        "bundle": demo.artifacts.get("bundle"),
        "distill": _stage_record(demo, "distill"),
        "prune": _stage_record(demo, "prune"),
        "quantize": _stage_record(demo, "quantize"),
        "loss_curve": portable(demo.run_dir / "distill" / "loss.png"),
    }
    mark_shipped(res, shipped_precision(res) or "fp32")  # no quantize stage: the fp32 files ship
    return res


def shipped_precision(res: dict[str, Any]) -> str | None:
    """The precision of the bundle's ONNX files, from the quantize record: "fp32" when no part ships
    int8 (the stage found int8 slower on the host and shipped the float file), else "int8"; None
    without a quantize record."""
    q = res.get("quantize")
    if not q:
        return None
    return "int8" if any(q[p]["onnx"].get("shipped", "int8") != "fp32" for p in _onnx_parts(q)) else "fp32"


def mark_shipped(res: dict[str, Any], precision: str) -> None:
    """Flag the row whose files the bundle ships: the distilled + pruned student in that precision."""
    for r in res["rows"]:
        r["shipped"] = r["model"] == "distilled + pruned" and r["precision"] == precision


def _stage_record(summary: Any, stage: str) -> dict[str, Any] | None:
    path = summary.run_dir / stage / "record.json"
    return json.loads(path.read_text())["metrics"] if path.is_file() else None


def _config_label(config: str | dict[str, Any] | None) -> str:
    return config if isinstance(config, str) else "default" if config is None else "custom"


# -- reports: pure functions of the results JSON ------------------------------------------------
def metrics(res: dict[str, Any]) -> list[Metric]:
    """The task's metrics as recorded in the results (primary first)."""
    return [
        Metric(m["name"], m["unit"], m["higher_is_better"], m.get("description", ""), tuple(m["against"]))
        for m in res["task"]["metrics"]
    ]


def primary(res: dict[str, Any]) -> Metric:
    return next(m for m in metrics(res) if m.name == res["task"]["primary_metric"])


def per_frame_parts(res: dict[str, Any]) -> list[str]:
    """The parts that run for every frame (`Part.cadence`), in the family's order."""
    return [p["name"] for p in res["parts"] if p["cadence"] == "per_frame"]


def per_frame(row: dict[str, Any], res: dict[str, Any], key: str) -> float:
    """A per-part figure (gflops, host ms at 1 thread) summed over the per-frame parts."""
    return sum(row[key][p]["1"] if key == "host_ms" else row[key][p] for p in per_frame_parts(res))


def device_fps(row: dict[str, Any], res: dict[str, Any]) -> float:
    """Predicted iPhone 8 frames per second of the busiest phone: each role (sender, receiver,
    app) runs its per-frame parts one after the other on its own phone."""
    seconds: dict[str, float] = {}
    for p in res["parts"]:
        if p["cadence"] == "per_frame":
            seconds[p["role"]] = seconds.get(p["role"], 0.0) + 1 / row["iphone8_fps"][p["name"]]
    return 1 / max(seconds.values())


def number(value: float, like: float | None = None) -> str:
    """Table cells: two decimals above 1 (dB), four up to 1 (errors, SSIM); a difference as precise as `like`."""
    return f"{value:.2f}" if abs(value if like is None else like) > 1 else f"{value:.4f}"


def with_unit(metric: Metric, value: float, like: float | None = None) -> str:
    return number(value, like) + (f" {metric.unit}" if metric.unit else "")


def direction(metric: Metric) -> str:
    return "higher is better" if metric.higher_is_better else "lower is better"


def worse(metric: Metric, reference: float, value: float) -> float:
    """How much worse `value` is than `reference`, relative to the reference (negative: better)."""
    return metric.drop(reference, value) / abs(reference) if reference else float("nan")


def baseline_label(res: dict[str, Any]) -> str:
    return res["task"].get("baseline_label") or "baseline"


def _row_label(row: dict[str, Any]) -> str:
    return row["model"] if row["precision"] == "fp32" else f"{row['model']} + int8"


def _quality_columns(res: dict[str, Any]) -> list[tuple[str, Metric, str]]:
    """(quality group, metric, header) for each metric vs ground truth, then each vs the teacher."""
    ms = metrics(res)
    return [("vs_ground_truth", m, f"{m.name} vs GT") for m in ms if "ground_truth" in m.against] + [
        ("vs_teacher", m, f"{m.name} vs teacher") for m in ms if "teacher" in m.against
    ]


def _metric_legend(res: dict[str, Any]) -> str:
    p = primary(res)

    def notes(m: Metric) -> str:
        extra = ["primary" if m.name == p.name else "", "" if "ground_truth" in m.against else "vs teacher only"]
        return ", ".join(filter(None, [m.unit, direction(m), *extra]))

    return "Quality columns: " + ", ".join(f"{m.name} ({notes(m)})" for m in metrics(res)) + "."


def results_markdown(res: dict[str, Any], suffix: str = "") -> str:
    """docs/results{suffix}.md; `suffix` also names its images (pareto{suffix}.png, distill_loss{suffix}.png)."""
    parts = [p["name"] for p in res["parts"]]
    frame = per_frame_parts(res)
    quality = _quality_columns(res)
    ev = res["eval"]
    head = [
        "model",
        "params",
        "MB",
        f"GFLOPs {' / '.join(parts)}",
        f"host ms 1 thr per frame ({' + '.join(frame)})",
        "host ms 2 thr",
        *(f"iPhone 8 fps {p} (pred.)" for p in frame),
        *(h for _, _, h in quality),
    ]
    lines = [
        "# Results",
        "",
        f"Measured by `make bench` on {res['created_utc']} ({res['host']['processor']}); "
        "every figure below comes from that one run.",
        f"Family {res['family']}: {res['task']['description']}. "
        f"Quality: the family's evaluation protocol on {ev['samples']} held-out "
        f"{ev['data']} samples (limit {ev['limit']}, {ev['input_size'][0]}x{ev['input_size'][1]}). "
        "Latency: onnxruntime on this host, "
        f"p50 of {res['latency_runs']} runs, per frame = the parts that run for every frame; "
        "iPhone 8 fps predicted by the calibrated cost model (compress/bench/devices/iphone8.yaml, docs/latency.md). "
        "MB: size of the ONNX files. GFLOPs: 2 x multiply-accumulates of convolutions.",
        "",
        _metric_legend(res),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in res["rows"]:
        ms2 = sum(r["host_ms"][p]["2"] for p in frame)
        cells = [
            _row_label(r),
            f"{r['params']:,}",
            f"{r['mb']:.3f}",
            " / ".join(f"{r['gflops'][p]:.3f}" for p in parts),
            f"{per_frame(r, res, 'host_ms'):.2f}",
            f"{ms2:.2f}",
            *(f"{r['iphone8_fps'][p]:.0f}" for p in frame),
            *(number(r["quality"][group][m.name]) for group, m, _ in quality),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    b = res.get("baseline")
    if b:
        lines += [
            "",
            f'Baseline "{baseline_label(res)}": '
            + ", ".join(f"{m.name} {with_unit(m, b[m.name])}" for m in metrics(res) if m.name in b)
            + ".",
        ]
    stages = list(dict.fromkeys(s for walls in res["stage_wall_s"].values() for s in walls))
    lines += [
        "",
        "## Wall time of each stage (s)",
        "",
        "| recipe | " + " | ".join(stages) + " |",
        "|---|" + "---|" * len(stages),
    ]
    for recipe, walls in res["stage_wall_s"].items():
        lines.append(f"| {recipe} | " + " | ".join(f"{walls[s]:.1f}" if s in walls else "" for s in stages) + " |")
    lines += checks_markdown(res)
    lines += [
        "",
        f"![size vs quality](pareto{suffix}.png)",
        "",
        f"Distillation loss of the demo run ({res['recipe']['name']}, stage distill):",
        "",
        f"![distillation loss](distill_loss{suffix}.png)",
        "",
        "Reproduce: `make bench` "
        f"(writes this page, results{suffix}.json, pareto{suffix}.png, distill_loss{suffix}.png and the "
        f"headline table{'' if not suffix else ' of docs/models/' + res['family'] + '.md'}).",
    ]
    return "\n".join(lines) + "\n"


def beats_baseline(res: dict[str, Any], model: str = "distilled student") -> bool | None:
    """Whether a model's primary metric vs ground truth is better than the baseline's; None without a baseline."""
    b, p = res.get("baseline"), primary(res)
    if not b:
        return None
    row = next(r for r in res["rows"] if r["model"] == model and r["precision"] == "fp32")
    return p.better(row["quality"]["vs_ground_truth"][p.name], b[p.name])


def checks_markdown(res: dict[str, Any]) -> list[str]:
    """The issues' acceptance figures in the task's primary metric, from the bench rows and the demo run's
    stage records.
    """
    p = primary(res)
    rows = {_row_label(r): r for r in res["rows"]}
    teacher, student = (rows[m]["quality"]["vs_ground_truth"][p.name] for m in ("teacher", "distilled student"))
    lines = [
        "",
        "## Acceptance figures of the demo run",
        "",
        f"Checks in the primary metric, {p.name} vs ground truth ({direction(p)}); "
        '"worse": the second value vs the first, relative to the first.',
        "",
        "| check | value |",
        "|---|---|",
        f"| teacher / distilled student (table above) | {with_unit(p, teacher)} / {with_unit(p, student)}: "
        f"{_worse_text(p, teacher, student)} (target <= {MAX_WORSE['distill']:.0%} worse) |",
    ]
    verdict = beats_baseline(res)
    if verdict is not None:
        lines.append(
            f'| student beats "{baseline_label(res)}" ({p.name} {with_unit(p, res["baseline"][p.name])}) '
            f"| {'yes' if verdict else 'no'} |"
        )
    prune = res.get("prune")
    if prune:
        before, after = (prune[k]["vs_ground_truth"][p.name] for k in ("quality_before", "quality_after"))
        lines.append(
            f"| prune to {', '.join(f'{k} <= {v:.4g}' for k, v in prune['targets'].items())}, "
            "fine-tune: before / after "
            f"(prune record, eval split) | {with_unit(p, before)} / {with_unit(p, after)}: "
            f"{_worse_text(p, before, after)} "
            f"(target <= {MAX_WORSE['prune']:.0%} worse) |"
        )
    q = res.get("quantize")
    if not q:
        return lines
    from compress.quantize.bench import bench_rows, format_totals

    for part in _onnx_parts(q):
        o, c = q[part]["onnx"], q[part].get("coreml", {})
        lat = o.get("latency") or {}
        lines.append(
            f"| {part}: ONNX fp32/int8 size, int8/fp32 host latency (1 thread), int8 quality gate; "
            "Core ML fp32/8-bit size | "
            f"{o['fp32_over_int8_size']:.2f}x, {lat.get('int8_over_fp32', float('nan')):.2f}, "
            f"{_gate_text(o.get('gate'))}; "
            f"{_ratio(c.get('fp32_over_int8_size'))} |"
        )
    totals = format_totals(bench_rows(q))
    lines.append(
        "| all parts: ONNX fp32/int8 size (target about 4x); Core ML fp32/8-bit size (target >= 3.5x) | "
        + "; ".join(f"{totals[f]['fp32_over_int8_size']:.2f}x" if f in totals else "-" for f in ("onnx", "coreml"))
        + " |"
    )
    return lines + int8_bytes_markdown(q)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _worse_text(metric: Metric, reference: float, value: float) -> str:
    """e.g. "0.74 dB (2.9%) worse": the drop in the metric's unit and relative to the reference."""
    drop, fraction = metric.drop(reference, value), worse(metric, reference, value)
    return f"{with_unit(metric, abs(drop), like=reference)} ({abs(fraction):.1%}) {'worse' if drop >= 0 else 'better'}"


def _gate_text(gate: dict[str, Any] | None) -> str:
    if not gate:
        return "no gate"
    return f"{gate['metric']} {gate['value']:.3f}{' ' + gate['unit'] if gate.get('unit') else ''}"


def int8_bytes_markdown(quantize: dict[str, Any]) -> list[str]:
    """Where the bytes of each int8 ONNX file go, from the quantize record: why a part is less than 4x smaller."""
    parts = _onnx_parts(quantize)
    if not parts:
        return []
    lines = [
        "",
        "### Where the int8 ONNX bytes go (KB)",
        "",
        "Per-channel QDQ stores, next to each output channel's int8 weights, a float weight scale, an int32 bias "
        "and the bias's float scale: 12 bytes, more than the 9 int8 weights of a 3x3 depthwise channel, whose fp32 "
        "form is 40 bytes: a depthwise layer shrinks about 2x, a small pointwise one about 3x, "
        "and Q/DQ nodes add graph bytes. "
        '(All-zero weight and bias zero points are left out.) "graph" is the rest of the file.',
        "",
        "| part | fp32 file | int8 file | fp32 / int8 | int8 + uint8 (weights, activation zero points) "
        "| int32 (biases) | float32 (scales, constants) | graph |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    totals = [0.0] * 6
    for part in parts:
        o = quantize[part]["onnx"]
        by_type = o["int8_file"]["bytes_by_type"]
        cells = [
            o["fp32_bytes"],
            o["int8_bytes"],
            by_type.get("INT8", 0) + by_type.get("UINT8", 0),
            by_type.get("INT32", 0),
            by_type.get("FLOAT", 0),
        ]
        cells.append(o["int8_bytes"] - sum(by_type.values()))
        totals = [t + c for t, c in zip(totals, cells)]
        lines.append(_bytes_row(part, cells))
    lines.append(_bytes_row("**all parts**", totals))
    return lines


def _onnx_parts(quantize: dict[str, Any]) -> list[str]:
    """The parts with an ONNX entry in a quantize record's metrics (other keys are counts)."""
    return [k for k, v in quantize.items() if isinstance(v, dict) and "onnx" in v]


def _bytes_row(label: str, cells: list[float]) -> str:
    fp32, int8, *rest = cells
    return (
        f"| {label} | {fp32 / 1e3:.1f} | {int8 / 1e3:.1f} | {fp32 / int8:.2f}x | "
        + " | ".join(f"{c / 1e3:.1f}" for c in rest)
        + " |"
    )


def headline_markdown(res: dict[str, Any], suffix: str = "") -> str:
    """The README table: the teacher and the shipped student, in the task's metrics vs ground truth."""
    teacher = next(r for r in res["rows"] if r["model"] == "teacher" and r["precision"] == "fp32")
    shipped = next(r for r in res["rows"] if r.get("shipped"))
    quality = [m for m in metrics(res) if "ground_truth" in m.against]
    size = "x".join(map(str, res["eval"]["input_size"]))
    head = [
        "",
        "MB",
        "GFLOPs per frame",
        "iPhone 8 fps (busiest phone, predicted)",
        "host fps 1 thread",
        *(f"{m.name} vs GT" for m in quality),
    ]
    lines = ["|" + "|".join(f" {h} " if h else " " for h in head) + "|", "|" + "---|" * len(head)]
    for label, r in (
        (f"teacher ({res['family']}, {size})", teacher),
        (f"shipped student ({res['recipe']['student']}, {_row_label(shipped)})", shipped),
    ):
        cells = [
            label,
            f"{r['mb']:.2f}",
            f"{per_frame(r, res, 'gflops'):.3f}",
            f"{device_fps(r, res):.0f}",
            f"{1000 / per_frame(r, res, 'host_ms'):.0f}",
            *(number(r["quality"]["vs_ground_truth"][m.name]) for m in quality),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return (
        "\n".join(lines) + f"\n\nMeasured by `make bench` ({res['created_utc']}); details in docs/results{suffix}.md.\n"
    )


def pareto_png(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = primary(res)
    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for r in res["rows"]:
        value = r["quality"]["vs_ground_truth"][p.name]
        ax.scatter(r["mb"], value, s=20 + 40 * per_frame(r, res, "host_ms"), alpha=0.6)
        ax.annotate(_row_label(r), (r["mb"], value), fontsize=7, xytext=(4, 4), textcoords="offset points")
    if res.get("baseline"):
        ax.axhline(res["baseline"][p.name], ls="--", lw=0.8, color="grey", label=baseline_label(res))
        ax.legend(fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("model files, MB (log)")
    ax.set_ylabel(f"{p.name} vs ground truth{', ' + p.unit if p.unit else ''} ({direction(p)})")
    ax.set_title("size vs quality (marker area ~ host latency per frame, 1 thread)", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- teacher vs student sizes ------------------------------------------------------------------
def models_table(recipes: list[Path]) -> tuple[str, str]:
    """(family, table): per part, parameters, MB fp32/int8 and GFLOPs of each recipe's teacher and
    student (random weights from the configs: counts only; a teacher given as one of our model
    files is counted from the config inside it and named by the file)."""
    from compress.checkpoints import read_model_meta
    from compress.families.registry import get_family
    from compress.inspect import inspect_model
    from compress.recipe import load_recipe

    loaded = [load_recipe(path) for path in recipes]
    names = sorted({r.family for r in loaded})
    if len(names) != 1:
        raise SystemExit(f"--models-table: the recipes must share one family, not {', '.join(names)}")
    family = get_family(names[0])
    lines = ["| config | role | part | params | MB fp32 | MB int8 | GFLOPs |", "|---|---|---|---:|---:|---:|---:|"]
    for recipe in loaded:
        teacher_label, teacher_config = _config_label(recipe.teacher.config), recipe.teacher.config
        checkpoint = recipe.resolve(recipe.teacher.checkpoint) if recipe.teacher.checkpoint else None
        meta = read_model_meta(checkpoint) if checkpoint is not None and teacher_config is None else None
        if meta is not None:  # one of our model files: its own config
            teacher_label, teacher_config = checkpoint.name, meta["config"]
        for label, role, config, build in (
            (teacher_label, "teacher", teacher_config, family.build_teacher),
            (_config_label(recipe.student.config), "student", recipe.student.config, family.build_student),
        ):
            report = inspect_model(family, build(family.resolve_config(config, role)), per_module=False)
            for p in report["parts"]:
                lines.append(
                    f"| {label} | {role} | {p['name']} | {p['params']:,} | {p['fp32_mb']:.2f} | {p['int8_mb']:.2f} "
                    f"| {p['gflops']:.3f} |"
                )
            lines.append(
                f"| {label} | {role} | **all** | {report['params']:,} | {report['fp32_mb']:.2f} "
                f"| {report['int8_mb']:.2f} | |"
            )
    return family.name, "\n".join(lines) + "\n"


# -- files -------------------------------------------------------------------------------------
def replace_marked(path: Path, name: str, body: str) -> None:
    """Rewrite the text between `<!-- NAME:start ... -->` and `<!-- NAME:end -->` in a doc."""
    text = path.read_text()
    pattern = re.compile(rf"(<!-- {name}:start[^>]*-->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    path.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), text))


def write_reports(res: dict[str, Any], docs: Path, readme: Path, suffix: str = "") -> None:
    """results{suffix}.json, .md, pareto{suffix}.png, distill_loss{suffix}.png under `docs`, and the
    headline table between the `headline` markers of `readme` (the README, or a family's model page)."""
    docs.mkdir(exist_ok=True)
    (docs / f"results{suffix}.json").write_text(json.dumps(res, indent=2) + "\n")
    (docs / f"results{suffix}.md").write_text(results_markdown(res, suffix))
    pareto_png(res, docs / f"pareto{suffix}.png")
    loss_curve = Path(res["loss_curve"])
    if loss_curve.is_file():  # absent when re-rendering results from another machine's run
        shutil.copyfile(loss_curve, docs / f"distill_loss{suffix}.png")
    replace_marked(readme, "headline", headline_markdown(res, suffix))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        help="the repository: recipes, docs and README.md (default: the current directory)",
    )
    parser.add_argument("--runs", type=int, default=30, help="latency repeats per file and thread count (p50 reported)")
    parser.add_argument(
        "--limit",
        "--videos",
        dest="limit",
        type=int,
        default=8,
        help="held-out items for quality, in the family's unit (FOMM: videos)",
    )
    parser.add_argument("--recipe", type=Path, default=DEMO, help="the recipe to bench (relative to --root)")
    parser.add_argument(
        "--comparison",
        type=Path,
        default=COMPARISON,
        help="the recipe that prunes the teacher straight to the student's size (relative to --root); "
        "'none': no pruned-teacher row",
    )
    parser.add_argument(
        "--suffix",
        default="",
        help="appended to the report names: results{SUFFIX}.json and .md, pareto{SUFFIX}.png, "
        "distill_loss{SUFFIX}.png (e.g. --suffix=-facevid2vid, so another family's bench leaves FOMM's reports alone)",
    )
    parser.add_argument(
        "--headline-doc",
        type=Path,
        default=Path("README.md"),
        help="the page (relative to --root) whose <!-- headline:start --> markers get the headline table",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where the bench's runs go (default: ROOT/exported/bench)"
    )
    parser.add_argument("--docs", type=Path, default=None, help="default: ROOT/docs")
    parser.add_argument(
        "--nproc", type=int, default=1, help="distillation processes (torchrun/DDP), as `compress run --nproc`"
    )
    parser.add_argument(
        "--from-json",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="measure nothing: rewrite results.md, pareto.png and the README headline from a results.json",
    )
    parser.add_argument(
        "--models-table",
        nargs="*",
        type=Path,
        default=None,
        metavar="RECIPE",
        help="only rewrite the teacher-vs-student table in docs/models/<family>.md from these recipes' "
        f"teacher and student (default: {' '.join(map(str, MODELS_TABLE_RECIPES))})",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    docs = args.docs or root / "docs"
    if args.models_table is not None:
        family, table = models_table([root / r for r in args.models_table or MODELS_TABLE_RECIPES])
        replace_marked(docs / "models" / f"{family}.md", "models", table)
        return
    if args.suffix and not re.fullmatch(r"[-_.A-Za-z0-9]+", args.suffix):
        parser.error(
            f"--suffix {args.suffix!r}: letters, digits, '-', '_' and '.' only (it becomes part of file names)"
        )
    comparison = None if str(args.comparison).lower() == "none" else args.comparison
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        precision = shipped_precision(res)
        if precision:  # results written before the quantize record decided the shipped row
            mark_shipped(res, precision)
    else:
        out = args.out or root / "exported" / "bench"
        res = run(root, out, args.runs, args.limit, args.recipe, comparison, nproc=args.nproc)
    write_reports(res, docs, root / args.headline_doc, args.suffix)
    print(results_markdown(res, args.suffix))


if __name__ == "__main__":
    main()

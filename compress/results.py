"""`make bench`: measure the teacher, the comparison path and the shipped student in one run.

Runs recipes/fomm-mobile-demo.yaml and recipes/fomm-teacher-pruned-demo.yaml (pruned to the
student's size), then measures five models the same way: parameters, MB, GFLOPs per part,
host latency (p50 of repeated runs) at 1 and 2 threads in fp32 and int8, predicted iPhone 8 fps,
and quality vs ground truth and vs the teacher on held-out synthetic clips. Writes
docs/results.json, docs/results.md, docs/pareto.png and the README's headline table.

    python -m compress.results [--runs 30] [--videos 8] [--out exported/bench]
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.bench.profile import profile
from compress.families.loading import load_model
from compress.evaluate import OnnxPart, evaluate
from compress.export import export_onnx
from compress.families.base import Family
from compress.families.registry import get_family
from compress.inspect import inspect_model
from compress.quantize.bench import bench_rows, format_totals
from compress.quantize.onnx import OnnxQuantConfig, quantize_onnx
from compress.recipe import load_recipe
from compress.run import RunSummary, run_recipe

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "recipes" / "fomm-mobile-demo.yaml"
PRUNED_TEACHER = ROOT / "recipes" / "fomm-teacher-pruned-demo.yaml"
PER_FRAME = ("kp_detector", "generator.per_frame")  # what runs for every frame of a call


def latency(files: dict[str, Path], runs: int) -> dict[str, Any]:
    """p50 ms per part at 1 and 2 host threads, and predicted iPhone 8 fps per part."""
    out: dict[str, Any] = {"host_ms": {}, "iphone8_fps": {}}
    for part, path in files.items():
        out["host_ms"][part] = {str(t): profile(path, "host", threads=t, warmup=3, runs=runs, top_ops=0)[0]["p50_ms"] for t in (1, 2)}
        out["iphone8_fps"][part] = profile(path, "profile:iphone8", threads=1, runs=1, top_ops=0)[0]["fps"]
    return out


def calibration_feeds(family: Family, model: torch.nn.Module, files: dict[str, Path], batches: list[dict[str, torch.Tensor]], count: int) -> dict[str, list[dict[str, np.ndarray]]]:
    feeds: dict[str, list[dict[str, np.ndarray]]] = {p: [] for p in files}
    names = {p: OnnxPart(f).inputs for p, f in files.items()}
    for sample in family.calibration_inputs(model, batches):
        for part, tensors in sample.items():
            if part in files and len(feeds[part]) < count:
                feeds[part].append({n: t.numpy() for n, t in zip(names[part], tensors)})
    return feeds


def measure(label: str, family: Family, model_file: Path, teacher: torch.nn.Module, batches: list[dict[str, torch.Tensor]], work: Path, runs: int,
            shipped_int8: dict[str, Path] | None = None) -> list[dict[str, Any]]:
    """The fp32 row of a model file and its int8 row: the files a run shipped, or quantized here
    with the quantize stage's function (no accuracy gate) for models no run quantized."""
    model, meta = load_model(model_file, family)
    stats = inspect_model(family, model, per_module=False)
    fp32 = {p.name: export_onnx(p, work / f"{label}-{p.name}.onnx") for p in family.parts(model)}
    feeds = calibration_feeds(family, model, fp32, batches, count=32)
    int8 = shipped_int8 or {p: quantize_onnx(f, work / f"{label}-{p}.int8.onnx", feeds[p], OnnxQuantConfig(latency_runs=0)).path for p, f in fp32.items()}
    base = {"model": label, "kind": meta["kind"], "params": stats["params"], "gflops": {p["name"]: p["gflops"] for p in stats["parts"]}}
    rows = []
    for precision, files in (("fp32", fp32), ("int8", int8)):
        onnx_model = family.onnx_model({p: OnnxPart(f) for p, f in files.items()})
        rows.append({
            **base,
            "precision": precision,
            "mb": round(sum(f.stat().st_size for f in files.values()) / 1e6, 3),
            **latency(files, runs),
            "quality": family.quality(model if precision == "fp32" else onnx_model, batches, teacher=teacher),
        })
    return rows


def stage_walls(summary: RunSummary) -> dict[str, float]:
    return {s["stage"]: s["wall_s"] for s in summary.stages}


def run(out: Path, runs: int, videos: int, quiet: bool = False) -> dict[str, Any]:
    family = get_family("fomm")
    demo = run_recipe(load_recipe(DEMO), out=out / "runs", resume=True, quiet=quiet)
    student_file = demo.run_dir / demo.artifacts["model"]
    student, _ = load_model(student_file, family)
    student_mb = sum(p.numel() for p in student.parameters()) / 1e6  # int8: one byte per weight
    pruned = run_recipe(load_recipe(PRUNED_TEACHER, [f"stages.prune.size_mb={student_mb:.4f}"]), out=out / "runs", resume=True, quiet=quiet)
    teacher, _ = load_model(demo.run_dir / "teacher.safetensors", family)
    size = family.model_input_size(teacher)
    batches = list(family.eval_batches("synthetic", size, seed=0, videos=videos))
    models = [
        ("teacher", demo.run_dir / "teacher.safetensors"),
        ("pruned teacher", pruned.run_dir / pruned.artifacts["model"]),
        ("distilled student", demo.run_dir / "distill" / "student.safetensors"),
        ("distilled + pruned", student_file),
    ]
    shipped = {p: demo.run_dir / f["onnx"] for p, f in demo.artifacts.get("quantized", {}).items() if "onnx" in f}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for label, path in models:
            rows += measure(label, family, path, teacher, batches, Path(tmp), runs, shipped if path == student_file else None)
    baseline = evaluate(family, teacher, batches)["baseline"]
    return {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "processor": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()},
        "command": "make bench",
        "eval": {"data": "synthetic, held-out clips", "videos": videos, "frames": sum(len(b["driving"]) for b in batches), "frame_size": list(size)},
        "latency_runs": runs,
        "baseline_output_equals_source": baseline,
        "rows": rows,
        "stage_wall_s": {"fomm-mobile-demo": stage_walls(demo), "fomm-teacher-pruned-demo": stage_walls(pruned)},
        "bundle": demo.artifacts.get("bundle"),
        "distill": _stage_record(demo, "distill"),
        "prune": _stage_record(demo, "prune"),
        "quantize": _stage_record(demo, "quantize"),
        "loss_curve": str(demo.run_dir / "distill" / "loss.png"),
    }


def _stage_record(summary: RunSummary, stage: str) -> dict[str, Any]:
    return json.loads((summary.run_dir / stage / "record.json").read_text())["metrics"]


# -- reports ---------------------------------------------------------------------------------
def _per_frame(row: dict[str, Any], key: str) -> float:
    return sum(row[key][p] for p in PER_FRAME)


def _row_label(row: dict[str, Any]) -> str:
    return row["model"] if row["precision"] == "fp32" else f"{row['model']} + int8"


def results_markdown(res: dict[str, Any]) -> str:
    head = ["model", "params", "MB", "GFLOPs kp / per-call / per-frame", "host ms 1 thr (kp + gen/frame)", "host ms 2 thr",
            "iPhone 8 fps gen/frame (pred.)", "iPhone 8 fps kp (pred.)", "L1 vs GT", "PSNR vs GT", "SSIM vs GT", "L1 vs teacher", "PSNR vs teacher"]
    lines = [
        "# Results", "",
        f"Measured by `make bench` on {res['created_utc']} ({res['host']['processor']}); every figure below comes from that one run.",
        f"Quality: FOMM reconstruction protocol on {res['eval']['frames']} held-out synthetic frames ({res['eval']['videos']} videos, "
        f"{res['eval']['frame_size'][0]}x{res['eval']['frame_size'][1]}). Latency: onnxruntime on this host, p50 of {res['latency_runs']} runs; "
        "iPhone 8 fps predicted by the calibrated cost model (compress/bench/devices/iphone8.yaml, docs/latency.md). "
        "MB: size of the ONNX files. GFLOPs: 2 x multiply-accumulates of convolutions.", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
    ]
    for r in res["rows"]:
        q, t = r["quality"]["vs_ground_truth"], r["quality"]["vs_teacher"]
        g = r["gflops"]
        ms1 = sum(r["host_ms"][p]["1"] for p in PER_FRAME)
        ms2 = sum(r["host_ms"][p]["2"] for p in PER_FRAME)
        lines.append(
            f"| {_row_label(r)} | {r['params']:,} | {r['mb']:.3f} | {g['kp_detector']:.3f} / {g['generator.per_call']:.3f} / {g['generator.per_frame']:.3f} "
            f"| {ms1:.2f} | {ms2:.2f} | {r['iphone8_fps']['generator.per_frame']:.0f} | {r['iphone8_fps']['kp_detector']:.0f} "
            f"| {q['l1']:.4f} | {q['psnr']:.2f} | {q['ssim']:.4f} | {t['l1']:.4f} | {t['psnr']:.2f} |"
        )
    b = res["baseline_output_equals_source"]
    lines += ["", f"Baseline \"output = source frame\": L1 {b['l1']:.4f}, PSNR {b['psnr']:.2f} dB, SSIM {b['ssim']:.4f}.", "",
              "## Wall time of each stage (s)", "", "| recipe | " + " | ".join(["lint", "distill", "prune", "export", "quantize", "profile", "bundle"]) + " |",
              "|---|" + "---|" * 7]
    for recipe, walls in res["stage_wall_s"].items():
        lines.append(f"| {recipe} | " + " | ".join(f"{walls[s]:.1f}" if s in walls else "" for s in ["lint", "distill", "prune", "export", "quantize", "profile", "bundle"]) + " |")
    lines += checks_markdown(res)
    lines += ["", "![size vs quality](pareto.png)", "", "Distillation loss of the demo run (fomm-mobile-demo, stage distill):", "",
              "![distillation loss](distill_loss.png)", "",
              "Reproduce: `make bench` (writes this page, results.json, pareto.png, distill_loss.png and the README headline)."]
    return "\n".join(lines) + "\n"


def checks_markdown(res: dict[str, Any]) -> list[str]:
    """The issues' acceptance figures, read from the demo run's stage records."""
    rows = {_row_label(r): r for r in res["rows"]}
    teacher, student = (rows[m]["quality"]["vs_ground_truth"]["l1"] for m in ("teacher", "distilled student"))
    before, after = (res["prune"][k]["vs_ground_truth"]["l1"] for k in ("quality_before", "quality_after"))
    lines = ["", "## Acceptance figures of the demo run", "",
             "| check | value |", "|---|---|",
             f"| distilled student L1 vs GT / teacher L1 vs GT (table above) | {student:.4f} / {teacher:.4f} = {student / teacher:.3f} (target <= 1.15) |",
             f"| student beats \"output = source frame\" (L1 {res['baseline_output_equals_source']['l1']:.4f}) | {'yes' if student < res['baseline_output_equals_source']['l1'] else 'no'} |",
             f"| prune to {', '.join(f'{k} <= {v:.4g}' for k, v in res['prune']['targets'].items())}, fine-tune: L1 vs GT before / after (prune record, eval split) | {before:.4f} / {after:.4f} = {after / before:.3f} (target <= 1.05) |"]
    q = res["quantize"]
    for part in _onnx_parts(q):
        o, c = q[part]["onnx"], q[part].get("coreml", {})
        lat = o.get("latency") or {}
        lines.append(f"| {part}: ONNX fp32/int8 size, int8/fp32 host latency (1 thread), PSNR drop; Core ML fp32/8-bit size | "
                     f"{o['fp32_over_int8_size']:.2f}x, {lat.get('int8_over_fp32', float('nan')):.2f}, {o['gate']['value']:.3f} dB; "
                     f"{c.get('fp32_over_int8_size', float('nan')):.2f}x |")
    totals = format_totals(bench_rows(q))
    lines.append("| all parts: ONNX fp32/int8 size (target about 4x); Core ML fp32/8-bit size (target >= 3.5x) | "
                 + "; ".join(f"{totals[f]['fp32_over_int8_size']:.2f}x" if f in totals else "-" for f in ("onnx", "coreml")) + " |")
    return lines + int8_bytes_markdown(q)


def int8_bytes_markdown(quantize: dict[str, Any]) -> list[str]:
    """Where the bytes of each int8 ONNX file go, from the quantize record: why a part is less than 4x smaller."""
    lines = ["", "### Where the int8 ONNX bytes go (KB)", "",
             "Per-channel QDQ stores, next to each output channel's int8 weights, a float weight scale, an int32 bias "
             "and the bias's float scale: 12 bytes, more than the 9 int8 weights of a 3x3 depthwise channel, whose fp32 "
             "form is 40 bytes: a depthwise layer shrinks about 2x, a small pointwise one about 3x, and Q/DQ nodes add graph bytes. "
             "(All-zero weight and bias zero points are left out.) \"graph\" is the rest of the file.", "",
             "| part | fp32 file | int8 file | fp32 / int8 | int8 + uint8 (weights, activation zero points) | int32 (biases) | float32 (scales, constants) | graph |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    totals = [0.0] * 6
    for part in _onnx_parts(quantize):
        o = quantize[part]["onnx"]
        by_type = o["int8_file"]["bytes_by_type"]
        cells = [o["fp32_bytes"], o["int8_bytes"], by_type.get("INT8", 0) + by_type.get("UINT8", 0), by_type.get("INT32", 0), by_type.get("FLOAT", 0)]
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
    return f"| {label} | {fp32 / 1e3:.1f} | {int8 / 1e3:.1f} | {fp32 / int8:.2f}x | " + " | ".join(f"{c / 1e3:.1f}" for c in rest) + " |"


def headline_markdown(res: dict[str, Any]) -> str:
    rows = {(_row_label(r)): r for r in res["rows"]}
    teacher, shipped = rows["teacher"], rows["distilled + pruned + int8"]
    lines = ["| | MB | GFLOPs per frame | iPhone 8 fps (gen/frame, predicted) | host fps 1 thread | PSNR vs GT | L1 vs GT |", "|---|---|---|---|---|---|---|"]
    for label, r in (("demo teacher (FOMM, 64x64)", teacher), ("shipped student (Mob M-SPADE, pruned, int8)", shipped)):
        ms = sum(r["host_ms"][p]["1"] for p in PER_FRAME)
        lines.append(f"| {label} | {r['mb']:.2f} | {_per_frame(r, 'gflops'):.3f} | {r['iphone8_fps']['generator.per_frame']:.0f} | {1000 / ms:.0f} "
                     f"| {r['quality']['vs_ground_truth']['psnr']:.2f} | {r['quality']['vs_ground_truth']['l1']:.4f} |")
    return "\n".join(lines) + f"\n\nMeasured by `make bench` ({res['created_utc']}); details in docs/results.md.\n"


def pareto_png(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for r in res["rows"]:
        ms = sum(r["host_ms"][p]["1"] for p in PER_FRAME)
        ax.scatter(r["mb"], r["quality"]["vs_ground_truth"]["psnr"], s=20 + 40 * ms, alpha=0.6)
        ax.annotate(_row_label(r), (r["mb"], r["quality"]["vs_ground_truth"]["psnr"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.axhline(res["baseline_output_equals_source"]["psnr"], ls="--", lw=0.8, color="grey", label="output = source frame")
    ax.set_xscale("log")
    ax.set_xlabel("model files, MB (log)")
    ax.set_ylabel("PSNR vs ground truth, dB")
    ax.set_title("size vs quality (marker area ~ host latency per frame, 1 thread)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


MODEL_PAIRS = (("vox-256", "teacher"), ("mobile-256", "student"), ("demo-64", "teacher"), ("mobile-64", "student"))


def models_table() -> str:
    """Teacher vs student per part: parameters, MB fp32/int8, GFLOPs (random weights: counts only)."""
    family = get_family("fomm")
    lines = ["| config | role | part | params | MB fp32 | MB int8 | GFLOPs |", "|---|---|---|---:|---:|---:|---:|"]
    for name, role in MODEL_PAIRS:
        config = family.resolve_config(name, role)
        model = (family.build_teacher if role == "teacher" else family.build_student)(config)
        report = inspect_model(family, model, per_module=False)
        for p in report["parts"]:
            lines.append(f"| {name} | {role} | {p['name']} | {p['params']:,} | {p['fp32_mb']:.2f} | {p['int8_mb']:.2f} | {p['gflops']:.3f} |")
        lines.append(f"| {name} | {role} | **all** | {report['params']:,} | {report['fp32_mb']:.2f} | {report['int8_mb']:.2f} | |")
    return "\n".join(lines) + "\n"


def replace_marked(path: Path, name: str, body: str) -> None:
    """Rewrite the text between `<!-- NAME:start ... -->` and `<!-- NAME:end -->` in a doc."""
    text = path.read_text()
    pattern = re.compile(rf"(<!-- {name}:start[^>]*-->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    path.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), text))


def write_reports(res: dict[str, Any], docs: Path, readme: Path) -> None:
    docs.mkdir(exist_ok=True)
    (docs / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (docs / "results.md").write_text(results_markdown(res))
    pareto_png(res, docs / "pareto.png")
    shutil.copyfile(res["loss_curve"], docs / "distill_loss.png")
    replace_marked(readme, "headline", headline_markdown(res))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30, help="latency repeats per file and thread count (p50 reported)")
    parser.add_argument("--videos", type=int, default=8, help="held-out synthetic videos for quality")
    parser.add_argument("--out", type=Path, default=ROOT / "exported" / "bench", help="where the bench's runs go")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--models-table", action="store_true", help="only rewrite the teacher-vs-student table in docs/models/fomm.md")
    args = parser.parse_args(argv)
    if args.models_table:
        replace_marked(args.docs / "models" / "fomm.md", "models", models_table())
        return
    res = run(args.out, args.runs, args.videos)
    write_reports(res, args.docs, ROOT / "README.md")
    print(results_markdown(res))


if __name__ == "__main__":
    main()

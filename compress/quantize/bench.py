"""int8 vs fp32 size, quality and host latency of a recipe's parts, from a real quantize run.

    python -m compress.quantize.bench recipes/fomm-mobile-demo.yaml [--set KEY=VALUE ...] [--json out.json]

Runs the recipe up to its quantize stage in the same run folder `compress run` uses (stages
whose config and inputs are unchanged are kept), then prints one row per part and format
from the quantize stage's record and writes the rows, with the host, as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from compress.errors import CompressError
from compress.quantize.targets import host_has_int8_dot_product, host_target

PAIRS = {"uint8": "int8 u8s8", "int8": "int8 s8s8"}  # activation type -> kind


def bench_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per part and format from the quantize record's metrics."""
    rows = []
    for part, formats in metrics.items():
        if not isinstance(formats, dict) or not ({"onnx", "coreml"} & set(formats)):
            continue  # calibration_samples, eval_samples
        if "onnx" in formats:
            m = formats["onnx"]
            lat, fb, mixed = m["latency"] or {}, m["fallback"] or {}, m["mixed_precision"] or {}
            rows.append(
                {
                    "part": part,
                    "format": "onnx",
                    "precision": PAIRS.get(m["types"]["activation"], "int8 (nncf: u8 or s8 activations)"),
                    "fp32_bytes": m["fp32_bytes"],
                    "int8_bytes": m["int8_bytes"],
                    "fp32_over_int8_size": m["fp32_over_int8_size"],
                    "gate": f"{m['gate']['metric']} {m['gate']['value']:.3f} (bound {m['gate']['bound']})",
                    "gate_passed": m["gate"]["passed"],
                    "float_nodes": len(fb.get("float_nodes", [])),
                    "float_regions": float_regions(mixed),
                    "float_ops": m["float_ops"],
                    "fp32_ms": lat.get("fp32_ms"),
                    "int8_ms": lat.get("int8_ms"),
                    "int8_over_fp32_latency": lat.get("int8_over_fp32"),
                    "shipped": m["shipped"],
                    "note": m["ship_note"],
                }
            )
        if "coreml" in formats:
            m = formats["coreml"]
            rows.append(
                {
                    "part": part,
                    "format": "coreml",
                    "precision": m["mode"],
                    "fp32_bytes": m["fp32_bytes"],
                    "int8_bytes": m["int8_bytes"],
                    "fp32_over_int8_size": m["fp32_over_int8_size"],
                    "gate": "not run (coremltools predicts only on macOS)",
                    "gate_passed": None,
                    "float_nodes": None,
                    "float_regions": None,
                    "float_ops": None,
                    "fp32_ms": None,
                    "int8_ms": None,
                    "int8_over_fp32_latency": None,
                    "shipped": m["mode"],
                    "note": "; ".join(m["notes"] + [m["fp32_basis"]]),
                }
            )
    return rows


def float_regions(mixed: dict[str, Any]) -> str | None:
    """The regions latency-aware mixed precision kept float, each with the file's ms with it int8 and float;
    None where it did not run."""
    if not mixed:
        return None
    regions = mixed["regions"]
    kept = [f"{r} {regions[r]['int8_ms']:.3g}/{regions[r]['float_ms']:.3g} ms" for r in mixed["kept_float"]]
    return "; ".join(kept) or "none"


def format_totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per format, the fp32 and int8 bytes of all parts together and their ratio, and the bytes of the
    files that ship (a part shipped fp32 counts its fp32 bytes): the model's size as the bundle carries it."""
    totals: dict[str, dict[str, float]] = {}
    for r in rows:
        t = totals.setdefault(r["format"], {"fp32_bytes": 0, "int8_bytes": 0, "shipped_bytes": 0})
        t["fp32_bytes"] += r["fp32_bytes"]
        t["int8_bytes"] += r["int8_bytes"]
        t["shipped_bytes"] += r["fp32_bytes"] if r["shipped"] == "fp32" else r["int8_bytes"]
    for t in totals.values():
        t["fp32_over_int8_size"] = t["fp32_bytes"] / t["int8_bytes"]
    return totals


COLUMNS = {
    "part": "part",
    "format": "format",
    "precision": "int8 kind",
    "fp32_bytes": "fp32 bytes",
    "int8_bytes": "int8 bytes",
    "fp32_over_int8_size": "fp32/int8 size",
    "gate": "quality gate",
    "float_nodes": "nodes back to float",
    "float_regions": "regions kept float (file ms, region int8/float)",
    "fp32_ms": "fp32 ms",
    "int8_ms": "int8 ms",
    "int8_over_fp32_latency": "int8/fp32 latency",
    "shipped": "ships",
}


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table (the form docs/stages/quantize.md quotes)."""

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(COLUMNS.values()) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r[k]) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from compress.recipe import load_recipe
    from compress.run import default_run_dir, run_recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="recipe override, e.g. stages.distill.steps=50"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the rows (default exported/bench/quantize-<recipe>.json)",
    )
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.stage("quantize") is None or recipe.stage("export") is None:
        raise CompressError(f"{args.recipe}: the bench needs a recipe with export and quantize stages")
    # Only the stages up to quantize, in the folder `compress run` uses for the whole recipe.
    upto = [s.name for s in recipe.stages].index("quantize") + 1
    summary = run_recipe(
        recipe.model_copy(update={"stages": recipe.stages[:upto]}), run_dir=default_run_dir(recipe, None), resume=True
    )
    record = json.loads((summary.run_dir / "quantize" / "record.json").read_text())
    rows = bench_rows(record["metrics"])
    result = {
        "recipe": str(args.recipe),
        "overrides": args.overrides,
        "run_dir": str(summary.run_dir),
        "host": {
            "machine": platform.machine(),
            "target": host_target(),
            "int8_dot_product": host_has_int8_dot_product(),
        },
        "packages": record["packages"],
        "rows": rows,
        "totals": format_totals(rows),
        "pipeline_as_shipped": record["metrics"].get("pipeline_as_shipped"),
        "int8_for_size": record["metrics"].get("int8_for_size", {}),
    }
    out = args.json or Path("exported/bench") / f"quantize-{recipe.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(markdown_table(rows))
    for fmt, t in result["totals"].items():
        print(
            f"all parts, {fmt}: {t['fp32_bytes']} -> {t['int8_bytes']} bytes, "
            f"fp32/int8 size {t['fp32_over_int8_size']:.2f}; as shipped {t['shipped_bytes']} bytes"
        )
    for r in rows:
        print(f"{r['part']} {r['format']}: {r['note']}")
    for note in result["int8_for_size"].values():
        print(note)
    if result["pipeline_as_shipped"]:
        drop = next((k, v) for k, v in result["pipeline_as_shipped"].items() if k.endswith("_drop"))
        print(
            f"family pipeline, every part as shipped: {drop[0]} {drop[1]:.3f} {result['pipeline_as_shipped']['unit']}"
        )
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    try:
        main()
    except CompressError as exc:
        raise SystemExit(f"error: {exc}") from None

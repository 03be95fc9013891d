"""The `profile` stage: latency of the run's models on each device, and the real-time gate.

Profiles the shipped models (or the fp32 exports / int8 models, per `precision`) on every device
of the stage config and of the recipe's fps targets, at every thread count. Each fps target
becomes a Gate ("fps PART @ DEVICE"): passed when the best measured or predicted fps of that
part on that device reaches the target; the runner then exits 1 on any missed target. When the
deciding row is a prediction whose interval holds the target, the verdict is the point estimate's
and the gate's detail says that the interval straddles the target (the prediction cannot tell).
"""

from __future__ import annotations

import json
from typing import Any

from compress.bench.costmodel import load_profile
from compress.bench.interval import straddle_note
from compress.bench.profile import device_format, device_kind, measure_files, run_models, to_row
from compress.errors import CompressError
from compress.recipe import FpsTarget, ProfileConfig
from compress.run import Gate, RunContext, StageResult

TOP_OPS = 5


def thread_counts(device: str, wanted: list[int], ctx: RunContext) -> list[int]:
    """The stage's thread counts, less those a cost-model profile has no calibration for."""
    if device_kind(device) != "profile":
        return wanted
    profile = load_profile(device.removeprefix("profile:"))
    kept = [t for t in wanted if t in profile.coefficients]
    if not kept:
        profile.coef(wanted[0])  # raises, naming the calibrated thread counts
    if len(kept) < len(wanted):
        ctx.log(
            f"{device}: calibrated for threads {sorted(profile.coefficients)}; "
            f"skipping {sorted(set(wanted) - set(kept))}"
        )
    return kept


def fps_gate(target: FpsTarget, rows: list[dict[str, Any]]) -> Gate:
    matching = [r for r in rows if r["device"] == target.device and r["part"] == target.part and r["fps"] is not None]
    name = f"fps {target.part} @ {target.device}"
    if not matching:
        return Gate(name, target.fps, None, False, "not profiled")
    best = max(matching, key=lambda r: r["fps"])
    detail = (
        f"{best['source']} p50 {best['p50_ms']:.2f} ms at {best['threads']} thread(s), "
        f"{best['precision']} {best['format']}"
    )
    note = straddle_note(best.get("interval_ms"), target.fps, best.get("extrapolated_share"))
    passed = best["fps"] >= target.fps
    return Gate(name, target.fps, round(best["fps"], 3), passed, f"{detail}; {note}" if note else detail)


def float_compute(device: str) -> bool:
    """A cost-model device whose profile says it runs int8 files with float compute.

    On an iPhone 8 (A11, iOS 16) Core ML decompresses 8-bit weights and computes in float, so
    the shipped int8 file runs at the speed of the float graph: predict from the fp32 export.
    """
    return (
        device_kind(device) == "profile"
        and load_profile(device.removeprefix("profile:")).meta.get("int8_compute") is False
    )


def profile_stage(cfg: ProfileConfig, ctx: RunContext) -> StageResult:
    models = run_models(ctx.artifacts, cfg.precision)
    float_models = run_models(ctx.artifacts, "fp32") if ctx.artifacts.get("exported") else models
    parts = {m.part for m in models}
    targets = ctx.recipe.targets.fps
    for i, t in enumerate(targets):
        if t.part not in parts:
            raise CompressError(
                f"targets.fps[{i}].part: {t.part!r} is not a part of this run (parts: {', '.join(sorted(parts))})"
            )
    devices = list(dict.fromkeys([*cfg.devices, *(t.device for t in targets)]))
    rows: list[dict[str, Any]] = []
    for device in devices:
        fmt = device_format(device)
        chosen = [m for m in (float_models if float_compute(device) else models) if m.format == fmt]
        if not chosen:
            raise CompressError(
                f"profile: device {device} runs {fmt} models and the run has none; add {fmt} to the export formats"
            )
        source = "predicted" if device_kind(device) == "profile" else "measured"
        for threads in thread_counts(device, cfg.threads, ctx):
            ctx.log(f"{device}: {len(chosen)} {fmt} model(s), {threads} thread(s)")
            raw = measure_files([ctx.path(m.rel) for m in chosen], device, threads, cfg.warmup, cfg.runs, TOP_OPS)
            rows += [
                to_row(m.rel, m.part, device, source, r) | {"format": m.format, "precision": m.precision}
                for m, r in zip(chosen, raw)
            ]
    gates = [fps_gate(t, rows) for t in targets]
    out = ctx.stage_dir / "latency.json"
    out.write_text(json.dumps(rows, indent=2))
    metrics = {
        f"{r['part']} @ {r['device']} x{r['threads']}": {
            "p50_ms": _round(r["p50_ms"]),
            "p90_ms": _round(r["p90_ms"]),
            "fps": _round(r["fps"]),
            "source": r["source"],
            **({"interval_ms": [_round(v) for v in r["interval_ms"]]} if r.get("interval_ms") else {}),
        }
        for r in rows
    }
    passed = sum(g.passed for g in gates)
    summary = f"{len(rows)} latency rows on {len(devices)} device(s)" + (
        f"; fps targets {passed}/{len(gates)} met" if gates else ""
    )
    return StageResult(artifacts={"latency": rows}, metrics=metrics, gates=gates, summary=summary)


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)

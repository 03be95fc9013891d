"""Validate the latency cost model where the truth can be measured: on this host.

    python -m compress.bench.validate [--rounds 3] [--folds 5] [--out exported/bench/latency-validate.json]
                                      [--update-docs docs/latency.md]

Calibrates the host profile as `calibrate host` does (single-conv graphs for the per-kernel model,
single-op graphs, one set of conv nets), predicts a held-out set (other varied conv nets, the zoo
reference networks, FOMM teacher and student parts and narrower students) and reports the share
of held-out networks predicted within +-10 % and +-20 % of the measurement. Then a k-fold
validation over those and more networks (conv nets with odd channel counts, every part of every
student preset of FOMM, face-vid2vid and CSE, pruned and not), and for the worst networks of both,
predicted against profiled time per node kind. Every network is timed in rounds with a reference
network between every 16 (calibrate.host_latencies), which the report's noise figures describe.
About 4-5 minutes on a shared 2-core machine with the exports reused.
A benchmark, not a test: it prints a table and writes JSON; docs/latency.md's figures come
only from that JSON (--update-docs)."""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from rich.console import Console
from rich.table import Table

from compress.bench import calibrate, costmodel, executed, host, kernels, machine, zoo
from compress.checkpoints import atomic_path

HELD_OUT_SEEDS = range(100, 140)
ZOO_HELD_OUT = (
    "mobilenet_v1_1.0_224",
    "squeezenet_1.0",
    "nasnet_mobile",
)  # Inception-ResNet-V2 takes seconds a run here
DOC_BEGIN, DOC_END = "<!-- validate:begin -->", "<!-- validate:end -->"


def zoo_nets(workdir: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    out = []
    for name in ZOO_HELD_OUT:
        ref = zoo.REFERENCES[name]
        path = workdir / f"{name}.onnx"
        if not path.exists():
            zoo.export_onnx(ref.build(), (torch.zeros(1, 3, ref.resolution, ref.resolution),), path)
        out.append((name, path, {"kind": "zoo"}))
    return out


def fomm_nets(workdir: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """Every deployable part of a small FOMM teacher, two students and a half-width student."""
    from compress.export import export_onnx
    from compress.families.registry import get_family

    family = get_family("fomm")
    narrow = copy.deepcopy(family.resolve_config("mobile-256", "student"))
    narrow["width_multiplier"] = 0.5
    models = {
        "teacher-demo-64": family.build_teacher(family.resolve_config("demo-64", "teacher")),
        "student-mobile-64": family.build_student(family.resolve_config("mobile-64", "student")),
        "student-mobile-256": family.build_student(family.resolve_config("mobile-256", "student")),
        "student-mobile-256-w0.5": family.build_student(narrow),
    }
    out = []
    for label, model in models.items():
        for part in family.parts(model.eval()):
            path = workdir / f"fomm-{label}-{part.name}.onnx"
            if not path.exists():
                export_onnx(part, path)
            out.append((f"fomm {label} {part.name}", path, {"kind": "fomm"}))
    return out


def kfold_summary(rows: list[dict[str, Any]], folds: int) -> dict[str, Any]:
    """Shares within ±10 / ±20 % of every network's k-fold error, with intervals, the noise ceiling and by kind."""
    errors = np.array([r["kfold_error"] for r in rows])
    repeat = np.array([r["repeatability"] for r in rows])
    kinds: dict[str, list[float]] = {}
    for r in rows:
        kind = "convnet-odd" if r["network"].startswith("convnet-odd") else r["kind"]
        kinds.setdefault(kind, []).append(abs(r["kfold_error"]))
    return {
        "folds": folds,
        "networks": len(rows),
        **{f"within_{pct}pct": share_within(errors, pct / 100) for pct in (10, 20)},
        **{f"noise_ceiling_{pct}pct": noise_ceiling(repeat, pct / 100) for pct in (10, 20)},
        "median_abs_error": float(np.median(np.abs(errors))),
        "max_abs_error": float(np.max(np.abs(errors))),
        "by_kind": {
            k: {
                "networks": len(e),
                "within_10pct": float(np.mean(np.array(e) <= 0.1)),
                "within_20pct": float(np.mean(np.array(e) <= 0.2)),
                "median_abs_error": float(np.median(e)),
            }
            for k, e in sorted(kinds.items())
        },
    }


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a share `hits / n`: sound at small n and at shares near 0 or 1."""
    share = hits / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def share_within(errors: np.ndarray, bound: float) -> dict[str, Any]:
    """The share of |errors| within `bound`, with its 95 % interval."""
    hits = int(np.sum(np.abs(errors) <= bound))
    return {"share": hits / len(errors), "interval_95": wilson_interval(hits, len(errors))}


def noise_ceiling(repeatability: np.ndarray, bound: float) -> float:
    """The share of networks whose two half-measurements agree within `bound`: what a predictor that knew
    one half exactly would score against the other, so no cost model can be expected to score more."""
    return float(np.mean(repeatability <= bound))


WORST = 10  # held-out networks whose per-node errors the report attributes
FOLDS = 5
ODD_SEEDS = range(200, 250)  # conv nets with odd channel counts, in the k-fold set only
PRUNE_RATIOS = (0.3, 0.5)
# Every student preset of the model families in the k-fold set: FOMM's two in the held-out split pruned (unpruned,
# they are held out), the others unpruned and pruned. LivePortrait's recipe distils face-vid2vid's mobile-256 student.
FOMM_HELD_OUT_STUDENTS = {"fomm": ("mobile-64", "mobile-256")}
OTHER_STUDENTS = {
    "fomm": ("mobile-256-v1",),
    "facevid2vid": ("mobile-64", "mobile-256"),
    "cse": ("mobile-64", "mobile-128", "mobile-224"),
}


def attribution(path: Path, block: int, kernel_model: kernels.KernelModel, coef: dict[str, float]) -> list[dict]:
    """Predicted against onnxruntime-profiled ms per node kind (class, or op type for memory-bound nodes) of
    one network: which kernels a network's error comes from. Profiled node times (each node's fastest of
    the profiled runs) add up to a little more than the timed latency; the kinds' shares are what matter."""
    specific = frozenset(calibrate.HOST_OP_SPECIFIC)
    costs = executed.analyse(path, block, kernel_model=kernel_model)
    (result,) = host.measure([path], threads=1, warmup=3, runs=5, top=1_000_000, priority="realtime")
    measured = {op["node"]: op["min_ms"] for op in result["ops"]}
    kinds: dict[str, dict[str, Any]] = {}
    for c in costs:
        kind = kinds.setdefault(
            c.op_type if c.op_class == "memory" else c.op_class, {"nodes": 0, "predicted_ms": 0.0, "measured_ms": 0.0}
        )
        kind["nodes"] += 1
        kind["predicted_ms"] += float(calibrate.price([c.features(specific)], coef)[0])
        kind["measured_ms"] += measured.get(c.name, 0.0)
    rows = [{"kind": k, **v} for k, v in kinds.items() if v["predicted_ms"] or v["measured_ms"]]
    return sorted(rows, key=lambda r: -abs(r["predicted_ms"] - r["measured_ms"]))


def student_nets(
    workdir: Path, presets: dict[str, tuple[str, ...]], ratios: tuple[float, ...]
) -> list[tuple[str, Path, dict[str, Any]]]:
    """Every part of each family's student presets (`presets`: family -> preset names), pruned by each of
    `ratios` of every prunable layer's channels (0: unpruned), channels rounded to 1: the channel counts
    pruning leaves, mostly off onnxruntime's blocks. Kind: the family, `<family>-pruned` when pruned. The
    teacher is built only for a family whose students adopt part of it. A part whose export is the same as
    one before (a part pruning did not change) is listed once."""
    from compress.export import export_onnx
    from compress.families.registry import get_family
    from compress.prune import prune_model

    out, seen = [], set()
    for name, names in presets.items():
        family = get_family(name)
        # what a student keeps from its teacher (CSE: the vertex table its lookup searches) sets the size of
        # some parts: such a family's students adopt it from its default teacher, as distillation does
        teacher = family.build_teacher(family.resolve_config(None, "teacher")) if family.students_adopt else None
        for preset in names:
            student = family.build_student(family.resolve_config(preset, "student")).eval()
            if teacher is not None:
                family.adopt_teacher(student, teacher)
            parts = [part.name for part in family.parts(student)]
            for ratio in ratios:
                label = f"student-{preset}" + (f"-pruned{ratio:g}" if ratio else "")
                paths = {part: workdir / f"{name}-{label}-{part}.onnx" for part in parts}
                if not all(p.exists() for p in paths.values()):
                    model = student
                    if ratio:
                        ratio_of = {p.name: ratio for p in family.prunables(student)}
                        model = prune_model(family, student, ratio_of, round_to=1).eval()
                    for part in family.parts(model):
                        export_onnx(part, paths[part.name])
                kind = f"{name}-pruned" if ratio else name
                for part, path in paths.items():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                    if digest not in seen:  # a part pruning leaves as it was (CSE's lookup) is timed once
                        seen.add(digest)
                        out.append((f"{name} {label} {part}", path, {"kind": kind}))
    return out


def kernel_priced_totals(costs: list, model: kernels.KernelModel) -> dict[str, float]:
    """A network's cost features with its convs priced by `model`."""
    priced = [c for c in costs if c.kernel is not None]
    for c, ms in zip(priced, model.predict([c.kernel for c in priced]) if priced else []):
        c.kernel_ms = float(ms)
    return costmodel.totals(costs, frozenset(calibrate.HOST_OP_SPECIFIC))


def kfold(
    names: list[str],
    costs: list[list],
    measured: list[float],
    memory: dict[str, float],
    kernel_table: dict[kernels.Config, kernels.Measured],
    configs: list[set[kernels.Config]],
    folds: int,
) -> list[dict[str, Any]]:
    """Each network predicted by a profile fitted without its fold (deterministic folds): the per-kernel
    model without any kernel only the fold's networks have, the network terms on the other folds."""
    order = list(range(len(names)))
    random.Random(0).shuffle(order)
    out: list[dict[str, Any]] = [{} for _ in names]
    for f in range(folds):
        test = order[f::folds]
        train = sorted(set(order) - set(test))
        train_configs = set().union(*(configs[i] for i in train))
        test_only = set().union(*(configs[i] for i in test)) - train_configs
        model = kernels.KernelModel([row for config, row in kernel_table.items() if config not in test_only])
        feats = {i: kernel_priced_totals(costs[i], model) for i in order}
        fitted = calibrate.fit(
            [feats[i] for i in train], [measured[i] for i in train], calibrate.HOST_NETWORK_COLUMNS, fixed=memory
        )
        for i in test:
            predicted = float(calibrate.price([feats[i]], fitted.coefficients)[0])
            out[i] = {"fold": f, "predicted_ms": predicted, "error": predicted / measured[i] - 1}
            out[i]["model"] = (model, fitted.coefficients)
    return out


def validate(workdir: Path, rounds: int = 4, with_fomm: bool = True, folds: int = FOLDS) -> dict[str, Any]:
    start = time.perf_counter()
    micro = calibrate.memory_microbenchmarks(workdir)
    calib = calibrate.convnet_set(calibrate.HOST_CALIBRATION_SEEDS, workdir)
    held = (
        calibrate.convnet_set(HELD_OUT_SEEDS, workdir) + zoo_nets(workdir) + (fomm_nets(workdir) if with_fomm else [])
    )
    families = (
        student_nets(workdir, FOMM_HELD_OUT_STUDENTS, PRUNE_RATIOS)
        + student_nets(workdir, OTHER_STUDENTS, (0.0, *PRUNE_RATIOS))
        if with_fomm
        else []
    )
    extra = calibrate.convnet_set(ODD_SEEDS, workdir, odd=True) + families
    nets = calib + held + (extra if folds else [])
    exported_s = time.perf_counter() - start
    block = machine.channel_block(machine.this_host().flags)
    sample = calibrate.sample_kernels(workdir, block, rounds, [p for _, p, _ in calib])
    kernel_rows = sample.rows
    kernel_errors = kernels.cross_validated_errors(kernel_rows)
    paths = [p for _, p in micro] + [p for _, p, _ in nets]
    times = calibrate.host_latencies(paths, threads=1, rounds=rounds, reference=calibrate.reference_network(workdir))
    measured_all, repeat_all = times.fastest, times.fastest_repeat
    kernel_model = kernels.KernelModel(kernel_rows)
    costs_all = [executed.analyse(p, block) for p in paths]
    feats_all = [kernel_priced_totals(c, kernel_model) for c in costs_all]
    m, n, n_split = len(micro), len(calib), len(calib) + len(held)
    feats, measured, repeat = feats_all[m:], measured_all[m:], repeat_all[m:]
    result = calibrate.fit_host(
        feats_all[:m], measured_all[:m], feats[:n], measured[:n], reorder_rates=sample.reorder_rates()
    )
    predicted = calibrate.price(feats, result.coefficients)
    micro_pred = calibrate.price(feats_all[:m], result.coefficients)
    micro_err = micro_pred / np.array(measured_all[:m]) - 1
    cross = []
    if folds:
        configs = [set(kernels.network_configs(onnx.load(str(p)))) for _, p, _ in nets]
        kernel_table = dict(sample.measured)
        missing = sorted(set().union(*configs) - set(kernel_table), key=lambda c: c.name)
        kernel_table.update(calibrate.measure_kernels(missing, workdir, block, rounds).measured)
        memory = calibrate.without_network_terms(result.coefficients)
        cross = kfold([name for name, _, _ in nets], costs_all[m:], measured, memory, kernel_table, configs, folds)
    rows = [
        {
            "network": name,
            "set": "calibration" if i < n else ("held-out" if i < n_split else "k-fold only"),
            "kind": info.get("kind", "convnet"),
            "spec": info,
            "measured_ms": measured[i],
            "predicted_ms": float(predicted[i]),
            "error": float(predicted[i] / measured[i] - 1),
            "repeatability": repeat[i],
            "unreferenced_repeatability": times.unreferenced_repeat[m + i],
            "median_ms": times.median[m + i],
            "median_repeatability": times.median_repeat[m + i],
            **({"kfold_predicted_ms": cross[i]["predicted_ms"], "kfold_error": cross[i]["error"]} if cross else {}),
        }
        for i, (name, _, info) in enumerate(nets)
    ]

    errors = np.array([r["error"] for r in rows if r["set"] == "held-out"])
    held = [(r, path) for r, (_, path, _) in zip(rows, nets) if r["set"] == "held-out"]
    worst = sorted(held, key=lambda item: -abs(item[0]["error"]))[:WORST]
    for row, path in worst:
        row["attribution"] = attribution(path, block, kernel_model, result.coefficients)
    kfold_report = None
    if cross:
        by_error = sorted(range(len(nets)), key=lambda i: -abs(cross[i]["error"]))[:WORST]
        for i in by_error:
            model, coef = cross[i]["model"]
            rows[i]["kfold_attribution"] = attribution(nets[i][1], block, model, coef)
        kfold_report = kfold_summary(rows, folds)
    held_repeat = np.array([r["repeatability"] for r in rows if r["set"] == "held-out"])
    within = {pct: share_within(errors, pct / 100) for pct in (10, 20)}
    return {
        "machine": calibrate.machine_name(),
        "method": f"1 thread, runner thread CPU time, fastest of {rounds} rounds x 20 runs normalised by a reference "
        "network's, real-time priority where allowed",
        "rounds": rounds,
        "channel_block": block,
        "kernels": {
            "measured": len(kernel_rows),
            "by_class": {c: sum(r.kernel.op_class == c for r in kernel_rows) for c in kernels.CONV_CLASSES},
            "cross_validated_within_10pct": float(np.mean(np.abs(kernel_errors) <= 0.10)),
            "cross_validated_median_abs_error": float(np.median(np.abs(kernel_errors))),
        },
        "coefficients": result.coefficients,
        "calibration": {
            "networks": n,
            "rms_relative_error": result.rms,
            "single_op_graphs": m,
            "single_op_rms_relative_error": float(np.sqrt(np.mean(micro_err**2))),
        },
        "held_out": {
            "networks": len(errors),
            "within_10pct": within[10]["share"],
            "within_20pct": within[20]["share"],
            "within_10pct_interval_95": within[10]["interval_95"],
            "within_20pct_interval_95": within[20]["interval_95"],
            "noise_ceiling_10pct": noise_ceiling(held_repeat, 0.10),
            "noise_ceiling_20pct": noise_ceiling(held_repeat, 0.20),
            "median_abs_error": float(np.median(np.abs(errors))),
            "max_abs_error": float(np.max(np.abs(errors))),
        },
        "kfold": kfold_report,
        "repeatability_median": float(np.median(repeat)),
        "reference": {
            **times.reference.to_json(),
            "unreferenced_repeatability_median": float(np.median(times.unreferenced_repeat[m:])),
            "unreferenced_noise_ceiling_10pct": noise_ceiling(np.array(times.unreferenced_repeat[m:]), 0.10),
        },
        "median_estimator_repeatability_median": float(np.median(times.median_repeat[m:])),
        "wall_s": round(time.perf_counter() - start, 1),
        "export_s": round(exported_s, 1),
        "rows": rows,
        "single_op_rows": [
            {"graph": name, "measured_ms": ms, "predicted_ms": float(pred)}
            for (name, _), ms, pred in zip(micro, measured_all[:m], micro_pred)
        ],
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title="latency cost model vs host measurements (1 thread)")
    for col in ("network", "set", "measured ms", "predicted ms", "error"):
        table.add_column(col, justify="left" if col in ("network", "set") else "right")
    for r in report["rows"]:
        style = "" if abs(r["error"]) <= 0.10 else ("yellow" if abs(r["error"]) <= 0.20 else "red")
        error = f"{r['error'] * 100:+.1f}%"
        table.add_row(
            r["network"],
            r["set"],
            f"{r['measured_ms']:.2f}",
            f"{r['predicted_ms']:.2f}",
            f"[{style}]{error}[/{style}]" if style else error,
        )
    console.print(table)
    console.print(summary_line(report))


def summary_line(report: dict[str, Any]) -> str:
    h = report["held_out"]
    return (
        f"held-out: {h['networks']} networks, {h['within_10pct'] * 100:.0f}% within +-10%{_ci(h, 10)}, "
        f"{h['within_20pct'] * 100:.0f}% within +-20%{_ci(h, 20)} "
        f"(median |error| {h['median_abs_error'] * 100:.1f}%, max {h['max_abs_error'] * 100:.1f}%); "
        f"calibration: {report['calibration']['networks']} networks, "
        f"rms {report['calibration']['rms_relative_error'] * 100:.1f}%; "
        f"measurement repeatability (median |first half / second half of the rounds - 1|) "
        f"{report['repeatability_median'] * 100:.1f}%" + _reference_summary(report) + _kfold_summary(report)
    )


def _reference_summary(report: dict[str, Any]) -> str:
    ref = report.get("reference")
    if not ref:
        return ""
    return (
        f" (normalised by the reference network {ref['network']}: "
        f"{ref['unreferenced_repeatability_median'] * 100:.1f}% without; "
        f"{ref['disturbed_share'] * 100:.0f}% of its timings disturbed by more than "
        f"{ref['disturbed_threshold'] * 100:.0f}%)"
    )


def _kfold_summary(report: dict[str, Any]) -> str:
    k = report.get("kfold")
    if not k:
        return ""
    return (
        f"; {k['folds']}-fold: {count(k['within_10pct']['share'], k['networks'])} within +-10%, "
        f"{count(k['within_20pct']['share'], k['networks'])} within +-20%"
    )


def count(share: float, networks: int) -> str:
    """ "186 of 196 (94.9 %)": a share near a target, not rounded onto it."""
    return f"{round(share * networks)} of {networks} ({share * 100:.1f} %)"


def _ci(held_out: dict[str, Any], pct: int) -> str:
    """' (95 % CI a-b %, noise ceiling c %)' for the share within ±pct %, when the report has them."""
    interval, ceiling = held_out.get(f"within_{pct}pct_interval_95"), held_out.get(f"noise_ceiling_{pct}pct")
    if interval is None or ceiling is None:
        return ""
    return f" (95 % CI {interval[0] * 100:.0f}-{interval[1] * 100:.0f} %, noise ceiling {ceiling * 100:.0f} %)"


def docs_section(report: dict[str, Any], json_path: Path) -> str:
    """The generated part of docs/latency.md: figures copied from the validation JSON."""
    h = report["held_out"]
    kinds: dict[str, list[float]] = {}
    for r in report["rows"]:
        if r["set"] == "held-out":
            kinds.setdefault(r["kind"], []).append(abs(r["error"]))
    lines = [
        DOC_BEGIN,
        f"Generated by `python -m compress.bench.validate --update-docs docs/latency.md` from `{json_path}` "
        f"({report['machine']}; {report['method']}; {report['wall_s']:.0f} s).",
        "",
        "| held-out set | networks | within ±10 % | within ±20 % | median abs error |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for kind, errs in sorted(kinds.items()):
        e = np.array(errs)
        lines.append(
            f"| {kind} | {len(e)} | {np.mean(e <= 0.1) * 100:.0f} % | {np.mean(e <= 0.2) * 100:.0f} % "
            f"| {np.median(e) * 100:.1f} % |"
        )
    lines.append(
        f"| **all** | **{h['networks']}** | **{h['within_10pct'] * 100:.0f} %** | **{h['within_20pct'] * 100:.0f} %** "
        f"| **{h['median_abs_error'] * 100:.1f} %** |"
    )
    lines += [
        "",
        f"All held-out networks: within ±10 %{_ci(h, 10)}; within ±20 %{_ci(h, 20)}. The 95 % intervals "
        "are Wilson score intervals of the shares; the noise ceiling is the share of networks whose two "
        "half-measurements (first and second half of the rounds) agree within the same bound, what a "
        "predictor that knew one half exactly would score against the other.",
        "",
        f"Calibration: {report['calibration']['networks']} conv nets, "
        f"in-sample rms error {report['calibration']['rms_relative_error'] * 100:.1f} %. "
        f"How well a network's measured latency repeats, as the median over networks of "
        f"|estimate from the first half of the rounds / "
        f"from the second half - 1|: {report['repeatability_median'] * 100:.1f} % for the fastest run (used above), "
        f"{report['median_estimator_repeatability_median'] * 100:.1f} % for the median of per-round p50s.",
        *reference_lines(report),
        *kernel_lines(report),
        *kfold_lines(report),
        DOC_END,
    ]
    return "\n".join(lines)


def reference_lines(report: dict[str, Any]) -> list[str]:
    """What the reference network timed in every round saw, and what normalising by it changed."""
    ref = report.get("reference")
    if not ref:
        return []
    return [
        "",
        f"Reference network: {ref['network']} ({ref['ms']:.2f} ms), timed {ref['timings_per_round']} times a round "
        f"(before every {calibrate.REFERENCE_EVERY} networks and after the last). Against its fastest timing, its "
        f"timings were slower by {ref['median_slowdown'] * 100:.1f} % (median) and at most "
        f"{ref['max_slowdown'] * 100:.1f} %; {ref['disturbed_share'] * 100:.0f} % of them by more than "
        f"{ref['disturbed_threshold'] * 100:.0f} % (disturbed stretches). Each network's runs in a stretch of a "
        "round are divided by the reference's slowdown around them before the fastest is taken: repeatability "
        f"{report['repeatability_median'] * 100:.1f} % with that, {ref['unreferenced_repeatability_median'] * 100:.1f} "
        f"% without (noise ceiling at ±10 % without it: {ref['unreferenced_noise_ceiling_10pct'] * 100:.0f} %).",
    ]


def kfold_lines(report: dict[str, Any]) -> list[str]:
    """The k-fold validation over every network, by kind, and the attribution of its worst ten."""
    k = report.get("kfold")
    if not k:
        return []
    w10, w20 = k["within_10pct"], k["within_20pct"]
    split = sum(r["set"] != "k-fold only" for r in report["rows"])
    odd = sum(r["network"].startswith("convnet-odd") for r in report["rows"])
    lines = [
        "",
        f"**{k['folds']}-fold validation over all {k['networks']} networks** (the split's {split}, {odd} more conv "
        "nets with odd channel counts and HardSwish half the time, and every part of every student preset of FOMM, "
        "face-vid2vid (LivePortrait's student too) and CSE, pruned by 30 % and 50 % with channels rounded to 1 "
        "and, those not in the split, unpruned): each network predicted by a profile fitted "
        "without its fold, the per-kernel model included (a kernel only the fold's networks have is left out "
        "of its data). Within ±10 %: "
        f"{count(w10['share'], k['networks'])} (95 % CI {w10['interval_95'][0] * 100:.0f}-"
        f"{w10['interval_95'][1] * 100:.0f} %, noise ceiling {k['noise_ceiling_10pct'] * 100:.0f} %); "
        f"within ±20 %: {count(w20['share'], k['networks'])} "
        f"(95 % CI {w20['interval_95'][0] * 100:.0f}-{w20['interval_95'][1] * 100:.0f} %, noise ceiling "
        f"{k['noise_ceiling_20pct'] * 100:.0f} %); median abs error {k['median_abs_error'] * 100:.1f} %, "
        f"max {k['max_abs_error'] * 100:.0f} %.",
        "",
        "| networks (k-fold) | n | within ±10 % | within ±20 % | median abs error |",
        "| --- | ---: | ---: | ---: | ---: |",
        *(
            f"| {kind} | {v['networks']} | {v['within_10pct'] * 100:.0f} % | {v['within_20pct'] * 100:.0f} % "
            f"| {v['median_abs_error'] * 100:.1f} % |"
            for kind, v in k["by_kind"].items()
        ),
    ]
    worst = sorted([r for r in report["rows"] if r.get("kfold_attribution")], key=lambda r: -abs(r["kfold_error"]))
    if worst:
        lines += [
            "",
            "Worst ten in the k-fold validation, per node kind: predicted / onnxruntime-profiled ms, the two kinds "
            "with the largest difference.",
            "",
            *attribution_table(worst, "kfold_error", "kfold_attribution"),
        ]
    return lines


def attribution_table(rows: list[dict[str, Any]], error: str, attribution: str) -> list[str]:
    """A table of networks: their `error` and the two node kinds of `attribution` that differ most."""
    return [
        "| network | error | largest differences |",
        "| --- | ---: | --- |",
        *(
            f"| {r['network']} | {r[error] * 100:+.1f} % | "
            + "; ".join(
                f"{a['kind']} ({a['nodes']}): {a['predicted_ms']:.3f} / {a['measured_ms']:.3f}"
                for a in r[attribution][:2]
            )
            + " |"
            for r in rows
        ),
    ]


def kernel_lines(report: dict[str, Any]) -> list[str]:
    """The per-kernel model's data and error, and the attribution of the worst networks' errors."""
    k = report.get("kernels")
    if not k:
        return []
    classes = ", ".join(f"{n} {c}" for c, n in k["by_class"].items())
    lines = [
        "",
        f"Per-kernel model: {k['measured']} single-conv graphs measured ({classes}); predicted by a model fitted "
        f"without them (5-fold cross-validation), {k['cross_validated_within_10pct'] * 100:.0f} % of the kernels "
        f"are within ±10 %, median abs error {k['cross_validated_median_abs_error'] * 100:.1f} %.",
    ]
    worst = [r for r in report["rows"] if r.get("attribution")]
    if worst:
        lines += [
            "",
            f"Where the {len(worst)} worst-predicted held-out networks' errors come from: per node kind, "
            "predicted / onnxruntime-profiled ms, the two kinds with the largest difference.",
            "",
            *attribution_table(worst, "error", "attribution"),
        ]
    return lines


def update_docs(doc: Path, section: str, markers: tuple[str, str] = (DOC_BEGIN, DOC_END)) -> None:
    """Replace the text between `markers` (inclusive) with `section`, or append it."""
    text = doc.read_text() if doc.exists() else ""
    pattern = re.compile(re.escape(markers[0]) + ".*?" + re.escape(markers[1]), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    with atomic_path(doc) as tmp:
        tmp.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="validate the latency cost model on this host")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--workdir", type=Path, default=Path("exported/bench/nets"), help="exported nets are kept here and reused"
    )
    parser.add_argument("--out", type=Path, default=Path("exported/bench/latency-validate.json"))
    parser.add_argument(
        "--no-fomm", action="store_true", help="leave out the model families' parts (FOMM, face-vid2vid, CSE)"
    )
    parser.add_argument(
        "--folds", type=int, default=FOLDS, help="k of the k-fold validation over every network (0: the split only)"
    )
    parser.add_argument("--update-docs", type=Path, help="rewrite the generated section of this markdown file")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    report = validate(args.workdir, args.rounds, not args.no_fomm, args.folds)
    with atomic_path(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    print_report(report, Console())
    print(f"wrote {args.out}")
    if args.update_docs:
        update_docs(args.update_docs, docs_section(report, args.out))
        print(f"updated {args.update_docs}")


if __name__ == "__main__":
    main()

"""`python -m compress.bench.architectures`: student designs compared at equal latency.

    python -m compress.bench.architectures [--steps 1500] [--batch-size 4] [--seeds 0 1] [--jobs N] [--root .]

The product-size FOMM student is judged where it ships, 256x256, and the official teacher cannot
be downloaded here, so candidates are compared directly against ground truth: each is trained
from scratch on the family's synthetic 256x256 clips with the family's own objective
(`Family.teacher_loss`: reconstruction and equivariance), same steps, batch, learning rate and
seed, then scored on held-out clips; the whole comparison is repeated for each seed (weights,
training data, order and held-out clips all follow it). Candidates:
- `mobile-256-v1`, the first preset, latency-pruned (structure only, before training, channel
  granularity 1) until its per-frame generator is predicted no slower on profile:iphone8 than the
  new design's: the way `fomm-mobile.yaml` had to prune it to reach 30 fps;
- `mobile-256`, the design built for the budget, unpruned.
Equal predicted iPhone 8 ms is the one equal latency a cost model can give; the host is where
latency is measured, so every candidate is also timed here, and both designs at their floor
(every prunable layer at 1 % of its channels, costs only): a baseline whose floor is slower than
the design cannot be pruned to the design's measured time at any width. `mobile-256-v1` unpruned
is listed for its costs only. For each: parameters, int8 MB, fixed and total predicted iPhone 8
ms per part (cost model, `compress inspect --latency`), host ms at 1 and 2 threads (measured,
onnxruntime, interleaved rounds) and the ratio to the design, and L1, PSNR, SSIM vs ground truth.
Writes docs/architectures.md, .json and .png under --root.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.export import export_onnx
from compress.families.base import Family
from compress.families.registry import get_family
from compress.prune import Budget, fixed_costs, floor_model, prune_to_budget
from compress.quantize.latency import Comparison
from compress.quantize.latency import compare as paired
from compress.stats import count_params, size_mb
from compress.teacher_train import TeacherTraining, fit

FAMILY = "fomm"
BASELINE, DESIGN = "mobile-256-v1", "mobile-256"
PART = "generator.per_frame"  # the part the budget is about: it runs on every received frame
# The demo teacher's objective weights (recipes/teachers/fomm-demo-teacher.yaml): a multi-scale
# reconstruction and the equivariance of keypoints and jacobians.
WEIGHTS = {
    "scales": [1.0, 0.5, 0.25, 0.125],
    "reconstruction": 10.0,
    "ssim": 0.0,
    "equivariance_value": 1.0,
    "equivariance_jacobian": 0.5,
}


def candidates(family: Family, seed: int) -> list[tuple[str, torch.nn.Module, bool]]:
    """(label, untrained model, trained?): the baseline as it was and both designs at their floor
    (costs only: they are not at equal latency), the baseline pruned to the design's predicted
    per-frame ms, and the design."""
    torch.manual_seed(seed)
    design = family.build_student(copy.deepcopy(family.configs()[DESIGN])).eval()
    target_ms = fixed_costs(family, design)[PART]["predicted_ms"]
    baseline = family.build_student(copy.deepcopy(family.configs()[BASELINE])).eval()
    # Channel granularity 1 brings its predicted ms as close to the design's as the pruner can: with
    # the recipe's multiples of 8, 17.05 ms on profile:iphone8 is followed by 13.8 ms.
    pruned = prune_to_budget(family, baseline, Budget(latency_ms={PART: target_ms}), round_to=1).model
    return [
        (f"{BASELINE} (unpruned)", baseline, False),
        (f"{BASELINE} at its floor", floor_model(family, baseline), False),
        (f"{BASELINE} latency-pruned to {target_ms:.1f} ms", pruned, True),
        (f"{DESIGN} (unpruned)", design, True),
        (f"{DESIGN} at its floor", floor_model(family, design), False),
    ]


def measure(family: Family, label: str, model: torch.nn.Module, train: bool, spec: TeacherTraining) -> dict[str, Any]:
    """A candidate's sizes, predicted costs and quality after training (when `train`)."""
    size = family.model_input_size(model)
    weights = family.loss_weights(WEIGHTS, family.task.teacher_loss)
    torch.manual_seed(spec.seed)
    training = fit(family, model, spec, size, weights) if train else {"held_out": None}
    params = {p.name: count_params(p.module) for p in family.prunables(model)}
    return {
        "label": label,
        "params": params,
        "int8_mb": round(size_mb(sum(params.values()), "int8"), 3),
        "iphone8": fixed_costs(family, model),
        "training": training,
        "quality": training.pop("held_out"),
    }


def host_latency(family: Family, models: dict[str, torch.nn.Module], runs: int) -> dict[str, dict[str, Any]]:
    """Each model's `PART` on this host, all timed in the same interleaved rounds (run i of every
    model shares the machine's load of that moment): at one thread the runner thread's CPU time,
    which leaves out time the core spent on other processes, with the per-round ratio to the
    design; at two threads wall time (CPU time would add both threads up)."""
    from compress.bench.host import measure as measure_on_host

    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, model in enumerate(models.values()):
            part = next(p for p in family.parts(model) if p.name == PART)
            files.append(export_onnx(part, Path(tmp) / f"{i}.onnx"))
        one = [r["cpu_times_ms"] for r in measure_on_host(files, 1, warmup=3, runs=runs, top=0, interleave=True)]
        two = [r["times_ms"] for r in measure_on_host(files, 2, warmup=3, runs=runs, top=0, interleave=True)]
    load.append(os.getloadavg()[0])
    design = one[list(models).index(f"{DESIGN} (unpruned)")]
    return {
        label: {
            PART: {"1": float(np.median(a)), "2": float(np.median(b))},
            "vs_design_1_thread": asdict(paired(a, design)),
            "load_average": load,  # the 1-minute load average before and after the timings
        }
        for label, a, b in zip(models, one, two)
    }


def trained(spec: TeacherTraining, label: str, model: torch.nn.Module) -> dict[str, Any]:
    """A candidate trained and scored: one worker process's job, at one torch thread."""
    torch.set_num_threads(1)
    return measure(get_family(FAMILY), label, model, True, spec)


def run(steps: int, batch_size: int, runs: int, samples: int, seeds: list[int], jobs: int) -> dict[str, Any]:
    start = time.perf_counter()
    family = get_family(FAMILY)
    spec = TeacherTraining(
        family=FAMILY,
        config=DESIGN,
        steps=steps,
        batch_size=batch_size,
        lr=2e-3,
        train_samples=samples,
        eval_batches=8,
    )
    built = {seed: candidates(family, seed) for seed in seeds}
    first = built[seeds[0]]
    to_train = [i for i, (_, _, train) in enumerate(first) if train]
    # Training is nearly all of the time and each run is independent: one process per (seed, candidate),
    # `jobs` at once, each at one thread (no communication, unlike data-parallel training of one model).
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {
            (seed, i): pool.submit(trained, spec.model_copy(update={"seed": seed}), *built[seed][i][:2])
            for seed in seeds
            for i in to_train
        }
        rows = {key: future.result() for key, future in futures.items()}
    # Host timings once, after training (the machine to themselves), with the first seed's models: the
    # architecture sets them, not the weights. The untrained candidates are listed with them, costs only.
    for row in rows.values():
        row.update(host_ms=None, host_vs_design=None, host_load_average=None)
    by_seed = [[rows[s, i] for i in to_train] for s in seeds]
    if runs:
        by_seed[0] = [rows.get((seeds[0], i)) or measure(family, *first[i], spec) for i in range(len(first))]
        host = host_latency(family, {label: model for label, model, _ in first}, runs)
        for row in by_seed[0]:
            timing = host[row["label"]]
            row["host_ms"] = {PART: timing[PART]}
            row["host_vs_design"] = timing["vs_design_1_thread"]
            row["host_load_average"] = timing["load_average"]
    return {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m compress.bench.architectures "
        f"--steps {steps} --batch-size {batch_size} --seeds {' '.join(map(str, seeds))}",
        "part": PART,
        "training": {**spec.model_dump(exclude={"family", "config", "init", "weights", "seed"}), "weights": WEIGHTS},
        "seeds": [{"seed": s, "candidates": c} for s, c in zip(seeds, by_seed)],
        "wall_s": time.perf_counter() - start,
        "cpus": os.cpu_count(),
        "jobs": jobs,
    }


def _scores(q: dict[str, float] | None) -> str:
    return f"{q['l1']:.4f} | {q['psnr']:.2f} | {q['ssim']:.4f}" if q else "not trained | | "


def _vs_design(c: dict[str, Any]) -> str:
    r = c["host_vs_design"]
    return f"{r['ratio']:.2f}x ({r['low']:.2f}-{r['high']:.2f})"


def markdown(res: dict[str, Any]) -> str:
    t, part = res["training"], res["part"]
    first, *others = res["seeds"]
    timed = [c for c in first["candidates"] if c["host_ms"]]
    load = [x for c in timed for x in c["host_load_average"]]
    lines = [
        "# FOMM students at 256x256: quality at equal latency, predicted and measured",
        "",
        f"Generated by `{res['command']}` on {res['created_utc']}; raw numbers in docs/architectures.json. "
        f"The command took {res['wall_s'] / 60:.0f} minutes on {res['cpus']} CPUs, training {res['jobs']} "
        "candidates at once.",
        "",
        f"Each candidate was trained from scratch on synthetic 256x256 clips with the FOMM objective "
        f"(reconstruction + equivariance, vs ground truth; no teacher), {t['steps']} steps of batch "
        f"{t['batch_size']}, lr {t['lr']}, then scored on {t['eval_batches'] * t['batch_size']} held-out clip "
        "pairs; the seed sets the initial weights, the training clips and their order and the held-out clips. "
        "iPhone 8 figures are predicted by the cost model (`profile:iphone8`); a model at its floor has every "
        "prunable layer pruned to 1 % of its channels (what pruning cannot remove; fixed ms is its prediction). "
        f"Host figures are measured (onnxruntime, {part} only, every candidate in the same interleaved rounds, "
        "median; one thread: the runner thread's CPU time, two threads: wall time; the ratio to the design is "
        "the median of the per-round ratios, quartiles in brackets; the host's 1-minute load average around "
        f"the timings was {min(load):.1f}-{max(load):.1f}).",
        "",
        f"Seed {first['seed']}:",
        "",
        "| candidate | kp detector params | generator params | int8 MB | "
        f"{part} iPhone 8 ms (fixed) | kp_detector iPhone 8 ms | {part} host ms 1 / 2 threads "
        "| host vs design, 1 thread | L1 | PSNR dB | SSIM |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in first["candidates"]:
        frame, kp, ms = c["iphone8"][part], c["iphone8"]["kp_detector"], c["host_ms"][part]
        lines.append(
            f"| {c['label']} | {c['params']['kp_detector']:,} | {c['params']['generator']:,} | {c['int8_mb']:.2f} | "
            f"{frame['predicted_ms']:.1f} ({frame['fixed_ms']:.1f}) | {kp['predicted_ms']:.1f} | "
            f"{ms['1']:.1f} / {ms['2']:.1f} | {_vs_design(c)} | {_scores(c['quality'])} |"
        )
    if others:
        lines += [
            "",
            "Every seed, the trained candidates (the pruned baseline's channels follow its seed's initial weights):",
            "",
            f"| seed | candidate | generator params | {part} iPhone 8 ms | L1 | PSNR dB | SSIM |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in res["seeds"]:
            for c in (c for c in run["candidates"] if c["quality"]):
                lines.append(
                    f"| {run['seed']} | {c['label']} | {c['params']['generator']:,} | "
                    f"{c['iphone8'][part]['predicted_ms']:.1f} | {_scores(c['quality'])} |"
                )
    gains = [design_gain(run) for run in res["seeds"]]
    lines += [
        "",
        f"At equal predicted iPhone 8 ms, PSNR of {DESIGN} minus the pruned {BASELINE}, per seed: "
        + ", ".join(f"{g:+.2f} dB" for g in gains)
        + f" (mean {sum(gains) / len(gains):+.2f} dB).",
        "",
        measured_summary(timed),
    ]
    return "\n".join(lines) + "\n"


def measured_summary(timed: list[dict[str, Any]]) -> str:
    """What the host timings say about equal latency: the pruned baseline against the design, and
    whether any width of the baseline reaches the design's measured time (its floor does not)."""
    by_label = {c["label"]: c for c in timed}
    pruned = next(c for label, c in by_label.items() if label.startswith(f"{BASELINE} latency-pruned"))
    floor = by_label[f"{BASELINE} at its floor"]
    design_ms = by_label[f"{DESIGN} (unpruned)"]["host_ms"][PART]["1"]
    verdict = (
        "slower than the design beyond the rounds' noise: no pruning of the baseline reaches the design's "
        "measured time on this host"
        if Comparison(**floor["host_vs_design"]).slower
        else "not slower than the design beyond the rounds' noise: a pruned baseline could reach its time"
    )
    return (
        f"Measured on this host at one thread, the design runs its frame in {design_ms:.1f} ms; the baseline "
        f"pruned to equal predicted iPhone 8 ms takes {pruned['host_ms'][PART]['1']:.1f} ms "
        f"({_vs_design(pruned)} of the design), and the baseline at its floor "
        f"{floor['host_ms'][PART]['1']:.1f} ms ({_vs_design(floor)}), {verdict}."
    )


def design_gain(run: dict[str, Any]) -> float:
    """PSNR of the design minus the pruned baseline's, in one seed's run."""
    psnr = {c["label"].split(" ")[0]: c["quality"]["psnr"] for c in run["candidates"] if c["quality"]}
    return psnr[DESIGN] - psnr[BASELINE]


def pareto_png(res: dict[str, Any], path: Path) -> None:
    """PSNR against predicted iPhone 8 ms and measured host ms; dashed lines mark each design's floor,
    the fastest any pruning of it can be."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part, first = res["part"], res["seeds"][0]["candidates"]
    host = {c["label"]: c["host_ms"][part]["1"] for c in first if c["host_ms"]}
    floors = [c for c in first if "at its floor" in c["label"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (key, xlabel) in zip(axes, (("iphone8", "iPhone 8 ms, predicted"), ("host", "host ms, 1 thread"))):
        for i, label in enumerate(c["label"] for c in first if c["quality"]):
            runs = [c for run in res["seeds"] for c in run["candidates"] if c["label"] == label]
            ms = [c["iphone8"][part]["predicted_ms"] if key == "iphone8" else host[label] for c in runs]
            psnr = [c["quality"]["psnr"] for c in runs]
            ax.plot(ms, psnr, "o", color=f"C{i}", markersize=8, label=f"{label} ({len(runs)} seeds)")
        for c in floors:  # in its design's colour: the baseline's points come first
            x = c["iphone8"][part]["predicted_ms"] if key == "iphone8" else host[c["label"]]
            colour = "C0" if c["label"].split(" ")[0] == BASELINE else "C1"
            ax.axvline(x, color=colour, linestyle="--", linewidth=1, label=c["label"])
        ax.set_xlabel(f"{part}: {xlabel}")
        ax.set_ylabel("PSNR dB vs ground truth")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="training steps per candidate")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--samples", type=int, default=2048, help="training clip pairs drawn")
    parser.add_argument("--runs", type=int, default=30, help="host latency repeats per thread count (p50)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one comparison per seed")
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count(), help="candidates trained at once, one process and thread each"
    )
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="docs/ is written there")
    args = parser.parse_args(argv)
    res = run(args.steps, args.batch_size, args.runs, args.samples, args.seeds, args.jobs)
    docs = args.root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "architectures.json").write_text(json.dumps(res, indent=2) + "\n")
    (docs / "architectures.md").write_text(markdown(res))
    pareto_png(res, docs / "architectures.png")
    print(markdown(res))


if __name__ == "__main__":
    main()

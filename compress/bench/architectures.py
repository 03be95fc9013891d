"""`python -m compress.bench.architectures`: student designs compared at equal predicted latency.

    python -m compress.bench.architectures [--steps 1500] [--batch-size 4] [--seeds 0 1] [--root .]

The product-size FOMM student is judged where it ships, 256x256, and the official teacher cannot
be downloaded here, so candidates are compared directly against ground truth: each is trained
from scratch on the family's synthetic 256x256 clips with the family's own objective
(`Family.teacher_loss`: reconstruction and equivariance), same steps, batch, learning rate and
seed, then scored on held-out clips; the whole comparison is repeated for each seed (weights,
training data, order and held-out clips all follow it). Candidates:
- `mobile-256-v1`, the first preset, latency-pruned (structure only, before training) until its
  per-frame generator is predicted no slower on profile:iphone8 than the new design's: the way
  `fomm-mobile.yaml` had to prune it to reach 30 fps;
- `mobile-256`, the design built for the budget, unpruned.
`mobile-256-v1` unpruned is listed for its costs only. For each: parameters, int8 MB, fixed and
total predicted iPhone 8 ms per part (cost model, `compress inspect --latency`), host ms at 1 and
2 threads (measured, onnxruntime), and L1, PSNR, SSIM vs ground truth. Writes docs/architectures.md,
.json and .png under --root.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from compress.export import export_onnx
from compress.families.base import Family
from compress.families.registry import get_family
from compress.prune import Budget, fixed_costs, prune_to_budget
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
    """(label, untrained model, trained?): the baseline as it was (costs only: it is not at equal
    latency), the baseline pruned to the design's predicted per-frame ms, and the design."""
    torch.manual_seed(seed)
    design = family.build_student(copy.deepcopy(family.configs()[DESIGN])).eval()
    target_ms = fixed_costs(family, design)[PART]["predicted_ms"]
    baseline = family.build_student(copy.deepcopy(family.configs()[BASELINE])).eval()
    pruned = prune_to_budget(family, baseline, Budget(latency_ms={PART: target_ms})).model
    return [
        (f"{BASELINE} (unpruned)", baseline, False),
        (f"{BASELINE} latency-pruned to {target_ms:.1f} ms", pruned, True),
        (f"{DESIGN} (unpruned)", design, True),
    ]


def measure(
    family: Family, label: str, model: torch.nn.Module, train: bool, spec: TeacherTraining, runs: int
) -> dict[str, Any]:
    """A candidate's sizes, predicted costs, quality after training (when `train`) and, when `runs`,
    its host latency with the machine's load average around the timings."""
    from compress.results import latency

    size = family.model_input_size(model)
    weights = family.loss_weights(WEIGHTS, family.task.teacher_loss)
    torch.manual_seed(spec.seed)
    training = fit(family, model, spec, size, weights) if train else {"held_out": None}
    host, load = None, None
    if runs:
        load = [os.getloadavg()[0]]
        with tempfile.TemporaryDirectory() as tmp:
            files = {p.name: export_onnx(p, Path(tmp) / f"{p.name}.onnx") for p in family.parts(model)}
            host = latency(files, runs)["host_ms"]
        load.append(os.getloadavg()[0])
    params = {p.name: count_params(p.module) for p in family.prunables(model)}
    return {
        "label": label,
        "params": params,
        "int8_mb": round(size_mb(sum(params.values()), "int8"), 3),
        "iphone8": fixed_costs(family, model),
        "host_ms": host,
        "host_load_average": load,  # the 1-minute load average before and after the timings
        "training": training,
        "quality": training.pop("held_out"),
    }


def compare(family: Family, spec: TeacherTraining, runs: int) -> list[dict[str, Any]]:
    """Every candidate of one seed; `runs` 0 leaves out the host timings and the untrained baseline."""
    return [
        measure(family, label, model, train, spec, runs)
        for label, model, train in candidates(family, spec.seed)
        if train or runs
    ]


def run(steps: int, batch_size: int, runs: int, samples: int, seeds: list[int]) -> dict[str, Any]:
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
    # Host timings once, with the first seed: the architecture sets them, not the weights.
    by_seed = [compare(family, spec.model_copy(update={"seed": s}), runs if i == 0 else 0) for i, s in enumerate(seeds)]
    return {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m compress.bench.architectures "
        f"--steps {steps} --batch-size {batch_size} --seeds {' '.join(map(str, seeds))}",
        "part": PART,
        "training": {**spec.model_dump(exclude={"family", "config", "init", "weights", "seed"}), "weights": WEIGHTS},
        "seeds": [{"seed": s, "candidates": c} for s, c in zip(seeds, by_seed)],
    }


# -- reports ------------------------------------------------------------------------------------
def _scores(q: dict[str, float] | None) -> str:
    return f"{q['l1']:.4f} | {q['psnr']:.2f} | {q['ssim']:.4f}" if q else "not trained | | "


def markdown(res: dict[str, Any]) -> str:
    t, part = res["training"], res["part"]
    first, *others = res["seeds"]
    load = [x for c in first["candidates"] if c["host_load_average"] for x in c["host_load_average"]]
    lines = [
        "# FOMM students at 256x256: quality at equal predicted latency",
        "",
        f"Generated by `{res['command']}` on {res['created_utc']}; raw numbers in docs/architectures.json.",
        "",
        f"Each candidate was trained from scratch on synthetic 256x256 clips with the FOMM objective "
        f"(reconstruction + equivariance, vs ground truth; no teacher), {t['steps']} steps of batch "
        f"{t['batch_size']}, lr {t['lr']}, then scored on {t['eval_batches'] * t['batch_size']} held-out clip "
        "pairs; the seed sets the initial weights, the training clips and their order and the held-out clips. "
        "iPhone 8 figures are predicted by the cost model (`profile:iphone8`); fixed ms is the prediction with "
        "every prunable layer pruned to 1 % of its channels (what pruning cannot remove); host figures are "
        "measured (onnxruntime, p50; the host's 1-minute load average around the timings was "
        f"{min(load):.1f}-{max(load):.1f}).",
        "",
        f"Seed {first['seed']}:",
        "",
        "| candidate | kp detector params | generator params | int8 MB | "
        f"{part} iPhone 8 ms (fixed) | kp_detector iPhone 8 ms | {part} host ms 1 / 2 threads "
        "| L1 | PSNR dB | SSIM |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in first["candidates"]:
        frame, kp, ms = c["iphone8"][part], c["iphone8"]["kp_detector"], c["host_ms"][part]
        lines.append(
            f"| {c['label']} | {c['params']['kp_detector']:,} | {c['params']['generator']:,} | {c['int8_mb']:.2f} | "
            f"{frame['predicted_ms']:.1f} ({frame['fixed_ms']:.1f}) | {kp['predicted_ms']:.1f} | "
            f"{ms['1']:.1f} / {ms['2']:.1f} | {_scores(c['quality'])} |"
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
            f"PSNR of {DESIGN} minus the pruned {BASELINE}, per seed: "
            + ", ".join(f"{g:+.2f} dB" for g in gains)
            + f" (mean {sum(gains) / len(gains):+.2f} dB).",
        ]
    return "\n".join(lines) + "\n"


def design_gain(run: dict[str, Any]) -> float:
    """PSNR of the design minus the pruned baseline's, in one seed's run."""
    psnr = {c["label"].split(" ")[0]: c["quality"]["psnr"] for c in run["candidates"] if c["quality"]}
    return psnr[DESIGN] - psnr[BASELINE]


def pareto_png(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = res["part"]
    host = {c["label"]: c["host_ms"] for c in res["seeds"][0]["candidates"] if c["host_ms"]}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (key, xlabel) in zip(axes, (("iphone8", "iPhone 8 ms, predicted"), ("host", "host ms, 1 thread"))):
        for i, label in enumerate(c["label"] for c in res["seeds"][0]["candidates"] if c["quality"]):
            runs = [c for run in res["seeds"] for c in run["candidates"] if c["label"] == label]
            ms = [c["iphone8"][part]["predicted_ms"] if key == "iphone8" else host[label][part]["1"] for c in runs]
            psnr = [c["quality"]["psnr"] for c in runs]
            ax.plot(ms, psnr, "o", color=f"C{i}", markersize=8, label=f"{label} ({len(runs)} seeds)")
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
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="docs/ is written there")
    args = parser.parse_args(argv)
    res = run(args.steps, args.batch_size, args.runs, args.samples, args.seeds)
    docs = args.root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "architectures.json").write_text(json.dumps(res, indent=2) + "\n")
    (docs / "architectures.md").write_text(markdown(res))
    pareto_png(res, docs / "architectures.png")
    print(markdown(res))


if __name__ == "__main__":
    main()

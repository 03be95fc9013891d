"""`python -m compress.bench.architectures`: student designs compared at equal predicted latency.

    python -m compress.bench.architectures [--steps 1500] [--batch-size 4] [--root .]

The product-size FOMM student is judged where it ships, 256x256, and the official teacher cannot
be downloaded here, so candidates are compared directly against ground truth: each is trained
from scratch on the family's synthetic 256x256 clips with the family's own objective
(`Family.teacher_loss`: reconstruction and equivariance), same steps, batch, learning rate and
seed, then scored on held-out clips. Candidates:
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


def candidates(family: Family) -> list[tuple[str, torch.nn.Module, bool]]:
    """(label, untrained model, trained?): the baseline as it was (costs only: it is not at equal
    latency), the baseline pruned to the design's predicted per-frame ms, and the design."""
    torch.manual_seed(0)
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
    from compress.results import latency

    size = family.model_input_size(model)
    weights = family.loss_weights(WEIGHTS, family.task.teacher_loss)
    torch.manual_seed(spec.seed)
    training = fit(family, model, spec, size, weights) if train else {"held_out": None}
    with tempfile.TemporaryDirectory() as tmp:
        files = {p.name: export_onnx(p, Path(tmp) / f"{p.name}.onnx") for p in family.parts(model)}
        measured = latency(files, runs)
    params = {p.name: count_params(p.module) for p in family.prunables(model)}
    return {
        "label": label,
        "params": params,
        "int8_mb": round(size_mb(sum(params.values()), "int8"), 3),
        "iphone8": fixed_costs(family, model),
        "host_ms": measured["host_ms"],
        "training": training,
        "quality": training.pop("held_out"),
    }


def run(steps: int, batch_size: int, runs: int, samples: int) -> dict[str, Any]:
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
    return {
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python -m compress.bench.architectures --steps {steps} --batch-size {batch_size}",
        "part": PART,
        "training": {**spec.model_dump(exclude={"family", "config", "init", "weights"}), "weights": WEIGHTS},
        "candidates": [measure(family, *candidate, spec, runs) for candidate in candidates(family)],
    }


# -- reports ------------------------------------------------------------------------------------
def markdown(res: dict[str, Any]) -> str:
    t = res["training"]
    lines = [
        "# FOMM students at 256x256: quality at equal predicted latency",
        "",
        f"Generated by `{res['command']}` on {res['created_utc']}; raw numbers in docs/architectures.json.",
        "",
        f"Each candidate was trained from scratch on synthetic 256x256 clips with the FOMM objective "
        f"(reconstruction + equivariance, vs ground truth; no teacher), {t['steps']} steps of batch "
        f"{t['batch_size']}, lr {t['lr']}, seed {t['seed']}, then scored on "
        f"{t['eval_batches'] * t['batch_size']} held-out clip pairs. iPhone 8 figures are predicted by the "
        "cost model (`profile:iphone8`); fixed ms is the prediction with every prunable layer pruned to 1 % "
        "of its channels (what pruning cannot remove); host figures are measured (onnxruntime, p50).",
        "",
        "| candidate | kp detector params | generator params | int8 MB | "
        f"{res['part']} iPhone 8 ms (fixed) | kp_detector iPhone 8 ms | {res['part']} host ms 1 / 2 threads "
        "| L1 | PSNR dB | SSIM |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in res["candidates"]:
        frame, kp, host, q = (
            c["iphone8"][res["part"]],
            c["iphone8"]["kp_detector"],
            c["host_ms"][res["part"]],
            c["quality"],
        )
        scores = f"{q['l1']:.4f} | {q['psnr']:.2f} | {q['ssim']:.4f}" if q else "not trained | | "
        lines.append(
            f"| {c['label']} | {c['params']['kp_detector']:,} | {c['params']['generator']:,} | {c['int8_mb']:.2f} | "
            f"{frame['predicted_ms']:.1f} ({frame['fixed_ms']:.1f}) | {kp['predicted_ms']:.1f} | "
            f"{host['1']:.1f} / {host['2']:.1f} | {scores} |"
        )
    return "\n".join(lines) + "\n"


def pareto_png(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (key, xlabel) in zip(axes, (("iphone8", "iPhone 8 ms, predicted"), ("host", "host ms, 1 thread"))):
        for c in (c for c in res["candidates"] if c["quality"]):
            ms = c["iphone8"][res["part"]]["predicted_ms"] if key == "iphone8" else c["host_ms"][res["part"]]["1"]
            ax.plot([ms], [c["quality"]["psnr"]], "o", markersize=8, label=c["label"])
        ax.set_xlabel(f"{res['part']}: {xlabel}")
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
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="docs/ is written there")
    args = parser.parse_args(argv)
    res = run(args.steps, args.batch_size, args.runs, args.samples)
    docs = args.root / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "architectures.json").write_text(json.dumps(res, indent=2) + "\n")
    (docs / "architectures.md").write_text(markdown(res))
    pareto_png(res, docs / "architectures.png")
    print(markdown(res))


if __name__ == "__main__":
    main()

"""`compress teacher train`: train a teacher from scratch with its family's own objective.

No pretrained model can be downloaded here, so the demo recipes use small teachers trained on
the CPU on the family's synthetic data (`Family.teacher_loss`, e.g. FOMM's unsupervised
objective). The training spec is a small YAML of its own (recipes/teachers/*.yaml).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import Field, ValidationError

from compress.batches import collate, iterate_batches
from compress.checkpoints import portable, save_model
from compress.errors import CompressError
from compress.families.base import Family
from compress.families.loading import load_model
from compress.families.registry import get_family
from compress.recipe import Strict


class TeacherTraining(Strict):
    family: str
    config: str | dict[str, Any]
    init: str | None = Field(
        None, description="start from this teacher file (path relative to the spec): a second training phase"
    )
    data: str = "synthetic"
    seed: int = 0
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0)
    train_samples: int = Field(4096, ge=1)
    eval_batches: int = Field(8, ge=1)
    weights: dict[str, Any] = Field(
        default_factory=dict, description="the family's teacher-objective weights; omitted terms keep their defaults"
    )


def load_training(path: Path) -> TeacherTraining:
    try:
        return TeacherTraining.model_validate(yaml.safe_load(path.read_text()) or {})
    except FileNotFoundError:
        raise CompressError(f"{path}: teacher training spec not found") from None
    except ValidationError as exc:
        raise CompressError(
            f"{path}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None


def train_teacher(
    spec: TeacherTraining, base: Path = Path("."), progress: bool = True
) -> tuple[torch.nn.Module, dict[str, Any]]:
    family = get_family(spec.family)
    config = family.resolve_config(spec.config, "teacher")
    if family.task.teacher_loss is None:
        raise CompressError(
            f"family {spec.family}: no teacher-training objective; train its teacher elsewhere and load the checkpoint"
        )
    weights = family.loss_weights(spec.weights, family.task.teacher_loss)
    torch.manual_seed(spec.seed)
    if spec.init:
        model, meta = load_model(base / spec.init, family)
        if meta["config"] != config:
            raise CompressError(f"init {spec.init}: its config differs from the spec's config")
        model.train()
    else:
        model = family.build_teacher(config).train()
    return model, fit(family, model, spec, family.input_size(config), weights, progress)


def fit(
    family: Family,
    model: torch.nn.Module,
    spec: TeacherTraining,
    size: tuple[int, int],
    weights: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Train `model` in place with the family's own objective (Adam, cosine schedule) as `spec`
    says; the report has the held-out quality vs ground truth."""
    train = family.dataset(spec.data, "train", size, spec.seed, spec.train_samples)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, spec.steps)
    gen = torch.Generator().manual_seed(spec.seed)
    order = torch.randperm(len(train), generator=gen)
    t0, history = time.perf_counter(), []
    model.train()
    for step in range(spec.steps):
        idx = [int(order[(step * spec.batch_size + j) % len(train)]) for j in range(spec.batch_size)]
        loss, terms = family.teacher_loss(model, collate(train, idx), weights, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append({"step": step + 1, "loss": float(loss.detach()), **terms})
        if progress and (step + 1) % 25 == 0:
            rate = (step + 1) / (time.perf_counter() - t0)
            print(f"step {step + 1}/{spec.steps} loss {loss.item():.4f} {terms} {rate:.2f} steps/s", flush=True)
    model.eval()
    held_out = family.dataset(spec.data, "test", size, spec.seed, spec.eval_batches * spec.batch_size)
    quality = family.quality(model, iterate_batches(held_out, spec.batch_size))["vs_ground_truth"]
    return {
        "steps": spec.steps,
        "wall_s": round(time.perf_counter() - t0, 1),
        "final_loss": history[-1]["loss"],
        "held_out": quality,
    }


def train_command(path: Path, out: Path, steps: int | None) -> None:
    spec = load_training(path)
    if steps is not None:
        spec = spec.model_copy(update={"steps": steps})
    model, report = train_teacher(spec, base=path.parent)
    config = get_family(spec.family).resolve_config(spec.config, "teacher")
    command = (
        f"compress teacher train {portable(path)} --out {portable(out)}"  # provenance that names no machine's folders
    )
    save_model(
        out, model, family=spec.family, kind="teacher", config=config, extra={"source": command, "training": report}
    )
    print(json.dumps(report, indent=2))
    print(f"teacher written to {out}")

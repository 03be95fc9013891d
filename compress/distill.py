"""Knowledge distillation: train a family's student against its frozen teacher.

Scales out on torch.distributed (DDP; gloo on CPU, nccl on GPU) with the global batch
preserved: each of the world's ranks takes its slice of the same global batch that a single
process would draw, so 1 and N processes see the same data in the same order. Only rank 0
writes. State (model, adapters, optimizer, scheduler, step, RNG) is checkpointed every N steps
and on Ctrl-C outside the stage folder, so `--resume` continues the same loss curve.

`python -m compress.distill --spec SPEC.json` is the worker that `compress run --nproc N`
launches under torchrun.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset

from compress.batches import Memoized, collate, iterate_batches, recipe_dataset
from compress.checkpoints import atomic_path, load_raw, save_model
from compress.errors import CompressError
from compress.families.base import Family
from compress.families.loading import load_model
from compress.families.registry import get_family
from compress.recipe import DistillConfig, Recipe
from compress.run import RunContext, StageResult, data_hashes, measured_on, sha256_file

STATE_FILE = "distill-state.pt"


# -- data order -----------------------------------------------------------------------------
def global_batch_indices(step: int, batch_size: int, n: int, seed: int) -> list[int]:
    """Indices of the global batch at `step`: a fresh seeded permutation every epoch."""
    per_epoch = max(1, n // batch_size)
    epoch, k = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return perm[k * batch_size : (k + 1) * batch_size].tolist()


# -- feature matching -------------------------------------------------------------------------
class FeatureTap:
    """Captures named modules' outputs with forward hooks."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise CompressError(f"distill.feature_layers: no module named {missing[0]!r} in the {type(model).__name__}")
        self.out: dict[str, torch.Tensor] = {}
        self.hooks = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):
        def hook(_m: nn.Module, _i: Any, output: Any) -> None:
            self.out[name] = output[0] if isinstance(output, (tuple, list)) else output

        return hook


def build_adapters(
    student_feats: dict[str, torch.Tensor], teacher_feats: dict[str, torch.Tensor], pairs: dict[str, str]
) -> nn.ModuleDict:
    """1x1 convolutions from each student feature's channels to its teacher feature's channels."""
    return nn.ModuleDict(
        {
            s.replace(".", "__"): nn.Conv2d(student_feats[s].shape[1], teacher_feats[t].shape[1], 1)
            for s, t in pairs.items()
        }
    )


def feature_loss(
    adapters: nn.ModuleDict, s_feats: dict[str, torch.Tensor], t_feats: dict[str, torch.Tensor], pairs: dict[str, str]
) -> torch.Tensor:
    total = torch.zeros(())
    for s, t in pairs.items():
        mapped = adapters[s.replace(".", "__")](s_feats[s])
        target = t_feats[t]
        if mapped.shape[-2:] != target.shape[-2:]:
            mapped = nn.functional.interpolate(mapped, size=target.shape[-2:], mode="bilinear", align_corners=False)
        total = total + nn.functional.mse_loss(mapped, target)
    return total / max(1, len(pairs))


# -- optimisation -----------------------------------------------------------------------------
def make_optimizer(params: list[nn.Parameter], cfg: DistillConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: DistillConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "step":
        return 0.1 ** int(progress * 3)  # x0.1 at 1/3 and 2/3 of training
    return 1.0


# -- the training loop ------------------------------------------------------------------------
@dataclass
class DistillReport:
    steps: int
    final_loss: float
    wall_s: float
    steps_per_s: float
    resumed_from: int
    world_size: int
    history: list[dict[str, float]] = field(default_factory=list)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    family: Family,
    cfg: DistillConfig,
    train: Dataset,
    out_dir: Path | None,
    state_path: Path | None = None,
    tag: str = "",
    distributed: bool = False,
    progress: bool = True,
) -> DistillReport:
    """Train `student` in place against `teacher` on `cfg.device`. Rank 0 writes logs into `out_dir`.

    The student ends on the device it started on; the teacher is used where it is, or copied to
    the training device, so shared models (the run's cached teacher) never move.

    With `distributed`, the process group must already be initialised; each rank computes
    its slice of the global batch and DDP averages gradients across ranks.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if cfg.batch_size % world:
        raise CompressError(f"distill.batch_size {cfg.batch_size} must be divisible by the {world} processes")
    device = training_device(cfg.device)
    home = _device_of(student)
    torch.manual_seed(cfg.seed)
    teacher = placed(teacher, device).eval()  # its outputs are computed under no_grad
    family.adopt_teacher(student, teacher)
    student.to(device, memory_format=MEMORY_FORMATS[cfg.memory_format]).train()
    train = Memoized(train) if cfg.cache_data else train
    try:
        return _train_loop(
            student, teacher, family, cfg, train, out_dir, state_path, tag, distributed, progress, rank, world, device
        )
    finally:
        # The caller evaluates and saves where the student came from, in the layout safetensors stores.
        student.to(home, memory_format=torch.contiguous_format)


MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def training_device(name: str) -> torch.device:
    """cuda is the local rank's GPU under torchrun; cpu and mps are used as named."""
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if name == "cuda" else name)


def placed(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` on `device`: itself when it is there, else a copy, so a caller's module (the run's
    cached teacher) never moves under it."""
    return module if _device_of(module) == device else copy.deepcopy(module).to(device)


def _device_of(module: nn.Module) -> torch.device:
    tensor = next(module.parameters(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _train_loop(
    student: nn.Module,
    teacher: nn.Module,
    family: Family,
    cfg: DistillConfig,
    train: Dataset,
    out_dir: Path | None,
    state_path: Path | None,
    tag: str,
    distributed: bool,
    progress: bool,
    rank: int,
    world: int,
    device: torch.device,
) -> DistillReport:

    pairs = dict(cfg.feature_layers)
    s_tap = FeatureTap(student, list(pairs)) if pairs else None
    t_tap = FeatureTap(teacher, list(pairs.values())) if pairs else None
    adapters = nn.ModuleDict()
    if pairs:  # one dry forward to learn the channel counts the adapters map between
        probe = _to(collate(train, global_batch_indices(0, 1, len(train), cfg.seed)), device)
        with torch.no_grad():
            family.forward(teacher, probe)
            family.forward(student, probe)
        adapters = build_adapters(s_tap.out, t_tap.out, pairs).to(device)  # type: ignore[union-attr]

    trainable = Trainable(student, adapters)
    engine: nn.Module = trainable
    if distributed:
        engine = nn.parallel.DistributedDataParallel(
            trainable, device_ids=None if device.type == "cpu" else [device.index]
        )
    opt = make_optimizer([p for p in trainable.parameters() if p.requires_grad], cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))

    weights = family.loss_weights(cfg.loss)
    start_step = 0
    if state_path is not None and state_path.is_file():
        state = load_raw(state_path)
        if state.get("tag") == tag:
            trainable.load_state_dict(state["trainable"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start_step = int(state["step"])

    def save_state(step: int) -> None:
        if rank == 0 and state_path is not None:
            with atomic_path(state_path) as tmp:
                torch.save(
                    {
                        "tag": tag,
                        "step": step,
                        "trainable": trainable.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "rng": torch.get_rng_state(),
                    },
                    tmp,
                )

    log = _Log(out_dir if rank == 0 else None, start_step)
    cache: dict[int, dict[str, Any]] = {}
    local = cfg.batch_size // world
    t0, loss_value, step = time.perf_counter(), float("nan"), start_step
    bar = _progress(progress and rank == 0, cfg.steps, start_step)
    try:
        with bar if bar else nullcontext():
            for step in range(start_step, cfg.steps):
                idx = global_batch_indices(step, cfg.batch_size, len(train), cfg.seed)[
                    rank * local : (rank + 1) * local
                ]
                batch = _to(collate(train, idx), device)
                t_out, t_feats = _teacher_outputs(
                    family, teacher, batch, idx, cache if cfg.cache_teacher else None, t_tap
                )
                s_out = engine(batch, family)
                loss, terms = family.distill_loss(t_out, s_out, batch, weights)
                if pairs and cfg.feature_weight:
                    f_loss = feature_loss(adapters, s_tap.out, t_feats, pairs)  # type: ignore[union-attr]
                    loss = loss + cfg.feature_weight * f_loss
                    terms["features"] = float(f_loss.detach())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_value = _mean_across(loss.detach(), distributed)
                log.row(step + 1, loss_value, terms, sched.get_last_lr()[0])
                if bar:
                    rate = (step + 1 - start_step) / (time.perf_counter() - t0)
                    bar[0].update(bar[1], advance=1, description=f"distill loss {loss_value:.4f} {rate:.2f} steps/s")
                if (step + 1) % cfg.checkpoint_every == 0:
                    save_state(step + 1)
    except KeyboardInterrupt:
        save_state(step)
        raise
    for h in (s_tap.hooks if s_tap else []) + (t_tap.hooks if t_tap else []):
        h.remove()
    wall = time.perf_counter() - t0
    done = cfg.steps - start_step
    log.close()
    student.eval()
    return DistillReport(cfg.steps, loss_value, wall, done / wall if wall > 0 else 0.0, start_step, world, log.history)


class Trainable(nn.Module):
    """Student plus feature adapters; forward runs the family's forward so DDP can sync gradients."""

    def __init__(self, student: nn.Module, adapters: nn.ModuleDict):
        super().__init__()
        self.student = student
        self.adapters = adapters

    def forward(self, batch: dict[str, torch.Tensor], family: Family) -> dict[str, torch.Tensor]:
        return family.forward(self.student, batch)


def _teacher_outputs(
    family: Family,
    teacher: nn.Module,
    batch: dict[str, torch.Tensor],
    idx: list[int],
    cache: dict[int, dict[str, Any]] | None,
    tap: FeatureTap | None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Teacher outputs for a batch; with a cache, each sample's outputs are computed once."""
    if cache is not None and all(i in cache for i in idx):
        outs = [cache[i] for i in idx]
        stacked = {k: torch.stack([o[k] for o in outs]) for k in outs[0]}
        return {k: v for k, v in stacked.items() if not k.startswith("feat:")}, {
            k[5:]: v for k, v in stacked.items() if k.startswith("feat:")
        }
    with torch.no_grad():
        out = family.forward(teacher, batch)
    feats = dict(tap.out) if tap else {}
    if cache is not None:
        flat = {
            **{k: v for k, v in out.items() if isinstance(v, torch.Tensor)},
            **{f"feat:{k}": v for k, v in feats.items()},
        }
        for j, i in enumerate(idx):
            cache[i] = {k: v[j].detach() for k, v in flat.items()}
    return out, feats


def _mean_across(value: torch.Tensor, distributed: bool) -> float:
    if distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return float(value)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _progress(enabled: bool, total: int, done: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    )
    task = p.add_task("distill", total=total, completed=done)

    class _Bar(tuple):
        def __enter__(self):
            p.start()
            return self

        def __exit__(self, *exc):
            p.stop()

    return _Bar((p, task))


class _Log:
    """loss.csv and TensorBoard scalars (rank 0 only); a loss-curve PNG on close."""

    def __init__(self, out_dir: Path | None, start_step: int):
        self.out_dir = out_dir
        self.history: list[dict[str, float]] = []
        self.writer = None
        self.csv = None
        if out_dir is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start_step or None)
        self.path = out_dir / "loss.csv"
        if self.path.exists():  # resuming: drop rows logged after the checkpoint we continue from
            with open(self.path) as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
            self.path.unlink()
            for r in kept:
                self._append(r)

    def _append(self, row: dict[str, Any]) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def row(self, step: int, loss: float, terms: dict[str, float], lr: float) -> None:
        row = {"step": step, "loss": loss, "lr": lr, **terms}
        self.history.append(row)
        if self.writer is None:
            return
        for k, v in row.items():
            if k != "step":
                self.writer.add_scalar(f"distill/{k}", v, step)
        self._append(row)

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        plot_loss_curve(self.path, self.out_dir / "loss.png")  # type: ignore[operator]


def plot_loss_curve(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("distillation loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


# -- the stage --------------------------------------------------------------------------------
def resume_tag(cfg: DistillConfig, student_config: dict[str, Any], recipe: Recipe, teacher: Path) -> str:
    """Work left by an interrupted run is continued only under the same tag: the same settings,
    student, teacher and data, by content (a teacher replaced under the same name is another teacher)."""
    inputs = [
        cfg.model_dump(mode="json"),
        student_config,
        recipe.data.model_dump(mode="json"),
        data_hashes(recipe),
        sha256_file(teacher),
    ]
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def distill_stage(cfg: DistillConfig, ctx: RunContext) -> StageResult:
    """Distil the recipe's student from the teacher; artifacts: the student model and its quality."""
    family, recipe = ctx.family, ctx.recipe
    config = family.resolve_config(recipe.student.config, "student")
    teacher_rel = ctx.artifacts["teacher"]
    work = ctx.run_dir / ".distill-work"  # survives a crash, unlike the stage folder
    tag = resume_tag(cfg, config, recipe, ctx.path(teacher_rel))
    if not ctx.resume:
        _clear(work)
    work.mkdir(parents=True, exist_ok=True)
    student_path = work / "student.safetensors"

    if ctx.nproc > 1 and "WORLD_SIZE" not in os.environ:
        spec = {
            "teacher": str(ctx.path(teacher_rel)),
            "recipe": str(recipe.source),
            "recipe_json": recipe.to_json(),
            "config": config,
            "tag": tag,
            "work": str(work),
        }
        report = _launch_workers(spec, ctx.nproc, work)
    else:
        report = asdict_report(_train(family, recipe, cfg, config, ctx.teacher(), work, tag, progress=not ctx.quiet))
        if dist.is_initialized() and dist.get_rank() != 0:
            return StageResult(summary=f"rank {dist.get_rank()}: trained its share; rank 0 writes")
    student, _ = load_model(student_path, family)

    for name in ("loss.csv", "loss.png", "tensorboard"):
        src = work / name
        if src.is_dir():
            shutil.copytree(src, ctx.stage_dir / name)
        elif src.exists():
            shutil.copyfile(src, ctx.stage_dir / name)
    out = ctx.stage_dir / "student.safetensors"
    save_model(out, student, family=family.name, kind="student", config=config)
    eval_batches = list(
        iterate_batches(
            recipe_dataset(recipe, family, config, "eval", cfg.eval_batches * cfg.batch_size), cfg.batch_size
        )
    )
    quality = family.quality(student, eval_batches, teacher=ctx.teacher())
    on = measured_on(ctx, "the distilled student in torch, fp32", eval_batches)
    _clear(work)
    report.pop("history", None)
    return StageResult(
        artifacts={"model": ctx.rel(out), "quality": {**quality, "measured_on": on}},
        metrics={"training": report, "quality": quality},
        summary=(
            f"{report['steps']} steps, loss {report['final_loss']:.4f}, {family.task.headline(quality)}, "
            f"{report['steps_per_s']:.2f} steps/s x{report['world_size']}"
        ),
    )


def asdict_report(report: DistillReport) -> dict[str, Any]:
    return asdict(report)


def _train(
    family: Family,
    recipe: Any,
    cfg: DistillConfig,
    config: dict[str, Any],
    teacher: nn.Module,
    work: Path,
    tag: str,
    progress: bool,
) -> DistillReport:
    """One rank's share of the distillation; rank 0 saves the student into `work`."""
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    student = family.build_student(config)
    train = recipe_dataset(recipe, family, config, "train", cfg.train_samples)
    report = distill(student, teacher, family, cfg, train, work, work / STATE_FILE, tag, distributed, progress)
    if not distributed or dist.get_rank() == 0:
        save_model(work / "student.safetensors", student.cpu(), family=family.name, kind="student", config=config)
    if distributed:
        dist.barrier()
    return report


def _launch_workers(spec: dict[str, Any], nproc: int, work: Path) -> dict[str, Any]:
    import subprocess
    import sys

    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "compress.distill",
        "--spec",
        str(spec_path),
    ]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    if proc.returncode != 0:
        raise CompressError(f"distillation workers failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads((work / "report.json").read_text())


def _clear(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _worker(spec_path: str) -> None:
    """Entry point of one torchrun rank."""
    spec = json.loads(Path(spec_path).read_text())
    recipe = Recipe.model_validate({**spec["recipe_json"], "source": spec["recipe"]})
    family = get_family(recipe.family)
    cfg = recipe.stage("distill").config  # type: ignore[union-attr]
    teacher, _ = load_model(spec["teacher"], family)
    work = Path(spec["work"])
    report = _train(family, recipe, cfg, spec["config"], teacher, work, spec["tag"], progress=True)
    if dist.get_rank() == 0:
        (work / "report.json").write_text(json.dumps(asdict_report(report)))
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spec", required=True)
    _worker(parser.parse_args().spec)

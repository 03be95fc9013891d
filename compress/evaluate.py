"""`compress eval`: a model's quality in its family's task metrics vs ground truth, next to the trivial baseline.

MODEL is one of our model files, an official checkpoint (with --family), a run folder (its
current model) or a bundle. Bundles and ONNX files run through onnxruntime, not torch: what is
measured is what ships.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.errors import CompressError
from compress.families.base import Family, batch_size
from compress.families.registry import get_family


class OnnxPart:
    """A deployable part as an onnxruntime session: tensors in (the part's input order), tensors out."""

    def __init__(self, path: Path, threads: int = 2):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.shapes = {i.name: tuple(i.shape) for i in self.session.get_inputs()}

    def __call__(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {name: t.detach().numpy().astype(np.float32) for name, t in zip(self.inputs, tensors)}
        return tuple(torch.from_numpy(o) for o in self.session.run(None, feed))


def bundle_parts(bundle: Path) -> tuple[str, dict[str, Path]]:
    """(family, {part: onnx path}) of a bundle, preferring the shipped (int8 when present) ONNX file."""
    from compress.bundle.manifest import load_manifest

    manifest = load_manifest(bundle)
    files = {}
    for part in manifest.parts:
        onnx = part.files.get("onnx")
        if onnx is None:
            raise CompressError(f"{bundle}: part {part.name} has no ONNX file to evaluate with onnxruntime")
        files[part.name] = bundle / onnx.path
    return manifest.family, files


def run_parts(run_dir: Path) -> tuple[str, dict[str, Path] | None, Path]:
    """(family, ONNX files if the run exported, current model file) of a run folder."""
    summary = json.loads((run_dir / "summary.json").read_text())
    artifacts = summary["artifacts"]
    shipped = artifacts.get("shipped") or {}
    onnx = {part: run_dir / fmts["onnx"]["path"] for part, fmts in shipped.items() if "onnx" in fmts} or None
    from compress.checkpoints import read_model_meta

    model_file = run_dir / (artifacts.get("model") or artifacts["teacher"])
    return read_model_meta(model_file)["family"], onnx, model_file  # type: ignore[index]


def load_evaluable(
    target: Path, family: str | None, config: str | None, trust: bool = False
) -> tuple[Family, Any, str]:
    """(family, model usable by family.forward, how it runs) for any MODEL the command accepts."""
    if target.is_dir() and (target / "manifest.json").is_file():
        name, files = bundle_parts(target)
        fam = get_family(name)
        return fam, fam.pipeline({p: OnnxPart(f) for p, f in files.items()}), "onnxruntime (bundle)"
    if target.is_dir() and (target / "summary.json").is_file():
        name, onnx, model_file = run_parts(target)
        fam = get_family(name)
        if onnx:
            return fam, fam.pipeline({p: OnnxPart(f) for p, f in onnx.items()}), "onnxruntime (run)"
        target = model_file
    if target.suffix == ".onnx":
        raise CompressError(f"{target}: a single ONNX part is not the whole model; evaluate its bundle or run folder")
    from compress.inspect import load_for_inspect

    fam, model, _ = load_for_inspect(target, family, config, trust)
    return fam, model, "torch"


@torch.no_grad()
def evaluate(family: Family, model: Any, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """The task's metrics vs ground truth of the model and (when the task has one) of the trivial baseline."""
    batches = list(batches)
    samples = sum(batch_size(b) for b in batches)
    if not samples:
        raise CompressError("no evaluation samples: the data gave none under the family's evaluation protocol")
    report = {"model": family.quality(model, batches)["vs_ground_truth"] | {"samples": samples}}
    baselines = [family.baseline(b) for b in batches]
    if all(out is not None for out in baselines):
        scored = ((b, out, None) for b, out in zip(batches, baselines))
        report["baseline"] = family.mean_scores(scored)["vs_ground_truth"] | {"samples": samples}  # type: ignore[arg-type]
    return report


def evaluate_command(
    target: Path, data: str, family: str | None, config: str | None, limit: int, as_json: bool
) -> None:
    fam, model, runtime = load_evaluable(target, family, config)
    size = fam.model_input_size(model)
    result = evaluate(fam, model, fam.eval_batches(data, size, seed=0, limit=limit))
    report = {
        "model": str(target),
        "data": data,
        "runtime": runtime,
        "family": fam.name,
        "primary_metric": fam.task.primary.name,
        **result,
    }
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    metrics = fam.task.against("ground_truth")
    table = Table(title=f"{target} on {data} ({runtime}, {result['model']['samples']} samples)", title_justify="left")
    table.add_column("")
    for m in metrics:
        table.add_column(
            f"{m.name}{' ' + m.unit if m.unit else ''} ({'higher' if m.higher_is_better else 'lower'} is better)",
            justify="right",
        )
    for row in ("model", "baseline"):
        if row in result:
            table.add_row(row, *(f"{result[row][m.name]:.4f}" for m in metrics))
    Console().print(table)

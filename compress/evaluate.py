"""`compress eval`: reconstruction quality of a model vs ground truth, next to the trivial baseline.

MODEL is one of our model files, an official checkpoint (with --family), a run folder (its
current model) or a bundle. Bundles and ONNX files run through onnxruntime, not torch: what is
measured is what ships.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from compress.errors import CompressError
from compress.families.base import Family
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


def load_evaluable(target: Path, family: str | None, config: str | None, trust: bool = False) -> tuple[Family, Any, str]:
    """(family, model usable by family.forward, how it runs) for any MODEL the command accepts."""
    if target.is_dir() and (target / "manifest.json").is_file():
        name, files = bundle_parts(target)
        fam = get_family(name)
        return fam, fam.onnx_model({p: OnnxPart(f) for p, f in files.items()}), "onnxruntime (bundle)"
    if target.is_dir() and (target / "summary.json").is_file():
        name, onnx, model_file = run_parts(target)
        fam = get_family(name)
        if onnx:
            return fam, fam.onnx_model({p: OnnxPart(f) for p, f in onnx.items()}), "onnxruntime (run)"
        target = model_file
    if target.suffix == ".onnx":
        raise CompressError(f"{target}: a single ONNX part cannot reconstruct frames; evaluate its bundle or run folder")
    from compress.inspect import load_for_inspect

    fam, model, _ = load_for_inspect(target, family, config, trust)
    return fam, model, "torch"


def evaluate(family: Family, model: Any, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, dict[str, float]]:
    """Mean L1/PSNR/SSIM of the model and of the trivial baseline over the same frames."""
    from compress.metrics import frame_metrics

    sums: dict[str, dict[str, float]] = {"model": {}, "baseline": {}}
    frames = 0
    with torch.no_grad():
        for batch in batches:
            n = batch["driving"].shape[0] if "driving" in batch else len(next(iter(batch.values())))
            truth = family.ground_truth(batch)
            for row, pred in (("model", family.forward(model, batch)["prediction"]), ("baseline", family.baseline(batch))):
                for k, v in frame_metrics(pred, truth).items():
                    sums[row][k] = sums[row].get(k, 0.0) + v * n
            frames += n
    if not frames:
        raise CompressError("no evaluation frames: the data has no video with two or more frames")
    return {row: {k: v / frames for k, v in m.items()} | {"frames": frames} for row, m in sums.items()}


def evaluate_command(target: Path, data: str, family: str | None, config: str | None, videos: int, as_json: bool) -> None:
    fam, model, runtime = load_evaluable(target, family, config)
    size = fam.model_input_size(model)
    result = evaluate(fam, model, fam.eval_batches(data, size, seed=0, videos=videos))
    report = {"model": str(target), "data": data, "runtime": runtime, **result}
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{target} on {data} ({runtime}, {result['model']['frames']} frames)", title_justify="left")
    for col in ("", "L1", "PSNR dB", "SSIM"):
        table.add_column(col, justify="right")
    for row, label in (("model", "model"), ("baseline", "output = source frame")):
        m = result[row]
        table.add_row(label, f"{m['l1']:.4f}", f"{m['psnr']:.2f}", f"{m['ssim']:.4f}")
    Console().print(table)

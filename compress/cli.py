"""The `compress` command: a thin typer layer over the Python API.

Exit codes: 0 ok, 1 a target gate failed, 2 bad usage or input.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from compress.errors import CompressError

app = typer.Typer(
    help="Compress face-video teacher networks into mobile models and prove they run in real time.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bundle_app = typer.Typer(help="Verify, publish and pull model bundles.", no_args_is_help=True)
teacher_app = typer.Typer(help="Train the demo teacher.", no_args_is_help=True)
codec_app = typer.Typer(help="The keypoint bitstream of video-call bundles (docs/bitstream.md).", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")
app.add_typer(teacher_app, name="teacher")
app.add_typer(codec_app, name="codec")
out = Console()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _table(title: str, rows: list[dict[str, Any]], columns: list[str] | None = None) -> Table:
    columns = columns or (list(rows[0]) if rows else [])
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, justify="right" if rows and isinstance(rows[0].get(c), (int, float)) else "left")
    for r in rows:
        table.add_row(
            *("" if r.get(c) is None else f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r[c]) for c in columns)
        )
    return table


@app.command()
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML, or the name of a shipped recipe (see `compress recipes`)."),
    checkpoint: Path | None = typer.Option(None, help="Teacher checkpoint; overrides the recipe's teacher.checkpoint."),
    data: str | None = typer.Option(
        None, help="Video folder or file for every data split; overrides data.train/eval/calibration."
    ),
    out_dir: Path | None = typer.Option(None, "--out", help="Folder for run folders (default exported/runs)."),
    run_dir: Path | None = typer.Option(
        None,
        "--run-dir",
        help="Run folder to use (default: <out>/<recipe>-<hash>; with --resume, the recipe's latest run).",
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a recipe field, e.g. --set stages.distill.steps=200 (repeatable)."
    ),
    resume: bool = typer.Option(
        False,
        help=(
            "Continue the recipe's latest run: keep stages whose config, inputs and code are unchanged; "
            "rerun from the first that changed."
        ),
    ),
    until: str | None = typer.Option(None, help="Stop after this stage."),
    nproc: int = typer.Option(1, help="Distillation processes on this machine (torchrun/DDP)."),
    trust_checkpoint: bool = typer.Option(
        False, help="Allow checkpoints that need pickled code (only for files you trust)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON."),
    verbose: bool = typer.Option(
        False, help="Print every finding of stages that report per-node findings (lint), not a summary."
    ),
) -> None:
    """Run a recipe's stages: lint, distill, prune, export, quantize, profile, bundle."""
    from compress.recipe import load_recipe
    from compress.run import check_gates, run_recipe

    overrides = list(set_)
    if data:
        overrides += [f"data.{k}={data}" for k in ("train", "eval", "calibration")]
    r = load_recipe(recipe, overrides)
    summary = run_recipe(
        r,
        checkpoint=checkpoint,
        out=out_dir,
        resume=resume,
        run_dir=run_dir,
        until=until,
        trust_checkpoint=trust_checkpoint,
        nproc=nproc,
        quiet=as_json,
        verbose=verbose,
    )
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    if as_json:
        _print_json(summary.to_json())
    else:
        out.print(_table(f"run {summary.run_dir}", summary.stages, ["stage", "status", "wall_s", "summary"]))
        if summary.gates:
            out.print(
                _table("targets", [g.to_json() for g in summary.gates], ["name", "target", "value", "margin", "passed"])
            )
        if "bundle" in summary.artifacts:
            out.print(f"bundle: {summary.artifacts['bundle']}")
    check_gates(summary)


@app.command()
def recipes(
    folder: Path | None = typer.Option(None, help="Folder of recipe YAML files (default: the shipped recipes)."),
) -> None:
    """List recipes, one line each: `compress run NAME` runs a shipped one from any folder."""
    from compress.recipe import SHIPPED_RECIPES, list_recipes

    for path, desc in list_recipes(folder or SHIPPED_RECIPES):
        print(f"{path.stem if folder is None else path}  {desc}")


@app.command()
def inspect(
    target: Path = typer.Argument(..., help="A checkpoint, one of our model files, or a recipe."),
    family: str | None = typer.Option(
        None, help="Model family of a public checkpoint (default: recognised from its keys and shapes)."
    ),
    config: str | None = typer.Option(
        None, help="Named config of a public checkpoint (default: recognised, e.g. vox-256)."
    ),
    trust_checkpoint: bool = typer.Option(False, help="Allow checkpoints that need pickled code."),
    latency: str | None = typer.Option(
        None,
        help="A device profile (e.g. profile:iphone8): add each part's predicted ms and its fixed ms "
        "(predicted with every prunable layer pruned to 1 % of its channels: what pruning cannot remove).",
    ),
    student: bool = typer.Option(False, help="With a recipe: its student as built, not its teacher."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Parameters, fp32/int8 MB and GFLOPs per network, per deployable part and per module."""
    from compress.inspect import inspect_model, load_for_inspect

    if latency is not None and not latency.startswith("profile:"):
        raise CompressError(f"--latency {latency!r}: expected a device profile, e.g. profile:iphone8")
    fam, model, kind = load_for_inspect(target, family, config, trust_checkpoint, student)
    report = {"target": str(target), "kind": kind, **inspect_model(fam, model, latency=latency)}
    if as_json:
        _print_json(report)
        return
    out.print(
        f"{target}: {fam.name} {kind}, {report['params']:,} params, "
        f"{report['fp32_mb']} MB fp32, {report['int8_mb']} MB int8"
    )
    out.print(_table("networks", report["networks"]))
    out.print(_table("deployable parts", report["parts"]))
    out.print(_table("heaviest modules", report["top_modules"]))


@app.command()
def lint(
    target: Path = typer.Argument(..., help="A recipe or a checkpoint."),
    family: str | None = typer.Option(None, help="Model family of a checkpoint."),
    config: str | None = typer.Option(None, help="Named config of an official checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (every finding)."),
    verbose: bool = typer.Option(False, help="Print every finding, not a summary per part."),
) -> None:
    """List ops that won't export to ONNX or Core ML, stay float under int8, or run CPU-only in Core ML."""
    from compress.lint import lint_target, summarize_findings

    findings = lint_target(target, family=family, config=config)
    rows = [f.to_json() for f in findings]
    if as_json:
        _print_json(rows)
    elif verbose and rows:
        out.print(_table(f"lint {target}", rows))
    elif rows:
        out.print("\n".join(summarize_findings(findings)), highlight=False, soft_wrap=True)
        out.print(f"{len(rows)} findings; --verbose lists every one")
    else:
        out.print(f"{target}: no findings")
    if any(r.get("severity") == "error" for r in rows):
        raise typer.Exit(2)


@app.command()
def profile(
    target: Path = typer.Argument(..., help="An ONNX file, a Core ML package, a run folder or a bundle."),
    device: str = typer.Option("host", help="host | ssh://user@host[:port] | adb[:SERIAL] | coreml | profile:NAME"),
    threads: int = typer.Option(1, help="Threads."),
    warmup: int = typer.Option(5, help="Warm-up runs."),
    runs: int = typer.Option(30, help="Measured runs."),
    top: int = typer.Option(10, help="Rows of the per-op table."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
) -> None:
    """Latency p50/p90/p99 and fps, measured or predicted, with the heaviest ops."""
    from compress.bench.profile import profile_command

    profile_command(target, device, threads, warmup, runs, top, as_json)


@app.command("eval")
def evaluate(
    model: Path = typer.Argument(..., help="A checkpoint, a run folder or a bundle."),
    data: str = typer.Option("synthetic", help="'synthetic' or a video folder/file."),
    family: str | None = typer.Option(None, help="Model family of an official checkpoint."),
    config: str | None = typer.Option(None, help="Named config of an official checkpoint."),
    limit: int = typer.Option(
        8, "--limit", "--videos", help="Held-out items to evaluate (videos for video families, images otherwise)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Quality in the family's task metrics vs ground truth, next to the task's trivial baseline."""
    from compress.evaluate import evaluate_command

    evaluate_command(model, data, family, config, limit, as_json)


@app.command()
def families(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Model families: configs (teacher and student), task metrics (the first gates) and app flow."""
    from compress.families.registry import get_family, list_families

    rows = [get_family(name).describe() for name in list_families()]
    if as_json:
        _print_json(rows)
        return
    for r in rows:
        task = r["task"]
        metrics = ", ".join(
            f"{m['name']} ({'higher' if m['higher_is_better'] else 'lower'} is better)" for m in task["metrics"]
        )
        out.print(f"[bold]{r['name']}[/bold]: {r['description']}")
        out.print(f"  task ({task['flow']}): {task['description']}")
        out.print(f"  metrics: {metrics}")
        out.print(f"  teacher configs: {', '.join(r['configs']['teacher'])}")
        out.print(f"  student configs: {', '.join(r['configs']['student'])}")
        out.print(f"  loss terms: {', '.join(task['loss_terms'])}")


@app.command()
def call(
    clip: str = typer.Argument(
        ..., help="A video file, a folder of frames, or synthetic[:N] (held-out synthetic clip N)."
    ),
    bundle: Path = typer.Option(..., help="A video-call bundle folder."),
    out_dir: Path | None = typer.Option(
        None,
        "--out",
        help=(
            "Folder for call.kps, received.mp4, preview.mp4, preview.png and report.json "
            "(default exported/calls/<bundle>-<clip>)."
        ),
    ),
    frames: int | None = typer.Option(None, min=1, help="Only the first N frames (synthetic clips: default 250)."),
    classical: str = typer.Option(
        "x264-veryslow", help="Codec of the side-by-side: x264-veryslow, x264-zerolatency, x265-slow or svt-av1."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """A video call through a bundle: the stream's kbit/s, the received frames' quality, and a classical codec
    at that rate."""
    from compress.codec.call import run_call, summary

    report = run_call(clip, bundle, out_dir, frames, classical)
    if as_json:
        _print_json(report)
    else:
        out.print(summary(report), highlight=False, soft_wrap=True)


@codec_app.command("fit")
def codec_fit(
    bundle: Path = typer.Argument(..., help="A video-call bundle folder."),
    data: str = typer.Option(
        "synthetic", help="'synthetic' or a video folder (its train/ clips) to fit the tables on."
    ),
) -> None:
    """Fit the bundle's bitstream format (steps, tables) and write it into its manifest (the bundle stage does
    this)."""
    from compress.codec.fit import write_bitstream

    fmt = write_bitstream(bundle, data)
    steps = ", ".join(f"{t.key} {t.step:g}" for t in fmt.tensors)
    out.print(f"{bundle}: steps {steps}, a key every {fmt.key_interval} frames")


@bundle_app.command("verify")
def bundle_verify(path: Path = typer.Argument(..., help="Bundle folder.")) -> None:
    """Check the manifest schema, that every file is present and every checksum matches."""
    from compress.bundle.verify import verify_command

    verify_command(path)


@bundle_app.command("publish")
def bundle_publish(
    path: Path = typer.Argument(..., help="Bundle folder."), to: Path = typer.Option(..., help="Registry folder.")
) -> None:
    """Add a bundle to a registry (a folder servable by any static web server)."""
    from compress.bundle.registry import publish_command

    publish_command(path, to)


@bundle_app.command("pull")
def bundle_pull(
    source: str = typer.Argument(..., help="Registry folder or http(s) URL."),
    spec: str = typer.Argument(..., help="NAME or NAME@VERSION."),
    to: Path = typer.Option(Path("."), help="Folder to extract into."),
) -> None:
    """Download a bundle, verify its checksum and extract it safely."""
    from compress.bundle.registry import pull_command

    pull_command(source, spec, to)


@teacher_app.command("train")
def teacher_train(
    recipe: Path = typer.Argument(..., help="Teacher-training recipe (e.g. recipes/teachers/fomm-demo-teacher.yaml)."),
    out_path: Path = typer.Option(..., "--out", help="Where to write the trained teacher (.safetensors)."),
    steps: int | None = typer.Option(None, help="Override the number of training steps."),
) -> None:
    """Train a teacher from scratch on the family's data with the family's own objective (the demo teachers)."""
    from compress.teacher_train import train_command

    train_command(recipe, out_path, steps)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: errors become messages and exit codes, never tracebacks."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # coremltools' per-pass progress bars drown the run's own output
    try:
        app(args=argv, standalone_mode=False)
    except CompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted: completed stages are kept; rerun with --resume", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: unknown option, missing argument
        show = getattr(exc, "show", None)
        show() if show else print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)

"""Stage functions that exercise the runner itself (crashes, artifacts); not shipped stages."""

from __future__ import annotations

from compress.run import Gate, StageResult


def writes_then_crashes(cfg, ctx):
    (ctx.stage_dir / "half.bin").write_bytes(b"half-written")
    raise KeyboardInterrupt


def writes_artifact(cfg, ctx):
    out = ctx.stage_dir / "artifact.txt"
    out.write_text("payload")
    return StageResult(
        artifacts={"exported": {"net": {"onnx": ctx.rel(out)}}},
        metrics={"n": 1},
        gates=[Gate("size_mb", 3.0, 2.5, True)],
        summary="wrote",
    )


def passes(cfg, ctx):
    return StageResult(summary="ok")


def writes_outside_the_run(cfg, ctx):
    out = ctx.run_dir.parent / "published" / "model.txt"  # as the bundle stage writes exported/<name>-<version>
    out.parent.mkdir(exist_ok=True)
    out.write_text("bundle")
    return StageResult(summary="published", external=[out])

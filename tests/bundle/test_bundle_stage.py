"""The bundle stage reads a run's artifacts and writes exported/<name>-<version>/."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tiny_call import TinyFamily, TinyModel
from torch import nn

from compress.bundle import load_manifest, verify_bundle
from compress.bundle.stage import bundle_stage
from compress.checkpoints import save_model
from compress.errors import CompressError
from compress.families.generic import GenericFamily
from compress.families.task import Asset
from compress.recipe import BundleConfig, Recipe
from compress.run import RunContext


def _context(tiny, tmp_path: Path, artifacts: dict, fps_device: str = "host") -> RunContext:
    recipe = Recipe(
        name="tiny-call",
        version="2.0.1",
        family="tiny",
        description="A tiny call model.",
        stages=[{"export": {}}, {"profile": {}}, {"bundle": {}}],
        targets={"size_mb": 1.0, "fps": [{"device": fps_device, "part": "kp_detector", "fps": 30}]},
    )
    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    save_model(
        run_dir / "teacher.safetensors",
        TinyModel(),
        family="tiny",
        kind="teacher",
        config={},
        extra={"source": "teachers/tiny.pth"},
    )
    for name, path in tiny.onnx.items():
        shutil.copyfile(path, run_dir / "export" / f"{name}.onnx")
    stage_dir = run_dir / ".bundle.tmp"
    stage_dir.mkdir()
    return RunContext(
        recipe, TinyFamily(), run_dir, stage_dir, "bundle", {"teacher": "teacher.safetensors", **artifacts}, quiet=True
    )


def test_the_stage_bundles_the_exported_models_with_metrics_and_a_size_gate(
    tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exported = {name: {"onnx": f"export/{name}.onnx"} for name in tiny.onnx}
    latency = [
        {
            "file": "export/kp_detector.onnx",
            "part": "kp_detector",
            "device": "host",
            "source": "measured",
            "threads": 1,
            "p50_ms": 1.0,
            "p90_ms": 1.1,
            "p99_ms": 1.3,
            "fps": 1000.0,
        }
    ]
    quality = {
        "vs_ground_truth": {"l1": 0.1, "psnr": 20.0, "ssim": 0.7},
        "vs_teacher": {"l1": 0.02, "psnr": 30.0, "ssim": 0.9},
    }
    result = bundle_stage(
        BundleConfig(), _context(tiny, tmp_path, {"exported": exported, "latency": latency, "quality": quality})
    )

    assert result.artifacts == {"bundle": "exported/tiny-call-2.0.1"}
    bundle = tmp_path / "exported" / "tiny-call-2.0.1"
    assert verify_bundle(bundle)["ok"]
    m = load_manifest(bundle)
    assert (m.teacher.source, m.recipe.stages, m.description) == (
        "teachers/tiny.pth",
        ["export", "profile", "bundle"],
        "A tiny call model.",
    )
    assert {f.precision for p in m.parts for f in p.files.values()} == {"fp32"}
    assert m.metrics.latency[0].gate.passed and m.metrics.quality.vs_teacher["psnr"] == 30.0
    assert sorted(p.name for p in (bundle / "snippets").iterdir()) == [
        "VideoCall.kt",
        "video_call.py",
    ]  # no Core ML, no Swift
    [gate] = result.gates
    assert (gate.name, gate.target, gate.passed) == ("size_mb", 1.0, True)
    assert gate.value == round(m.size.per_format["onnx"] / 1e6, 4)


def test_a_prediction_whose_interval_straddles_the_target_says_so_in_the_gate_and_the_card(
    tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exported = {name: {"onnx": f"export/{name}.onnx"} for name in tiny.onnx}
    row = {"file": "export/kp_detector.onnx", "part": "kp_detector", "device": "profile:iphone8"}
    row |= {"source": "predicted", "threads": 1, "p50_ms": 30.0, "fps": 1000 / 30.0}
    row |= {"interval_ms": [20.0, 50.0], "extrapolated_share": 0.25}  # 50 and 20 fps: 30 fps lies between
    ctx = _context(tiny, tmp_path, {"exported": exported, "latency": [row]}, fps_device="profile:iphone8")
    bundle_stage(BundleConfig(), ctx)
    bundle = tmp_path / "exported" / "tiny-call-2.0.1"
    metrics = load_manifest(bundle).metrics
    (fps_gate,) = [g for g in metrics.gates if g.name.startswith("fps:")]
    assert fps_gate.passed and "straddles 30 fps" in fps_gate.detail and "25 %" in fps_gate.detail
    (latency,) = metrics.latency
    assert latency.gate.straddles and latency.interval_ms == [20.0, 50.0]
    assert "pass (>= 30 fps; the interval straddles it: undecided)" in (bundle / "MODEL_CARD.md").read_text()


def test_the_stage_ships_what_quantize_chose(tiny, tmp_path: Path) -> None:
    shipped = {name: {"onnx": {"path": f"export/{name}.onnx", "precision": "int8"}} for name in tiny.onnx}
    out = tmp_path / "custom"
    bundle_stage(BundleConfig(out=str(out)), _context(tiny, tmp_path, {"shipped": shipped}))
    assert {f.precision for p in load_manifest(out).parts for f in p.files.values()} == {"int8"}


def test_the_stage_needs_exported_models(tiny, tmp_path: Path) -> None:
    with pytest.raises(CompressError, match="add an export stage before bundle"):
        bundle_stage(BundleConfig(), _context(tiny, tmp_path, {}))


class GenericWithTable(GenericFamily):
    """The generic family plus an asset computed from the model, as a dense-correspondence family ships its
    vertex embeddings.
    """

    def assets(self, model: nn.Module) -> list[Asset]:
        return [Asset("head_bias", model.head.bias.detach().numpy(), "the output layer's bias")]


def test_the_stage_takes_flow_task_and_assets_from_the_family_and_the_run_s_current_model(
    restore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    family, run_dir = GenericWithTable(), tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    teacher_config, student_config = family.resolve_config(None, "teacher"), family.resolve_config(None, "student")
    save_model(
        run_dir / "teacher.safetensors",
        family.build_teacher(teacher_config),
        family="generic",
        kind="teacher",
        config=teacher_config,
    )
    student = family.build_student(student_config)
    nn.init.normal_(student.head.bias)  # not the teacher's, nor a fresh model's
    save_model(run_dir / "student.safetensors", student, family="generic", kind="student", config=student_config)
    shutil.copyfile(restore.onnx["net"], run_dir / "export" / "net.onnx")
    (run_dir / ".bundle.tmp").mkdir()
    recipe = Recipe(name="restore", version="1.0.0", family="generic", stages=[{"export": {}}, {"bundle": {}}])
    artifacts = {
        "teacher": "teacher.safetensors",
        "model": "student.safetensors",
        "exported": {"net": {"onnx": "export/net.onnx"}},
    }
    result = bundle_stage(
        BundleConfig(), RunContext(recipe, family, run_dir, run_dir / ".bundle.tmp", "bundle", artifacts, quiet=True)
    )

    bundle = tmp_path / "exported" / "restore-1.0.0"
    m = load_manifest(bundle)
    assert (m.flow, m.task.description, m.task.primary_metric) == ("on_device", family.task.description, "psnr")
    [asset] = m.assets
    assert (asset.path, asset.dtype, asset.shape) == ("assets/head_bias.bin", "float32", [3])
    np.testing.assert_array_equal(np.fromfile(bundle / asset.path, "<f4"), student.head.bias.detach().numpy())
    assert "on_device, 1 parts" in result.summary and "1 assets" in result.summary

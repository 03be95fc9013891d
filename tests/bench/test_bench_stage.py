"""The profile stage: latency rows for the run's models and the real-time (fps) gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compress.bench.stage import profile_stage
from compress.errors import CompressError, GateFailed
from compress.families.registry import get_family
from compress.recipe import ProfileConfig, Recipe, load_recipe
from compress.run import RunContext, check_gates, run_recipe


def context(tmp_path: Path, model: Path, fps_targets: list[dict], artifacts: dict) -> RunContext:
    recipe = Recipe(name="t", family="generic", stages=[{"profile": {}}], targets={"fps": fps_targets})
    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    shutil.copy(model, run_dir / "export" / "net.onnx")
    stage_dir = run_dir / ".profile.tmp"
    stage_dir.mkdir()
    return RunContext(recipe, get_family("generic"), run_dir, stage_dir, "profile", artifacts, quiet=True)


SHIPPED = {"shipped": {"net": {"onnx": {"path": "export/net.onnx", "precision": "fp32"}}}}


def test_each_device_and_thread_count_gives_a_row_of_the_shipped_file(tmp_path, tiny_onnx):
    ctx = context(tmp_path, tiny_onnx, [], SHIPPED)
    result = profile_stage(ProfileConfig(devices=["host", "profile:iphone8"], threads=[1, 2], warmup=1, runs=3), ctx)
    rows = result.artifacts["latency"]
    assert [(r["device"], r["threads"], r["source"]) for r in rows if r["device"] == "host"] == [
        ("host", 1, "measured"),
        ("host", 2, "measured"),
    ]
    assert [r["threads"] for r in rows if r["device"] == "profile:iphone8"] == [
        1
    ]  # the profile is calibrated for 1 thread only
    assert all(r["file"] == "export/net.onnx" and r["precision"] == "fp32" and r["format"] == "onnx" for r in rows)
    assert json.loads((ctx.stage_dir / "latency.json").read_text()) == rows


def test_an_fps_target_passes_with_its_margin_and_fails_when_out_of_reach(tmp_path, tiny_onnx):
    targets = [
        {"device": "profile:iphone8", "part": "net", "fps": 1.0},
        {"device": "profile:iphone8", "part": "net", "fps": 1e9},
    ]
    result = profile_stage(ProfileConfig(devices=[], threads=[1]), context(tmp_path, tiny_onnx, targets, SHIPPED))
    met, missed = result.gates
    assert (
        met.name == "fps net @ profile:iphone8"
        and met.passed
        and met.to_json()["margin"] == pytest.approx(met.value - 1.0)
    )
    assert not missed.passed and missed.value == met.value and "predicted" in missed.detail


def test_a_target_device_missing_from_the_stage_devices_is_profiled_too(tmp_path, tiny_onnx):
    targets = [{"device": "profile:iphone8", "part": "net", "fps": 1.0}]
    result = profile_stage(ProfileConfig(devices=[]), context(tmp_path, tiny_onnx, targets, SHIPPED))
    assert {r["device"] for r in result.artifacts["latency"]} == {"profile:iphone8"}


def test_a_target_naming_an_unknown_part_is_a_recipe_error(tmp_path, tiny_onnx):
    targets = [{"device": "profile:iphone8", "part": "generator.per_frame", "fps": 30}]
    with pytest.raises(CompressError, match=r"targets.fps\[0\].part: 'generator.per_frame'.*parts: net"):
        profile_stage(ProfileConfig(devices=[]), context(tmp_path, tiny_onnx, targets, SHIPPED))


def test_precision_int8_needs_a_quantize_stage(tmp_path, tiny_onnx):
    with pytest.raises(CompressError, match="add a quantize stage"):
        profile_stage(ProfileConfig(precision="int8"), context(tmp_path, tiny_onnx, [], SHIPPED))


def test_without_shipped_models_the_fp32_exports_are_profiled(tmp_path, tiny_onnx):
    ctx = context(tmp_path, tiny_onnx, [], {"exported": {"net": {"onnx": "export/net.onnx"}}})
    (row,) = profile_stage(ProfileConfig(devices=["profile:iphone8"]), ctx).artifacts["latency"]
    assert (row["file"], row["precision"]) == ("export/net.onnx", "fp32")


@pytest.mark.slow
def test_a_run_with_a_missed_fps_target_fails_with_exit_code_1(write_recipe, tmp_path):
    path = write_recipe(
        [{"export": {"formats": ["onnx"]}}, {"profile": {"devices": ["host"], "runs": 3, "warmup": 1}}],
        targets={"fps": [{"device": "profile:iphone8", "part": "net", "fps": 1e9}]},
    )
    summary = run_recipe(load_recipe(path), out=tmp_path / "runs", quiet=True)
    (gate,) = summary.gates
    assert not gate.passed and gate.name == "fps net @ profile:iphone8"
    with pytest.raises(GateFailed) as err:
        check_gates(summary)
    assert err.value.exit_code == 1

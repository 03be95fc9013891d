"""The stage runner: run folder, records, resume, and no half-written artifacts."""

from __future__ import annotations

import json

import pytest

from compress import run as runner
from compress.recipe import load_recipe
from compress.run import run_recipe
from tests.conftest import FAST_DISTILL


@pytest.fixture
def test_stages(monkeypatch):
    monkeypatch.setitem(runner.STAGES, "lint", "tests.stages_for_tests:passes")
    monkeypatch.setitem(runner.STAGES, "export", "tests.stages_for_tests:writes_artifact")
    monkeypatch.setitem(runner.STAGES, "bundle", "tests.stages_for_tests:writes_then_crashes")


def test_run_writes_a_folder_and_record_per_stage(write_recipe, tmp_path, test_stages):
    recipe = load_recipe(write_recipe([{"distill": FAST_DISTILL}]))
    summary = run_recipe(recipe, out=tmp_path / "runs", quiet=True)
    record = json.loads((summary.run_dir / "distill" / "record.json").read_text())
    assert record["config"]["steps"] == FAST_DISTILL["steps"]
    assert "teacher.safetensors" in record["inputs"]
    assert "distill/student.safetensors" in record["outputs"]
    assert record["wall_s"] > 0 and "torch" in record["packages"]
    assert summary.artifacts["model"] == "distill/student.safetensors"
    assert summary.run_dir.name.startswith("tiny-")


def test_resume_skips_unchanged_stages(write_recipe, tmp_path, test_stages):
    path = write_recipe([{"distill": FAST_DISTILL}, "export"])
    run_recipe(load_recipe(path), out=tmp_path, quiet=True)
    again = run_recipe(load_recipe(path), out=tmp_path, quiet=True, resume=True)
    assert [s["status"] for s in again.stages] == ["resumed", "resumed", "resumed"]
    assert again.artifacts["exported"]["net"]["onnx"] == "export/artifact.txt"


def test_resume_reruns_from_the_first_changed_stage(write_recipe, tmp_path, test_stages):
    path = write_recipe([{"distill": FAST_DISTILL}, "export"])
    first = run_recipe(load_recipe(path), out=tmp_path, quiet=True)
    changed = load_recipe(path, ["stages.export.opset=18"])
    again = run_recipe(changed, quiet=True, resume=True, run_dir=first.run_dir)
    assert [s["status"] for s in again.stages] == ["resumed", "resumed", "ran"]


def test_resume_reruns_quantize_when_the_profile_timing_it_reads_changes(write_recipe, tmp_path, monkeypatch):
    for stage in ("lint", "quantize", "profile"):
        monkeypatch.setitem(runner.STAGES, stage, "tests.stages_for_tests:passes")
    path = write_recipe(["quantize", "profile"])
    first = run_recipe(load_recipe(path), out=tmp_path, quiet=True)
    changed = load_recipe(path, ["stages.profile.runs=7"])
    again = run_recipe(changed, quiet=True, resume=True, run_dir=first.run_dir)
    assert [s["status"] for s in again.stages] == ["resumed", "ran", "ran"]


def test_resume_reruns_everything_made_by_other_code(write_recipe, tmp_path, test_stages, monkeypatch):
    path = write_recipe([{"distill": FAST_DISTILL}, "export"])
    first = run_recipe(load_recipe(path), out=tmp_path, quiet=True)
    monkeypatch.setattr(runner, "code_hash", lambda: "another version")  # e.g. a student preset changed
    again = run_recipe(load_recipe(path), quiet=True, resume=True, run_dir=first.run_dir)
    assert [s["status"] for s in again.stages] == ["ran", "ran", "ran"]


def test_deleted_output_outside_the_run_is_rebuilt_on_resume(write_recipe, tmp_path, test_stages, monkeypatch):
    monkeypatch.setitem(runner.STAGES, "bundle", "tests.stages_for_tests:writes_outside_the_run")
    path = write_recipe(["bundle"])
    run_recipe(load_recipe(path), out=tmp_path / "runs", quiet=True)
    (tmp_path / "runs" / "published" / "model.txt").unlink()
    again = run_recipe(load_recipe(path), out=tmp_path / "runs", quiet=True, resume=True)
    assert [s["status"] for s in again.stages] == ["resumed", "ran"]
    assert (tmp_path / "runs" / "published" / "model.txt").is_file()


def test_tampered_output_is_rebuilt_on_resume(write_recipe, tmp_path, test_stages):
    path = write_recipe(["export"])
    first = run_recipe(load_recipe(path), out=tmp_path, quiet=True)
    (first.run_dir / "export" / "artifact.txt").write_text("tampered")
    again = run_recipe(load_recipe(path), out=tmp_path, quiet=True, resume=True)
    assert [s["status"] for s in again.stages] == ["resumed", "ran"]


def test_interrupted_stage_keeps_completed_stages_and_leaves_no_half_artifact(write_recipe, tmp_path, test_stages):
    path = write_recipe(["export", "bundle"])
    with pytest.raises(KeyboardInterrupt):
        run_recipe(load_recipe(path), out=tmp_path, quiet=True)
    run_dir = next(tmp_path.glob("tiny-*"))
    assert (run_dir / "export" / "record.json").is_file()
    assert not (run_dir / "bundle").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".bundle")]


def test_until_stops_after_the_named_stage(write_recipe, tmp_path, test_stages):
    summary = run_recipe(load_recipe(write_recipe(["export", "bundle"])), out=tmp_path, quiet=True, until="export")
    assert [s["stage"] for s in summary.stages] == ["lint", "export"]


def test_gates_are_collected_in_the_summary(write_recipe, tmp_path, test_stages):
    summary = run_recipe(load_recipe(write_recipe(["export"])), out=tmp_path, quiet=True)
    assert summary.passed and summary.to_json()["gates"][0]["margin"] == pytest.approx(-0.5)


def test_lint_runs_first_even_when_the_recipe_omits_it(write_recipe, tmp_path, test_stages):
    summary = run_recipe(load_recipe(write_recipe(["export"])), out=tmp_path, quiet=True)
    assert [s["stage"] for s in summary.stages] == ["lint", "export"]


def test_cli_resume_after_a_set_override_reruns_only_the_changed_stage_and_those_after(write_recipe, tmp_path):
    from tests.test_cli import run_cli

    path = write_recipe(
        [{"distill": FAST_DISTILL}, {"export": {"formats": ["onnx"], "real_inputs": 1, "random_inputs": 1}}]
    )
    first = run_cli("run", str(path), "--out", str(tmp_path / "runs"), "--json")
    assert first.returncode == 0, first.stderr
    again = run_cli(
        "run", str(path), "--out", str(tmp_path / "runs"), "--resume", "--set", "stages.export.opset=18", "--json"
    )
    assert again.returncode == 0, again.stderr
    before, after = json.loads(first.stdout), json.loads(again.stdout)
    assert after["run_dir"] == before["run_dir"]
    assert [(s["stage"], s["status"]) for s in after["stages"]] == [
        ("lint", "resumed"),
        ("distill", "resumed"),
        ("export", "ran"),
    ]


def test_cli_run_dir_names_the_run_folder(write_recipe, tmp_path):
    from tests.test_cli import run_cli

    proc = run_cli("run", str(write_recipe(["lint"])), "--run-dir", str(tmp_path / "mine"), "--json")
    assert proc.returncode == 0, proc.stderr
    assert (
        json.loads(proc.stdout)["run_dir"] == str(tmp_path / "mine")
        and (tmp_path / "mine" / "lint" / "record.json").is_file()
    )

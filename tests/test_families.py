"""Families are discoverable: `compress families`, and checkpoints recognised by their keys and shapes."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from compress.errors import CompressError
from compress.families.fomm.teacher import FommModel
from compress.families.loading import identify_checkpoint, load_teacher_model
from compress.families.registry import get_family, list_families
from compress.recipe import load_recipe
from tests.families.fomm.test_fomm_loading import official_checkpoint
from tests.test_cli import run_cli


@pytest.fixture(scope="module")
def demo_teacher() -> FommModel:
    torch.manual_seed(0)
    return FommModel(get_family("fomm").resolve_config("demo-64", "teacher")).eval()


def test_families_json_lists_each_family_with_configs_metrics_and_flow():
    proc = run_cli("families", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert set(rows) == set(list_families())
    fomm = rows["fomm"]
    assert "vox-256" in fomm["configs"]["teacher"] and "mobile-256" in fomm["configs"]["student"]
    assert fomm["task"]["flow"] == "video_call" and fomm["task"]["primary_metric"] == fomm["task"]["metrics"][0]["name"]
    assert (
        fomm["task"]["metrics"][0]["name"] == "psnr"
        and fomm["task"]["metrics"][0]["unit"] == "dB"
        and fomm["task"]["metrics"][0]["higher_is_better"] is True
    )
    assert rows["generic"]["task"]["flow"] == "on_device"


def test_a_public_fomm_checkpoint_is_recognised_with_its_config(tmp_path, demo_teacher):
    path = official_checkpoint(demo_teacher, tmp_path / "demo-cpk.pth.tar")
    family, config = identify_checkpoint(path)
    assert (family.name, config) == ("fomm", "demo-64")


def test_inspect_without_family_reads_a_public_checkpoint(tmp_path, demo_teacher):
    path = official_checkpoint(demo_teacher, tmp_path / "demo-cpk.pth.tar", data_parallel=True)
    proc = run_cli("inspect", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["family"] == "fomm" and report["params"] == sum(p.numel() for p in demo_teacher.parameters())


def test_a_checkpoint_no_family_claims_exits_2_naming_what_each_family_looked_for(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    proc = run_cli("inspect", str(path))
    assert proc.returncode == 2
    for name in list_families():
        assert f"{name}: {get_family(name).checkpoint_layout}" in proc.stderr


def test_a_recipe_without_teacher_config_takes_the_config_its_checkpoint_claims(tmp_path, demo_teacher):
    path = official_checkpoint(demo_teacher, tmp_path / "demo-cpk.pth.tar")
    model, config = load_teacher_model(get_family("fomm"), path, None)
    assert config == get_family("fomm").resolve_config("demo-64", "teacher")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in demo_teacher.state_dict().items())


def test_loss_weights_are_validated_by_the_family_naming_key_path_and_line(write_recipe):
    path = write_recipe([{"distill": {"loss": {"output_l1": 1.0, "keypoints": 2.0}}}])
    with pytest.raises(CompressError, match=r"tiny.yaml:\d+: stages\[0\]\.distill\.loss\.keypoints: unknown key"):
        load_recipe(path)


def test_the_renamed_psnr_gate_key_is_refused_with_its_new_name(write_recipe):
    with pytest.raises(CompressError, match="max_psnr_drop_db was renamed max_quality_drop"):
        load_recipe(write_recipe([{"export": {}}, {"quantize": {"max_psnr_drop_db": 0.3}}]))


def test_quality_runs_the_teacher_once_per_batch_until_its_weights_change(demo_teacher, monkeypatch):
    family, teacher = get_family("fomm"), copy.deepcopy(demo_teacher)
    batches = list(family.eval_batches("synthetic", (64, 64), seed=0, limit=1))[:2]
    student = family.build_student(family.resolve_config("mobile-64", "student"))
    calls = []
    forward = type(family).forward
    monkeypatch.setattr(type(family), "forward", lambda self, m, b: calls.append(m) or forward(self, m, b))
    first = family.quality(student, batches, teacher=teacher)
    assert family.quality(student, batches, teacher=teacher) == first
    assert sum(m is teacher for m in calls) == len(batches)  # the second scoring reused the teacher's outputs
    with torch.no_grad():
        next(teacher.parameters()).mul_(0.5)
    family.quality(student, batches, teacher=teacher)
    assert sum(m is teacher for m in calls) == 2 * len(batches)

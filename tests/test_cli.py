"""The command line: help for every command, exit codes 0 / 1 / 2, JSON output."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from compress.cli import main

COMMANDS = [
    "run",
    "recipes",
    "families",
    "inspect",
    "lint",
    "profile",
    "eval",
    "bundle verify",
    "bundle publish",
    "bundle pull",
    "teacher train",
]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_explains_its_options(command, capsys):
    try:
        main([*command.split(), "--help"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    assert "Usage" in capsys.readouterr().out


def test_missing_recipe_exits_2_with_its_name(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "nope.yaml: recipe not found" in proc.stderr


def test_unknown_option_exits_2():
    assert run_cli("run", "x.yaml", "--bogus").returncode == 2


def test_invalid_recipe_exits_2_naming_the_line(write_recipe):
    proc = run_cli("run", str(write_recipe([{"export": {"opsett": 1}}])))
    assert proc.returncode == 2 and "stages[0].export.opsett: unknown key" in proc.stderr


def test_untrusted_pickle_exits_2_naming_the_flag(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"f": torch.nn.Linear(1, 1)}, path)  # a whole module: needs code to unpickle
    proc = run_cli("inspect", str(path), "--family", "generic")
    assert proc.returncode == 2 and "--trust-checkpoint" in proc.stderr


def test_inspect_json_reports_params_size_and_gflops(write_recipe):
    proc = run_cli("inspect", str(write_recipe(["export"])), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    net = report["parts"][0]
    assert net["name"] == "net" and net["params"] == report["params"] > 0
    assert report["int8_mb"] == pytest.approx(report["fp32_mb"] / 4, rel=0.01)
    assert net["gflops"] > 0 and report["top_modules"]


def test_inspect_with_a_device_profile_reports_each_parts_predicted_and_fixed_ms(write_recipe):
    proc = run_cli("inspect", str(write_recipe(["export"])), "--latency", "profile:iphone8", "--json")
    assert proc.returncode == 0, proc.stderr
    part = json.loads(proc.stdout)["parts"][0]
    assert part["device"] == "profile:iphone8" and 0 <= part["fixed_ms"] < part["predicted_ms"]


def test_inspect_student_of_a_recipe_reports_the_student_it_builds(write_recipe):
    recipe = write_recipe(["export"], student={"config": "student-64"})
    teacher = json.loads(run_cli("inspect", str(recipe), "--json").stdout)
    proc = run_cli("inspect", str(recipe), "--student", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["kind"] == "student" and teacher["kind"] == "teacher" and report["params"] != teacher["params"]


def test_inspect_student_of_a_checkpoint_exits_2_asking_for_a_recipe(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    proc = run_cli("inspect", str(path), "--student")
    assert proc.returncode == 2 and "--student needs a recipe" in proc.stderr


def test_inspect_latency_takes_only_a_device_profile(write_recipe):
    proc = run_cli("inspect", str(write_recipe(["export"])), "--latency", "host")
    assert proc.returncode == 2 and "profile:iphone8" in proc.stderr


def test_inspect_of_a_checkpoint_of_another_architecture_exits_2(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    proc = run_cli("inspect", str(path), "--family", "generic")
    assert proc.returncode == 2 and "missing keys" in proc.stderr and "unexpected keys (1): conv.weight" in proc.stderr


def test_recipes_lists_one_line_each(write_recipe, tmp_path):
    write_recipe(["export"], description="tiny")
    proc = run_cli("recipes", "--folder", str(tmp_path))
    assert proc.returncode == 0 and proc.stdout.count("\n") == 1

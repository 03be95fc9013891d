"""Op lint: unexportable ops are errors naming their module; int8-float and CPU-only ops are warnings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.checkpoints import save_model
from compress.errors import CompressError
from compress.export import coreml_convert, onnx_model
from compress.families import registry
from compress.families.base import Family, Part, TensorSpec
from compress.families.generic import TASK as GENERIC_TASK
from compress.families.registry import get_family
from compress.lint import Finding, lint_model, lint_part, lint_target, summarize_findings
from compress.recipe import load_recipe
from compress.run import run_recipe

SIZE = 8


class InvertJacobians(nn.Module):
    """Pools features into 2x2 matrices and inverts them with torch.inverse (no ONNX/Core ML export)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        jac = features.mean(dim=(2, 3)).view(1, -1, 2, 2) + torch.eye(2)
        return torch.inverse(jac)


class AffineWarp(nn.Module):
    """Warps features by affines from F.affine_grid (no ONNX opset 17 export, no Core ML lowering)."""

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        theta = features.mean(dim=(2, 3))[:, :6].view(-1, 2, 3)
        grid = F.affine_grid(theta, [1, features.shape[1], SIZE, SIZE], align_corners=False)
        return F.grid_sample(features, grid * 0.5, align_corners=False)


class MotionNet(nn.Module):
    """A family model: image -> encoder -> motion head (whose last layer is `head`)."""

    def __init__(self, head: str):
        super().__init__()
        self.head_kind = head
        self.encoder = nn.Conv2d(3, 8, 3, padding=1)
        self.motion = nn.Sequential(nn.Conv2d(8, 8, 1), InvertJacobians() if head == "inverse" else AffineWarp())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.motion(self.encoder(image)),)


class MotionFamily(Family):
    """A family whose only part is MotionNet (head "inverse" or "affine_grid" from the config)."""

    name = "test-motion"
    task = GENERIC_TASK

    def resolve_config(self, config: Any, role: str) -> dict[str, Any]:
        return dict(config) if isinstance(config, dict) else {"head": config or "inverse"}

    def build_teacher(self, config: dict[str, Any]) -> nn.Module:
        return MotionNet(config["head"])

    build_student = build_teacher

    def parts(self, model: nn.Module) -> list[Part]:
        out_shape = tuple(model(torch.zeros(1, 3, SIZE, SIZE))[0].shape)
        return [
            Part(
                "motion",
                "sender",
                "per_frame",
                model,
                [TensorSpec("image", (1, 3, SIZE, SIZE))],
                [TensorSpec("out", out_shape)],
            )
        ]


@pytest.fixture
def motion_family(monkeypatch: pytest.MonkeyPatch) -> Family:
    monkeypatch.setitem(registry._FAMILIES, MotionFamily.name, MotionFamily)
    return get_family(MotionFamily.name)


def _errors(findings: list[Finding], category: str) -> list[Finding]:
    return [f for f in findings if f.category == category and f.severity == "error"]


@pytest.mark.parametrize("head,op", [("inverse", "inv"), ("affine_grid", "affine_grid")])
def test_unexportable_op_is_an_error_naming_its_module(head: str, op: str) -> None:
    family = MotionFamily()
    model = family.build_teacher({"head": head})
    findings = lint_model(family, model)
    for category in ("onnx", "coreml"):
        errors = _errors(findings, category)
        assert [f.module_path for f in errors] == ["motion.1"], category
        assert op in errors[0].op and "test_lint.py" in errors[0].location
        assert "replace" in errors[0].hint or "grid explicitly" in errors[0].hint


@pytest.mark.parametrize("head", ["inverse", "affine_grid"])
def test_known_culprit_ops_really_fail_both_exporters(head: str) -> None:
    # The lint's KNOWN_CULPRITS table: these ops fail whatever the surrounding network.
    part = MotionFamily().parts(MotionNet(head))[0]
    with pytest.raises(Exception):  # noqa: B017 - each exporter raises its own exception types
        onnx_model(part, 17)
    with pytest.raises(Exception):  # noqa: B017
        coreml_convert(part, "iOS16", "fp32", frontend_only=True)


def test_op_without_lowering_is_blamed_from_the_exporter_message() -> None:
    class CumulativeMax(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            return (torch.cummax(x, dim=-1)[0],)

    net = nn.Sequential()
    net.add_module("scan", CumulativeMax())
    part = Part("scan", "receiver", "per_frame", net, [TensorSpec("x", (1, 3, 4, 4))], [TensorSpec("y", (1, 3, 4, 4))])
    findings = lint_part(part, net)
    assert {(f.category, f.module_path, f.op) for f in findings} == {
        ("onnx", "scan", "aten::cummax"),
        ("coreml", "scan", "aten::cummax"),
    }


def test_generic_family_lints_clean() -> None:
    family = get_family("generic")
    assert lint_model(family, family.build_student(family.resolve_config(None, "student"))) == []


def test_lint_leaves_the_model_in_training_mode() -> None:
    family = get_family("generic")
    model = family.build_student(family.resolve_config(None, "student")).train()
    lint_model(family, model)
    assert all(m.training for m in model.modules())


@pytest.mark.slow
def test_fomm_grid_sample_is_cpu_only_in_coreml_and_float_under_int8() -> None:
    family = get_family("fomm")
    findings = lint_model(family, family.build_student(family.resolve_config("mobile-64", "student")))
    assert not [f for f in findings if f.severity == "error"]
    warp = {(f.category, f.module_path) for f in findings if f.op == "aten::grid_sampler"}
    assert {
        ("coreml_cpu_only", "generator.dense_motion_network"),
        ("int8_float", "generator.dense_motion_network"),
    } <= warp
    assert ("coreml_cpu_only", "generator") in warp  # the warp of the source features in generator.animate


def _write_recipe(tmp_path: Path, family: str, stages: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: lint-test\nfamily: {family}\nstages: {stages}\n")
    return path


def test_run_stops_at_lint_before_training(tmp_path: Path, motion_family: Family) -> None:
    recipe = load_recipe(
        _write_recipe(tmp_path, motion_family.name, "[{lint: {}}, {distill: {steps: 1}}, {export: {}}]")
    )
    run_dir = tmp_path / "run"
    with pytest.raises(CompressError) as info:
        run_recipe(recipe, run_dir=run_dir, quiet=True)
    assert "motion.1" in str(info.value) and "onnx" in str(info.value)
    assert info.value.exit_code == 2
    assert not (run_dir / "distill").exists() and not (run_dir / "lint").exists()


def test_lint_stage_records_warnings_and_passes(tmp_path: Path) -> None:
    recipe = load_recipe(_write_recipe(tmp_path, "generic", "[{lint: {}}]"))
    summary = run_recipe(recipe, run_dir=tmp_path / "run", quiet=True)
    assert summary.stages[0]["stage"] == "lint" and "0 errors" in summary.stages[0]["summary"]


def test_lint_target_reads_a_recipe(tmp_path: Path) -> None:
    assert lint_target(_write_recipe(tmp_path, "generic", "[{export: {}}]")) == []


def test_lint_target_reads_our_checkpoint(tmp_path: Path, motion_family: Family) -> None:
    config = {"head": "inverse"}
    path = save_model(
        tmp_path / "m.safetensors",
        motion_family.build_teacher(config),
        family=motion_family.name,
        kind="teacher",
        config=config,
    )
    assert [f.module_path for f in _errors(lint_target(path), "onnx")] == ["motion.1"]


def test_lint_target_needs_a_family_for_foreign_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "official.pth"
    torch.save({"net": {"w": torch.zeros(1)}}, path)
    with pytest.raises(CompressError, match="--family"):
        lint_target(path)


def test_summary_gives_each_part_its_counts_and_worst_finding() -> None:
    findings = [Finding("gen", f"m{i}", "aten::sum", "int8_float", "warning", "hint w") for i in range(9)]
    findings += [
        Finding("gen", "warp", "aten::inverse", "onnx", "error", "hint e"),
        Finding("kp", "k", "aten::exp", "int8_float", "warning", "hint k"),
    ]
    assert summarize_findings(findings) == [
        "gen: 1 onnx, 9 int8_float; worst: error onnx warp: aten::inverse",
        "    hint e",
        "kp: 1 int8_float; worst: warning int8_float k: aten::exp",
        "    hint k",
    ]


def test_the_demo_recipe_lints_to_a_summary_of_at_most_15_lines() -> None:
    findings = lint_target(Path(__file__).parent.parent / "recipes" / "fomm-mobile-demo.yaml")
    assert len(findings) > 2 and len(summarize_findings(findings)) <= 15


def test_spectral_norm_is_named_per_module_and_its_weight_ops_are_not_blamed() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.utils.spectral_norm(nn.Conv2d(4, 4, 3, padding=1))).eval()
    part = Part(
        "net",
        "sender",
        "per_frame",
        net,
        [TensorSpec("image", (1, 3, SIZE, SIZE))],
        [TensorSpec("y", (1, 4, SIZE, SIZE))],
    )
    findings = lint_part(part, net)
    assert [(f.module_path, f.category, f.severity) for f in findings] == [("1", "spectral_norm", "warning")]
    assert "remove_spectral_norm" in findings[0].hint

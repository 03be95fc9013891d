"""Every registered family honours the contract the stages rely on, on its smallest configs.

Registering a family puts it under these tests: build, ONNX export with parity, Core ML
conversion, scoring against both references, one distillation step, one prune step, the
quantize stage's pipeline gate, a bundle of its flow that verifies, its description and its
loss schema.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from compress.batches import collate
from compress.bundle import verify_bundle
from compress.bundle.stage import BundleSource, ShippedFile, write_bundle
from compress.checkpoints import save_model
from compress.distill import distill
from compress.errors import CompressError
from compress.export import check_coreml_program, check_outputs, export_coreml, export_onnx, inspect_coreml, onnx_parity
from compress.families.base import Family
from compress.families.registry import get_family, list_families
from compress.prune import prune_model
from compress.quantize import PipelineGate
from compress.recipe import DistillConfig

# (teacher, student) configs of families whose defaults are too large for a test; others use their defaults.
SMALL_CONFIGS = {
    "fomm": ("demo-64", "mobile-64"),
    "facevid2vid": ("demo-64", "mobile-64"),
    "cse": ("demo-64", "mobile-64"),
}
ROLES = ("teacher", "student")


@dataclass
class Built:
    family: Family
    configs: dict[str, str]  # role -> config name
    models: dict[str, nn.Module]  # role -> model, eval mode
    batch: dict[str, torch.Tensor]  # two held-out samples
    onnx: dict[str, dict[str, Path]]  # role -> part -> fp32 ONNX file
    parity: dict[str, dict[str, Any]]  # role -> part -> onnx_parity result


@pytest.fixture(scope="module", params=list_families())
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The family's small teacher and student, seeded, and every part of both exported to ONNX."""
    family = get_family(request.param)
    configs = dict(zip(ROLES, SMALL_CONFIGS.get(family.name) or [_default_name(family, role) for role in ROLES]))
    torch.manual_seed(0)
    models = {
        "teacher": family.build_teacher(family.resolve_config(configs["teacher"], "teacher")).eval(),
        "student": family.build_student(family.resolve_config(configs["student"], "student")).eval(),
    }
    data = family.dataset("synthetic", "eval", family.model_input_size(models["student"]), 0, 2)
    batch = collate(data, [0, 1])
    out = tmp_path_factory.mktemp(f"contract-{family.name}")
    onnx: dict[str, dict[str, Path]] = {}
    parity: dict[str, dict[str, Any]] = {}
    for role, model in models.items():
        real = next(iter(family.calibration_inputs(model, [batch])))
        onnx[role], parity[role] = {}, {}
        for part in family.parts(model):
            path = onnx[role][part.name] = export_onnx(part, out / role / f"{part.name}.onnx")
            inputs = [part.example_inputs(0), tuple(t.detach() for t in real[part.name])]
            parity[role][part.name] = onnx_parity(part, path, inputs, rtol=1e-3, atol=1e-4)
    return Built(family, configs, models, batch, onnx, parity)


def _default_name(family: Family, role: str) -> str:
    default = family.resolve_config(None, role)
    return next(name for name in family.config_roles()[role] if family.resolve_config(name, role) == default)


@pytest.mark.slow
def test_every_part_exports_to_onnx_with_parity(built: Built) -> None:
    for role, model in built.models.items():
        assert list(built.parity[role]) == [p.name for p in built.family.parts(model)]
        for part, parity in built.parity[role].items():
            assert parity and all(row["passed"] for row in parity.values()), (role, part, parity)


@pytest.mark.slow
def test_student_parts_convert_to_coreml_programs_with_the_declared_interface(built: Built, tmp_path: Path) -> None:
    for part in built.family.parts(built.models["student"]):
        path = export_coreml(part, tmp_path / f"{part.name}.mlpackage")
        info = inspect_coreml(path)
        check_coreml_program(part, info, path)  # I/O names and shapes, ops the target defines
        assert [f["dtype"] for f in info["inputs"] + info["outputs"]] == ["FLOAT32"] * (
            len(part.inputs) + len(part.outputs)
        )


def test_quality_reports_every_task_metric_against_each_reference(built: Built) -> None:
    family, task = built.family, built.family.task
    scores = family.quality(built.models["student"], [built.batch], teacher=built.models["teacher"])
    for reference in ("ground_truth", "teacher"):
        values = scores[f"vs_{reference}"]
        assert {m.name for m in task.against(reference)} <= set(values), reference
        assert all(isinstance(v, float) and math.isfinite(v) for v in values.values()), values


def test_baseline_when_the_task_has_one_is_scored_like_a_model(built: Built) -> None:
    outputs = built.family.baseline(built.batch)
    if outputs is None:
        pytest.skip(f"{built.family.name}: no baseline")
    values = built.family.score(outputs, built.batch)["vs_ground_truth"]
    assert {m.name for m in built.family.task.against("ground_truth")} <= set(values)


def test_one_distillation_step_updates_the_student(built: Built) -> None:
    family, student = built.family, copy.deepcopy(built.models["student"])
    before = [p.detach().clone() for p in student.parameters()]
    train = family.dataset("synthetic", "train", family.model_input_size(student), 0, 2)
    cfg = DistillConfig(steps=1, batch_size=2, train_samples=2)
    report = distill(student, built.models["teacher"], family, cfg, train, None, progress=False)
    assert report.steps == 1 and math.isfinite(report.final_loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_one_prune_step_shrinks_each_network_and_keeps_the_parts_interfaces(built: Built) -> None:
    family, student = built.family, built.models["student"]
    networks = [p.name for p in family.prunables(student)]
    pruned = prune_model(family, student, {name: 0.25 for name in networks})
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in student.parameters())
    for part in family.parts(pruned):
        check_outputs(part)  # the declared outputs, in number and shape


def test_pipeline_gate_measures_no_drop_for_each_fp32_part(built: Built) -> None:
    family, parts = built.family, built.onnx["student"]
    torch_value = family.quality(built.models["student"], [built.batch])["vs_ground_truth"][family.task.primary.name]
    for name, path in parts.items():
        gate = PipelineGate(family, parts, name, [built.batch], max_drop=family.task.primary.default_max_drop or 0.0)
        assert gate.metric == f"{family.task.primary.name}_drop"
        assert gate.fp32_value == pytest.approx(
            torch_value, rel=1e-3, abs=1e-3
        )  # the exported pipeline scores like torch
        assert gate.measure(path) == 0.0 and gate.passes(0.0)


def test_a_bundle_of_the_student_follows_the_task_flow_and_verifies(built: Built, tmp_path: Path) -> None:
    family, student = built.family, built.models["student"]
    teacher = save_model(
        tmp_path / "teacher.safetensors",
        built.models["teacher"],
        family=family.name,
        kind="teacher",
        config=family.resolve_config(built.configs["teacher"], "teacher"),
    )
    source = BundleSource(
        name=f"{family.name}-contract",
        version="0.1.0",
        family=family.name,
        recipe_sha256="0" * 64,
        stages=["export", "bundle"],
        teacher=teacher,
        task=family.task,
        parts=family.parts(student),
        assets=family.assets(student),
        files={name: {"onnx": ShippedFile(path, "fp32")} for name, path in built.onnx["student"].items()},
        quality=family.quality(student, [built.batch], teacher=built.models["teacher"]),
        snippets=["python"],
    )
    manifest = write_bundle(tmp_path / "bundle", source)
    assert manifest.flow == family.task.flow and [a.name for a in manifest.assets] == [
        a.name for a in family.assets(student)
    ]
    assert set(manifest.metrics.quality.vs_ground_truth) == {m.name for m in family.task.against("ground_truth")}
    assert verify_bundle(tmp_path / "bundle")["files"] >= len(built.onnx["student"]) + len(manifest.assets)


def test_only_the_family_claims_its_teacher_state_dict(built: Built) -> None:
    state = built.models["teacher"].state_dict()
    assert built.family.claims(state) == built.configs["teacher"]
    assert [name for name in list_families() if name != built.family.name and get_family(name).claims(state)] == []


def test_description_is_json_and_the_primary_metric_is_the_first(built: Built) -> None:
    task = built.family.task
    description = json.loads(json.dumps(built.family.describe()))
    assert description["name"] == built.family.name and description["task"]["primary_metric"] == task.metrics[0].name
    assert task.primary is task.metrics[0] and task.primary.default_max_drop is not None
    assert set(built.family.config_roles()) == set(ROLES)


def test_loss_weights_default_to_the_schema_and_reject_unknown_terms(built: Built) -> None:
    family = built.family
    for schema in (family.task.loss, family.task.teacher_loss):
        if schema is None:
            continue
        assert family.loss_weights({}, schema) == schema().model_dump()
        with pytest.raises(CompressError, match="no_such_term"):
            family.loss_weights({"no_such_term": 1.0}, schema)


STAGE_MODULES = [
    "lint.py",
    "distill.py",
    "prune.py",
    "export.py",
    "quantize",
    "bench/stage.py",
    "bundle",
    "evaluate.py",
    "teacher_train.py",
    "results.py",
    "run.py",
    "inspect.py",
]


def test_no_stage_module_imports_a_family_or_names_a_family_metric() -> None:
    root = Path(__file__).parent.parent / "compress"
    files = [p for m in STAGE_MODULES for p in ([root / m] if m.endswith(".py") else sorted((root / m).glob("*.py")))]
    names = {m.name for f in list_families() for m in get_family(f).task.metrics}
    for path in files:
        text = path.read_text()
        assert not any(f"families.{f}" in text for f in list_families()), path
        assert not any(f'"{n}"' in text or f"'{n}'" in text for n in names), path

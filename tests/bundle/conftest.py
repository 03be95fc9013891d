"""Fixtures: the tiny video-call model and the generic family's on-device net, exported once per
session, and a fresh bundle of each per test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_call import Tiny, TinyModel, export_onnx, make_parts

from compress.bundle.stage import write_bundle
from compress.families.registry import get_family


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    parts = make_parts(TinyModel().eval())
    onnx = {p.name: export_onnx(p, root / f"{p.name}.onnx") for p in parts}
    teacher = root / "teacher.safetensors"
    save_file({"weight": torch.arange(16.0)}, str(teacher))
    return Tiny(parts, onnx, teacher)


@pytest.fixture
def bundle(tiny: Tiny, tmp_path: Path) -> Path:
    out = tmp_path / "exported" / "tiny-call-1.2.3"
    write_bundle(out, tiny.source())
    return out


@pytest.fixture(scope="session")
def restore(tiny: Tiny, tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    """The generic family's student: one part, "net", that an app runs on every frame."""
    root = tmp_path_factory.mktemp("restore")
    family = get_family("generic")
    torch.manual_seed(0)
    parts = family.parts(family.build_student(family.resolve_config(None, "student")))
    for part in parts:
        # the export keeps the module's mode: eval, so torch and ONNX both use BatchNorm's running stats
        part.module.eval()
    onnx = {p.name: export_onnx(p, root / f"{p.name}.onnx") for p in parts}
    return Tiny(parts, onnx, tiny.teacher, name="restore", family="generic", task=family.task)


@pytest.fixture
def app_bundle(restore: Tiny, tmp_path: Path) -> Path:
    out = tmp_path / "exported" / "restore-1.2.3"
    write_bundle(out, restore.source())
    return out

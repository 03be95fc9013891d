"""Fixtures: the tiny model exported once per session, and a fresh bundle of it per test."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compress.bundle.stage import write_bundle
from tiny_call import Tiny, TinyModel, export_onnx, make_parts


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

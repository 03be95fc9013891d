"""Tiny ONNX models for the latency harness tests, exported with torch in the test."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Sigmoid())

    def forward(self, x):
        return self.body(x)


def export_tiny(path: Path, size: int = 32) -> Path:
    with torch.no_grad():
        torch.onnx.export(TinyNet().eval(), (torch.rand(1, 3, size, size),), str(path), opset_version=17, dynamo=False)
    return path


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return export_tiny(tmp_path / "tiny.onnx")

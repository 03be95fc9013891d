"""Fixtures of the latency harness tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import TinyNet, export_onnx


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    """A 3x32x32 conv -> relu -> depthwise conv -> sigmoid network as ONNX."""
    return export_onnx(TinyNet(), (1, 3, 32, 32), tmp_path / "tiny.onnx")

"""Fixtures: a bitstream format made by hand, and the tiny video-call bundle with a fitted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from keypoint_streams import make_format
from safetensors.torch import save_file

from compress.bundle.stage import write_bundle
from compress.codec.fit import write_bitstream
from compress.codec.format import BitstreamFormat
from tests.bundle.tiny_call import Tiny, TinyModel, export_onnx, make_parts


@pytest.fixture(scope="session")
def fmt() -> BitstreamFormat:
    return make_format()


@pytest.fixture(scope="session")
def call_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny 32x32 video-call bundle of tests/bundle, with its bitstream format fitted."""
    root = tmp_path_factory.mktemp("call")
    torch.manual_seed(0)
    parts = make_parts(TinyModel().eval())
    onnx = {p.name: export_onnx(p, root / f"{p.name}.onnx") for p in parts}
    teacher = root / "teacher.safetensors"
    save_file({"weight": torch.arange(16.0)}, str(teacher))
    bundle = root / "tiny-call-1.2.3"
    write_bundle(bundle, Tiny(parts, onnx, teacher).source())
    write_bitstream(bundle, clips=2, frames=30)
    return bundle

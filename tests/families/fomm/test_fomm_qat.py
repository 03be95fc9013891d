"""Quantization-aware training of the FOMM student: every part through NNCF, run as int8 QDQ ONNX."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
import torch

from compress.batches import iterate_batches
from compress.evaluate import OnnxPart
from compress.families.registry import get_family
from compress.metrics import frame_metrics
from compress.quantize.onnx import compact_names
from compress.quantize.qat import export_int8, qat_finetune, quantize_parts
from compress.quantize.stage import part_data
from compress.recipe import DistillConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("c++") is None, reason="nncf compiles its CPU kernels: needs a C++ compiler"),
]


def test_qat_student_parts_run_as_int8_onnx_close_to_fp32(tmp_path: Path) -> None:
    fomm = get_family("fomm")
    config = fomm.resolve_config("mobile-64", "student")
    torch.manual_seed(0)
    student, teacher = fomm.build_student(config).eval(), fomm.build_student(config).eval()
    data = fomm.dataset("synthetic", "train", (64, 64), seed=0, samples=8)
    calibration = part_data(fomm, student, fomm.parts(student), iterate_batches(data, 4), [], 8)
    parts = quantize_parts(
        fomm, student, {n: [tuple(map(torch.from_numpy, s)) for s in d.calibration] for n, d in calibration.items()}
    )
    report = qat_finetune(
        fomm, parts, teacher, DistillConfig(steps=2, batch_size=2, lr=1e-5, train_samples=4), data, None
    )
    assert report.steps == 2

    runtime = {}
    for part in parts:
        model = export_int8(part)
        assert "FakeQuantize" not in {n.op_type for n in model.graph.node}
        assert any(i.data_type == onnx.TensorProto.INT8 for i in model.graph.initializer)
        path = tmp_path / f"{part.name}.onnx"
        onnx.save(compact_names(model), str(path))
        runtime[part.name] = OnnxPart(path)
    batch = next(iter(iterate_batches(fomm.dataset("synthetic", "test", (64, 64), seed=0, samples=2), 2)))
    with torch.no_grad():
        fp32 = fomm.forward(student, batch)["prediction"]
    int8 = fomm.forward(fomm.pipeline(runtime), batch)["prediction"]
    assert frame_metrics(int8, fp32)["psnr"] > 35.0  # a flat grey frame scores 23 dB here

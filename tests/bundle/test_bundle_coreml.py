"""Core ML packages ship as one deterministic zip each, and the Swift snippet loads them."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from compress.bundle import verify_bundle
from compress.bundle.stage import ShippedFile, write_bundle, zip_folder
from compress.families.base import Part

pytestmark = pytest.mark.slow  # importing coremltools takes ~10 s


def _to_coreml(part: Part, path: Path) -> Path:
    import coremltools as ct

    with warnings.catch_warnings():  # torch.jit.trace is deprecated but still what coremltools converts best
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(part.module, part.example_inputs())
    model = ct.convert(
        traced,
        inputs=[ct.TensorType(name=s.name, shape=s.shape) for s in part.inputs],
        outputs=[ct.TensorType(name=s.name) for s in part.outputs],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS16,
    )
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def packages(tiny, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("coreml")
    return {p.name: _to_coreml(p, root / f"export_{p.name}.mlpackage") for p in tiny.parts}


def test_mlpackages_are_zipped_deterministically_under_the_part_name(packages: dict[str, Path], tmp_path: Path) -> None:
    zip_folder(packages["kp_detector"], tmp_path / "a.zip", "kp_detector.mlpackage")
    zip_folder(packages["kp_detector"], tmp_path / "b.zip", "kp_detector.mlpackage")
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    names = zipfile.ZipFile(tmp_path / "a.zip").namelist()
    assert "kp_detector.mlpackage/Manifest.json" in names and names == sorted(names)


def test_a_bundle_with_coreml_lists_the_zips_and_gets_a_swift_snippet(
    tiny, packages: dict[str, Path], tmp_path: Path
) -> None:
    files = {
        name: {"onnx": ShippedFile(tiny.onnx[name], "fp32"), "coreml": ShippedFile(packages[name], "fp16")}
        for name in packages
    }
    manifest = write_bundle(tmp_path / "b", tiny.source(files=files, snippets=["swift", "kotlin", "python"]))
    coreml = manifest.part("generator.per_frame").files["coreml"]
    assert (coreml.path, coreml.precision) == ("models/generator.per_frame.mlpackage.zip", "fp16")
    assert set(manifest.size.per_format) == {"onnx", "coreml"}
    swift = (tmp_path / "b" / "snippets" / "VideoCall.swift").read_text()
    assert 'kpDetector = try loadModel("kp_detector")' in swift
    assert (
        'values.merge(try predict(generatorPerFrame, ["source_features": state["source_features"]!, '
        '"kp_source_value": call["kp_value"]!, "kp_driving_value": keypoints["kp_value"]!])) { _, new in new }' in swift
    )
    assert verify_bundle(tmp_path / "b")["files"] == 10


@pytest.mark.parametrize("precision", ["int8-weights", "w8a8"])
def test_every_core_ml_precision_quantize_ships_bundles_and_verifies(
    tiny, packages: dict[str, Path], tmp_path: Path, precision: str
) -> None:
    # W8A8 calibration predicts, so it is made on macOS only; the bundle takes the file whatever made it.
    files = {
        name: {"onnx": ShippedFile(tiny.onnx[name], "int8"), "coreml": ShippedFile(packages[name], precision)}
        for name in packages
    }
    manifest = write_bundle(tmp_path / "b", tiny.source(files=files))
    assert {p.files["coreml"].precision for p in manifest.parts} == {precision}
    assert verify_bundle(tmp_path / "b")["files"] > 0

"""The manifest: schema, wiring of inputs, metrics and gates, and the model card written from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from compress.bundle.manifest import FileEntry, load_manifest, wire_input
from compress.bundle.stage import latency_rows, write_bundle
from compress.errors import CompressError
from compress.families.base import Part, TensorSpec
from compress.recipe import FpsTarget
from compress.run import sha256_file


def test_manifest_lists_every_part_with_checksummed_files_and_tensors(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    assert data["schema_version"] == "1.2"
    assert [(p["name"], p["role"], p["cadence"]) for p in data["parts"]] == [
        ("kp_detector", "sender", "per_frame"),
        ("generator.per_call", "receiver", "per_call"),
        ("generator.per_frame", "receiver", "per_frame"),
    ]
    for part in data["parts"]:
        onnx = part["files"]["onnx"]
        assert onnx["sha256"] == sha256_file(bundle / onnx["path"])
        assert onnx["bytes"] == (bundle / onnx["path"]).stat().st_size
        assert onnx["precision"] == "fp32"
    image = data["parts"][0]["inputs"][0]
    assert {k: image[k] for k in ("name", "shape", "dtype", "layout", "value_range")} == {
        "name": "image",
        "shape": [1, 3, 32, 32],
        "dtype": "float32",
        "layout": "NCHW",
        "value_range": [0.0, 1.0],
    }


def test_inputs_are_wired_to_frames_and_part_outputs(bundle: Path) -> None:
    m = load_manifest(bundle)
    feeds = {(p.name, i.name): i.feed.model_dump(exclude_none=True) for p in m.parts for i in p.inputs}
    assert feeds == {
        ("kp_detector", "image"): {"source": "camera_frame"},
        ("generator.per_call", "source_image"): {"source": "reference_frame"},
        ("generator.per_frame", "source_features"): {
            "source": "part_output",
            "part": "generator.per_call",
            "output": "source_features",
            "frame": "reference_frame",
        },
        ("generator.per_frame", "kp_source_value"): {
            "source": "part_output",
            "part": "kp_detector",
            "output": "kp_value",
            "frame": "reference_frame",
        },
        ("generator.per_frame", "kp_driving_value"): {
            "source": "part_output",
            "part": "kp_detector",
            "output": "kp_value",
            "frame": "camera_frame",
        },
    }


def test_an_input_that_is_neither_an_output_nor_an_image_is_refused(tiny) -> None:
    odd = TensorSpec("pose", (1, 6), value_range=None)
    part = Part("head", "receiver", "per_frame", tiny.parts[0].module, [odd], [])
    with pytest.raises(CompressError, match="'head' input 'pose'"):
        wire_input(part, odd, tiny.parts + [part])


def test_a_per_call_part_cannot_take_a_per_frame_value(tiny) -> None:
    spec = TensorSpec("kp_driving_value", (1, 5, 2))
    part = Part("setup", "receiver", "per_call", tiny.parts[0].module, [spec], [])
    with pytest.raises(CompressError, match="changes every frame"):
        wire_input(part, spec, tiny.parts + [part])


def test_schema_errors_are_all_listed(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    data["version"] = "1.2"
    data["parts"][0]["files"]["onnx"]["sha256"] = "xyz"
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CompressError) as err:
        load_manifest(bundle)
    assert "version: Value error, version '1.2' is not semver" in str(err.value)
    assert "parts.0.files.onnx.sha256" in str(err.value)


def test_a_1_1_manifest_reads_as_1_2_without_intervals(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    for row in data["metrics"]["latency"]:
        row.pop("interval_ms", None), row.pop("extrapolated_share", None)
    (bundle / "manifest.json").write_text(json.dumps({**data, "schema_version": "1.1"}))
    manifest = load_manifest(bundle)
    assert manifest.schema_version == "1.2"
    assert all(row.interval_ms is None for row in manifest.metrics.latency)


def test_an_unknown_schema_version_is_refused(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps({**data, "schema_version": "2.0"}))
    with pytest.raises(CompressError, match="schema_version '2.0' is not supported"):
        load_manifest(bundle)


def test_a_1_0_manifest_is_refused_with_what_it_lacks(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    for key in ("flow", "task", "assets"):
        del data[key]
    (bundle / "manifest.json").write_text(json.dumps({**data, "schema_version": "1.0"}))
    with pytest.raises(
        CompressError,
        match=r"schema_version '1.0' is not supported .* it has no flow, task or assets; "
        r"rebuild it with the recipe's bundle stage",
    ):
        load_manifest(bundle)


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/passwd", "models/../../x", "manifest.json", ""])
def test_listed_paths_must_stay_inside_the_bundle(path: str) -> None:
    with pytest.raises(ValidationError):
        FileEntry(path=path, sha256="0" * 64, bytes=0)


def test_missing_quality_is_null_and_the_card_says_not_measured(tiny, tmp_path: Path) -> None:
    m = write_bundle(tmp_path / "b", tiny.source(quality=None))
    assert m.metrics.quality.vs_ground_truth is None and m.metrics.quality.vs_teacher is None
    saved = json.loads((tmp_path / "b" / "manifest.json").read_text())["metrics"]["quality"]
    assert saved == {"vs_ground_truth": None, "vs_teacher": None, "measured_on": None}
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert "Vs ground truth: not measured" in card and "Vs teacher: not measured" in card


def test_card_has_intended_use_metric_tables_limitations_and_provenance(bundle: Path) -> None:
    card = (bundle / "MODEL_CARD.md").read_text()
    for heading in ("## Intended use", "## Parts", "## Quality", "## Latency", "## Limitations", "## How it was made"):
        assert heading in card
    assert "|  | psnr (dB, higher is better) | l1 (lower is better) | ssim (higher is better) |" in card
    assert "| vs ground truth | 24 | 0.05 | 0.8 |" in card
    assert load_manifest(bundle).teacher.sha256 in card


def test_size_gate_fails_when_the_largest_format_exceeds_the_target(tiny, tmp_path: Path) -> None:
    m = write_bundle(tmp_path / "b", tiny.source(size_target_mb=0.001))
    gate = next(g for g in m.metrics.gates if g.name == "size_mb")
    assert gate.value == round(m.size.per_format["onnx"] / 1e6, 4)
    assert gate.passed is False and gate.target == 0.001


def test_latency_rows_carry_source_and_a_gate_verdict_per_device(tiny, tmp_path: Path) -> None:
    rows = latency_rows(
        [
            {
                "file": "export/kp_detector.onnx",
                "part": "kp_detector",
                "device": "host",
                "source": "measured",
                "threads": 1,
                "p50_ms": 2.0,
                "p90_ms": 2.5,
                "p99_ms": 3.0,
                "fps": 500.0,
            },
            {
                "file": "export/kp_detector.onnx",
                "part": "kp_detector",
                "device": "profile:iphone8",
                "source": "predicted",
                "threads": 1,
                "p50_ms": 50.0,
                "fps": 20.0,
            },
        ],
        {"export/kp_detector.onnx": ("onnx", "fp32", True)},
    )
    targets = [FpsTarget(device="profile:iphone8", part="kp_detector", fps=25)]
    m = write_bundle(tmp_path / "b", tiny.source(latency=rows, fps_targets=targets))
    host, phone = m.metrics.latency
    assert (host.source, host.gate, host.format, host.shipped) == ("measured", None, "onnx", True)
    assert (phone.source, phone.gate.target_fps, phone.gate.passed) == ("predicted", 25.0, False)
    fps_gate = next(g for g in m.metrics.gates if g.name == "fps:kp_detector@profile:iphone8")
    assert (fps_gate.value, fps_gate.passed) == (20.0, False)


def test_a_latency_row_without_a_valid_source_is_refused() -> None:
    with pytest.raises(CompressError, match="latency artifact row 0"):
        latency_rows([{"part": "kp_detector", "device": "host", "source": "guessed", "p50_ms": 1.0, "fps": 1.0}], {})


def test_a_feed_from_a_missing_part_output_is_a_schema_error(bundle: Path) -> None:
    data = json.loads((bundle / "manifest.json").read_text())
    data["parts"][2]["inputs"][1]["feed"]["output"] = "kp_gone"
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(
        CompressError, match=r"'kp_source_value' is fed by kp_detector.kp_gone, which the bundle does not have"
    ):
        load_manifest(bundle)


def test_quality_says_which_files_and_data_it_was_measured_on_in_manifest_and_card(tiny, tmp_path: Path) -> None:
    on = {
        "model": "the shipped ONNX files through onnxruntime (kp_detector int8)",
        "data": "synthetic (data.eval)",
        "samples": 16,
    }
    manifest = write_bundle(tmp_path / "b", tiny.source(quality={"vs_ground_truth": {"psnr": 24.0}, "measured_on": on}))
    assert manifest.metrics.quality.measured_on.model_dump() == on
    card = (tmp_path / "b" / "MODEL_CARD.md").read_text()
    assert (
        "Measured on the shipped ONNX files through onnxruntime (kp_detector int8), "
        "on synthetic (data.eval): 16 samples." in card
    )
    assert "quantize, when it ran, measures" not in card

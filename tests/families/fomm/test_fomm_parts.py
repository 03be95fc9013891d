"""The deployable parts: per-call / per-frame split, specs, ONNX and Core ML export."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from compress.errors import CompressError
from compress.families.base import Part
from compress.families.fomm.teacher import FommModel
from compress.families.registry import get_family
from compress.metrics import psnr

PART_NAMES = ["kp_detector", "generator.per_call", "generator.per_frame"]


def test_the_family_is_registered_as_fomm():
    assert type(get_family("fomm")).__name__ == "FommFamily"


def test_parts_split_sender_and_receiver_by_cadence(family, tiny_teacher):
    parts = {p.name: p for p in family.parts(tiny_teacher)}
    assert list(parts) == PART_NAMES
    assert (parts["kp_detector"].role, parts["kp_detector"].cadence) == ("sender", "per_frame")
    assert (parts["generator.per_call"].role, parts["generator.per_call"].cadence) == ("receiver", "per_call")
    assert (parts["generator.per_frame"].role, parts["generator.per_frame"].cadence) == ("receiver", "per_frame")


def io(part: Part) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    return {s.name: s.shape for s in part.inputs}, {s.name: s.shape for s in part.outputs}


def test_part_specs_carry_the_config_frame_size_and_the_feature_shape(family, tiny_teacher):
    parts = {p.name: p for p in family.parts(tiny_teacher)}
    assert io(parts["kp_detector"]) == ({"image": (1, 3, 32, 32)}, {"kp_value": (1, 4, 2), "kp_jacobian": (1, 4, 2, 2)})
    assert io(parts["generator.per_call"]) == ({"source": (1, 3, 32, 32)}, {"source_feature": (1, 16, 8, 8)})
    inputs, outputs = io(parts["generator.per_frame"])
    assert list(inputs) == [
        "source",
        "source_feature",
        "kp_source_value",
        "kp_source_jacobian",
        "kp_driving_value",
        "kp_driving_jacobian",
    ]
    assert outputs == {"prediction": (1, 3, 32, 32)}
    assert parts["kp_detector"].outputs[0].value_range == (-1.0, 1.0)


def test_without_jacobians_the_parts_drop_the_jacobian_io(family, tiny_config):
    tiny_config["common_params"]["estimate_jacobian"] = False
    names = [s.name for p in family.parts(FommModel(tiny_config).eval()) for s in (*p.inputs, *p.outputs)]
    assert not [n for n in names if "jacobian" in n]


def test_parts_chained_reproduce_the_family_forward(family, tiny_teacher, tiny_config, frames):
    source, driving = frames(tiny_config, seed=1), frames(tiny_config, seed=2)
    kp, per_call, per_frame = family.parts(tiny_teacher)
    with torch.no_grad():
        (feature,) = per_call.module(source)
        (prediction,) = per_frame.module(source, feature, *kp.module(source), *kp.module(driving))
        expected = family.forward(tiny_teacher, {"source": source, "driving": driving})
    torch.testing.assert_close(prediction, expected["prediction"], rtol=0, atol=0)


def test_building_parts_leaves_a_training_model_training(family, tiny_teacher):
    tiny_teacher.train()
    stats = tiny_teacher.generator.first.norm.running_mean.clone()
    family.parts(tiny_teacher)
    assert all(m.training for m in tiny_teacher.modules())
    assert torch.equal(tiny_teacher.generator.first.norm.running_mean, stats)


def test_random_example_jacobians_are_invertible(family, tiny_teacher):
    per_frame = family.parts(tiny_teacher)[2]
    for spec, x in zip(per_frame.inputs, per_frame.example_inputs(seed=3)):
        if spec.name.endswith("jacobian"):
            assert torch.linalg.det(x).abs().min() > 0.3


def export_onnx(part: Part, path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on the official static shape checks
        torch.onnx.export(
            part.module,
            part.example_inputs(),
            str(path),
            input_names=[s.name for s in part.inputs],
            output_names=[s.name for s in part.outputs],
            opset_version=17,
            dynamo=False,
        )


@pytest.mark.parametrize("index", range(3), ids=PART_NAMES)
def test_each_part_exports_to_onnx_opset_17_and_matches_torch(tmp_path, family, tiny_teacher, index):
    part = family.parts(tiny_teacher)[index]
    path = tmp_path / f"{part.name}.onnx"
    export_onnx(part, path)
    model = onnx.load(str(path))
    assert model.opset_import[0].version == 17
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)  # no custom ops
    inputs = part.example_inputs(seed=1)
    with torch.no_grad():
        expected = part.module(*inputs)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {s.name: x.numpy() for s, x in zip(part.inputs, inputs)}
    )
    assert len(got) == len(expected)
    for out, ref in zip(got, expected):
        assert np.abs(out - ref.numpy()).max() <= 1e-4 * np.abs(ref.numpy()).max()


@pytest.mark.slow
def test_per_frame_part_exports_with_the_dynamo_exporter(tmp_path, family, tiny_teacher):
    part = family.parts(tiny_teacher)[2]
    path = tmp_path / "per_frame.onnx"
    inputs = part.example_inputs(seed=1)
    torch.onnx.export(
        part.module, inputs, str(path), input_names=[s.name for s in part.inputs], opset_version=17, dynamo=True
    )
    assert onnx.load(str(path)).opset_import[0].version == 17
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {s.name: x.numpy() for s, x in zip(part.inputs, inputs)}
    )
    with torch.no_grad():
        (expected,) = part.module(*inputs)
    assert np.abs(got - expected.numpy()).max() <= 1e-4 * np.abs(expected.numpy()).max()


@pytest.mark.parametrize("index", range(3), ids=PART_NAMES)
def test_each_part_converts_to_core_ml(family, tiny_teacher, index):
    ct = pytest.importorskip("coremltools")
    part = family.parts(tiny_teacher)[index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(part.module, part.example_inputs())
        mlmodel = ct.convert(
            traced,
            inputs=[ct.TensorType(name=s.name, shape=s.shape) for s in part.inputs],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
        )
    assert len(mlmodel.get_spec().description.output) == len(part.outputs)


def test_the_mobile_student_has_the_same_parts(family):
    student = family.build_student(family.resolve_config("mobile-64", "student")).eval()
    parts = family.parts(student)
    assert [p.name for p in parts] == PART_NAMES
    assert [s.name for s in parts[2].inputs] == [
        "source",
        "source_feature",
        "kp_source_value",
        "kp_source_jacobian",
        "kp_driving_value",
        "kp_driving_jacobian",
    ]
    with torch.no_grad():
        (prediction,) = parts[2].module(*parts[2].example_inputs())
    assert prediction.shape == (1, 3, 64, 64)


def test_prunables_protect_the_interface_heads(family, tiny_teacher):
    prunables = {p.name: p for p in family.prunables(tiny_teacher)}
    kp, gen = tiny_teacher.kp_detector, tiny_teacher.generator
    assert prunables["kp_detector"].protected == [kp.kp, kp.jacobian]
    assert prunables["generator"].protected == [
        gen.final,
        gen.dense_motion_network.mask,
        gen.dense_motion_network.occlusion,
    ]
    for p in prunables.values():
        with torch.no_grad():
            outputs = p.module(*p.example_inputs)
        assert isinstance(outputs, tuple) and all(isinstance(o, torch.Tensor) for o in outputs)


def test_prunable_modules_hold_the_real_networks(family, tiny_teacher):
    modules = {p.name: p.module for p in family.prunables(tiny_teacher)}
    assert modules["kp_detector"].kp_detector is tiny_teacher.kp_detector
    assert modules["generator"].generator is tiny_teacher.generator


def test_calibration_inputs_fit_the_part_specs(family, tiny_teacher, tiny_config, frames):
    batch = {"source": frames(tiny_config, n=2, seed=1), "driving": frames(tiny_config, n=2, seed=2)}
    specs = {p.name: [s.shape for s in p.inputs] for p in family.parts(tiny_teacher)}
    samples = list(family.calibration_inputs(tiny_teacher, [batch]))
    assert len(samples) == 2
    for sample in samples:
        assert {name: [tuple(x.shape) for x in xs] for name, xs in sample.items()} == specs


def test_forward_runs_the_reconstruction_protocol(family, tiny_teacher, tiny_config, frames):
    batch = {"source": frames(tiny_config, n=2, seed=1), "driving": frames(tiny_config, n=2, seed=2)}
    with torch.no_grad():
        out = family.forward(tiny_teacher, batch)
    assert {"prediction", "occlusion_map", "kp_source_value", "kp_driving_value", "kp_driving_jacobian"} <= set(out)
    assert out["prediction"].shape == batch["driving"].shape
    assert family.score(out, batch)["vs_ground_truth"]["psnr"] == pytest.approx(
        psnr(out["prediction"], batch["driving"])
    )


def test_the_baseline_is_the_source_frame_scored_like_a_prediction(family, tiny_config, frames):
    batch = {"source": frames(tiny_config, n=2, seed=1), "driving": frames(tiny_config, n=2, seed=2)}
    scores = family.score(family.baseline(batch), batch)["vs_ground_truth"]
    assert scores["l1"] == pytest.approx(float((batch["source"] - batch["driving"]).abs().mean()))


def test_forward_refuses_frames_of_another_size(family, tiny_teacher, tiny_config, frames):
    batch = {"source": torch.rand(1, 3, 64, 64), "driving": torch.rand(1, 3, 64, 64)}
    with pytest.raises(CompressError, match=r"built for \(32, 32\)"):
        family.forward(tiny_teacher, batch)


def test_configs_resolve_by_role_with_defaults(family, tiny_config):
    assert family.resolve_config(None, "teacher")["common_params"]["frame_shape"] == [256, 256]
    assert family.resolve_config("demo-64", "teacher")["common_params"]["frame_shape"] == [64, 64]
    assert family.resolve_config(tiny_config, "teacher") == tiny_config
    assert family.input_size(tiny_config) == (32, 32)
    assert family.default_input_size == (256, 256)
    with pytest.raises(CompressError, match="unknown teacher config"):
        family.resolve_config("mobile-64", "teacher")

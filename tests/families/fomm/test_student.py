"""The mobile FOMM student: teacher interfaces, budgets, export and pruning.

Budgets are measured with `compress.stats` (GFLOPs = 2 x MACs of Conv2d / Linear layers, one
forward pass; parameters of kp detector + generator, int8 size = 1 byte per parameter).
"""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.checkpoints import save_model
from compress.errors import CompressError
from compress.families.fomm.student import STUDENT_CONFIGS, MobileFomm, build_student
from compress.families.loading import load_model
from compress.stats import count_macs, count_params

GENERATOR_KEYS = {"prediction", "occlusion_map", "mask", "sparse_deformed", "deformed", "region_masks"}


# -- flat-tensor wrappers (what gets exported) ----------------------------------------------
class KeypointsNet(nn.Module):
    def __init__(self, kp_detector: nn.Module):
        super().__init__()
        self.kp_detector = kp_detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kp = self.kp_detector(image)
        return kp["value"], kp["jacobian"]


class EncodeNet(nn.Module):
    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        return self.generator.encode_source(source)


class AnimateNet(nn.Module):
    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, source, feature, value_s, jacobian_s, value_d, jacobian_d) -> torch.Tensor:  # type: ignore[no-untyped-def]
        kp_source, kp_driving = {"value": value_s, "jacobian": jacobian_s}, {"value": value_d, "jacobian": jacobian_d}
        return self.generator.animate(source, feature, kp_source, kp_driving)["prediction"]


class ReconstructNet(nn.Module):
    """The whole generator, flat: what torch-pruning traces."""

    def __init__(self, generator: nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, source, value_s, jacobian_s, value_d, jacobian_d) -> torch.Tensor:  # type: ignore[no-untyped-def]
        kp_source, kp_driving = {"value": value_s, "jacobian": jacobian_s}, {"value": value_d, "jacobian": jacobian_d}
        return self.generator(source, kp_source=kp_source, kp_driving=kp_driving)["prediction"]


# -- helpers --------------------------------------------------------------------------------
def frame_size(name: str) -> int:
    return STUDENT_CONFIGS[name]["common_params"]["frame_shape"][0]


def make_student(name: str, seed: int = 0) -> MobileFomm:
    torch.manual_seed(seed)
    model = build_student(copy.deepcopy(STUDENT_CONFIGS[name]))
    # Non-trivial BN statistics, so that eval-mode export and pruning are really exercised.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def keypoint_pair(model: MobileFomm, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, dict, dict]:
    """A source frame, its keypoints, and driving keypoints moved and reshaped a little."""
    g = torch.Generator().manual_seed(seed)
    size = model.config["common_params"]["frame_shape"]
    source = torch.rand(batch, 3, *size, generator=g)
    with torch.no_grad():
        kp_source = model.kp_detector(source)
    kp_driving = {
        "value": (kp_source["value"] + 0.1 * torch.randn(kp_source["value"].shape, generator=g)).clamp(-1, 1),
        "jacobian": kp_source["jacobian"] + 0.1 * torch.randn(kp_source["jacobian"].shape, generator=g),
    }
    return source, kp_source, kp_driving


def part_inputs(model: MobileFomm) -> dict[str, tuple[nn.Module, tuple[torch.Tensor, ...]]]:
    source, kp_s, kp_d = keypoint_pair(model)
    with torch.no_grad():
        feature = model.generator.encode_source(source)
    return {
        "kp_detector": (KeypointsNet(model.kp_detector).eval(), (source,)),
        "encode_source": (EncodeNet(model.generator).eval(), (source,)),
        "animate": (
            AnimateNet(model.generator).eval(),
            (source, feature, kp_s["value"], kp_s["jacobian"], kp_d["value"], kp_d["jacobian"]),
        ),
    }


def onnx_relative_error(module: nn.Module, inputs: tuple[torch.Tensor, ...], path: Path) -> float:
    """Export (opset 17, TorchScript exporter) and run in onnxruntime: max |ort - torch| / max |torch|."""
    import onnxruntime as ort

    names = [f"input_{i}" for i in range(len(inputs))]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), input_names=names, opset_version=17, dynamo=False)
        expected = module(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = ort.InferenceSession(str(path)).run(None, {n: t.numpy() for n, t in zip(names, inputs)})
    return max(float(np.abs(o - e.numpy()).max() / np.abs(e.numpy()).max()) for o, e in zip(got, expected))


def gflops(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    return 2 * count_macs(module, inputs) / 1e9  # type: ignore[operator]


@pytest.fixture(scope="module")
def mobile64() -> MobileFomm:
    return make_student("mobile-64")


# -- configs --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobile-64", "mobile-256"])
def test_config_is_json_and_rebuilds_the_same_architecture(name: str) -> None:
    config = json.loads(json.dumps(STUDENT_CONFIGS[name]))
    assert config["kind"] == "student"
    first, second = build_student(config), build_student(config)
    assert {k: v.shape for k, v in first.state_dict().items()} == {k: v.shape for k, v in second.state_dict().items()}
    assert first.config == STUDENT_CONFIGS[name]


def test_width_multiplier_scales_every_network() -> None:
    config = copy.deepcopy(STUDENT_CONFIGS["mobile-256"])
    half = copy.deepcopy(config)
    half["width_multiplier"] = 0.5
    full, small = build_student(config), build_student(half)
    assert count_params(small.kp_detector) < 0.5 * count_params(full.kp_detector)
    assert count_params(small.generator) < 0.5 * count_params(full.generator)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["kp_detector_params"].update(depth=3), "depth"),
        (lambda c: c["generator_params"]["dense_motion_params"].update(scale_factor=0.3), "scale_factor"),
        (lambda c: c["generator_params"]["spade_params"].update(levels=[3]), "levels"),
        (lambda c: c["generator_params"]["spade_params"].update(colour="red"), "colour"),
        (lambda c: c["generator_params"].update(output_stride=3), "output_stride"),
        (lambda c: c["generator_params"].update(output_stride=8), "output_stride"),
        (lambda c: c["generator_params"]["spade_params"].update(mask_stride=8), "mask_stride"),
        (lambda c: c["common_params"].update(frame_shape=[250, 250]), "divisible"),
        (lambda c: c.pop("generator_params"), "generator_params"),
    ],
)
def test_bad_config_raises_an_error_naming_the_key(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    config = copy.deepcopy(STUDENT_CONFIGS["mobile-64"])
    edit(config)
    with pytest.raises(CompressError, match=message):
        build_student(config)


# -- interfaces -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, batch", [("mobile-64", 2), ("mobile-256", 1)])
def test_outputs_have_the_teacher_keys_and_shapes(name: str, batch: int) -> None:
    model = make_student(name)
    source, kp_source, kp_driving = keypoint_pair(model, batch)
    s, k = frame_size(name), model.config["common_params"]["num_kp"]
    assert kp_source["value"].shape == (batch, k, 2) and kp_source["value"].abs().max() <= 1
    assert kp_source["jacobian"].shape == (batch, k, 2, 2)
    with torch.no_grad():
        out = model.generator(source, kp_source=kp_source, kp_driving=kp_driving)
    assert set(out) == GENERATOR_KEYS
    assert out["prediction"].shape == (batch, 3, s, s) and 0 <= out["prediction"].min() and out["prediction"].max() <= 1
    assert out["deformed"].shape == (batch, 3, s, s)
    m = s // model.config["generator_params"]["spade_params"].get("mask_stride", 1)
    assert out["region_masks"].shape == (batch, 2, m, m)
    h = out["mask"].shape[-1]
    assert out["mask"].shape == (batch, k + 1, h, h) and torch.allclose(out["mask"].sum(1), torch.ones(1), atol=1e-5)
    assert out["sparse_deformed"].shape == (batch, k + 1, 3, h, h)
    assert out["occlusion_map"].shape == (batch, 1, h, h)


def test_a_decoder_stopping_at_half_resolution_predicts_whole_frames() -> None:
    config = copy.deepcopy(STUDENT_CONFIGS["mobile-64"])
    config["generator_params"]["output_stride"] = 2
    config["generator_params"]["spade_params"]["levels"] = [0, 1]  # the decoder's levels end at 1/2
    model = build_student(config).eval()
    source, kp_source, kp_driving = keypoint_pair(model, 1)
    with torch.no_grad():
        out = model.generator(source, kp_source=kp_source, kp_driving=kp_driving)
    s = frame_size("mobile-64")
    assert len(model.generator.up_blocks) == config["generator_params"]["num_down_blocks"] - 1
    assert model.generator.final.out_channels == 3 * 4 and model.generator.blend.out_channels == 4
    assert out["prediction"].shape == (1, 3, s, s) and 0 <= out["prediction"].min() and out["prediction"].max() <= 1


def test_region_masks_from_the_data_are_pooled_to_the_mask_resolution() -> None:
    config = copy.deepcopy(STUDENT_CONFIGS["mobile-64"])
    config["generator_params"]["spade_params"].update(levels=[0, 1], mask_stride=2)  # finest level at 1/2
    model = build_student(config).eval()
    source, kp_source, kp_driving = keypoint_pair(model, 1)
    s = frame_size("mobile-64")
    masks = torch.zeros(1, 2, s, s)
    masks[:, :, : s // 2] = 1  # the top half
    with torch.no_grad():
        out = model.generator(source, kp_source=kp_source, kp_driving=kp_driving, region_masks=masks)
    assert torch.equal(out["region_masks"], F.avg_pool2d(masks, 2))


def test_a_student_saved_with_one_final_conv_for_mask_and_rgb_loads_unchanged() -> None:
    model = make_student("mobile-64")
    state = model.state_dict()
    # the layout before `blend`: `final` predicted [mask, R, G, B]
    state["generator.final.weight"] = torch.cat([state.pop("generator.blend.weight"), state["generator.final.weight"]])
    state["generator.final.bias"] = torch.cat([state.pop("generator.blend.bias"), state["generator.final.bias"]])
    reloaded = build_student(model.config).eval()
    reloaded.load_state_dict(state)
    source, kp_source, kp_driving = keypoint_pair(model, 1)
    with torch.no_grad():
        expected = model.generator(source, kp_source=kp_source, kp_driving=kp_driving)["prediction"]
        assert torch.equal(
            reloaded.generator(source, kp_source=kp_source, kp_driving=kp_driving)["prediction"], expected
        )


def test_student_without_jacobians_or_occlusion_runs() -> None:
    config = copy.deepcopy(STUDENT_CONFIGS["mobile-64"])
    config["common_params"]["estimate_jacobian"] = False
    config["generator_params"]["estimate_occlusion_map"] = False
    model = build_student(config).eval()
    source = torch.rand(1, 3, frame_size("mobile-64"), frame_size("mobile-64"))
    with torch.no_grad():
        kp = model.kp_detector(source)
        out = model.generator(source, kp_source=kp, kp_driving=kp)
    assert set(kp) == {"value"}
    assert set(out) == GENERATOR_KEYS - {"occlusion_map"} and out["prediction"].shape == source.shape


def test_forward_equals_animate_of_the_encoded_source(mobile64: MobileFomm) -> None:
    source, kp_source, kp_driving = keypoint_pair(mobile64, batch=2)
    generator = mobile64.generator
    with torch.no_grad():
        whole = generator(source, kp_source=kp_source, kp_driving=kp_driving)
        split = generator.animate(source, generator.encode_source(source), kp_source, kp_driving)
    for key in GENERATOR_KEYS:
        torch.testing.assert_close(whole[key], split[key], rtol=0, atol=0)


def test_identical_keypoints_give_the_identity_motion(mobile64: MobileFomm) -> None:
    source, kp_source, _ = keypoint_pair(mobile64)
    with torch.no_grad():
        out = mobile64.generator(source, kp_source=kp_source, kp_driving=kp_source)
    torch.testing.assert_close(out["deformed"], source, rtol=0, atol=1e-5)


@pytest.mark.parametrize("alpha_logit, expected", [(30.0, "deformed"), (-30.0, "decoder")])
def test_image_skip_blends_the_warped_source_with_the_decoder(
    mobile64: MobileFomm, alpha_logit: float, expected: str
) -> None:
    model = copy.deepcopy(mobile64)
    final, blend = model.generator.final, model.generator.blend  # the decoder's RGB; the blend logit
    with torch.no_grad():
        final.weight.zero_()
        final.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        blend.weight.zero_()
        blend.bias.fill_(alpha_logit)
    source, kp_source, kp_driving = keypoint_pair(model)
    with torch.no_grad():
        out = model.generator(source, kp_source=kp_source, kp_driving=kp_driving)
    decoder = torch.sigmoid(torch.tensor([0.0, 1.0, 2.0])).view(1, 3, 1, 1).expand_as(source)
    torch.testing.assert_close(
        out["prediction"], out["deformed"] if expected == "deformed" else decoder, rtol=0, atol=1e-6
    )


def test_region_masks_come_from_the_driving_keypoints(mobile64: MobileFomm) -> None:
    model = copy.deepcopy(mobile64)
    mix = model.generator.region_masks.mix
    with torch.no_grad():  # region 0 = keypoint 0, region 1 = keypoint 1
        mix.weight.zero_()
        mix.weight[0, 0] = mix.weight[1, 1] = 10.0
        mix.bias.fill_(-5.0)
    source, kp_source, kp_driving = keypoint_pair(model)
    kp_driving["value"][0, :2] = torch.tensor([[-0.5, -0.5], [0.5, 0.25]])
    with torch.no_grad():
        masks = model.generator(source, kp_source=kp_source, kp_driving=kp_driving)["region_masks"]
    s = frame_size("mobile-64")
    for region, (x, y) in enumerate(kp_driving["value"][0, :2].tolist()):
        row, col = divmod(int(masks[0, region].argmax()), s)
        assert abs(col / (s - 1) * 2 - 1 - x) < 0.05 and abs(row / (s - 1) * 2 - 1 - y) < 0.05


def test_given_region_masks_replace_the_derived_ones(mobile64: MobileFomm) -> None:
    source, kp_source, kp_driving = keypoint_pair(mobile64)
    feature = mobile64.generator.encode_source(source)
    given = torch.zeros(1, 2, *source.shape[2:])
    given[:, :, 20:30, 16:48] = 1.0
    with torch.no_grad():
        derived = mobile64.generator.animate(source, feature, kp_source, kp_driving)
        steered = mobile64.generator.animate(source, feature, kp_source, kp_driving, region_masks=given)
    assert torch.equal(steered["region_masks"], given)
    assert not torch.allclose(steered["prediction"], derived["prediction"])


def test_family_parts_run_on_the_student(mobile64: MobileFomm) -> None:
    from compress.families.registry import get_family

    for part in get_family("fomm").parts(mobile64):
        with torch.no_grad():
            outputs = part.module.eval()(*part.example_inputs())
        assert [tuple(o.shape) for o in outputs] == [spec.shape for spec in part.outputs], part.name


def test_given_region_masks_must_have_the_frame_size(mobile64: MobileFomm) -> None:
    source, kp_source, kp_driving = keypoint_pair(mobile64)
    with pytest.raises(CompressError, match="frame size"):
        mobile64.generator(source, kp_source=kp_source, kp_driving=kp_driving, region_masks=torch.zeros(1, 2, 32, 32))


# -- budgets (measured) ---------------------------------------------------------------------
def test_default_student_meets_the_mobile_budgets() -> None:
    model = make_student("mobile-256")
    parts = part_inputs(model)
    params = count_params(model.kp_detector) + count_params(model.generator)
    assert params <= 3.0e6, f"{params / 1e6:.2f} M parameters: {params / 1e6:.2f} MB at int8 > 3 MB"
    kp_gflops = gflops(*parts["kp_detector"])
    assert kp_gflops <= 0.15, f"kp detector {kp_gflops:.3f} GFLOPs"
    frame_gflops = gflops(*parts["animate"])
    assert frame_gflops <= 1.5, f"per-frame generator {frame_gflops:.3f} GFLOPs"


# -- export -------------------------------------------------------------------------------
@pytest.mark.parametrize("part", ["kp_detector", "encode_source", "animate"])
def test_part_exports_to_onnx_with_parity(mobile64: MobileFomm, part: str, tmp_path: Path) -> None:
    module, inputs = part_inputs(mobile64)[part]
    assert onnx_relative_error(module, inputs, tmp_path / f"{part}.onnx") <= 1e-4


@pytest.mark.parametrize("part", ["kp_detector", "encode_source", "animate"])
def test_part_converts_to_coreml(mobile64: MobileFomm, part: str) -> None:
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    import coremltools as ct

    module, inputs = part_inputs(mobile64)[part]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, inputs)
        mlmodel = ct.convert(
            traced,
            inputs=[ct.TensorType(name=f"input_{i}", shape=t.shape) for i, t in enumerate(inputs)],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS16,
            skip_model_load=True,  # Linux cannot load (or run) Core ML models
        )
    ops = {op.op_type for f in mlmodel._mil_program.functions.values() for op in f.operations}
    assert "conv" in ops


@pytest.mark.slow
@pytest.mark.parametrize("part", ["kp_detector", "encode_source", "animate"])
def test_default_student_part_exports_to_onnx_with_parity(part: str, tmp_path: Path) -> None:
    module, inputs = part_inputs(make_student("mobile-256"))[part]
    assert onnx_relative_error(module, inputs, tmp_path / f"{part}.onnx") <= 1e-4


# -- pruning ------------------------------------------------------------------------------
def test_pruned_generator_runs_exports_and_reloads(mobile64: MobileFomm, tmp_path: Path) -> None:
    import torch_pruning as tp

    model = copy.deepcopy(mobile64)
    generator = model.generator
    source, kp_s, kp_d = keypoint_pair(model)
    inputs = (source, kp_s["value"], kp_s["jacobian"], kp_d["value"], kp_d["jacobian"])
    net = ReconstructNet(generator).eval()
    # Interface layers: RGB output, motion mask over K+1 motions, occlusion, region masks.
    protected = [
        generator.final,
        generator.dense_motion_network.mask,
        generator.dense_motion_network.occlusion,
        generator.region_masks.mix,
    ]
    before = count_params(generator)
    pruner = tp.pruner.MetaPruner(
        net, inputs, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.3, ignored_layers=protected
    )
    pruner.step()
    assert count_params(generator) < 0.8 * before
    with torch.no_grad():
        out = generator(source, kp_source=kp_s, kp_driving=kp_d)
    assert out["prediction"].shape == source.shape and out["region_masks"].shape[1] == 2
    assert onnx_relative_error(net, inputs, tmp_path / "pruned.onnx") <= 1e-4

    path = save_model(tmp_path / "pruned.safetensors", model, family="fomm", kind="student", config=model.config)
    reloaded, _ = load_model(path)
    with torch.no_grad():
        again = reloaded.generator(source, kp_source=kp_s, kp_driving=kp_d)
    torch.testing.assert_close(again["prediction"], out["prediction"], rtol=0, atol=0)


def test_pruned_kp_detector_keeps_its_keypoints(mobile64: MobileFomm) -> None:
    import torch_pruning as tp

    model = copy.deepcopy(mobile64)
    net = KeypointsNet(model.kp_detector).eval()
    source = torch.rand(1, 3, frame_size("mobile-64"), frame_size("mobile-64"))
    before = count_params(net)
    pruner = tp.pruner.MetaPruner(
        net,
        (source,),
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.3,
        ignored_layers=[model.kp_detector.kp, model.kp_detector.jacobian],
    )
    pruner.step()
    assert count_params(net) < 0.8 * before
    with torch.no_grad():
        value, jacobian = net(source)
    assert value.shape == (1, 10, 2) and jacobian.shape == (1, 10, 2, 2)

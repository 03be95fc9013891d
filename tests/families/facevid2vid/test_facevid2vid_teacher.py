"""The face-vid2vid teacher: public architecture, keys, parameter counts, configs and keypoint algebra."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from compress.errors import CompressError
from compress.families.facevid2vid import TEACHER_CONFIGS, build_teacher, teacher_config
from compress.families.facevid2vid.pose import facevid2vid_rotation

DATA = Path(__file__).parent / "data"


def public_keys(config: str) -> dict:
    # data/public_keys.json: key -> shape and parameter count of every public network, built from
    # the public YAML files (see docs/models/facevid2vid.md).
    return json.loads((DATA / "public_keys.json").read_text())[config]


def on_meta(config: str) -> torch.nn.Module:
    with torch.device("meta"):
        return build_teacher(teacher_config(config))


@pytest.mark.parametrize("config", ["vox-256", "vox-256-original"])
def test_state_dict_keys_shapes_and_parameter_counts_equal_the_public_networks(config):
    model, public = on_meta(config), public_keys(config)
    for name in ("kp_detector", "he_estimator", "generator"):
        network = getattr(model, name)
        assert {k: list(v.shape) for k, v in network.state_dict().items()} == public[name]["keys"], name
        assert sum(p.numel() for p in network.parameters()) == public[name]["parameters"], name


def test_vox_256_has_the_released_checkpoints_size():
    # 863 tensors and 173.2 M parameters (KPDetector 41.9 M, HEEstimator 30.3 M, SPADE generator 101.0 M).
    model = on_meta("vox-256")
    assert len(model.state_dict()) == 863
    assert sum(p.numel() for p in model.parameters()) == 41_940_047 + 30_254_838 + 100_988_176


def test_generator_forward_is_animate_of_encode_source(tiny_teacher, frames):
    model = tiny_teacher("spade")
    source, driving = frames(2, seed=1), frames(2, seed=2)
    with torch.no_grad():
        kp_canonical = model.kp_detector(source)
        kp_source = model.transform_keypoints(kp_canonical, model.he_estimator(source))
        kp_driving = model.transform_keypoints(kp_canonical, model.he_estimator(driving))
        whole = model.generator(source, kp_source=kp_source, kp_driving=kp_driving)
        split = model.generator.animate(model.generator.encode_source(source), kp_source, kp_driving)
    assert set(whole) == {"prediction", "mask", "deformation", "occlusion_map"}
    assert whole["prediction"].shape == (2, 3, 32, 32)
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=0, atol=0)


def test_he_estimator_gives_66_bin_logits_translation_and_expression(tiny_teacher, frames):
    with torch.no_grad():
        he = tiny_teacher("spade").he_estimator(frames(2))
    assert {k: tuple(v.shape) for k, v in he.items()} == {
        "yaw": (2, 66), "pitch": (2, 66), "roll": (2, 66), "t": (2, 3), "exp": (2, 12)
    }  # fmt: skip


def test_he_estimator_reads_yaw_from_fc_roll_and_roll_from_fc_yaw(tiny_teacher, frames):
    # The public naming quirk: the checkpoint's fc_roll weights predict "yaw".
    he_estimator = tiny_teacher("spade").he_estimator
    with torch.no_grad():
        he_estimator.fc_roll.bias.fill_(100.0)
        he = he_estimator(frames(1))
    assert he["yaw"].min() > 50 and he["roll"].max() < 50


def test_transformed_keypoints_are_rotated_translated_and_deformed(tiny_teacher):
    # x = R x_c + t + delta, with R = Rx(pitch) Ry(yaw) Rz(roll) from degrees converted with pi = 3.14.
    model = tiny_teacher("spade")
    kp_canonical = {"value": torch.tensor([[[0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5], [0.1, 0.2, 0.3]]])}
    he = {"t": torch.tensor([[0.1, -0.2, 0.3]]), "exp": torch.arange(12.0).view(1, 12) / 100}
    yaw, pitch, roll = torch.tensor([90.0]), torch.tensor([0.0]), torch.tensor([0.0])
    value = model.transform_keypoints(kp_canonical, he, yaw=yaw, pitch=pitch, roll=roll)["value"]
    angle = 90 / 180 * 3.14  # not quite pi / 2
    rotated_x = torch.tensor([0.5 * math.cos(angle), 0.0, -0.5 * math.sin(angle)])
    expected = rotated_x + he["t"][0] + he["exp"][0, :3]
    torch.testing.assert_close(value[0, 0], expected)


def test_rotation_order_is_pitch_then_yaw_then_roll():
    yaw, pitch, roll, zero = torch.tensor([30.0]), torch.tensor([-20.0]), torch.tensor([10.0]), torch.zeros(1)
    about_x, about_y, about_z = (
        facevid2vid_rotation(zero, pitch, zero),
        facevid2vid_rotation(yaw, zero, zero),
        facevid2vid_rotation(zero, zero, roll),
    )
    torch.testing.assert_close(facevid2vid_rotation(yaw, pitch, roll), about_x @ about_y @ about_z)
    assert about_x[0, 0, 0] == 1 and about_y[0, 1, 1] == 1 and about_z[0, 2, 2] == 1


def test_a_misspelt_config_key_is_named(tiny_config):
    config = tiny_config("spade")
    config["generator_params"]["num_resblock"] = 1
    with pytest.raises(CompressError, match="num_resblock"):
        build_teacher(config)


def test_jacobians_are_refused_with_the_reason(tiny_config):
    config = tiny_config("spade")
    config["common_params"]["estimate_jacobian"] = True
    with pytest.raises(CompressError, match="no released checkpoint"):
        build_teacher(config)


def test_named_configs_are_json_serialisable():
    for name, config in TEACHER_CONFIGS.items():
        assert json.loads(json.dumps(config)) == config, name


def test_public_yaml_gives_the_named_config(tmp_path):
    vox = teacher_config("vox-256")
    model_params = {
        k: vox[k] for k in ("common_params", "kp_detector_params", "he_estimator_params", "generator_params")
    }
    discriminator = {"scales": [1], "block_expansion": 32, "max_features": 512, "num_blocks": 4, "sn": True}
    path = tmp_path / "vox-256.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "dataset_params": {"frame_shape": [256, 256, 3]},
                "model_params": {**model_params, "discriminator_params": discriminator},
                "train_params": {"num_epochs": 300},
            }
        )
    )
    assert teacher_config(str(path)) == vox
    assert teacher_config(str(path), generator="original")["generator"] == "original"


def test_liveportrait_models_yaml_gives_the_named_config(tmp_path):
    lp = teacher_config("liveportrait")
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"model_params": {k: v for k, v in lp.items() if k.endswith("_params")}}))
    assert teacher_config(str(path)) == lp


def test_yaml_without_model_params_is_refused(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("dataset_params: {frame_shape: [256, 256, 3]}\n")
    with pytest.raises(CompressError, match="model_params"):
        teacher_config(str(path))


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(CompressError, match="vox-256-original"):
        teacher_config("vox-512")

"""The FOMM teacher: official architecture, keys, parameter counts and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from compress.errors import CompressError
from compress.families.fomm.configs import TEACHER_CONFIGS, load_official_yaml, teacher_config
from compress.families.fomm.teacher import FommModel

DATA = Path(__file__).parent / "data"
# Parameter counts of the official vox-256 networks (GitHub issue 3; equal to the official code's).
VOX_256_PARAMS = {"kp_detector": 14_215_368, "generator": 45_575_391}


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def vox() -> FommModel:
    return FommModel(teacher_config("vox-256"))


def test_vox_256_parameter_counts_equal_the_official_ones(vox):
    assert {"kp_detector": count(vox.kp_detector), "generator": count(vox.generator)} == VOX_256_PARAMS


def test_vox_256_state_dict_keys_and_shapes_equal_the_official_ones(vox):
    # data/vox256_official_keys.json: key -> shape of the official modules' state dicts (see docs/models/fomm.md).
    official = json.loads((DATA / "vox256_official_keys.json").read_text())
    for name in ("kp_detector", "generator"):
        ours = {k: list(v.shape) for k, v in getattr(vox, name).state_dict().items()}
        assert ours == official[name], name


def reference_configs() -> list[str]:
    with np.load(DATA / "official_reference.npz") as ref:
        return sorted({k.split("/")[0] for k in ref.files})


def reference_arrays(ref: np.lib.npyio.NpzFile, tag: str, kind: str) -> dict[str, torch.Tensor]:
    prefix = f"{tag}/{kind}/"
    return {k.removeprefix(prefix): torch.from_numpy(ref[k]) for k in ref.files if k.startswith(prefix)}


def run_official_protocol(model: FommModel, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        kp_source, kp_driving = model.kp_detector(inputs["source"]), model.kp_detector(inputs["driving"])
        out = model.generator(inputs["source"], kp_source=kp_source, kp_driving=kp_driving)
    out.update({f"kp_source_{k}": v for k, v in kp_source.items()})
    out.update({f"kp_driving_{k}": v for k, v in kp_driving.items()})
    return out


@pytest.mark.parametrize("tag", reference_configs())
def test_outputs_match_the_official_code_on_the_same_weights(tag):
    # data/official_reference.npz: inputs, weights and outputs of the official modules (torch 1.0
    # grid_sample semantics) on small configs; produced outside the repo, see docs/models/fomm.md.
    with np.load(DATA / "official_reference.npz") as ref:
        config = json.loads(str(ref[f"{tag}/config"]))
        weights, inputs, expected = (reference_arrays(ref, tag, kind) for kind in ("weight", "input", "output"))
    model = FommModel(config).eval()
    model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in weights.items()})
    out = run_official_protocol(model, inputs)
    exact = run_official_protocol(model.double(), {k: v.double() for k, v in inputs.items()})
    assert set(out) == set(expected)
    for name, value in expected.items():
        # Both sides are float32 runs of one computation whose kernels (AVX2, AVX-512, NEON)
        # round differently: each side is off the exact result by about this machine's float32
        # error (measured against a float64 run), so twice it, with 2x headroom and a floor
        # of a few float32 ulps, bounds an implementation that computes the same function.
        rounding = float((out[name].double() - exact[name]).abs().max() / exact[name].abs().max())
        bound = max(4 * rounding, 1e-6)
        rel = float((out[name] - value).abs().max() / value.abs().max())
        assert rel <= bound, (
            f"{tag} {name}: relative error {rel:.2e} > {bound:.2e} (float32 rounding here {rounding:.2e})"
        )


def test_generator_forward_is_animate_of_encode_source(tiny_teacher, tiny_config, frames):
    source, driving = frames(tiny_config, seed=1), frames(tiny_config, seed=2)
    g = tiny_teacher.generator
    with torch.no_grad():
        kp_source, kp_driving = tiny_teacher.kp_detector(source), tiny_teacher.kp_detector(driving)
        whole = g(source, kp_source=kp_source, kp_driving=kp_driving)
        split = g.animate(source, g.encode_source(source), kp_source, kp_driving)
    assert set(whole) == {"prediction", "mask", "sparse_deformed", "occlusion_map", "deformed"}
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=0, atol=0)


def test_keypoints_lie_in_the_frame_and_jacobians_are_2x2(tiny_teacher, tiny_config, frames):
    with torch.no_grad():
        kp = tiny_teacher.kp_detector(frames(tiny_config, n=2))
    assert kp["value"].shape == (2, 4, 2) and kp["jacobian"].shape == (2, 4, 2, 2)
    assert kp["value"].abs().max() <= 1


def test_coordinate_grids_are_buffers_outside_the_state_dict(tiny_teacher):
    buffers = {name for name, _ in tiny_teacher.named_buffers()}
    assert {"kp_detector.grid", "generator.dense_motion_network.grid"} <= buffers
    assert not any(k.endswith(".grid") for k in tiny_teacher.state_dict())


def test_a_misspelt_config_key_is_named(tiny_config):
    tiny_config["generator_params"]["num_botleneck_blocks"] = 1
    with pytest.raises(CompressError, match="num_botleneck_blocks"):
        FommModel(tiny_config)


def test_named_configs_are_json_serialisable_and_build():
    for name, config in TEACHER_CONFIGS.items():
        assert json.loads(json.dumps(config)) == config, name
    assert count(FommModel(teacher_config("demo-64"))) <= 5_000_000


def test_official_256_configs_share_vox_256_architecture_except_mgif():
    vox = teacher_config("vox-256")
    assert teacher_config("taichi-256") == vox
    assert teacher_config("mgif-256")["kp_detector_params"]["single_jacobian_map"] is True


def write_official_yaml(path: Path, model_params: dict, frame_shape: list[int]) -> Path:
    """A config file laid out like the official first-order-model config/*.yaml."""
    data = {
        "dataset_params": {"root_dir": "data/vox-png", "frame_shape": frame_shape, "id_sampling": True},
        "model_params": {
            **model_params,
            "discriminator_params": {
                "scales": [1],
                "block_expansion": 32,
                "max_features": 512,
                "num_blocks": 4,
                "sn": True,
            },
        },
        "train_params": {"num_epochs": 100, "batch_size": 40},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_official_yaml_gives_the_named_config(tmp_path):
    vox = teacher_config("vox-256")
    common = {k: v for k, v in vox["common_params"].items() if k != "frame_shape"}
    params = {
        "common_params": common,
        "kp_detector_params": vox["kp_detector_params"],
        "generator_params": vox["generator_params"],
    }
    path = write_official_yaml(tmp_path / "vox-256.yaml", params, [256, 256, 3])
    assert load_official_yaml(path) == vox
    assert teacher_config(str(path)) == vox


def test_official_yaml_without_model_params_is_refused(tmp_path):
    path = tmp_path / "other.yaml"
    path.write_text("dataset_params: {frame_shape: [256, 256, 3]}\n")
    with pytest.raises(CompressError, match="model_params"):
        load_official_yaml(path)


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(CompressError, match="vox-256"):
        teacher_config("vox-512")

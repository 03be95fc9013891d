"""The LivePortrait teacher: public keys and parameter counts, and its wrapper's calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from compress.errors import CompressError
from compress.families.facevid2vid import build_teacher, teacher_config
from compress.families.facevid2vid.checkpoints import without_stitching

DATA = Path(__file__).parent / "data"
# LivePortrait's assets/docs/speed.md: F 0.84 M, M 28.12 M, W 45.53 M, G 55.37 M, S 0.23 M parameters.
PUBLISHED_MILLIONS = {
    "appearance_feature_extractor": 0.84,
    "motion_extractor": 28.12,
    "warping_module": 45.53,
    "spade_generator": 55.37,
    "stitching_retargeting_module": 0.23,
}


def test_state_dict_keys_shapes_and_parameter_counts_equal_the_public_networks():
    # data/public_keys.json: the public networks built from src/config/models.yaml.
    public = json.loads((DATA / "public_keys.json").read_text())["liveportrait"]
    with torch.device("meta"):
        model = build_teacher(teacher_config("liveportrait"))
    for name, network in public.items():
        ours = model.get_submodule(name)
        assert {k: list(v.shape) for k, v in ours.state_dict().items()} == network["keys"], name
        assert sum(p.numel() for p in ours.parameters()) == network["parameters"], name
    for name, millions in PUBLISHED_MILLIONS.items():
        assert round(sum(p.numel() for p in model.get_submodule(name).parameters()) / 1e6, 2) == millions, name


def test_the_pipeline_decodes_to_twice_the_input_size(tiny_teacher, frames):
    model = tiny_teacher("liveportrait")
    source, driving = frames(2, seed=1), frames(2, seed=2)
    with torch.no_grad():
        feature_3d = model.extract_feature_3d(source)
        x_s = model.transform_keypoint(model.get_kp_info(source))
        x_d = model.stitching(x_s, model.transform_keypoint(model.get_kp_info(driving)))
        out = model.warp_decode(feature_3d, x_s, x_d)
    assert feature_3d.shape == (2, 8, 4, 8, 8) and x_s.shape == x_d.shape == (2, 4, 3)
    assert out["out"].shape == (2, 3, 64, 64) and out["occlusion_map"].shape == (2, 1, 8, 8)


def test_kp_info_gives_degrees_and_keypoint_arrays(tiny_teacher, frames):
    with torch.no_grad():
        info = tiny_teacher("liveportrait").get_kp_info(frames(2))
        raw = tiny_teacher("liveportrait").get_kp_info(frames(2), flag_refine_info=False)
    assert {k: tuple(v.shape) for k, v in info.items()} == {
        "pitch": (2, 1), "yaw": (2, 1), "roll": (2, 1), "t": (2, 3), "exp": (2, 4, 3), "scale": (2, 1), "kp": (2, 4, 3)
    }  # fmt: skip
    assert raw["yaw"].shape == (2, 66) and raw["kp"].shape == (2, 12)


def test_transform_keypoint_accepts_degrees_or_bin_logits(tiny_teacher, frames):
    model = tiny_teacher("liveportrait")
    with torch.no_grad():
        raw = model.get_kp_info(frames(2), flag_refine_info=False)
        refined = model.get_kp_info(frames(2))
    raw = {**raw, "kp": refined["kp"], "exp": refined["exp"]}
    torch.testing.assert_close(model.transform_keypoint(raw), model.transform_keypoint(refined))


def test_transform_keypoint_scales_then_shifts_x_and_y_only(tiny_teacher):
    model = tiny_teacher("liveportrait")
    kp = torch.tensor([[[0.1, 0.2, 0.3]]])
    zero = torch.zeros(1, 1)
    info = {"kp": kp, "pitch": zero, "yaw": zero, "roll": zero, "exp": torch.full((1, 1, 3), 0.1)}
    info |= {"scale": torch.tensor([[2.0]]), "t": torch.tensor([[1.0, -1.0, 5.0]])}
    torch.testing.assert_close(model.transform_keypoint(info), torch.tensor([[[1.4, -0.4, 0.8]]]))


def test_without_stitching_weights_the_driving_keypoints_pass_through(tiny_config, frames):
    model = build_teacher(without_stitching(tiny_config("liveportrait"))).eval()
    x_s, x_d = torch.rand(2, 4, 3), torch.rand(2, 4, 3)
    assert model.stitching_retargeting_module is None
    assert model.stitching(x_s, x_d) is x_d


def test_a_misspelt_dense_motion_key_is_named(tiny_config):
    config = tiny_config("liveportrait")
    config["warping_module_params"]["dense_motion_params"]["compres"] = 4
    with pytest.raises(CompressError, match="dense_motion_params.*compres"):
        build_teacher(config)

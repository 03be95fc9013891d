"""Public face-vid2vid checkpoints and LivePortrait folders load with no remapping; others are refused by name."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from compress.errors import CompressError
from compress.families.facevid2vid import (
    build_teacher,
    claims,
    load_facevid2vid_teacher,
    teacher_config,
    teacher_state_dict,
)
from compress.families.facevid2vid.checkpoints import without_stitching

NETWORKS = ("kp_detector", "he_estimator", "generator")


def public_checkpoint(model: torch.nn.Module, path: Path, data_parallel: bool = False) -> Path:
    """A checkpoint laid out like the public 00000189-checkpoint.pth.tar (logger.py's save_cpk)."""
    prefix = "module." if data_parallel else ""
    adam = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
        "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "params": [0]}],
    }
    checkpoint = {name: {prefix + k: v for k, v in getattr(model, name).state_dict().items()} for name in NETWORKS}
    checkpoint["discriminator"] = {prefix + "discs.1.conv.weight_orig": torch.zeros(4, 3, 4, 4)}
    checkpoint.update({f"optimizer_{name}": adam for name in (*NETWORKS, "discriminator")})
    torch.save({**checkpoint, "epoch": 189}, path)
    return path


def sadtalker_safetensors(model: torch.nn.Module, path: Path) -> Path:
    """One flat safetensors like SadTalker's: `kp_extractor.` for the detector, other networks beside."""
    state = {f"{name}.{k}": v for name in NETWORKS for k, v in getattr(model, name).state_dict().items()}
    state = {k.replace("kp_detector.", "kp_extractor.", 1): v for k, v in state.items()}
    state["mapping.fc.weight"] = torch.zeros(2, 2)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def liveportrait_folder(model: torch.nn.Module, folder: Path, stitching: bool = True) -> Path:
    """A folder like LivePortrait's base_models (plain state dicts), with its retargeting_models file."""
    folder.mkdir()
    for name in ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator"):
        torch.save(getattr(model, name).state_dict(), folder / f"{name}.pth")
    if stitching:
        mlps = model.stitching_retargeting_module
        torch.save(
            {
                "retarget_shoulder": {f"module.{k}": v for k, v in mlps["stitching"].state_dict().items()},
                "retarget_mouth": mlps["lip"].state_dict(),
                "retarget_eye": mlps["eye"].state_dict(),
            },
            folder / "stitching_retargeting_module.pth",
        )
    return folder


def assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    assert not loaded.training
    state = loaded.state_dict()
    assert state.keys() == original.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in original.state_dict().items())


@pytest.mark.parametrize("data_parallel", [False, True], ids=["plain", "data_parallel"])
@pytest.mark.parametrize("generator", ["spade", "original"])
def test_public_layout_checkpoint_loads_and_runs(tmp_path, tiny_teacher, tiny_config, frames, generator, data_parallel):
    teacher = tiny_teacher(generator)
    path = public_checkpoint(teacher, tmp_path / "00000189-checkpoint.pth.tar", data_parallel)
    loaded = load_facevid2vid_teacher(path, tiny_config(generator))
    assert_same_weights(loaded, teacher)
    source = frames(1)
    with torch.no_grad():
        kp = loaded.transform_keypoints(loaded.kp_detector(source), loaded.he_estimator(source))
        assert loaded.generator(source, kp_source=kp, kp_driving=kp)["prediction"].shape == (1, 3, 32, 32)


def test_sadtalker_flat_safetensors_loads(tmp_path, tiny_teacher, tiny_config):
    teacher = tiny_teacher("spade")
    loaded = load_facevid2vid_teacher(
        sadtalker_safetensors(teacher, tmp_path / "SadTalker.safetensors"), tiny_config("spade")
    )
    assert_same_weights(loaded, teacher)


def test_flat_prefixed_pth_loads(tmp_path, tiny_teacher, tiny_config):
    teacher = tiny_teacher("spade")
    torch.save({f"module.{k}": v for k, v in teacher.state_dict().items()}, tmp_path / "flat.pth")
    assert_same_weights(load_facevid2vid_teacher(tmp_path / "flat.pth", tiny_config("spade")), teacher)


def test_liveportrait_folder_loads_with_its_stitching_module(tmp_path, tiny_teacher, tiny_config):
    teacher = tiny_teacher("liveportrait")
    loaded = load_facevid2vid_teacher(
        liveportrait_folder(teacher, tmp_path / "base_models"), tiny_config("liveportrait")
    )
    assert_same_weights(loaded, teacher)


def test_liveportrait_download_folder_loads_from_base_and_retargeting_models(tmp_path, tiny_teacher, tiny_config):
    teacher = tiny_teacher("liveportrait")
    (tmp_path / "liveportrait").mkdir()
    base = liveportrait_folder(teacher, tmp_path / "liveportrait/base_models")
    (tmp_path / "liveportrait/retargeting_models").mkdir()
    (base / "stitching_retargeting_module.pth").rename(
        tmp_path / "liveportrait/retargeting_models/stitching_retargeting_module.pth"
    )
    loaded = load_facevid2vid_teacher(tmp_path / "liveportrait", tiny_config("liveportrait"))
    assert_same_weights(loaded, teacher)


def test_liveportrait_folder_without_stitching_file_loads_without_it(tmp_path, tiny_teacher, tiny_config):
    teacher = tiny_teacher(without_stitching(tiny_config("liveportrait")))
    folder = liveportrait_folder(teacher, tmp_path / "base_models", stitching=False)
    loaded = load_facevid2vid_teacher(folder, tiny_config("liveportrait"))
    assert loaded.stitching_retargeting_module is None
    assert_same_weights(loaded, teacher)


@pytest.mark.parametrize("config", ["vox-256", "vox-256-original", "liveportrait"])
def test_a_full_size_checkpoint_is_recognised_from_its_keys_and_shapes(config):
    with torch.device("meta"):  # shapes only: nothing allocated
        model = build_teacher(teacher_config(config))
    # One state dict per network, as in the nested layout and a LivePortrait folder without the stitching file.
    raw = {name: net.state_dict() for name, net in model.named_children() if name != "stitching_retargeting_module"}
    assert claims(teacher_state_dict(raw, "checkpoint")) == config


def test_checkpoint_of_no_named_config_asks_for_one(tmp_path, tiny_teacher):
    path = public_checkpoint(tiny_teacher("spade"), tmp_path / "small.pth.tar")
    with pytest.raises(CompressError, match="small.pth.tar.*pass config="):
        load_facevid2vid_teacher(path)


def test_checkpoint_without_the_head_pose_network_names_the_file_and_what_it_found(tmp_path, tiny_teacher):
    teacher = tiny_teacher("spade")
    path = tmp_path / "fomm-like.pth.tar"
    torch.save({"generator": teacher.generator.state_dict(), "kp_detector": teacher.kp_detector.state_dict()}, path)
    expected = r"fomm-like.pth.tar: not a face-vid2vid checkpoint.*found networks \['generator', 'kp_detector'\]"
    with pytest.raises(CompressError, match=expected):
        load_facevid2vid_teacher(path, teacher_config("vox-256"))


def test_checkpoint_of_another_architecture_is_refused_with_the_key_diff(tmp_path, tiny_teacher, tiny_config):
    path = public_checkpoint(tiny_teacher("spade"), tmp_path / "tiny.pth.tar")
    with pytest.raises(CompressError) as err:
        load_facevid2vid_teacher(path, tiny_config("original"))
    message = str(err.value)
    assert "tiny.pth.tar" in message
    assert "missing keys" in message and "generator.resblocks_3d.3dr1" in message
    assert "unexpected keys" in message and "generator.decoder.fc.weight" in message
    assert "shape mismatches" in message and "generator.first.conv.weight" in message


def test_liveportrait_folder_missing_a_network_names_the_file(tmp_path, tiny_teacher, tiny_config):
    folder = liveportrait_folder(tiny_teacher("liveportrait"), tmp_path / "base_models")
    (folder / "warping_module.pth").unlink()
    with pytest.raises(CompressError, match="base_models: missing warping_module.pth"):
        load_facevid2vid_teacher(folder, tiny_config("liveportrait"))


def test_a_checkpoint_that_needs_pickled_code_is_refused(tmp_path, tiny_teacher, tiny_config):
    teacher = tiny_teacher("spade")
    path = tmp_path / "with-args.pth.tar"
    torch.save({name: getattr(teacher, name).state_dict() for name in NETWORKS} | {"args": argparse.Namespace()}, path)
    with pytest.raises(CompressError, match="refusing an untrusted pickle"):
        load_facevid2vid_teacher(path, tiny_config("spade"))

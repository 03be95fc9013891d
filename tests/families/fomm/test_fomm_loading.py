"""Official FOMM checkpoints load with no remapping; others are refused with the key diff."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from compress.checkpoints import save_model
from compress.errors import CompressError
from compress.families.fomm.teacher import FommModel
from compress.families.loading import load_model, load_teacher, load_teacher_model


def official_checkpoint(model: FommModel, path: Path, data_parallel: bool = False) -> Path:
    """A checkpoint laid out like the official vox-cpk.pth.tar (train.py's Logger.save_cpk)."""
    prefix = "module." if data_parallel else ""

    def state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {prefix + k: v for k, v in net.state_dict().items()}

    adam = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(2)}},
        "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "params": [0]}],
    }
    torch.save(
        {
            "kp_detector": state(model.kp_detector),
            "generator": state(model.generator),
            "discriminator": {prefix + "discs.1.conv.weight": torch.zeros(4, 3, 4, 4)},
            "optimizer_kp_detector": adam,
            "optimizer_generator": adam,
            "optimizer_discriminator": adam,
            "epoch": 99,
        },
        path,
    )
    return path


def predict(model: torch.nn.Module, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        kp_s, kp_d = model.kp_detector(source), model.kp_detector(driving)
        return model.generator(source, kp_source=kp_s, kp_driving=kp_d)["prediction"]


@pytest.mark.parametrize("data_parallel", [False, True], ids=["plain", "data_parallel"])
def test_official_layout_checkpoint_loads_and_runs(tmp_path, family, tiny_teacher, tiny_config, frames, data_parallel):
    path = official_checkpoint(tiny_teacher, tmp_path / "vox-cpk.pth.tar", data_parallel)
    loaded, _ = load_teacher_model(family, path, tiny_config)
    source, driving = frames(tiny_config, seed=1), frames(tiny_config, seed=2)
    torch.testing.assert_close(predict(loaded, source, driving), predict(tiny_teacher, source, driving), rtol=0, atol=0)


def test_public_api_loads_by_family_name(tmp_path, tiny_teacher, tiny_config):
    path = official_checkpoint(tiny_teacher, tmp_path / "cpk.pth.tar")
    model = load_teacher("fomm", path, config=tiny_config)
    assert callable(model.kp_detector) and hasattr(model.generator, "encode_source")


def test_flat_prefixed_state_dict_loads(tmp_path, family, tiny_teacher, tiny_config):
    path = tmp_path / "flat.pth"
    torch.save(tiny_teacher.state_dict(), path)
    loaded, _ = load_teacher_model(family, path, tiny_config)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in tiny_teacher.state_dict().items())


def test_checkpoint_without_fomm_networks_names_the_file(tmp_path, family, tiny_config):
    path = tmp_path / "resnet.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CompressError, match="resnet.pth.*kp_detector"):
        load_teacher_model(family, path, tiny_config)


def test_checkpoint_of_another_architecture_is_refused_with_the_key_diff(tmp_path, family, tiny_teacher, tiny_config):
    path = official_checkpoint(tiny_teacher, tmp_path / "tiny.pth.tar")
    wider = {
        **tiny_config,
        "generator_params": {**tiny_config["generator_params"], "block_expansion": 16, "num_bottleneck_blocks": 2},
    }
    with pytest.raises(CompressError) as err:
        load_teacher_model(family, path, wider)
    message = str(err.value)
    assert "tiny.pth.tar" in message
    assert "missing keys" in message and "generator.bottleneck.r1" in message
    assert "shape mismatches" in message and "generator.first.conv.weight" in message


def test_teacher_saved_as_safetensors_reloads_with_its_config(tmp_path, family, tiny_teacher, tiny_config, frames):
    path = save_model(tmp_path / "teacher.safetensors", tiny_teacher, family="fomm", kind="teacher", config=tiny_config)
    loaded, meta = load_model(path, family)
    assert meta["config"] == tiny_config
    source = frames(tiny_config)
    torch.testing.assert_close(predict(loaded, source, source), predict(tiny_teacher, source, source), rtol=0, atol=0)

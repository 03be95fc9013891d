"""Safe checkpoint loading: weights_only pickles, numpy pickles, safetensors, refusals with clear messages."""

from __future__ import annotations

import collections
import os
import pickle

import numpy as np
import pytest
import torch

from compress.checkpoints import atomic_path, load_raw, load_state_dict_checked, portable, save_model
from compress.errors import CompressError
from compress.families.base import Family
from compress.families.loading import load_model
from compress.families.registry import get_family


class NeedsCode:  # a pickle of this needs code to load
    def __init__(self):
        self.x = torch.zeros(2)


def test_plain_state_dict_loads(tmp_path):
    path = tmp_path / "w.pth.tar"
    torch.save({"net": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_raw(path)["net"]["w"], torch.ones(2))


def test_pickle_needing_code_is_refused_naming_file_and_flag(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"obj": NeedsCode()}, path)
    with pytest.raises(CompressError) as exc:
        load_raw(path)
    assert str(path) in str(exc.value) and "--trust-checkpoint" in str(exc.value)


def test_pickle_needing_code_loads_with_trust(tmp_path):
    path = tmp_path / "trusted.pt"
    torch.save({"obj": NeedsCode()}, path)
    assert isinstance(load_raw(path, trust=True)["obj"], NeedsCode)


def test_truncated_checkpoint_is_reported(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save({"w": torch.ones(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CompressError, match="corrupt or truncated"):
        load_raw(path)


def test_corrupt_safetensors_is_reported(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CompressError, match="corrupt or truncated"):
        load_raw(path)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(CompressError, match="not found"):
        load_raw(tmp_path / "none.pth")


def test_architecture_mismatch_lists_missing_unexpected_and_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    state = collections.OrderedDict(model.state_dict())
    state.pop("1.bias")
    state["extra.w"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(5, 2)
    with pytest.raises(CompressError) as exc:
        load_state_dict_checked(model, state, "ckpt.pth")
    msg = str(exc.value)
    assert "missing keys (1): 1.bias" in msg and "unexpected keys (1): extra.w" in msg
    assert "0.weight: checkpoint (5, 2) vs model (3, 2)" in msg


def test_key_lists_are_cut_at_ten():
    model = torch.nn.Sequential(*[torch.nn.Linear(1, 1) for _ in range(12)])
    with pytest.raises(CompressError, match=r"missing keys \(24\): .*\(and 14 more\)"):
        load_state_dict_checked(model, {}, "x.pth")


def test_pruned_model_round_trips_through_structure_spec(tmp_path):
    import torch_pruning as tp

    family = get_family("generic")
    config = family.resolve_config("student-32", "student")
    model = family.build_student(config).eval()
    x = torch.rand(1, 3, 32, 32)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    graph.get_pruning_group(model.down[0], tp.prune_conv_out_channels, idxs=[0, 1, 2, 3]).prune()
    assert model.down[0].out_channels == 12
    path = save_model(tmp_path / "m.safetensors", model, family="generic", kind="student", config=config)
    loaded, meta = load_model(path)
    assert meta["kind"] == "student" and loaded.down[0].out_channels == 12
    assert torch.allclose(loaded(x), model(x))


class Volumes(Family):
    """A family whose student is a small network of 3-D layers, like face-vid2vid's."""

    name = "volumes"

    def build_student(self, config):
        return torch.nn.Sequential(
            torch.nn.Conv3d(2, 8, 3, padding=1),
            torch.nn.BatchNorm3d(8),
            torch.nn.ReLU(),
            torch.nn.Conv3d(8, 8, 3, padding=1),
            torch.nn.InstanceNorm3d(8, affine=True),
            torch.nn.ConvTranspose3d(8, 2, 2, stride=2),
        )


def test_pruned_3d_model_round_trips_through_structure_spec(tmp_path):
    import torch_pruning as tp

    torch.manual_seed(0)
    model = Volumes().build_student({})
    x = torch.rand(2, 2, 4, 6, 6)
    model(x)  # a training step's batch statistics, so the batch norm's running buffers matter
    model.eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    graph.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 1, 2]).prune()
    graph.get_pruning_group(model[3], tp.prune_conv_out_channels, idxs=[4, 5]).prune()
    assert (model[1].num_features, model[4].num_features, model[5].in_channels) == (5, 6, 6)
    path = save_model(tmp_path / "m.safetensors", model, family=Volumes.name, kind="student", config={})
    loaded, _ = load_model(path, Volumes())
    assert torch.equal(loaded(x), model(x))


def test_atomic_path_leaves_target_untouched_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_replaces_a_folder(tmp_path):
    target = tmp_path / "bundle"
    target.mkdir()
    (target / "old").write_text("x")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("y")
    assert [p.name for p in target.iterdir()] == ["new"]


# -- plain pickles of numpy arrays (detectron2's model zoo) ----------------------------------
class RunsCode:
    """Unpickling this calls os.system: a pickle that would run code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_model_zoo_pickle_of_numpy_arrays_loads_as_tensors(tmp_path):
    path = tmp_path / "model_final.pkl"
    model = collections.OrderedDict(w=np.arange(6, dtype=np.float32).reshape(2, 3), step=np.int64(3))
    data = {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True, "shapes": [(1, 2)]}
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        raw = load_raw(path)
        assert torch.equal(raw["model"]["w"], torch.arange(6, dtype=torch.float32).view(2, 3)), protocol
        assert raw["__author__"] == "Detectron2 Model Zoo" and raw["matching_heuristics"] is True
        assert raw["shapes"] == [(1, 2)] and raw["model"]["step"] == 3


def test_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.zeros(2)}, "payload": RunsCode(marker)}))
    with pytest.raises(CompressError) as exc:
        load_raw(path)
    assert not marker.exists()
    message = str(exc.value)
    assert str(path) in message and f"{os.system.__module__}.system" in message and "--trust-checkpoint" in message


def test_pickle_bytes_through_another_codec_are_refused(tmp_path):
    path = tmp_path / "codec.pkl"
    # _codecs.encode is admitted for protocol 2's latin1 bytes only: rot13 (or zlib, base64) is refused.
    path.write_bytes(b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.")
    with pytest.raises(CompressError, match="rot13.*--trust-checkpoint"):
        load_raw(path)


def test_pickle_needing_code_loads_as_pickle_with_trust(tmp_path):
    path = tmp_path / "trusted.pkl"
    path.write_bytes(pickle.dumps({"obj": NeedsCode()}))
    assert isinstance(load_raw(path, trust=True)["obj"], NeedsCode)


def test_truncated_pickle_is_reported(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"model": {"w": np.ones(100)}})[:50])
    with pytest.raises(CompressError, match="corrupt or truncated"):
        load_raw(path)


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_checkpoint_named_pkl_is_read_by_torch(tmp_path, zip_format):
    path = tmp_path / "torch.pkl"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=zip_format)
    assert torch.equal(load_raw(path)["w"], torch.ones(2))


def test_a_recorded_path_keeps_the_name_it_was_typed_with_through_a_symlink(tmp_path, monkeypatch):
    (tmp_path / "package" / "recipes").mkdir(parents=True)
    (tmp_path / "recipes").symlink_to(tmp_path / "package" / "recipes")
    monkeypatch.chdir(tmp_path)
    assert portable(tmp_path / "recipes" / "teacher.yaml") == "recipes/teacher.yaml"
    assert portable(tmp_path.parent / "elsewhere.yaml") == "elsewhere.yaml"

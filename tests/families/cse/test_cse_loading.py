"""CSE checkpoints: detectron2 model-zoo `.pkl` (no pickled code trusted), `.pth` and safetensors; configs
claimed from key shapes; detector keys ignored and listed."""

from __future__ import annotations

import copy
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from compress.errors import CompressError
from compress.families.cse.checkpoint import claims, load_cse_teacher, teacher_shapes
from compress.families.cse.configs import TEACHER_CONFIGS, infer_config, teacher_config
from compress.families.cse.teacher import build_teacher

# A detector's keys as the model zoo's files have them (shapes shrunk), and GeneralizedRCNN's input buffers.
DETECTOR = {
    "proposal_generator.rpn_head.conv.weight": (4, 4, 3, 3),
    "proposal_generator.rpn_head.objectness_logits.bias": (3,),
    "roi_heads.box_head.fc1.weight": (8, 16),
    "roi_heads.box_predictor.cls_score.weight": (2, 8),
    "pixel_mean": (3, 1, 1),
    "pixel_std": (3, 1, 1),
}


def model_zoo_dict(teacher) -> dict:
    """{"model": {key: float32 ndarray}, "__author__", "matching_heuristics"}: detectron2's model-zoo layout."""
    model = {k: v.numpy().copy() for k, v in teacher.state_dict().items()}
    model.update({k: np.ones(shape, np.float32) for k, shape in DETECTOR.items()})
    return {"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": False}


def same_outputs(a, b, crop) -> bool:
    with torch.no_grad():
        out_a, out_b = a(crop), b(crop)
    return all(torch.equal(out_a[k], out_b[k]) for k in out_a)


def test_a_model_zoo_pkl_loads_without_trusting_code_and_runs(tiny_teacher, tiny, crops, tmp_path):
    path = tmp_path / "model_final_tiny.pkl"
    path.write_bytes(pickle.dumps(model_zoo_dict(tiny_teacher)))
    teacher = load_cse_teacher(path)  # trust=False: the restricted unpickler
    assert teacher.config == tiny  # inferred from the key shapes
    assert teacher.ignored_keys == sorted(DETECTOR)
    assert same_outputs(teacher, tiny_teacher, crops(1))


class Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING), as a pickle written by Python 2 holds arrays and keys."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_bytes(self, obj: bytes) -> None:
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def test_a_python2_pickle_loads_with_latin1_strings(tiny_teacher, crops, tmp_path):
    zoo = model_zoo_dict(tiny_teacher)
    data = {k.encode(): v for k, v in zoo.items() if k != "model"}
    data[b"model"] = {k.encode(): v for k, v in zoo["model"].items()}
    path = tmp_path / "model_final_py2.pkl"
    with path.open("wb") as f:
        Python2Pickler(f, protocol=2).dump(data)
    # Python 2's numpy named its module numpy.core.multiarray (a GLOBAL opcode, "c" module newline name).
    path.write_bytes(path.read_bytes().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n"))
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in path.read_bytes()
    teacher = load_cse_teacher(path)
    assert same_outputs(teacher, tiny_teacher, crops(1))


def test_a_detectron2_training_pth_loads(tiny_teacher, tiny, crops, tmp_path):
    path = tmp_path / "model_0009999.pth"
    state = {**tiny_teacher.state_dict(), "pixel_mean": torch.zeros(3, 1, 1)}
    torch.save({"model": state, "optimizer": {"state": {}}, "iteration": 9999}, path)
    teacher = load_cse_teacher(path)
    assert teacher.config == tiny and teacher.ignored_keys == ["pixel_mean"]
    assert same_outputs(teacher, tiny_teacher, crops(1))


def test_a_flat_safetensors_state_dict_loads_with_a_given_config(tiny_teacher, tiny, crops, tmp_path):
    path = tmp_path / "cse.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_teacher.state_dict().items()}, str(path))
    teacher = load_cse_teacher(path, config=tiny)
    assert same_outputs(teacher, tiny_teacher, crops(1))


def test_a_checkpoint_that_does_not_fit_the_named_config_names_the_keys(tiny_teacher, tmp_path):
    path = tmp_path / "tiny.pkl"
    path.write_bytes(pickle.dumps(model_zoo_dict(tiny_teacher)))
    with pytest.raises(CompressError, match="(?s)does not fit.*shape mismatches"):
        load_cse_teacher(path, config="R_50_FPN_DL_s1x")


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"model": {"generator.conv.weight": np.zeros((2, 2))}, "__author__": "x"}))
    with pytest.raises(CompressError, match="not a DensePose CSE checkpoint"):
        load_cse_teacher(path)


@pytest.mark.parametrize("name", ["densepose_rcnn_R_50_FPN_s1x", "densepose_rcnn_R_101_FPN_DL_soft_s1x"])
def test_model_zoo_key_shapes_claim_the_named_config(name):
    # Soft and plain variants share one architecture: the plain name is the one claimed.
    raw = {"model": {k: torch.empty(s, device="meta") for k, s in teacher_shapes(teacher_config(name)).items()}}
    raw["model"].update({k: torch.empty(s, device="meta") for k, s in DETECTOR.items()})
    claimed = claims(raw)
    assert claimed == name.replace("soft_", "") and TEACHER_CONFIGS[claimed] == teacher_config(name)


def test_other_meshes_and_widths_claim_an_inferred_config(tiny_teacher, tiny):
    assert claims(tiny_teacher.state_dict()) == tiny
    state = tiny_teacher.state_dict()
    del state["roi_heads.decoder.p5.4.weight"]  # a key the inferred config's teacher has
    assert claims(state) is None
    assert claims({"kp_detector.kp.weight": torch.zeros(1)}) is None


def variants(config: dict) -> list[dict]:
    """The tiny config with each option that key shapes show changed."""
    changes = [
        {"deeplab_nonlocal_on": True},
        {"deeplab_norm": ""},
        {"name": "DensePoseV1ConvXHead", "num_stacked_convs": 3, "conv_head_kernel": 5},
        {"embed_size": 8, "deconv_kernel": 2, "num_coarse_segm_channels": 3},
    ]
    out = [copy.deepcopy(config) for _ in changes]
    for variant, change in zip(out, changes):
        variant["roi_densepose_head"].update(change)
    basic, grouped = copy.deepcopy(config), copy.deepcopy(config)
    basic["resnets"].update(depth=18, res2_out_channels=16, width_per_group=64)
    grouped["resnets"].update(depth=101, num_groups=4, width_per_group=2)
    return [*out, basic, grouped]


def test_every_option_that_key_shapes_show_is_inferred(tiny):
    for config in variants(tiny):
        assert infer_config(teacher_shapes(config)) == config


def test_a_misspelt_config_key_is_named(tiny):
    tiny["roi_densepose_head"]["num_stacked_conv"] = tiny["roi_densepose_head"].pop("num_stacked_convs")
    named = r"unknown keys \['num_stacked_conv'\], missing keys \['num_stacked_convs'\]"
    with pytest.raises(CompressError, match=named):
        build_teacher(tiny)

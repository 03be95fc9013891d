"""A CSE teacher small enough for loading tests to take well under a second."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from compress.families.cse.configs import teacher_config
from compress.families.cse.teacher import CseTeacher, build_teacher


def tiny_config() -> dict[str, Any]:
    """The R50 layout at narrow widths, a DeepLab head and two meshes (one of each embedder type)."""
    config = teacher_config("R_50_FPN_DL_s1x")
    config["resnets"].update(stem_out_channels=4, res2_out_channels=8, width_per_group=2)
    # Width 64: DeepLab's GroupNorm(32) needs 2+ channels a group on ASPP's pooled 1x1 map.
    config["fpn"]["out_channels"] = 64
    config["roi_densepose_head"].update(
        num_stacked_convs=2,
        conv_head_dim=32,
        decoder_conv_dims=8,
        decoder_num_classes=64,
        embedders={
            "blob_50": {"type": "vertex_feature", "num_vertices": 50, "feature_dim": 8},
            "direct_30": {"type": "vertex_direct", "num_vertices": 30},
        },
    )
    return config


@pytest.fixture
def tiny() -> dict[str, Any]:
    return copy.deepcopy(tiny_config())


@pytest.fixture
def tiny_teacher(tiny: dict[str, Any]) -> CseTeacher:
    """Seeded random weights everywhere (frozen BN statistics, embedder features included), eval mode."""
    torch.manual_seed(0)
    teacher = build_teacher(tiny)
    with torch.no_grad():
        for name, value in teacher.state_dict().items():
            if name.endswith(("running_var", "norm.weight")):
                value.uniform_(0.5, 1.5)
            else:
                value.normal_(0, 0.3)
    return teacher.eval()


@pytest.fixture
def crops():
    """crops(n, h, w, seed) -> smooth random RGB crops [n, 3, h, w] in [0, 1]."""

    def make(n: int = 2, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
        low = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
        return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)

    return make

"""A FOMM teacher small enough for export and conversion tests to take seconds."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from compress.families.fomm.family import FommFamily
from compress.families.fomm.teacher import FommModel

TINY: dict[str, Any] = {
    "kind": "teacher",
    "common_params": {"num_kp": 4, "num_channels": 3, "estimate_jacobian": True, "frame_shape": [32, 32]},
    "kp_detector_params": {
        "temperature": 0.1,
        "block_expansion": 8,
        "max_features": 16,
        "num_blocks": 2,
        "scale_factor": 0.5,
        "pad": 3,
    },
    "generator_params": {
        "block_expansion": 8,
        "max_features": 16,
        "num_down_blocks": 2,
        "num_bottleneck_blocks": 1,
        "estimate_occlusion_map": True,
        "dense_motion_params": {"block_expansion": 8, "max_features": 16, "num_blocks": 2, "scale_factor": 0.25},
    },
}


@pytest.fixture
def tiny_config() -> dict[str, Any]:
    return copy.deepcopy(TINY)


@pytest.fixture
def family() -> FommFamily:
    return FommFamily()


@pytest.fixture
def tiny_teacher(tiny_config: dict[str, Any]) -> FommModel:
    """Seeded, with non-trivial BN statistics and jacobian head, in eval mode."""
    torch.manual_seed(0)
    model = FommModel(tiny_config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.kp_detector.jacobian.weight.normal_(0, 0.01)
    return model.eval()


@pytest.fixture
def frames():
    """frames(config, n, seed) -> smooth random frames [n, 3, H, W] in [0, 1] at the config's size."""

    def make(config: dict[str, Any], n: int = 1, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        h, w = config["common_params"]["frame_shape"]
        low = torch.rand(n, 3, 4, 4, generator=g)
        return torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)

    return make

"""Small face-vid2vid and LivePortrait teachers with seeded random weights, and frames for them."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from compress.families.facevid2vid import build_teacher
from tests.families.facevid2vid.tiny import TINY_LIVEPORTRAIT, TINY_ORIGINAL, TINY_SPADE
from tests.families.facevid2vid.weights import randomize

TINY_CONFIGS = {"spade": TINY_SPADE, "original": TINY_ORIGINAL, "liveportrait": TINY_LIVEPORTRAIT}


@pytest.fixture
def tiny_config():
    """tiny_config(name) -> a copy of one of TINY_CONFIGS."""
    return lambda name: copy.deepcopy(TINY_CONFIGS[name])


@pytest.fixture
def tiny_teacher():
    """tiny_teacher(name or config, seed) -> a teacher with seeded random weights, in eval mode."""

    def make(config: str | dict[str, Any], seed: int = 0) -> torch.nn.Module:
        config = copy.deepcopy(TINY_CONFIGS[config]) if isinstance(config, str) else config
        return randomize(build_teacher(config), seed)

    return make


@pytest.fixture
def frames():
    """frames(n, seed) -> smooth random 32x32 frames [n, 3, 32, 32] in [0, 1]."""

    def make(n: int = 1, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        low = torch.rand(n, 3, 4, 4, generator=g)
        return torch.nn.functional.interpolate(low, size=(32, 32), mode="bilinear", align_corners=False)

    return make

"""Shared fixtures: tiny recipes of the generic family, written into tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def write_recipe(tmp_path: Path):
    """write_recipe(stages, **fields) -> path of a generic-family recipe in tmp_path."""

    def write(stages: list, name: str = "tiny", **fields) -> Path:
        data = {"name": name, "version": "0.1.0", "family": "generic", "stages": stages, **fields}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return write


FAST_DISTILL = {"steps": 6, "batch_size": 4, "train_samples": 16, "checkpoint_every": 3, "eval_batches": 1}

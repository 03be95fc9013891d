"""Teacher loading shared by the runner, `inspect` and the public API."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.checkpoints import load_model, load_raw, load_state_dict_checked, read_model_meta
from compress.families.base import Family
from compress.families.registry import get_family


def load_teacher_model(family: Family, path: str | Path | None, config: dict[str, Any], trust: bool = False, seed: int = 0) -> nn.Module:
    """An official or own checkpoint, or (path None) a seeded random initialisation."""
    if path is None:
        torch.manual_seed(seed)
        return family.build_teacher(config).eval()
    path = Path(path)
    if read_model_meta(path) is not None:
        return load_model(path, family)[0]
    model = family.build_teacher(config)
    state = family.teacher_state_dict(load_raw(path, trust=trust), str(path))
    load_state_dict_checked(model, state, path, f"{family.name} teacher")
    return model.eval()


def load_teacher(family: str, path: str | Path | None, config: str | dict[str, Any] | None = None, trust: bool = False) -> nn.Module:
    """Public API: `compress.load_teacher("fomm", "vox-cpk.pth.tar", config="vox-256")`."""
    fam = get_family(family)
    return load_teacher_model(fam, path, fam.resolve_config(config, "teacher"), trust=trust)

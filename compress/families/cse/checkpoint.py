"""detectron2 DensePose CSE checkpoints -> the teacher: model-zoo `.pkl` (read by the restricted
unpickler), detectron2 `.pth` ({"model": state dict, ...}), or a flat state dict (`.pth`, safetensors).

The detector's keys (RPN, box head and predictor) and GeneralizedRCNN's pixel_mean / pixel_std are
ignored and listed; every dense-branch key must fit the teacher exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from compress.checkpoints import load_raw, load_state_dict_checked
from compress.errors import CompressError
from compress.families.cse.configs import TEACHER_CONFIGS, check_config, infer_config, teacher_config
from compress.families.cse.teacher import CseTeacher, build_teacher

IGNORED_PREFIXES = ("proposal_generator.", "roi_heads.box_head.", "roi_heads.box_predictor.", "pixel_mean", "pixel_std")


def split_state_dict(raw: dict[str, Any], path: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(dense-branch tensors, ignored detector keys) of a checkpoint as read."""
    model = raw["model"] if isinstance(raw.get("model"), dict) else raw
    tensors = {k: v for k, v in model.items() if isinstance(v, torch.Tensor)}
    if not any(k.startswith("roi_heads.densepose_predictor.") for k in tensors):
        raise CompressError(
            f"{path}: not a DensePose CSE checkpoint: expected detectron2 keys (roi_heads.densepose_predictor.*, "
            f"backbone.bottom_up.*), in a 'model' dict or at the top level; found {sorted(model)[:10]}"
        )
    ignored = sorted(k for k in tensors if k.startswith(IGNORED_PREFIXES))
    return {k: v for k, v in tensors.items() if k not in set(ignored)}, ignored


def teacher_state_dict(raw: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
    """The teacher's state dict from a checkpoint as read (detector keys dropped)."""
    return split_state_dict(raw, path)[0]


def teacher_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the teacher a config builds, on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        model = build_teacher(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def claims(raw: dict[str, Any]) -> str | dict[str, Any] | None:
    """The config of a checkpoint (as read), inferred from its key shapes and checked by rebuilding
    them on the meta device: the first named config equal to it (soft and plain variants share one
    architecture), else the inferred dict (other meshes, other widths); None when it is not CSE's."""
    try:
        state = teacher_state_dict(raw, "checkpoint")
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        inferred = infer_config(shapes)
        check_config(inferred)
    except CompressError:
        return None
    if teacher_shapes(inferred) != shapes:
        return None
    return next((name for name, config in TEACHER_CONFIGS.items() if config == inferred), inferred)


def load_cse_teacher(path: str | Path, config: str | dict[str, Any] | None = None, trust: bool = False) -> CseTeacher:
    """The teacher of a checkpoint in eval mode; `config` (a name or dict) or the one its keys claim.
    `teacher.ignored_keys` lists the detector keys left out."""
    raw = load_raw(path, trust=trust)
    state, ignored = split_state_dict(raw, str(path))
    if config is None:  # what the keys claim; else the inferred config, whose build names what does not fit
        config = claims(raw) or infer_config({k: tuple(v.shape) for k, v in state.items()})
    resolved = teacher_config(config) if isinstance(config, str) else config
    teacher = build_teacher(resolved)
    load_state_dict_checked(teacher, {k: v.float() for k, v in state.items()}, path, "cse teacher")
    teacher.ignored_keys = ignored
    return teacher.eval()

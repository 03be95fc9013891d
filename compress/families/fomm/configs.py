"""Named FOMM teacher configs (the official `config/*.yaml` model_params) and the official YAML reader.

A config is JSON-able (it is stored in safetensors metadata) and describes the whole architecture:
{"kind": "teacher", "common_params": {..., "frame_shape": [H, W]}, "kp_detector_params": {...},
"generator_params": {...}}.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from compress.errors import CompressError


def _official_256(single_jacobian_map: bool = False) -> dict[str, Any]:
    """The architecture every official 256x256 checkpoint shares (vox, taichi, bair, fashion, nemo, mgif)."""
    kp_detector_params: dict[str, Any] = {
        "temperature": 0.1,
        "block_expansion": 32,
        "max_features": 1024,
        "scale_factor": 0.25,
        "num_blocks": 5,
    }
    if single_jacobian_map:
        kp_detector_params["single_jacobian_map"] = True
    return {
        "kind": "teacher",
        "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True, "frame_shape": [256, 256]},
        "kp_detector_params": kp_detector_params,
        "generator_params": {
            "block_expansion": 64,
            "max_features": 512,
            "num_down_blocks": 2,
            "num_bottleneck_blocks": 6,
            "estimate_occlusion_map": True,
            "dense_motion_params": {"block_expansion": 64, "max_features": 1024, "num_blocks": 5, "scale_factor": 0.25},
        },
    }


# A teacher small enough to train on 2 CPU cores at 64x64 (the demo); same structure, fewer
# channels and levels (64 / 2 / 2**3 and 64 / 4 / 2**2 keep the hourglasses divisible).
DEMO_64: dict[str, Any] = {
    "kind": "teacher",
    "common_params": {"num_kp": 10, "num_channels": 3, "estimate_jacobian": True, "frame_shape": [64, 64]},
    "kp_detector_params": {
        "temperature": 0.1,
        "block_expansion": 16,
        "max_features": 256,
        "scale_factor": 0.5,
        "num_blocks": 3,
        "pad": 3,
    },
    "generator_params": {
        "block_expansion": 32,
        "max_features": 256,
        "num_down_blocks": 2,
        "num_bottleneck_blocks": 3,
        "estimate_occlusion_map": True,
        "dense_motion_params": {"block_expansion": 32, "max_features": 256, "num_blocks": 2, "scale_factor": 0.25},
    },
}

TEACHER_CONFIGS: dict[str, dict[str, Any]] = {
    "vox-256": _official_256(),
    "vox-adv-256": _official_256(),
    "taichi-256": _official_256(),
    "taichi-adv-256": _official_256(),
    "bair-256": _official_256(),
    "fashion-256": _official_256(),
    "nemo-256": _official_256(),
    "mgif-256": _official_256(single_jacobian_map=True),
    "demo-64": DEMO_64,
}
DEFAULT_TEACHER = "vox-256"


def teacher_config(name: str) -> dict[str, Any]:
    """A copy of a named config, or of an official YAML file's model when `name` is a .yaml path."""
    if name.endswith((".yaml", ".yml")):
        return load_official_yaml(name)
    if name not in TEACHER_CONFIGS:
        raise CompressError(
            f"fomm: unknown teacher config {name!r}; known: {', '.join(TEACHER_CONFIGS)} "
            "(or the path of an official config .yaml)"
        )
    return copy.deepcopy(TEACHER_CONFIGS[name])


def load_official_yaml(path: str | Path) -> dict[str, Any]:
    """The teacher config of an official `config/*.yaml` (its model_params and dataset_params.frame_shape)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CompressError(f"{path}: cannot read the FOMM config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise CompressError(f"{path}: not valid YAML ({exc})") from None
    model = raw.get("model_params") if isinstance(raw, dict) else None
    if not isinstance(model, dict):
        raise CompressError(f"{path}: no model_params section; expected an official first-order-model config")
    missing = [k for k in ("common_params", "kp_detector_params", "generator_params") if k not in model]
    if missing:
        raise CompressError(f"{path}: model_params lacks {', '.join(missing)}")
    frame_shape = (raw.get("dataset_params") or {}).get("frame_shape", [256, 256, 3])
    return {
        "kind": "teacher",
        "common_params": {**model["common_params"], "frame_shape": [int(n) for n in frame_shape[:2]]},
        "kp_detector_params": dict(model["kp_detector_params"]),
        "generator_params": copy.deepcopy(model["generator_params"]),
    }


def frame_shape(config: dict[str, Any]) -> tuple[int, int]:
    """(H, W) of a config's frames: a teacher's common_params.frame_shape, a student's frame_size."""
    size = _common(config).get("frame_shape", config.get("frame_size"))
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) >= 2:
        return int(size[0]), int(size[1])
    raise CompressError("fomm config: common_params.frame_shape missing (frame size [H, W], e.g. [256, 256])")


def num_channels(config: dict[str, Any]) -> int:
    return int(_common(config).get("num_channels", 3))


def _common(config: dict[str, Any]) -> dict[str, Any]:
    # Teachers keep the official layout (common_params); students keep these keys at the top level.
    common = config.get("common_params", config)
    if not isinstance(common, dict):
        raise CompressError("fomm config: common_params must be a mapping")
    return common

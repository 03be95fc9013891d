"""Named face-vid2vid and LivePortrait teacher configs, and the public YAML readers.

A config is JSON-able and is the public YAML's `model_params` plus what the YAML leaves to the
command line or the folder:
  face-vid2vid: {"kind": "teacher", "variant": "facevid2vid", "generator": "spade" | "original",
                 "common_params", "kp_detector_params", "he_estimator_params", "generator_params"}
                 (public config/vox-256*.yaml; demo.py's `--gen` picks the generator)
  LivePortrait: {"kind": "teacher", "variant": "liveportrait", "appearance_feature_extractor_params",
                 "motion_extractor_params", "warping_module_params", "spade_generator_params",
                 "stitching_retargeting_module_params" (None when the folder has no stitching file)}
                 (public src/config/models.yaml)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from compress.errors import CompressError

FACEVID2VID_SECTIONS = ("common_params", "kp_detector_params", "he_estimator_params", "generator_params")
LIVEPORTRAIT_SECTIONS = (
    "appearance_feature_extractor_params",
    "motion_extractor_params",
    "warping_module_params",
    "spade_generator_params",
)
GENERATORS = ("spade", "original")
# The dense motion network of the public vox-256 configs and of LivePortrait's warping module.
DENSE_MOTION = {"block_expansion": 32, "max_features": 1024, "num_blocks": 5, "reshape_depth": 16, "compress": 4}


def _vox_256(generator: str, kp_scale_factor: float) -> dict[str, Any]:
    """config/vox-256.yaml (kp scale_factor 0.25) and config/vox-256-beta.yaml (1): the same otherwise."""
    return {
        "kind": "teacher",
        "variant": "facevid2vid",
        "generator": generator,
        "common_params": {"num_kp": 15, "image_channel": 3, "feature_channel": 32, "estimate_jacobian": False},
        "kp_detector_params": {
            "temperature": 0.1,
            "block_expansion": 32,
            "max_features": 1024,
            "scale_factor": kp_scale_factor,
            "num_blocks": 5,
            "reshape_channel": 16384,
            "reshape_depth": 16,
        },
        "he_estimator_params": {"block_expansion": 64, "max_features": 2048, "num_bins": 66},
        "generator_params": {
            "block_expansion": 64,
            "max_features": 512,
            "num_down_blocks": 2,
            "reshape_channel": 32,
            "reshape_depth": 16,
            "num_resblocks": 6,
            "estimate_occlusion_map": True,
            "dense_motion_params": dict(DENSE_MOTION),
        },
    }


LIVEPORTRAIT: dict[str, Any] = {
    "kind": "teacher",
    "variant": "liveportrait",
    "appearance_feature_extractor_params": {
        "image_channel": 3,
        "block_expansion": 64,
        "num_down_blocks": 2,
        "max_features": 512,
        "reshape_channel": 32,
        "reshape_depth": 16,
        "num_resblocks": 6,
    },
    "motion_extractor_params": {"num_kp": 21, "backbone": "convnextv2_tiny"},
    "warping_module_params": {
        "num_kp": 21,
        "block_expansion": 64,
        "max_features": 512,
        "num_down_blocks": 2,
        "reshape_channel": 32,
        "estimate_occlusion_map": True,
        "dense_motion_params": dict(DENSE_MOTION),
    },
    "spade_generator_params": {"upscale": 2, "block_expansion": 64, "max_features": 512, "num_down_blocks": 2},
    "stitching_retargeting_module_params": {
        "stitching": {"input_size": 126, "hidden_sizes": [128, 128, 64], "output_size": 65},
        "lip": {"input_size": 65, "hidden_sizes": [128, 128, 64], "output_size": 63},
        "eye": {"input_size": 66, "hidden_sizes": [256, 256, 128, 128, 64], "output_size": 63},
    },
}


def _demo_64() -> dict[str, Any]:
    """The demo teacher: vox-256's topology (3-D keypoints, 66-bin head pose, a 16 x 4 x 16 x 16 feature
    volume, Conv3d, 5-D grid_sample) at 64x64 frames, 10 keypoints and narrow widths, for CPU training.
    Its generator is the "original" one: the SPADE decoder's fixed 128-channel convolutions at full
    resolution would cost most of a CPU training step."""
    config = {**_vox_256("original", 0.5), "frame_shape": [64, 64]}
    config["common_params"].update(num_kp=10, feature_channel=16)
    config["kp_detector_params"].update(
        block_expansion=16, max_features=128, num_blocks=2, reshape_channel=256, reshape_depth=4
    )
    config["he_estimator_params"].update(block_expansion=16, max_features=128)
    config["generator_params"].update(
        block_expansion=16, max_features=64, reshape_channel=16, reshape_depth=4, num_resblocks=2
    )
    config["generator_params"]["dense_motion_params"].update(
        block_expansion=16, max_features=64, num_blocks=2, reshape_depth=4, compress=4
    )
    return config


TEACHER_CONFIGS: dict[str, dict[str, Any]] = {
    # The released "Vox-256-New" 00000189-checkpoint.pth.tar (SadTalker's facevid2vid_00189-model.pth.tar).
    "vox-256": _vox_256("spade", 0.25),
    # The "Vox-256-Beta" checkpoint: config/vox-256-beta.yaml with `--gen original`.
    "vox-256-original": _vox_256("original", 1),
    "liveportrait": LIVEPORTRAIT,
    # A small teacher of the same topology, trained on the synthetic clips (recipes/teachers/).
    "demo-64": _demo_64(),
}
DEFAULT_TEACHER = "vox-256"


def teacher_config(name: str, generator: str = "spade") -> dict[str, Any]:
    """A copy of a named config, or of a public YAML file's model when `name` is a .yaml path
    (face-vid2vid's config/*.yaml with `generator`, or LivePortrait's src/config/models.yaml)."""
    if name.endswith((".yaml", ".yml")):
        return load_public_yaml(name, generator)
    if name not in TEACHER_CONFIGS:
        raise CompressError(
            f"facevid2vid: unknown teacher config {name!r}; known: {', '.join(TEACHER_CONFIGS)} "
            "(or the path of a public config .yaml)"
        )
    return copy.deepcopy(TEACHER_CONFIGS[name])


def load_public_yaml(path: str | Path, generator: str = "spade") -> dict[str, Any]:
    """The teacher config of face-vid2vid's config/*.yaml (generator "spade" or "original", demo.py's
    `--gen`) or of LivePortrait's models.yaml."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CompressError(f"{path}: cannot read the config ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise CompressError(f"{path}: not valid YAML ({exc})") from None
    model = raw.get("model_params") if isinstance(raw, dict) else None
    if not isinstance(model, dict):
        raise CompressError(f"{path}: no model_params section; expected a face-vid2vid or LivePortrait config")
    if "appearance_feature_extractor_params" in model:
        sections = (*LIVEPORTRAIT_SECTIONS, "stitching_retargeting_module_params")
        return {"kind": "teacher", "variant": "liveportrait", **_sections(path, model, sections)}
    if generator not in GENERATORS:
        raise CompressError(f"facevid2vid: generator must be one of {GENERATORS}, not {generator!r}")
    return {
        "kind": "teacher",
        "variant": "facevid2vid",
        "generator": generator,
        **_sections(path, model, FACEVID2VID_SECTIONS),
    }


def _sections(path: Path, model: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    missing = [name for name in names if name not in model]
    if missing:
        raise CompressError(f"{path}: model_params lacks {', '.join(missing)}")
    return {name: copy.deepcopy(model[name]) for name in names}

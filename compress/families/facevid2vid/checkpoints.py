"""Public face-vid2vid and LivePortrait checkpoints -> teachers, read safely (compress.checkpoints.load_raw).

Layouts read with no remapping by the user:
  face-vid2vid  nested: the public train.py's {"generator", "kp_detector", "he_estimator", ...} (the
                discriminator, optimizer states and epoch are ignored), `module.` prefixes stripped;
                flat: one state dict with `generator.` / `kp_detector.` / `he_estimator.` prefixes, or
                SadTalker's `kp_extractor.` for the keypoint detector (its safetensors also hold
                other networks, which are ignored)
  LivePortrait  a folder with appearance_feature_extractor.pth, motion_extractor.pth,
                warping_module.pth, spade_generator.pth (plain state dicts) and, optionally,
                stitching_retargeting_module.pth ({"retarget_shoulder", "retarget_mouth", "retarget_eye"});
                or the download folder liveportrait/ with them in base_models/ and retargeting_models/

These are the teacher-side functions of a family (read_checkpoint, teacher_state_dict, claims,
build_teacher); `load_facevid2vid_teacher` chains them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.checkpoints import load_raw, load_state_dict_checked
from compress.errors import CompressError
from compress.families.facevid2vid.configs import TEACHER_CONFIGS, teacher_config
from compress.families.facevid2vid.liveportrait import NETWORKS as LIVEPORTRAIT_NETWORKS
from compress.families.facevid2vid.liveportrait import STITCHING_NETWORKS, LivePortraitModel
from compress.families.facevid2vid.teacher import FaceVid2VidModel

FACEVID2VID_NETWORKS = ("kp_detector", "he_estimator", "generator")
# Other names of our networks' prefixes in public files: SadTalker calls the keypoint detector kp_extractor.
PREFIX_ALIASES = {"kp_extractor": "kp_detector"}
STITCHING_FILE = "stitching_retargeting_module"


def build_teacher(config: dict[str, Any]) -> FaceVid2VidModel | LivePortraitModel:
    """The teacher a config describes (its "variant": "facevid2vid" or "liveportrait")."""
    if config.get("variant") == "liveportrait":
        return LivePortraitModel(config)
    if config.get("variant") == "facevid2vid":
        return FaceVid2VidModel(config)
    raise CompressError(
        f"facevid2vid config: 'variant' must be 'facevid2vid' or 'liveportrait', not {config.get('variant')!r}"
    )


def read_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """A checkpoint file as a (nested) dict, or a LivePortrait folder as {network: state dict}.

    The folder holds the four base files and, optionally, the stitching file; or it is LivePortrait's
    download folder (`pretrained_weights/liveportrait`), with `base_models/` and `retargeting_models/`.
    """
    path = Path(path)
    if not path.is_dir():
        return load_raw(path, trust=trust)
    base, retargeting = (
        (path / "base_models", path / "retargeting_models") if (path / "base_models").is_dir() else (path, path)
    )
    raw = {}
    for name in LIVEPORTRAIT_NETWORKS:
        file = base / f"{name}.pth"
        if not file.is_file():
            raise CompressError(
                f"{base}: missing {file.name}; a LivePortrait folder holds "
                + ", ".join(f"{n}.pth" for n in LIVEPORTRAIT_NETWORKS)
                + f" and optionally {STITCHING_FILE}.pth"
            )
        raw[name] = load_raw(file, trust=trust)
    if (retargeting / f"{STITCHING_FILE}.pth").is_file():
        raw[STITCHING_FILE] = load_raw(retargeting / f"{STITCHING_FILE}.pth", trust=trust)
    return raw


def teacher_state_dict(raw: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """Any layout above (as read by read_checkpoint) -> one state dict with our teachers' keys."""
    if all(isinstance(raw.get(name), dict) for name in LIVEPORTRAIT_NETWORKS):
        return _liveportrait_state_dict(raw, path)
    nested = [name for name in FACEVID2VID_NETWORKS if isinstance(raw.get(name), dict)]
    if nested:
        state = {f"{name}.{_strip_module(k)}": v for name in nested for k, v in raw[name].items()}
    else:
        state = {}
        for key, value in raw.items():
            network, _, rest = _strip_module(key).partition(".")
            network = PREFIX_ALIASES.get(network, network)
            if network in FACEVID2VID_NETWORKS and isinstance(value, torch.Tensor):
                state[f"{network}.{_strip_module(rest)}"] = value
    found = {key.split(".", 1)[0] for key in state}
    if found != set(FACEVID2VID_NETWORKS):
        raise CompressError(
            f"{path}: not a face-vid2vid checkpoint: expected state dicts 'generator', 'kp_detector' and "
            "'he_estimator' (public layout), keys prefixed 'generator.' / 'kp_detector.' (or 'kp_extractor.') / "
            f"'he_estimator.', or a LivePortrait folder; found networks {sorted(found)} and top-level keys "
            f"{sorted(raw)[:10]}"
        )
    return state


def _liveportrait_state_dict(raw: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    state = {f"{name}.{_strip_module(k)}": v for name in LIVEPORTRAIT_NETWORKS for k, v in raw[name].items()}
    stitching = raw.get(STITCHING_FILE)
    if stitching is not None:
        for ours, theirs in STITCHING_NETWORKS.items():
            if not isinstance(stitching.get(theirs), dict):
                raise CompressError(
                    f"{Path(path) / STITCHING_FILE}.pth: no {theirs!r} state dict; expected "
                    f"{', '.join(STITCHING_NETWORKS.values())}"
                )
            for key, value in stitching[theirs].items():
                state[f"{STITCHING_FILE}.{ours}.{_strip_module(key)}"] = value
    return state


def _strip_module(key: str) -> str:
    return key.removeprefix("module.")


def has_stitching(state: dict[str, torch.Tensor]) -> bool:
    return any(key.startswith(f"{STITCHING_FILE}.") for key in state)


def without_stitching(config: dict[str, Any]) -> dict[str, Any]:
    """A LivePortrait config for a folder that has no stitching file."""
    return {**copy.deepcopy(config), "stitching_retargeting_module_params": None}


def claims(state: dict[str, torch.Tensor]) -> str | None:
    """The named config whose keys and shapes `state` (teacher_state_dict's) has, or None.

    Built on the meta device: no memory, no time. A LivePortrait folder without the stitching
    file is claimed by "liveportrait" (load_facevid2vid_teacher then builds it without S).
    """
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name, config in TEACHER_CONFIGS.items():
        if config["variant"] == "liveportrait" and not has_stitching(state):
            config = without_stitching(config)
        with torch.device("meta"):
            model = build_teacher(config)
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            return name
    return None


def load_facevid2vid_teacher(
    path: str | Path, config: str | dict[str, Any] | None = None, trust: bool = False
) -> nn.Module:
    """A teacher in eval mode from a public checkpoint file or LivePortrait folder.

    config: a name ("vox-256", "vox-256-original", "liveportrait"), a public YAML path, a config
    dict, or None (the named config whose keys and shapes the checkpoint has).
    """
    state = teacher_state_dict(read_checkpoint(path, trust), path)
    if config is None:
        config = claims(state)
        if config is None:
            raise CompressError(
                f"{path}: no face-vid2vid config ({', '.join(TEACHER_CONFIGS)}) has this checkpoint's keys and "
                "shapes; pass config= (a public YAML path or a config dict)"
            )
    resolved = teacher_config(config) if isinstance(config, str) else copy.deepcopy(config)
    if resolved.get("variant") == "liveportrait" and not has_stitching(state):
        resolved = without_stitching(resolved)
    model = build_teacher(resolved)
    load_state_dict_checked(model, state, path, f"facevid2vid {resolved.get('variant')} teacher")
    return model.eval()

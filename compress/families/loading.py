"""Every model load goes through here: our own model files, public checkpoints, random teachers.

compress.checkpoints only reads and writes files (safely); this module turns what it read into
a model through the family, which knows its layouts (`teacher_state_dict`), its configs and
which checkpoints are its own (`claims`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.checkpoints import apply_structure, load_raw, load_state_dict_checked, read_model_meta
from compress.errors import CompressError
from compress.families.base import Family
from compress.families.registry import get_family, list_families


def load_model(path: str | Path, family: Family | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild one of our saved models (pruned ones included) from its metadata, structure spec and weights."""
    meta = read_model_meta(path)
    if meta is None:
        raise CompressError(f"{path}: not a mobile-compress model file (expected .safetensors written by compress)")
    family = family or get_family(meta["family"])
    build = family.build_teacher if meta["kind"] == "teacher" else family.build_student
    model = build(meta["config"])
    state = load_raw(path)
    apply_structure(model, meta["structure"], state)
    load_state_dict_checked(model, state, path, f"{meta['family']} {meta['kind']}")
    return model.eval(), meta


def load_teacher_model(
    family: Family, path: str | Path | None, config: str | dict[str, Any] | None, trust: bool = False, seed: int = 0
) -> tuple[nn.Module, dict[str, Any]]:
    """(teacher, its full config) from one of our files, a public checkpoint, or (path None) a seeded
    random initialisation. With `config` None, a public checkpoint's config is the one it claims."""
    if path is None:
        torch.manual_seed(seed)
        resolved = family.resolve_config(config, "teacher")
        return family.build_teacher(resolved).eval(), resolved
    path = Path(path)
    if read_model_meta(path) is not None:
        model, meta = load_model(path, family)
        return model, meta["config"]
    raw = family.read_checkpoint(path, trust)
    resolved = family.resolve_config(config if config is not None else family.claims(raw), "teacher")
    resolved = family.fit_teacher_config(resolved, raw)
    model = family.build_teacher(resolved)
    load_state_dict_checked(model, family.teacher_state_dict(raw, str(path)), path, f"{family.name} teacher")
    return model.eval(), resolved


def identify_checkpoint(path: str | Path, trust: bool = False) -> tuple[Family, str]:
    """(family, teacher config) of a public checkpoint, recognised from its keys and shapes."""
    tried, unreadable = [], []
    for name in list_families():
        family = get_family(name)
        try:
            raw = family.read_checkpoint(Path(path), trust)
        except CompressError as exc:
            unreadable.append(exc)
            tried.append(f"{name}: cannot read it ({exc})")
            continue
        config = family.claims(raw)
        if config is not None:
            return family, config
        tried.append(f"{name}: {family.checkpoint_layout or 'its own model files only'}")
    if len(unreadable) == len(tried):  # one reader's verdict (corrupt, untrusted pickle) says it all
        raise unreadable[0]
    raise CompressError(
        f"{path}: no model family recognises this checkpoint; pass --family and --config. "
        "What each family looked for:\n  " + "\n  ".join(tried)
    )


def load_checkpoint(
    path: str | Path, family: str | Family | None = None, config: str | None = None, trust: bool = False
) -> tuple[Family, nn.Module, str]:
    """(family, model, kind) of one of our model files or a public checkpoint (family and config
    recognised when not given); kind is "teacher" or "student"."""
    meta = read_model_meta(path)
    fam = family if isinstance(family, Family) else get_family(family) if family else None
    if meta is not None:
        model, meta = load_model(path, fam)
        return fam or get_family(meta["family"]), model, meta["kind"]
    if fam is None:
        fam, claimed = identify_checkpoint(path, trust)
        config = config or claimed
    return fam, load_teacher_model(fam, path, config, trust)[0], "teacher"


def load_teacher(
    family: str, path: str | Path | None, config: str | dict[str, Any] | None = None, trust: bool = False
) -> nn.Module:
    """Public API: `compress.load_teacher("fomm", "vox-cpk.pth.tar", config="vox-256")`."""
    return load_teacher_model(get_family(family), path, config, trust=trust)[0]

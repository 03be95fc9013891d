"""mobile-compress: turn face-video teacher networks into ~3 MB mobile models.

Public API (imported lazily, so `compress --help` does not load torch):
    load_recipe(path, overrides)        the recipe schema (compress.recipe)
    run_recipe(recipe, ...)             run its stages (compress.run)
    load_teacher(family, path, config)  an official or own teacher checkpoint
    inspect_model(family, model)        params, MB and GFLOPs per network and part
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "load_recipe": "compress.recipe",
    "run_recipe": "compress.run",
    "load_teacher": "compress.families.loading",
    "inspect_model": "compress.inspect",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'compress' has no attribute {name!r}")

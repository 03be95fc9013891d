"""mobile-compress: turn face-video teacher networks into ~3 MB mobile models.

Public API:
    load_recipe(path, overrides)      the recipe schema (compress.recipe)
    run_recipe(recipe, ...)           run its stages (compress.run)
    load_teacher(family, path, config) an official or own teacher checkpoint
    inspect_model(family, model)      params, MB and GFLOPs per network and part
"""
__version__ = "0.1.0"

from compress.families.loading import load_teacher
from compress.inspect import inspect_model
from compress.recipe import load_recipe
from compress.run import run_recipe

__all__ = ["__version__", "load_recipe", "run_recipe", "load_teacher", "inspect_model"]

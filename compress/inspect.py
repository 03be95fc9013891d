"""`compress inspect`: parameters, fp32/int8 size and GFLOPs per network, part and module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from compress.errors import CompressError
from compress.families.base import Family
from compress.families.loading import load_checkpoint, load_teacher_model
from compress.families.registry import get_family
from compress.stats import PartStats, count_macs, count_params, count_used_params, size_mb


def load_for_inspect(
    target: str | Path, family: str | None = None, config: str | None = None, trust: bool = False, student: bool = False
) -> tuple[Family, nn.Module, str]:
    """A recipe (its teacher, or with `student` its student as built: random weights, which counts and
    costs do not depend on, and what it keeps from the recipe's teacher, a random one of the recipe's
    config when the recipe names no checkpoint), one of our model files, or a public checkpoint
    (family and config recognised unless given)."""
    from compress.recipe import is_recipe, load_recipe

    target = Path(target)
    if student and not is_recipe(target):
        raise CompressError(f"{target}: --student needs a recipe (the student it builds); pass a recipe YAML")
    if is_recipe(target):
        recipe = load_recipe(target)
        fam = get_family(recipe.family)
        if student:
            model = fam.build_student(fam.resolve_config(recipe.student.config, "student")).eval()
            if fam.students_adopt:  # CSE: the lookup's cost is its teacher's vertex table's
                fam.adopt_teacher(model, _recipe_teacher(fam, recipe, trust))
            return fam, model, "student"
        return fam, _recipe_teacher(fam, recipe, trust), "teacher"
    return load_checkpoint(target, family, config, trust)


def _recipe_teacher(family: Family, recipe: Any, trust: bool) -> nn.Module:
    return load_teacher_model(family, recipe.resolve(recipe.teacher.checkpoint), recipe.teacher.config, trust)[0]


def inspect_model(
    family: Family, model: nn.Module, per_module: bool = True, latency: str | None = None
) -> dict[str, Any]:
    """Counts per network (prunable) and per deployable part, and the heaviest modules; with
    `latency` (a device profile, e.g. profile:iphone8), each part's predicted and fixed ms."""
    try:
        prunables = family.prunables(model)
    except CompressError:  # a model its family does not prune (a CSE teacher): no prunable networks to count
        prunables = []
    networks = [
        PartStats(p.name, count_params(p.module), 2 * count_macs(p.module, p.example_inputs) / 1e9).to_json()  # type: ignore[operator]
        for p in prunables
    ]
    parts, modules = [], []
    for part in family.parts(model):
        inputs = part.example_inputs()
        macs = count_macs(part.module, inputs, per_module=True)
        assert isinstance(macs, dict)
        parts.append(
            {
                **PartStats(part.name, count_used_params(part.module, inputs), 2 * sum(macs.values()) / 1e9).to_json(),
                "role": part.role,
                "cadence": part.cadence,
            }
        )
        if per_module:
            named = dict(part.module.named_modules())
            for name, m in sorted(macs.items(), key=lambda kv: -kv[1])[:15]:
                modules.append(
                    {
                        "part": part.name,
                        "module": name,
                        "type": type(named[name]).__name__,
                        "params": count_params(named[name]),
                        "gflops": round(2 * m / 1e9, 4),
                    }
                )
    if latency is not None:
        from compress.prune import fixed_costs

        costs = fixed_costs(family, model, latency)
        for row in parts:
            row.update(costs[row["name"]], device=latency)
    total = count_params(model)
    return {
        "family": family.name,
        "params": total,
        "fp32_mb": round(size_mb(total), 3),
        "int8_mb": round(size_mb(total, "int8"), 3),
        "networks": networks,
        "parts": parts,
        "top_modules": modules,
    }

"""Batches of a family's data for a run: one place that resolves the recipe's data sources and sizes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from compress.families.base import Family
from compress.recipe import Recipe


def collate(dataset: Dataset, indices: list[int]) -> dict[str, torch.Tensor]:
    items = [dataset[i] for i in indices]
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}


class Memoized(Dataset):
    """A dataset whose samples are computed once, on first access, and then kept."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.samples: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        if i not in self.samples:
            self.samples[i] = self.dataset[i]
        return self.samples[i]


def iterate_batches(dataset: Dataset, batch_size: int, count: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Consecutive batches in index order (deterministic), at most `count` of them."""
    n = len(dataset)  # type: ignore[arg-type]
    starts = range(0, n, batch_size)
    for k, start in enumerate(starts):
        if count is not None and k >= count:
            return
        yield collate(dataset, list(range(start, min(n, start + batch_size))))


def recipe_dataset(recipe: Recipe, family: Family, model_config: dict[str, Any], split: str, samples: int) -> Dataset:
    """The recipe's `split` ("train", "eval" or "calibration") at the model's input size."""
    source = {"train": recipe.data.train, "eval": recipe.data.eval, "calibration": recipe.data.calibration}[split]
    path = recipe.resolve(source)
    size = tuple(recipe.data.size) if recipe.data.size else family.input_size(model_config)
    return family.dataset(str(path) if path else "synthetic", split, size, recipe.data.seed, samples)  # type: ignore[arg-type]

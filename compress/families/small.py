"""What the small test families share: configs from a table, one network class, one part.

`generic` (frame restoration) and `embedding` (surface embeddings) differ in their task and
network; their configs ("teacher-32", "student-32", ...: width, depth, input size) and the
plumbing around a single network are the same, and live here once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.families.base import Family


class TableFamily(Family):
    """A family whose configs are named rows of `config_table`, each building `network(**config)`."""

    config_table: dict[str, dict[str, Any]] = {}
    default_configs: dict[str, str] = {}  # role -> config name
    required_keys = frozenset({"width", "depth", "size"})
    network: type[nn.Module]

    def configs(self) -> dict[str, dict[str, Any]]:
        return self.config_table

    def config_roles(self) -> dict[str, list[str]]:
        return {role: [n for n in self.config_table if n.startswith(role)] for role in ("teacher", "student")}

    def resolve_config(self, config: str | dict[str, Any] | None, role: str) -> dict[str, Any]:
        config = self.default_configs[role] if config is None else config
        if isinstance(config, str):
            if config not in self.config_table:
                raise CompressError(
                    f"{self.name} family: unknown config {config!r}; known: {', '.join(self.config_table)}"
                )
            return dict(self.config_table[config])
        missing = self.required_keys - set(config)
        if missing:
            raise CompressError(f"{self.name} family config lacks {sorted(missing)}")
        return dict(config)

    def build_teacher(self, config: dict[str, Any]) -> nn.Module:
        return self.network(**config)

    def build_student(self, config: dict[str, Any]) -> nn.Module:
        return self.network(**config)

    def input_size(self, config: dict[str, Any]) -> tuple[int, int]:
        return (config["size"], config["size"])


class Tupled(nn.Module):
    """A one-tensor network as a deployable part's module: it returns a tuple, as parts must."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net(image),)

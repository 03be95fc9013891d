"""Parameter, size and compute counts of networks, shared by `inspect`, pruning budgets and docs.

Convention: GFLOPs = 2 x multiply-accumulates of convolutions, transposed convolutions and
linear layers (elementwise ops, norms, pools and grid_sample are not counted), per forward
pass; 1-D, 2-D and 3-D convolutions are counted alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "int8": 1}


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def _forward_with_hooks(module: nn.Module, inputs: tuple[torch.Tensor, ...], hooks: list[Any]) -> None:
    """One eval-mode forward pass with `hooks` registered, removed afterwards; training mode restored."""
    was_training = module.training
    try:
        module.eval()
        module(*inputs)
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()


def count_used_params(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """Parameters of the modules one forward pass on `inputs` actually calls.

    Deployable parts share their network's weights (the per-call and per-frame parts both wrap
    the whole generator), so `count_params` would count the generator twice.
    """
    called: set[int] = set()
    _forward_with_hooks(
        module, inputs, [m.register_forward_pre_hook(lambda mod, _i: called.add(id(mod))) for m in module.modules()]
    )
    return sum(p.numel() for m in module.modules() if id(m) in called for p in m.parameters(recurse=False))


def size_mb(params: int, precision: str = "fp32") -> float:
    return params * BYTES_PER_PARAM[precision] / 1e6


# Transposed convolutions subclass _ConvNd, so they are tested first.
_CONV_T = nn.modules.conv._ConvTransposeNd
_CONV = nn.modules.conv._ConvNd


def _conv_macs(m: nn.Module, out: torch.Tensor) -> int:
    """MACs of one call of a (transposed) convolution of any dimension, or of a linear layer."""
    if isinstance(m, _CONV_T):
        # Each input pixel scatters a kernel; there are about output pixels / stride volume of them.
        return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size) // math.prod(m.stride)
    if isinstance(m, _CONV):
        return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return 0


def count_macs(module: nn.Module, inputs: tuple[torch.Tensor, ...], per_module: bool = False) -> int | dict[str, int]:
    """MACs of one forward pass on `inputs`, total or per named leaf module."""
    counts: dict[str, int] = {}
    hooks = []
    for name, m in module.named_modules():
        if isinstance(m, (_CONV, nn.Linear)):

            def hook(mod: nn.Module, _inp: Any, out: torch.Tensor, name: str = name) -> None:
                counts[name] = counts.get(name, 0) + _conv_macs(mod, out)

            hooks.append(m.register_forward_hook(hook))
    _forward_with_hooks(module, inputs, hooks)
    return counts if per_module else sum(counts.values())


def gflops(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> float:
    return 2 * count_macs(module, inputs) / 1e9  # type: ignore[operator]


@dataclass
class PartStats:
    name: str
    params: int
    gflops: float

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "fp32_mb": round(size_mb(self.params), 4),
            "int8_mb": round(size_mb(self.params, "int8"), 4),
            "gflops": round(self.gflops, 4),
        }

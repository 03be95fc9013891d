"""Test weights for face-vid2vid teachers: seeded random ones, and ones from a formula for the full-size
networks whose public code fixes their widths (too large to store in the reference file).

Both give every value in float16 precision (stored as float16 without loss), non-trivial BatchNorm
statistics, and spectral-norm vectors near the weights' top singular vectors (a trained network's:
random ones could make the estimated singular value, the divisor, about zero). The script that wrote
data/public_reference.npz (outside the repository, see docs/models/facevid2vid.md) used these.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

POOL_SIZE = 999_983  # a prime: tensors' windows into the pool never line up with their rows


@functools.cache
def _pool() -> torch.Tensor:
    """POOL_SIZE values in [-0.5, 0.5), the same on every machine: indices scrambled by exact int64
    arithmetic modulo the prime 2**31 - 1 (a square makes it nonlinear: a linear congruence alone
    gives evenly spaced values, whose regularity makes activations grow coherently). No random
    generator, whose streams may change across torch versions."""
    modulus, multiplier = 2_147_483_647, 48_271
    h = (torch.arange(POOL_SIZE, dtype=torch.int64) * multiplier + 1) % modulus
    h = (h * h % modulus * multiplier + h) % modulus
    return (h.double() / modulus - 0.5).float()


def formula_values(n: int, index: int) -> torch.Tensor:
    """n values for the `index`-th tensor: a window of the pool, repeated as needed, at an index-dependent start."""
    start = index * 7919 % POOL_SIZE
    return _pool().repeat(math.ceil((start + n) / POOL_SIZE))[start : start + n]


def fill_deterministic(model: nn.Module) -> nn.Module:
    """Set every parameter and buffer of `model` from `formula_values`, scaled like a trained network's."""
    with torch.no_grad():
        for index, (name, tensor) in enumerate(model.state_dict().items()):
            if tensor.dtype.is_floating_point:
                tensor.copy_(_scaled(name, tensor, formula_values(tensor.numel(), index).view(tensor.shape)))
    return _converge_spectral_norms(model)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Seeded random values, scaled like `fill_deterministic`'s; the model is returned in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dtype.is_floating_point:
                tensor.copy_(_scaled(name, tensor, torch.rand(tensor.shape, generator=g) - 0.5))
    return _converge_spectral_norms(model).eval()


def _scaled(name: str, tensor: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """u uniform in [-0.5, 0.5) -> this tensor's kind of values, rounded to float16 precision."""
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("down.weight"):  # the anti-aliasing kernel: a fixed buffer, not a weight
        return tensor
    if leaf in ("weight_u", "weight_v"):  # spectral norm's singular-vector estimates (start of the iteration)
        value = (u + 0.1) / (u + 0.1).norm()
    elif leaf == "running_var":
        value = 0.5 + 2 * u.abs()
    elif leaf == "running_mean" or leaf == "bias" or name.endswith("grn.beta"):
        value = 0.2 * u
    elif tensor.dim() == 1 or name.endswith("grn.gamma"):  # norm scales
        value = 1 + 0.4 * u
    else:  # conv and linear weights: variance 1 / fan_in, which keeps deep residual stacks bounded
        fan_in = tensor[0].numel()
        value = u * math.sqrt(12 / fan_in)
    return value.to(torch.float16).to(tensor.dtype)


def _converge_spectral_norms(model: nn.Module, steps: int = 10) -> nn.Module:
    """Power-iterate every spectral norm's (u, v) on its weight, then round them to float16."""
    with torch.no_grad():
        for module in model.modules():
            if not hasattr(module, "weight_orig"):
                continue
            w = module.weight_orig.flatten(1)
            u, v = module.weight_u, module.weight_v
            for _ in range(steps):
                v = torch.nn.functional.normalize(w.T @ u, dim=0)
                u = torch.nn.functional.normalize(w @ v, dim=0)
            module.weight_u.copy_(u.to(torch.float16))
            module.weight_v.copy_(v.to(torch.float16))
    return model

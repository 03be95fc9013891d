"""The two layers detectron2 adds to torch: a batch norm frozen as buffers, and a conv with its norm inside."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine, all four stored as buffers (detectron2's, eps 1e-5).

    Buffers rather than parameters, so the teacher's parameter count is its trained weights only.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)  # identity at initialisation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )


class Conv2dNorm(nn.Conv2d):
    """nn.Conv2d, then an optional `norm` module and ReLU: detectron2's layers.Conv2d, whose norm is a
    child of the conv, so its keys read `<conv>.weight` and `<conv>.norm.*`."""

    def __init__(self, *args, norm: nn.Module | None = None, relu: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x) if self.relu else x

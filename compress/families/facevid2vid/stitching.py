"""LivePortrait's stitching and retargeting MLPs (its S, `stitching_retargeting_module.pth`)."""

from __future__ import annotations

import torch
from torch import nn


class StitchingRetargetingNetwork(nn.Module):
    """Linear + ReLU per hidden size, then a linear output layer, under `mlp` (the checkpoint keys)."""

    def __init__(self, input_size: int, hidden_sizes: list[int], output_size: int):
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(sizes[-1], output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)

"""Tiny ONNX models for the latency harness tests, exported with torch in the test."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Sigmoid()
        )

    def forward(self, x):
        return self.body(x)


def export_onnx(model: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), (torch.rand(shape),), str(path), opset_version=17, dynamo=False)
    return path

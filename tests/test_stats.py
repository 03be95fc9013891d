"""Compute counts: multiply-accumulates of 1-D, 2-D and 3-D (transposed) convolutions, counted alike."""

from __future__ import annotations

import torch
from torch import nn

from compress.stats import count_macs


def test_conv2d_macs_are_output_elements_times_inputs_per_group_times_kernel_area() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (torch.rand(1, 3, 8, 8),)) == (8 * 8 * 8) * 3 * (3 * 3)


def test_conv3d_macs_are_output_elements_times_inputs_per_group_times_kernel_volume() -> None:
    conv = nn.Conv3d(4, 6, (2, 3, 3), stride=(1, 2, 2), groups=2)
    x = torch.rand(1, 4, 5, 8, 8)
    out = conv(x)
    assert count_macs(conv, (x,)) == out.numel() * (4 // 2) * (2 * 3 * 3)


def test_conv_transpose3d_macs_are_input_elements_times_outputs_times_kernel_volume() -> None:
    # Each of the 4 x 3^3 input voxels scatters a 2^3 kernel into each of the 6 output channels.
    conv = nn.ConvTranspose3d(4, 6, 2, stride=2)
    assert count_macs(conv, (torch.rand(1, 4, 3, 3, 3),)) == (4 * 3**3) * 6 * 2**3

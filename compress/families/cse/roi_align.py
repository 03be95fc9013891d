"""ROIAlign of one box, shared by a batch, with torchvision's `aligned=False` rules (detectron2's "ROIAlign").

For each output bin, `sampling_ratio` x `sampling_ratio` points (adaptive: ceil(box / output) when
<= 0) are sampled bilinearly and averaged. aligned=False: no half-pixel shift, the box is at least
one feature cell wide, samples beyond -1 or the map's size are 0, others clamp to the border.
Bilinear weights and the zero rule are separable in y and x, so the whole op is
`Ry @ features @ Rx^T` with two small matrices fixed by the shapes: two MatMuls on export.
"""

from __future__ import annotations

import math

import torch


def roi_align_matrix(size: int, start: float, end: float, output_size: int, sampling_ratio: int) -> torch.Tensor:
    """[output_size, size] float64: row p averages the bilinear weights of bin p's samples along one axis."""
    length = max(end - start, 1.0)
    bin_size = length / output_size
    grid = sampling_ratio if sampling_ratio > 0 else math.ceil(length / output_size)
    matrix = torch.zeros(output_size, size, dtype=torch.float64)
    for p in range(output_size):
        for i in range(grid):
            c = start + p * bin_size + (i + 0.5) * bin_size / grid
            if c < -1.0 or c > size:
                continue
            c = max(c, 0.0)
            low = int(c)
            if low >= size - 1:
                low = high = size - 1
                c = float(low)
            else:
                high = low + 1
            matrix[p, low] += (1.0 - (c - low)) / grid
            matrix[p, high] += (c - low) / grid
    return matrix


def roi_align(
    features: torch.Tensor,
    box: tuple[float, float, float, float],
    output_size: int,
    spatial_scale: float,
    sampling_ratio: int,
) -> torch.Tensor:
    """features [B, C, H, W], box (x0, y0, x1, y1) in input pixels -> [B, C, output_size, output_size]."""
    x0, y0, x1, y1 = (c * spatial_scale for c in box)
    height, width = features.shape[-2:]
    rows = roi_align_matrix(height, y0, y1, output_size, sampling_ratio).to(features)
    cols = roi_align_matrix(width, x0, x1, output_size, sampling_ratio).to(features)
    return rows @ features @ cols.T

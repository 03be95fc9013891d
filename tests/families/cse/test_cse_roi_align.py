"""ROIAlign against a direct loop over torchvision's aligned=False rules (detectron2's "ROIAlign")."""

from __future__ import annotations

import math

import pytest
import torch

from compress.families.cse.roi_align import roi_align


def bilinear(feature: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's roi_align bilinear_interpolate: 0 beyond -1 / size, clamped to the border inside."""
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(feature.shape[0], dtype=feature.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * feature[:, y0, x0]
        + (1 - ly) * lx * feature[:, y0, x1]
        + ly * (1 - lx) * feature[:, y1, x0]
        + ly * lx * feature[:, y1, x1]
    )


def roi_align_loop(feature, box, output_size, spatial_scale, sampling_ratio):
    """One image [C, H, W] -> [C, output_size, output_size], sample by sample, in float64."""
    x0, y0, x1, y1 = (c * spatial_scale for c in box)
    roi_h, roi_w = max(y1 - y0, 1.0), max(x1 - x0, 1.0)
    bin_h, bin_w = roi_h / output_size, roi_w / output_size
    grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / output_size)
    grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / output_size)
    out = torch.zeros(feature.shape[0], output_size, output_size, dtype=torch.float64)
    for ph in range(output_size):
        for pw in range(output_size):
            for iy in range(grid_h):
                for ix in range(grid_w):
                    y = y0 + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    x = x0 + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                    out[:, ph, pw] += bilinear(feature.double(), y, x)
            out[:, ph, pw] /= grid_h * grid_w
    return out


@pytest.mark.parametrize(
    "box, output_size, spatial_scale, sampling_ratio",
    [
        ((0.0, 0.0, 48.0, 32.0), 7, 0.25, 2),  # the teacher's case: the box is the whole crop
        ((5.3, -7.0, 30.1, 20.2), 5, 0.25, 2),  # partly above the map: samples below -1 give 0
        ((-20.0, 10.0, 60.0, 50.0), 4, 0.25, 3),  # beyond both sides
        ((10.0, 10.0, 11.0, 11.5), 3, 0.5, 2),  # narrower than one cell: widened to 1
        ((2.0, 3.0, 45.0, 29.0), 3, 0.25, 0),  # adaptive sampling: ceil(box / output) per axis
    ],
)
def test_roi_align_equals_the_direct_loop(box, output_size, spatial_scale, sampling_ratio):
    features = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    ours = roi_align(features.double(), box, output_size, spatial_scale, sampling_ratio)
    for i in range(2):
        expected = roi_align_loop(features[i], box, output_size, spatial_scale, sampling_ratio)
        torch.testing.assert_close(ours[i], expected, rtol=0, atol=1e-12)


def test_roi_align_keeps_the_feature_dtype():
    out = roi_align(torch.ones(1, 2, 4, 4), (0.0, 0.0, 16.0, 16.0), 28, 0.25, 2)
    assert out.dtype == torch.float32 and out.shape == (1, 2, 28, 28)
    torch.testing.assert_close(out, torch.ones_like(out))

"""The export-friendly replacements of FOMM's geometric operations."""

from __future__ import annotations

import torch

from compress.families.fomm.ops import (
    AntiAliasInterpolation2d,
    inverse_2x2,
    kp2gaussian,
    make_coordinate_grid,
    transform_points,
    warp,
)


def random_jacobians(*shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.eye(2) + 0.5 * torch.randn(*shape, 2, 2, generator=g)


def test_closed_form_inverse_matches_linalg_inv():
    m = random_jacobians(3, 10)
    torch.testing.assert_close(inverse_2x2(m), torch.linalg.inv(m), rtol=1e-5, atol=1e-6)


def test_transform_points_equals_broadcast_matmul():
    m = random_jacobians(2, 5)
    points = torch.randn(2, 5, 4, 6, 2)
    expected = torch.matmul(m[:, :, None, None], points.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(transform_points(m, points), expected)


def test_coordinate_grid_puts_x_along_width_and_corners_at_plus_minus_one():
    grid = make_coordinate_grid((3, 5))
    assert grid.shape == (3, 5, 2)
    assert grid[0, 0].tolist() == [-1.0, -1.0]
    assert grid[-1, -1].tolist() == [1.0, 1.0]
    assert grid[0, -1].tolist() == [1.0, -1.0]  # top-right: x = 1, y = -1


def test_warp_by_the_coordinate_grid_is_the_identity():
    # align_corners=True (torch 1.0's grid_sample): grid points sit on pixel centres.
    image = torch.rand(2, 3, 7, 9)
    grid = make_coordinate_grid((7, 9)).expand(2, 7, 9, 2)
    torch.testing.assert_close(warp(image, grid), image)


def test_kp2gaussian_peaks_at_the_keypoint():
    grid = make_coordinate_grid((9, 9))
    heat = kp2gaussian(torch.tensor([[[0.5, -0.5]]]), grid, kp_variance=0.01)
    assert heat.shape == (1, 1, 9, 9)
    row, col = divmod(int(heat.flatten().argmax()), 9)
    assert (row, col) == (2, 6)  # y = -0.5 -> row 2, x = 0.5 -> column 6
    assert heat.max() == 1.0


def test_antialias_downsampling_keeps_a_constant_image_constant_inside_the_borders():
    down = AntiAliasInterpolation2d(channels=3, scale=0.25)
    out = down(torch.full((1, 3, 64, 64), 0.7))
    assert out.shape == (1, 3, 16, 16)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], torch.full((1, 3, 12, 12), 0.7))


def test_antialias_at_scale_one_is_the_identity():
    x = torch.rand(1, 3, 8, 8)
    assert AntiAliasInterpolation2d(3, 1.0)(x) is x


def test_separable_gaussians_equal_kp2gaussian_on_the_full_grid():
    from compress.families.fomm.ops import separable_gaussians

    grid = make_coordinate_grid((12, 16))
    value = torch.rand(2, 5, 2) * 2 - 1
    full = kp2gaussian(value, grid, 0.01)
    separable = separable_gaussians(value, grid[0, :, 0], grid[:, 0, 1], 0.01)
    assert torch.allclose(full, separable, atol=1e-6)

"""Synthetic CSE renders: shapes, ground truth that matches the image, determinism and splits."""

from __future__ import annotations

import pytest
import torch

from compress.errors import CompressError
from compress.families.cse.data import MeshRenders, _occlude, _posed_camera_points, _to_pixels, render_sample
from compress.families.cse.mesh import template_mesh


def test_a_sample_has_an_image_a_mask_and_vertex_ids_that_agree() -> None:
    sample = render_sample(3, (96, 64))
    image, mask, ids = sample["image"], sample["mask"], sample["vertex_ids"]
    assert image.shape == (3, 96, 64) and image.min() >= 0 and image.max() <= 1
    assert mask.shape == ids.shape == (96, 64) and ids.dtype == torch.long
    assert torch.equal(mask, (ids >= 0).float())
    assert ids.max() < template_mesh().num_vertices
    assert 0.2 < mask.mean() < 0.9  # the figure fills the person box, with background around it


@pytest.mark.parametrize("seed", range(4))
def test_each_pixel_shows_a_vertex_that_projects_next_to_it(seed: int) -> None:
    size = 112
    sample = render_sample(seed, size)
    # The renderer's first draws are the pose and the camera: replay them to project the vertices.
    gen = torch.Generator().manual_seed(seed)
    pixels = _to_pixels(_posed_camera_points(template_mesh(), gen), gen, size, size)
    rows, cols = torch.nonzero(sample["vertex_ids"] >= 0).T
    offset = (pixels[sample["vertex_ids"][rows, cols]] - torch.stack([cols, rows], 1)).norm(dim=1)
    # The vertex is a corner of the triangle the pixel lies in: at most one edge away, mostly much less.
    longest_edge = (pixels[template_mesh().faces] - pixels[template_mesh().faces.roll(1, 1)]).norm(dim=-1).max()
    assert offset.max() <= longest_edge
    assert offset.median() < 1.5


def test_the_same_seed_renders_the_same_sample_and_splits_differ() -> None:
    train, again, test = MeshRenders("train", 48), MeshRenders("train", 48), MeshRenders("test", 48)
    for key in ("image", "vertex_ids"):
        assert torch.equal(train[5][key], again[5][key])
    assert (train[5]["image"] - test[5]["image"]).abs().mean() > 0.05
    assert (train[5]["image"] - train[6]["image"]).abs().mean() > 0.05
    assert len(MeshRenders("eval", 48, count=7)) == 7


def test_occluders_paint_over_the_figure_and_clear_its_vertex_ids() -> None:
    cleared = 0
    for seed in range(6):
        image, ids = torch.full((3, 64, 64), 0.5), torch.zeros(64, 64, dtype=torch.long)
        _occlude(torch.Generator().manual_seed(seed), image, ids)
        painted = (image != 0.5).any(0)
        assert torch.equal(painted, ids == -1)
        cleared += int(painted.any())
    assert cleared >= 2  # about half of the samples have at least one occluder


def test_bad_sizes_and_splits_are_refused() -> None:
    with pytest.raises(CompressError, match="at least 16"):
        render_sample(0, 8)
    with pytest.raises(CompressError, match="split"):
        MeshRenders("validation", 64)

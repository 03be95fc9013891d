"""The mobile CSE student and its vertex lookup: the teacher's grid, mobile-only ops, the lookup's exactness
and the two-level search's bounded loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.checkpoints import save_model
from compress.errors import CompressError
from compress.families.cse.data import render_sample
from compress.families.cse.mesh import template_mesh
from compress.families.cse.student import STUDENT_CONFIGS, CseStudent, VertexLookup, check_student_config
from compress.families.cse.teacher import squared_euclidean_distances
from compress.families.loading import load_model

FOREGROUND = torch.tensor([0.0, 1.0])[None, :, None, None]


def unit_table(vertices: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(vertices, 16, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_the_student_maps_a_crop_to_the_teacher_grid_at_half_its_size() -> None:
    student = CseStudent(STUDENT_CONFIGS["mobile-64"]).eval()
    out = student(torch.rand(2, 3, 64, 64))
    assert out["embedding"].shape == (2, 16, 32, 32) and out["coarse_segm"].shape == (2, 2, 32, 32)


def test_the_student_has_no_transposed_convolution_and_no_group_norm() -> None:
    student = CseStudent(STUDENT_CONFIGS["mobile-224"])
    assert not any(isinstance(m, (nn.ConvTranspose2d, nn.GroupNorm)) for m in student.modules())


def test_the_exact_lookup_is_densepose_nearest_vertex_and_marks_the_background() -> None:
    table = unit_table(300)
    embedding = torch.randn(1, 16, 8, 8)
    coarse_segm = torch.randn(1, 2, 8, 8)
    ids = VertexLookup(table)(embedding, coarse_segm)
    pixels = embedding.permute(0, 2, 3, 1).reshape(-1, 16)
    nearest = squared_euclidean_distances(pixels, table).argmin(1).view(1, 8, 8).float()
    assert torch.equal(ids, torch.where(coarse_segm.argmax(1) == 1, nearest, -1.0))


@pytest.mark.parametrize("search", ["two_level", "two_level_coarse"])
def test_the_two_level_lookup_stays_within_five_percent_of_the_diameter_of_the_exact_vertex(search: str) -> None:
    mesh = template_mesh()
    table = F.normalize(mesh.basis(17)[:, 1:], dim=1)  # a smooth embedding of the template, like a teacher's
    # A rendered figure's vertices, so that neighbouring pixels embed nearby surface points, as a network's do.
    truth = render_sample(3, 48)["vertex_ids"]
    noise = 0.05 * torch.randn(48, 48, 16, generator=torch.Generator().manual_seed(1))
    embedding = torch.where(truth[..., None] >= 0, table[truth.clamp_min(0)] + noise, 0.0).permute(2, 0, 1)[None]
    figure = truth[None] >= 0
    exact = VertexLookup(table)(embedding, FOREGROUND).long()[figure]
    two_level = VertexLookup(table, search=search)
    assert two_level.two_level
    found = two_level(embedding, FOREGROUND).long()[figure]
    error = mesh.geodesics[found, exact] / mesh.diameter
    assert float((error <= 0.05).float().mean()) >= 0.95


def test_a_table_without_cluster_structure_falls_back_to_the_exact_search() -> None:
    lookup = VertexLookup(torch.zeros(500, 16), search="two_level")  # a degenerate, all-zero table
    assert not lookup.two_level


def test_a_saved_student_keeps_its_vertex_table_and_rebuilds_its_clusters(tmp_path) -> None:
    config = {**STUDENT_CONFIGS["mobile-64"], "lookup": "two_level"}
    student = CseStudent(config)
    student.lookup.set_table(unit_table(700))
    path = save_model(tmp_path / "student.safetensors", student, family="cse", kind="student", config=config)
    loaded, _ = load_model(path)
    assert torch.equal(loaded.lookup.table, student.lookup.table)
    assert loaded.lookup.two_level and torch.equal(loaded.lookup.members, student.lookup.members)


@pytest.mark.parametrize("change", [{"size": 100}, {"depth": 3}])
def test_a_student_config_with_a_bad_size_or_an_unknown_key_is_refused(change: dict) -> None:
    with pytest.raises(CompressError, match="size|unknown keys"):
        check_student_config({**STUDENT_CONFIGS["mobile-64"], **change})

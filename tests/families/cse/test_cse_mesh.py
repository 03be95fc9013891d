"""The synthetic CSE template: a closed figure, its geodesic distances and its Laplace-Beltrami basis."""

from __future__ import annotations

import numpy as np
import torch

from compress.families.cse.mesh import LIMBS, Mesh, _all_pairs_shortest_paths, _icosphere, _refined_edges, template_mesh


def _edges(mesh: Mesh) -> torch.Tensor:
    f = mesh.faces
    return torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])


def test_template_is_a_closed_outward_facing_surface_of_a_few_thousand_vertices() -> None:
    mesh = template_mesh()
    assert 2000 <= mesh.num_vertices <= 5000
    directed = _edges(mesh)
    # Closed and consistently oriented: every directed edge appears once and its reverse once.
    assert len(torch.unique(directed, dim=0)) == len(directed)
    assert len(torch.unique(directed.sort(1).values, dim=0)) * 2 == len(directed)
    v = mesh.vertices[mesh.faces]
    signed_volume = (torch.linalg.cross(v[:, 0], v[:, 1]) * v[:, 2]).sum() / 6
    assert signed_volume > 0  # counter-clockwise seen from outside


def test_the_same_seed_gives_the_same_template_and_another_seed_another_figure() -> None:
    assert template_mesh(0) is template_mesh(0)
    extent = template_mesh(0).vertices.amax(0) - template_mesh(0).vertices.amin(0)
    other = template_mesh(1).vertices.amax(0) - template_mesh(1).vertices.amin(0)
    assert (other - extent).abs().max() > 0.02  # limbs of other lengths


def test_skin_weights_move_limbs_and_leave_the_torso_centre_alone() -> None:
    mesh = template_mesh()
    assert mesh.skin.shape == (mesh.num_vertices, len(LIMBS))
    assert mesh.skin.min() >= 0 and mesh.skin.sum(1).max() <= 1 + 1e-6
    front = mesh.vertices[:, 2].argmax()  # the middle of the chest
    assert mesh.skin[front].sum() == 0
    assert (mesh.skin.amax(0) == 1).all()  # each limb has a rigid part


def test_geodesics_are_symmetric_zero_on_the_diagonal_and_never_shorter_than_a_straight_line() -> None:
    mesh = template_mesh()
    g = mesh.geodesics
    assert g.shape == (mesh.num_vertices, mesh.num_vertices)
    assert torch.equal(g, g.T)
    assert (g.diagonal() == 0).all()
    assert (g >= torch.cdist(mesh.vertices, mesh.vertices) - 1e-3).all()
    assert mesh.diameter == float(g.max())


def test_geodesics_follow_the_surface_around_a_limb() -> None:
    mesh = template_mesh()
    # Between the two hands the straight line crosses the torso; the surface path is longer.
    hands = torch.stack([mesh.vertices[:, 0].argmin(), mesh.vertices[:, 0].argmax()])
    straight = (mesh.vertices[hands[0]] - mesh.vertices[hands[1]]).norm()
    assert mesh.geodesics[hands[0], hands[1]] > 1.05 * straight


def test_shortest_paths_on_a_sphere_are_within_five_percent_of_great_circles() -> None:
    v, f = _icosphere(3)
    g = _all_pairs_shortest_paths(*_refined_edges(v, f)).double().numpy()
    exact = np.arccos(np.clip(v @ v.T, -1, 1))
    far = exact > 0.3
    ratio = g[far] / exact[far]
    assert ratio.min() > 0.99 and ratio.max() < 1.05 and ratio.mean() < 1.02


def test_the_first_eigenfunction_is_constant_and_higher_ones_oscillate_faster() -> None:
    mesh = template_mesh()
    basis = mesh.basis(64)
    assert basis.shape == (mesh.num_vertices, 64)
    assert basis[:, 0].std() < 1e-3 * basis[:, 0].abs().mean()
    i, j = _edges(mesh).T
    roughness = (basis[i] - basis[j]).abs().mean(0) / basis.std(0).clamp_min(1e-12)
    assert roughness[1] < roughness[10] < roughness[63]

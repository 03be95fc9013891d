"""CSE metrics: geodesic error, agreement, GPS, mask IoU and embedding cosine on known cases."""

from __future__ import annotations

import math

import pytest
import torch

from compress.families.cse.mesh import template_mesh
from compress.families.cse.metrics import (
    AGREEMENT_RADIUS,
    GPS_KAPPA,
    correspondence_metrics,
    embedding_cosine,
    mask_iou,
)

# A path of three vertices, 0 -- 1 -- 2, one unit apart: the diameter is 2.
PATH = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])


def _ids(*rows: list[int]) -> torch.Tensor:
    return torch.tensor([rows])  # [1, H, W]


def test_a_perfect_prediction_scores_error_zero_gps_one_and_full_agreement() -> None:
    mesh = template_mesh()
    target = torch.randint(-1, mesh.num_vertices, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    scores = correspondence_metrics(target.clone(), target, mesh.geodesics, mesh.diameter)
    assert scores == {
        "gps": 1.0,
        "agreement": 1.0,
        "geodesic_error": 0.0,
        "geodesic_error_median": 0.0,
        "mask_iou": 1.0,
    }


def test_predicting_a_one_ring_neighbour_costs_little() -> None:
    mesh = template_mesh()
    target = torch.arange(mesh.num_vertices).view(1, 1, -1)
    neighbour = torch.empty(mesh.num_vertices, dtype=torch.long)
    neighbour[mesh.faces.flatten()] = mesh.faces.roll(-1, 1).flatten()  # the next corner of one of its faces
    scores = correspondence_metrics(neighbour.view(1, 1, -1), target, mesh.geodesics, mesh.diameter)
    assert 0 < scores["geodesic_error"] < 0.03
    assert scores["agreement"] > 0.99 and scores["gps"] > 0.95


def test_gps_is_one_half_at_densepose_s_thirty_centimetres_on_a_person() -> None:
    # DensePose: kappa = 0.255 m makes an error of 0.3 m score 0.5; a person's geodesic diameter is about 2.2 m.
    error = 0.3 / 2.2
    geodesics = torch.tensor([[0.0, error], [error, 0.0]])
    scores = correspondence_metrics(_ids([1]), _ids([0]), geodesics, diameter=1.0)
    assert scores["gps"] == pytest.approx(0.5, abs=0.01)
    assert math.exp(-(error**2) / (2 * GPS_KAPPA**2)) == pytest.approx(scores["gps"])


def test_errors_are_in_diameters_and_agreement_counts_those_within_five_percent() -> None:
    scores = correspondence_metrics(_ids([0, 1, 2, 2]), _ids([0, 0, 0, 2]), PATH, diameter=2.0)
    assert scores["geodesic_error"] == pytest.approx((0 + 0.5 + 1 + 0) / 4)
    assert scores["geodesic_error_median"] == pytest.approx(0.0)  # torch's median: the lower middle value
    assert scores["agreement"] == pytest.approx(0.5)
    assert AGREEMENT_RADIUS == 0.05


def test_a_pixel_predicted_as_background_counts_as_the_whole_diameter() -> None:
    scores = correspondence_metrics(_ids([-1, 1]), _ids([1, 1]), PATH, diameter=2.0)
    assert scores["geodesic_error"] == pytest.approx(0.5)
    assert scores["gps"] == pytest.approx(0.5)
    assert scores["mask_iou"] == pytest.approx(0.5)


def test_only_pixels_of_the_target_figure_are_scored_and_samples_without_any_have_no_score() -> None:
    pred = torch.tensor([[[2, 0]], [[1, 1]]])
    target = torch.tensor([[[-1, 0]], [[-1, -1]]])
    per_sample = correspondence_metrics(pred, target, PATH, diameter=2.0, reduction="none")
    assert per_sample["geodesic_error"][0] == 0 and per_sample["geodesic_error"][1].isnan()
    assert correspondence_metrics(pred, target, PATH, diameter=2.0)["gps"] == 1.0  # the mean skips sample 2


def test_mask_iou_of_known_overlaps() -> None:
    left = torch.tensor([[[1, 1, 0, 0]]], dtype=torch.bool)
    middle = torch.tensor([[[0, 1, 1, 0]]], dtype=torch.bool)
    assert mask_iou(left, middle) == pytest.approx(1 / 3)
    assert mask_iou(left, left.float()) == 1.0
    assert mask_iou(~left & left, ~left & left) == 1.0  # both empty: nothing to disagree on
    assert mask_iou(left, ~left) == 0.0


def test_embedding_cosine_compares_directions_on_the_mask() -> None:
    reference = torch.randn(2, 16, 4, 4, generator=torch.Generator().manual_seed(0))
    assert embedding_cosine(3 * reference, reference) == pytest.approx(1.0)
    flipped = reference.clone()
    flipped[..., :2] *= -1  # wrong on the left half only
    assert embedding_cosine(flipped, reference) == pytest.approx(0.0, abs=1e-6)
    right = torch.zeros(2, 4, 4, dtype=torch.bool)
    right[..., 2:] = True
    assert embedding_cosine(flipped, reference, mask=right) == pytest.approx(1.0)

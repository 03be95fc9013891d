"""The embedding test family: per-pixel embeddings matched to a vertex table (a small stand-in for CSE)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compress.batches import iterate_batches
from compress.distill import distill
from compress.evaluate import OnnxPart, evaluate
from compress.export import export_onnx, onnx_parity
from compress.families.embedding import GRID, vertex_table, vertex_uv
from compress.families.registry import get_family
from compress.recipe import DistillConfig
from compress.teacher_train import TeacherTraining, train_teacher

SIZE = (32, 32)


@pytest.fixture(scope="module")
def family():
    return get_family("embedding")


@pytest.fixture(scope="module")
def test_batches(family):
    return list(iterate_batches(family.dataset("synthetic", "test", SIZE, 0, 32), 16))


@pytest.fixture(scope="module")
def teacher():
    """The default teacher after 150 steps of `compress teacher train` (about 5 s)."""
    spec = TeacherTraining(
        family="embedding", config="teacher-32", steps=150, batch_size=16, lr=3e-3, train_samples=2400, eval_batches=2
    )
    return train_teacher(spec, progress=False)[0]


def test_data_is_deterministic_by_seed_and_splits_differ(family):
    a, b = family.dataset("synthetic", "train", SIZE, 0, 4), family.dataset("synthetic", "train", SIZE, 0, 4)
    for key in ("image", "vertex", "mask"):
        assert torch.equal(a[3][key], b[3][key])
    assert not torch.equal(a[0]["image"], family.dataset("synthetic", "test", SIZE, 0, 4)[0]["image"])
    assert not torch.equal(a[0]["image"], a[1]["image"])


def test_vertex_ids_are_the_nearest_vertex_of_the_textures_uv(family):
    for item in family.dataset("synthetic", "train", SIZE, 1, 8):
        mask = item["mask"][0].bool()
        assert 0.1 < mask.float().mean() < 0.9 and torch.equal(item["vertex"] < 0, ~mask)
        u, v = item["image"][0][mask], item["image"][1][mask]  # the texture's red and green are u and v
        distances = (vertex_uv()[None] - torch.stack([u, v], 1)[:, None]).norm(dim=-1)  # [pixels, V]
        given = distances.gather(1, item["vertex"][mask][:, None])[:, 0]
        assert (given <= distances.min(1).values + 1e-6).all()  # ties (a pixel on a cell edge) either way


def test_vertex_table_is_fixed_unit_rows_well_apart(family):
    table = vertex_table(8)
    assert table.shape == (GRID * GRID, 8) and torch.equal(table, vertex_table(8))
    assert torch.allclose(table.norm(dim=1), torch.ones(len(table)))
    assert (torch.cdist(table, table) + 3 * torch.eye(len(table))).min() > 0.6


def test_perfect_predictor_scores_full_agreement_with_ground_truth(family, test_batches):
    batch = test_batches[0]
    table = vertex_table(8)
    outputs = {
        "embedding": table[batch["vertex"].clamp_min(0)].permute(0, 3, 1, 2),
        "vertices": table.expand(16, -1, -1),
    }
    scores = family.score(outputs, batch, reference=outputs)
    for group in ("vs_ground_truth", "vs_teacher"):
        assert scores[group]["vertex_agreement"] == 1.0 and scores[group]["vertex_error"] == 0.0
        assert scores[group]["embedding_cosine"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_briefly_trained_teacher_beats_the_surface_centre_baseline(family, teacher, test_batches):
    report = evaluate(family, teacher, test_batches)
    assert report["baseline"]["vertex_agreement"] < 0.05 and report["model"]["vertex_agreement"] > 0.5
    assert report["model"]["vertex_error"] < report["baseline"]["vertex_error"] / 4


@pytest.mark.slow
def test_exported_embedder_scores_through_the_pipeline_like_the_torch_model(
    family, teacher, test_batches, tmp_path: Path
):
    (part,) = family.parts(teacher)
    path = export_onnx(part, tmp_path / "embedder.onnx")
    parity = onnx_parity(part, path, [part.example_inputs(seed) for seed in range(2)], rtol=1e-3, atol=1e-4)
    assert parity["embedding"]["passed"]
    pipeline = family.pipeline({"embedder": OnnxPart(path)})
    assert family.model_input_size(pipeline) == family.model_input_size(teacher) == SIZE
    exported = family.quality(pipeline, test_batches, teacher)
    torch_scores = family.quality(teacher, test_batches)
    for name, value in torch_scores["vs_ground_truth"].items():
        assert exported["vs_ground_truth"][name] == pytest.approx(value, abs=2e-3)
    assert exported["vs_teacher"]["vertex_agreement"] > 0.998


@pytest.mark.slow
def test_distillation_loss_decreases_over_a_few_adam_steps(family, teacher):
    torch.manual_seed(0)
    student = family.build_student(family.resolve_config(None, "student"))
    train = family.dataset("synthetic", "train", SIZE, 0, 64)
    report = distill(
        student,
        teacher,
        family,
        DistillConfig(steps=30, batch_size=8, lr=3e-3, train_samples=64),
        train,
        None,
        progress=False,
    )
    losses = [row["loss"] for row in report.history]
    assert set(report.history[0]) >= {"embedding_cosine", "vertex_kl"} and "ground_truth" not in report.history[0]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_ground_truth_term_is_cross_entropy_of_the_soft_assignment(family, test_batches):
    batch = {k: v[:2] for k, v in test_batches[0].items()}
    model = family.build_student(family.resolve_config(None, "student")).eval()
    with torch.no_grad():
        out = family.forward(model, batch)
    weights = family.loss_weights({"embedding_cosine": 0, "vertex_kl": 0, "ground_truth": 1.0})
    with torch.no_grad():
        loss, terms = family.distill_loss(out, out, batch, weights)
        teacher_loss, _ = family.teacher_loss(model, batch, family.loss_weights({}, family.task.teacher_loss), None)
    assert list(terms) == ["ground_truth"] and float(loss) == pytest.approx(float(teacher_loss), rel=1e-5)


def test_assets_ship_the_models_vertex_table(family):
    teacher = family.build_teacher(family.resolve_config(None, "teacher"))
    student = family.build_student(family.resolve_config(None, "student"))
    (asset,) = family.assets(teacher)
    assert asset.name == "vertex_embeddings" and asset.array.dtype == np.float32 and asset.array.shape == (64, 8)
    np.testing.assert_array_equal(asset.array, family.assets(student)[0].array)
    np.testing.assert_array_equal(asset.array, teacher.vertex_embeddings.numpy())


def test_claims_the_teacher_state_dict_and_declines_a_generic_one(family):
    teacher = family.build_teacher(family.resolve_config("teacher-32", "teacher"))
    generic = get_family("generic")
    assert family.claims(teacher.state_dict()) == "teacher-32"
    assert family.claims(generic.build_teacher(generic.resolve_config(None, "teacher")).state_dict()) is None
    assert generic.claims(teacher.state_dict()) is None

"""The registered `cse` family: configs, model-zoo checkpoints through `load_teacher`, the student keeping
the teacher's vertex table, the distillation and teacher objectives, scoring on the template's geodesics."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import compress
from compress.batches import collate
from compress.errors import CompressError
from compress.families.cse import objectives
from compress.families.cse.mesh import template_mesh
from compress.families.cse.student import VertexLookup
from compress.families.registry import get_family
from compress.inspect import inspect_model, load_for_inspect

FAMILY = get_family("cse")


@pytest.fixture(scope="module")
def demo() -> dict:
    """The demo teacher and the small student (seeded), a held-out batch of two 64x64 renders."""
    torch.manual_seed(0)
    teacher = FAMILY.build_teacher(FAMILY.resolve_config("demo-64", "teacher")).eval()
    student = FAMILY.build_student(FAMILY.resolve_config("mobile-64", "student")).eval()
    batch = collate(FAMILY.dataset("synthetic", "eval", (64, 64), 0, 2), [0, 1])
    return {"teacher": teacher, "student": student, "batch": batch}


def test_the_family_is_registered_on_device_with_gps_as_its_primary_metric() -> None:
    task = FAMILY.describe()["task"]
    assert task["flow"] == "on_device" and task["primary_metric"] == "gps"
    assert {"densepose_rcnn_R_50_FPN_DL_soft_s1x", "demo-64"} <= set(FAMILY.config_roles()["teacher"])


def test_a_teacher_crop_gives_the_grid_of_a_student_of_twice_its_output() -> None:
    assert FAMILY.input_size(FAMILY.resolve_config(None, "teacher")) == (224, 224)  # pooler 28 -> 112
    assert FAMILY.input_size(FAMILY.resolve_config("mobile-224", "student")) == (224, 224)


def test_a_random_teacher_of_a_mesh_without_its_basis_gets_a_table_the_two_level_lookup_clusters() -> None:
    config = FAMILY.resolve_config("demo-64", "teacher")  # small; the mesh is not the template
    config["roi_densepose_head"]["embedders"] = {
        "other_3000": {"type": "vertex_feature", "num_vertices": 3000, "feature_dim": 64}
    }
    torch.manual_seed(0)
    table = FAMILY.build_teacher(config).vertex_embeddings(0).detach()
    assert torch.allclose(table.norm(dim=1), torch.ones(3000), atol=1e-5)
    assert VertexLookup(table, search="two_level").two_level  # not the exact search's fallback


def test_a_model_zoo_pickle_of_the_demo_teacher_loads_without_trusting_code(demo: dict, tmp_path) -> None:
    model = {k: v.numpy().copy() for k, v in demo["teacher"].state_dict().items()}
    model["proposal_generator.rpn_head.conv.weight"] = np.ones((4, 4, 3, 3), np.float32)
    path = tmp_path / "model_final_demo.pkl"
    path.write_bytes(pickle.dumps({"model": model, "__author__": "Detectron2 Model Zoo"}))
    loaded = compress.load_teacher("cse", path)  # config claimed from the key shapes
    crop = demo["batch"]["image"]
    with torch.no_grad():
        assert torch.equal(loaded(crop)["embedding"], demo["teacher"](crop)["embedding"])


def test_the_student_adopts_the_teachers_vertex_table(demo: dict) -> None:
    student = FAMILY.build_student(FAMILY.resolve_config("mobile-64", "student"))
    FAMILY.adopt_teacher(student, demo["teacher"])
    assert torch.equal(student.lookup.table, demo["teacher"].vertex_embeddings(0))
    (asset,) = FAMILY.assets(student)
    assert asset.array.shape == (2624, 16) and np.allclose(np.linalg.norm(asset.array, axis=1), 1, atol=1e-5)


def test_distillation_terms_vanish_when_the_student_matches_the_teacher(demo: dict) -> None:
    out = FAMILY.forward(demo["teacher"], demo["batch"])
    out["coarse_segm"] = torch.tensor([0.0, 1.0])[None, :, None, None].expand_as(out["coarse_segm"])  # all figure
    weights = FAMILY.loss_weights({"ground_truth_vertex": 0, "ground_truth_mask": 0, "mask": 0})
    loss, terms = FAMILY.distill_loss(out, out, demo["batch"], weights)
    assert set(terms) == {"embedding_cosine", "vertex_kl"} and float(loss.detach()) == pytest.approx(0, abs=1e-5)
    moved = {**out, "embedding": out["embedding"].roll(1, dims=-1)}
    assert FAMILY.distill_loss(out, moved, demo["batch"], weights)[1]["vertex_kl"] > 0.01


def test_a_recipes_student_is_inspected_with_its_teachers_vertex_table() -> None:
    recipe = Path(compress.__file__).parent / "recipes" / "cse-mobile-demo.yaml"
    _, student, kind = load_for_inspect(recipe, student=True)
    teacher = compress.load_teacher("cse", recipe.parent / "teachers" / "cse-demo-64.safetensors")
    assert kind == "student" and torch.equal(student.lookup.table, teacher.vertex_embeddings(0))


def test_a_teacher_is_inspected_by_its_parts_though_only_students_are_pruned(demo: dict) -> None:
    report = inspect_model(FAMILY, demo["teacher"], per_module=False)
    assert report["networks"] == [] and [p["name"] for p in report["parts"]] == ["embedder", "lookup"]


def test_distillation_uses_the_ground_truth_where_the_data_has_it(demo: dict) -> None:
    FAMILY.adopt_teacher(demo["student"], demo["teacher"])
    teacher_out, student_out = (FAMILY.forward(demo[m], demo["batch"]) for m in ("teacher", "student"))
    _, terms = FAMILY.distill_loss(teacher_out, student_out, demo["batch"], FAMILY.loss_weights({}))
    assert {"ground_truth_vertex", "ground_truth_mask", "mask"} <= set(terms)


def test_distillation_samples_its_pixels_per_sample_of_the_batch(demo: dict, monkeypatch) -> None:
    """So that each DDP process, which sees its slice of the batch, samples for that slice only."""
    counts = []
    sample = objectives.pixels_of
    monkeypatch.setattr(objectives, "pixels_of", lambda where, count: counts.append(count) or sample(where, count))
    out = FAMILY.forward(demo["teacher"], demo["batch"])
    FAMILY.distill_loss(out, out, demo["batch"], FAMILY.loss_weights({"pixels_per_sample": 5}))
    assert counts and set(counts) == {5 * len(demo["batch"]["image"])}


def test_a_teacher_grid_other_than_the_students_is_refused(demo: dict) -> None:
    out = FAMILY.forward(demo["teacher"], demo["batch"])
    smaller = {k: v[..., ::2, ::2] if v.dim() == 4 else v for k, v in out.items()}
    with pytest.raises(CompressError, match="output grid"):
        FAMILY.distill_loss(out, smaller, demo["batch"], FAMILY.loss_weights({}))


def test_the_teacher_objective_trains_the_embedder_against_ground_truth(demo: dict) -> None:
    teacher = FAMILY.build_teacher(FAMILY.resolve_config("demo-64", "teacher")).train()
    weights = FAMILY.loss_weights({}, FAMILY.task.teacher_loss)
    loss, terms = FAMILY.teacher_loss(teacher, demo["batch"], weights, torch.Generator().manual_seed(0))
    loss.backward()
    embedder = teacher.roi_heads.embedder.embedder_synthetic_2624
    assert set(terms) == {"embedding", "segmentation"} and embedder.embeddings.grad.abs().sum() > 0


def test_the_teacher_objective_can_hold_each_pixel_at_its_vertex_row(demo: dict) -> None:
    teacher, batch = demo["teacher"], demo["batch"]
    with torch.no_grad():
        out, vertices = teacher(batch["image"]), teacher.vertex_embeddings(0)
    truth = objectives.at_grid(batch["vertex_ids"], out["embedding"].shape[-2:])
    at_rows = {**out, "embedding": 3 * vertices[truth.clamp_min(0)].permute(0, 3, 1, 2)}  # any length
    weights = FAMILY.loss_weights({"vertex_cosine": 1.0}, FAMILY.task.teacher_loss)
    mesh = template_mesh()
    geodesics = mesh.geodesics / mesh.diameter

    def term(outputs: dict) -> float:
        _, terms = objectives.teacher_loss(outputs, vertices, batch, geodesics, weights, torch.Generator())
        return terms["vertex_cosine"]

    assert term(at_rows) == pytest.approx(0.0, abs=1e-5) and term(out) > 0.1


def test_the_ground_truth_scores_perfectly_and_the_baseline_does_not(demo: dict) -> None:
    batch = demo["batch"]
    truth = batch["vertex_ids"][:, ::2, ::2]
    perfect = FAMILY.score({"vertex_ids": truth}, batch)["vs_ground_truth"]
    assert perfect["gps"] == pytest.approx(1.0) and perfect["agreement"] == pytest.approx(1.0)
    assert FAMILY.score(FAMILY.baseline(batch), batch)["vs_ground_truth"]["gps"] < 0.5


def test_ids_of_another_mesh_score_as_background_not_as_template_vertices(demo: dict) -> None:
    batch = demo["batch"]
    foreign = torch.full_like(batch["vertex_ids"][:, ::2, ::2], 27_000)
    scores = FAMILY.score({"vertex_ids": foreign}, batch)["vs_ground_truth"]
    assert scores["agreement"] == 0 and scores["geodesic_error"] == pytest.approx(1.0)

"""The registered facevid2vid family: public checkpoints through `compress.load_teacher`, the teacher's
protocol and lint, the demo teacher, and a student bundle whose payload the keypoint codec carries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import onnx
import pytest
import torch

import compress
from compress.batches import collate
from compress.bundle.stage import BundleSource, ShippedFile, write_bundle
from compress.checkpoints import save_model
from compress.codec.call import run_call
from compress.codec.fit import write_bitstream
from compress.codec.flow import load_flow
from compress.export import export_onnx, onnx_parity
from compress.families.facevid2vid.objectives import ground_truth_degrees
from compress.families.loading import identify_checkpoint, load_model
from compress.families.registry import get_family
from compress.lint import lint_model
from compress.recipe import load_recipe
from compress.run import run_recipe
from tests.families.facevid2vid.test_facevid2vid_loading import liveportrait_folder, public_checkpoint

FAMILY = get_family("facevid2vid")
RECIPES = Path(__file__).parents[3] / "compress" / "recipes"


def _batch(size: int = 64, samples: int = 2) -> dict[str, torch.Tensor]:
    data = FAMILY.dataset("synthetic", "eval", (size, size), 0, samples)
    return collate(data, list(range(samples)))


def test_a_public_layout_checkpoint_loads_through_load_teacher_and_is_recognised(tiny_teacher, tmp_path: Path) -> None:
    teacher = tiny_teacher("spade")
    path = public_checkpoint(teacher, tmp_path / "00000189-checkpoint.pth.tar")
    loaded = compress.load_teacher("facevid2vid", path, config=teacher.config)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), teacher.state_dict().values()))
    demo = FAMILY.build_teacher(FAMILY.resolve_config("demo-64", "teacher"))
    family, config = identify_checkpoint(public_checkpoint(demo, tmp_path / "demo.pth.tar"))
    assert (family.name, config) == ("facevid2vid", "demo-64")


def test_a_liveportrait_folder_without_stitching_is_claimed_as_liveportrait_base(tiny_teacher, tmp_path: Path) -> None:
    folder = liveportrait_folder(tiny_teacher("liveportrait"), tmp_path / "liveportrait", stitching=False)
    assert FAMILY.claims(FAMILY.read_checkpoint(folder, False)) is None  # tiny widths: no named config
    assert FAMILY.resolve_config("liveportrait-base", "teacher")["stitching_retargeting_module_params"] is None


def test_a_liveportrait_config_loads_a_folder_without_stitching_through_load_teacher(
    tiny_teacher, tiny_config, tmp_path: Path
) -> None:
    # `compress run recipes/liveportrait-mobile.yaml --checkpoint base_models` names config liveportrait.
    folder = liveportrait_folder(tiny_teacher("liveportrait"), tmp_path / "base_models", stitching=False)
    loaded = compress.load_teacher("facevid2vid", folder, config=tiny_config("liveportrait"))
    assert loaded.stitching_retargeting_module is None
    assert loaded.config["stitching_retargeting_module_params"] is None


def test_forward_runs_the_public_protocol_on_the_teacher(tiny_teacher) -> None:
    teacher, batch = tiny_teacher("spade"), _batch(32)
    with torch.no_grad():
        out = FAMILY.forward(teacher, batch)
        kp_canonical = teacher.kp_detector(batch["source"])
        kp_source = teacher.transform_keypoints(kp_canonical, teacher.he_estimator(batch["source"]))
        kp_driving = teacher.transform_keypoints(kp_canonical, teacher.he_estimator(batch["driving"]))
        expected = teacher.generator(batch["source"], kp_source=kp_source, kp_driving=kp_driving)["prediction"]
    torch.testing.assert_close(out["prediction"], expected)
    assert out["driving_pose_logits"].shape == (2, 3, 66) and out["kp_driving"].shape == (2, 4, 3)


def test_the_liveportrait_teacher_is_scored_at_the_input_size(tiny_teacher) -> None:
    batch = _batch(32)
    with torch.no_grad():
        out = FAMILY.forward(tiny_teacher("liveportrait"), batch)
    assert out["prediction"].shape == batch["driving"].shape
    assert math.isfinite(FAMILY.score(out, batch)["vs_ground_truth"]["psnr"])


def test_the_liveportrait_teacher_is_distilled_on_what_its_parts_compute_resized_to_the_input(tiny_teacher) -> None:
    teacher, batch = _liveportrait_at(tiny_teacher), _batch(32, 1)
    parts = {p.name: p.module for p in FAMILY.parts(teacher)}
    with torch.no_grad():
        out = FAMILY.forward(teacher, batch)
        feature, kp_canonical = parts["generator.per_call"](batch["source"])
        pose = (*parts["he_estimator"](batch["source"]), *parts["he_estimator"](batch["driving"]))
        (frame,) = parts["generator.per_frame"](feature, kp_canonical, *pose)
    assert frame.shape[-2:] == (64, 64)  # the decoder's 2x upscale
    torch.testing.assert_close(out["prediction"], torch.nn.functional.interpolate(frame, size=(32, 32), mode="area"))
    assert (out["driving_t"][:, 2] == 0).all()  # the translation it applies: tz is dropped


@pytest.mark.slow
def test_the_liveportrait_teacher_recipe_exports_each_part_to_onnx_at_opset_20_and_profiles_it(
    tiny_teacher, tiny_config, tmp_path: Path
) -> None:
    folder = liveportrait_folder(tiny_teacher("liveportrait"), tmp_path / "liveportrait")
    recipe = load_recipe(RECIPES / "liveportrait-teacher-onnx.yaml")
    config = {**tiny_config("liveportrait"), "frame_shape": [32, 32]}  # the tiny widths at the tests' frame size
    recipe = recipe.model_copy(
        update={
            "teacher": recipe.teacher.model_copy(update={"config": config}),
            "data": recipe.data.model_copy(update={"size": (32, 32)}),
        }
    )
    summary = run_recipe(recipe, checkpoint=folder, out=tmp_path / "run", quiet=True)
    files = sorted((summary.run_dir / "export" / "onnx").glob("*.onnx"))
    assert [f.stem for f in files] == ["generator.per_call", "generator.per_frame", "he_estimator"]
    assert all(onnx.load(str(f), load_external_data=False).opset_import[0].version == 20 for f in files)
    latency = json.loads((summary.run_dir / "profile" / "record.json").read_text())["metrics"]
    assert {f"{f.stem} @ host x1" for f in files} <= set(latency)


def test_lint_names_the_teachers_volume_ops_with_the_2d_rewrite() -> None:
    teacher = FAMILY.build_teacher(FAMILY.resolve_config("demo-64", "teacher")).eval()
    findings = lint_model(FAMILY, teacher)
    named = {(f.category, f.op) for f in findings}
    assert {("onnx", "aten::grid_sampler"), ("coreml", "aten::grid_sampler")} <= named
    assert ("coreml_cpu_only", "aten::_convolution") in named  # Conv3d
    assert ("coreml", "aten::batch_norm") in named  # BatchNorm3d
    assert all("2-D" in f.hint for f in findings if f.category in ("onnx", "coreml"))
    assert not any(f.op == "unknown" for f in findings)


def test_the_pose_error_is_scored_against_the_clips_ground_truth_angles() -> None:
    batch = _batch()
    perfect = {"prediction": batch["driving"], "driving_angles": ground_truth_degrees(batch["driving_pose"])}
    off = dict(perfect, driving_angles=perfect["driving_angles"] + 2.0)
    assert FAMILY.score(perfect, batch)["vs_ground_truth"]["pose_error"] == 0.0
    assert abs(FAMILY.score(off, batch)["vs_ground_truth"]["pose_error"] - 2.0) < 1e-5


def test_the_committed_demo_teacher_is_the_demo_config_and_has_learnt_the_head_pose() -> None:
    teacher, meta = load_model(RECIPES / "teachers" / "facevid2vid-demo-64.safetensors")
    assert meta["config"] == FAMILY.resolve_config("demo-64", "teacher")
    batches = list(FAMILY.eval_batches("synthetic", (64, 64), 0, 4))
    pose_error = FAMILY.quality(teacher, batches)["vs_ground_truth"]["pose_error"]
    baseline = FAMILY.mean_scores((b, FAMILY.baseline(b), None) for b in batches)["vs_ground_truth"]["pose_error"]
    assert pose_error < baseline


def test_the_student_bundle_payload_goes_through_the_keypoint_codec(tmp_path: Path) -> None:
    torch.manual_seed(0)
    student = FAMILY.build_student(FAMILY.resolve_config("mobile-64", "student")).eval()
    teacher_config = FAMILY.resolve_config("demo-64", "teacher")
    parts = FAMILY.parts(student)
    onnx = {p.name: export_onnx(p, tmp_path / f"{p.name}.onnx") for p in parts}
    teacher = save_model(
        tmp_path / "teacher.safetensors",
        FAMILY.build_teacher(teacher_config),
        family=FAMILY.name,
        kind="teacher",
        config=teacher_config,
    )
    bundle = tmp_path / "bundle"
    write_bundle(
        bundle,
        BundleSource(
            name="facevid2vid-codec",
            version="0.1.0",
            family=FAMILY.name,
            recipe_sha256="0" * 64,
            stages=["export", "bundle"],
            teacher=teacher,
            task=FAMILY.task,
            parts=parts,
            files={name: {"onnx": ShippedFile(path, "fp32")} for name, path in onnx.items()},
            quality=FAMILY.quality(student, [_batch()]),
            snippets=["python"],
        ),
    )
    assert [key[1] for key in load_flow(bundle).payload] == ["yaw", "pitch", "roll", "t", "exp"]
    write_bitstream(bundle, clips=1, frames=12)
    report = run_call("synthetic", bundle, tmp_path / "call", frames=8)
    assert report["decoded"]["concealed"] == 0 and report["kbit_s"] > 0


def test_a_liveportrait_teacher_distils_the_student_on_the_terms_whose_shapes_match(tiny_teacher) -> None:
    batch = _batch(64)
    student = FAMILY.build_student(FAMILY.resolve_config("mobile-64", "student"))
    with torch.no_grad():
        teacher_out = FAMILY.forward(tiny_teacher("liveportrait"), batch)
    loss, terms = FAMILY.distill_loss(teacher_out, FAMILY.forward(student, batch), batch, FAMILY.loss_weights({}))
    loss.backward()
    assert {"output_l1", "occlusion", "angles", "translation"} <= set(terms)
    assert not {"pose_kl", "expression", "keypoints"} & set(terms)  # 21 keypoints, no bins: nothing to match


def _liveportrait_at(tiny_teacher, size: int = 32) -> torch.nn.Module:
    teacher = tiny_teacher("liveportrait")
    teacher.config["frame_shape"] = [size, size]  # the parts' frame size (LivePortrait itself runs at any size)
    return teacher


def test_lint_names_each_liveportrait_networks_blockers_with_the_rewrite(tiny_teacher) -> None:
    findings = lint_model(FAMILY, _liveportrait_at(tiny_teacher))
    by_network: dict[str, set[tuple[str, str]]] = {}
    for f in findings:
        by_network.setdefault(f.module_path.split(".")[0], set()).add((f.category, f.op))
    assert {("coreml", "aten::batch_norm"), ("coreml_cpu_only", "aten::_convolution")} <= by_network[
        "appearance_feature_extractor"
    ]  # BatchNorm3d, Conv3d
    warping = by_network["warping_module"]
    assert {("onnx", "aten::grid_sampler"), ("coreml", "aten::grid_sampler"), ("coreml", "aten::batch_norm")} <= warping
    assert any("rank-6" in f.hint or "rank-7" in f.hint for f in findings if f.module_path.startswith("warping"))
    assert by_network["spade_generator"] == {("spectral_norm", "spectral_norm")}
    assert not any(c in ("onnx", "coreml") for c, _ in by_network["motion_extractor"])  # 2-D ConvNeXt
    assert all("2-D" in f.hint for f in findings if f.category in ("onnx", "coreml"))


def test_the_liveportrait_parts_export_at_opset_20_and_animate_the_source_as_its_pipeline(
    tiny_teacher, tmp_path: Path
) -> None:
    teacher = _liveportrait_at(tiny_teacher)
    parts = {p.name: p for p in FAMILY.parts(teacher)}
    for part in parts.values():
        path = export_onnx(part, tmp_path / f"{part.name}.onnx")
        parity = onnx_parity(part, path, [part.example_inputs(seed) for seed in range(2)], rtol=1e-4, atol=1e-5)
        assert all(row["passed"] for row in parity.values()), (part.name, parity)
    assert onnx.load(str(tmp_path / "generator.per_frame.onnx")).opset_import[0].version == 20
    source, driving = _batch(32, 1)["source"], _batch(32, 1)["driving"]
    with torch.no_grad():
        feature, kp_canonical = parts["generator.per_call"].module(source)
        pose = (*parts["he_estimator"].module(source), *parts["he_estimator"].module(driving))
        (frame,) = parts["generator.per_frame"].module(feature, kp_canonical, *pose)
        info = {"source": teacher.get_kp_info(source), "driving": teacher.get_kp_info(driving)}
        info["driving"]["kp"] = info["source"]["kp"]  # LivePortrait's pipeline: the source's canonical keypoints
        x_s = teacher.transform_keypoint(info["source"])
        x_d = teacher.stitching(x_s, teacher.transform_keypoint(info["driving"]))
        expected = teacher.warp_decode(teacher.extract_feature_3d(source), x_s, x_d)["out"]
    torch.testing.assert_close(frame, expected)
    assert frame.shape == (1, 3, 64, 64)


def test_the_teachers_fixed_costs_are_priced_through_their_channel_depth_reshapes(tiny_teacher):
    """`compress inspect TEACHER --latency`: the teacher prunes to its floor (the reshapes between 2-D
    channels and the 3-D volume keep their width) and its volume parts are priced at their opset."""
    from compress.prune import fixed_costs

    costs = fixed_costs(FAMILY, tiny_teacher("spade"), "profile:iphone8")
    for part, cost in costs.items():
        assert 0 <= cost["fixed_ms"] < cost["predicted_ms"], part


def test_a_teacher_the_family_does_not_prune_is_priced_without_a_fixed_cost(tiny_teacher):
    from compress.prune import fixed_costs

    costs = fixed_costs(FAMILY, tiny_teacher("liveportrait"), "profile:iphone8")
    assert all(c["predicted_ms"] > 0 and c["fixed_ms"] is None for c in costs.values())

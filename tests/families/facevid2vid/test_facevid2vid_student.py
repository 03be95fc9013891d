"""The mobile face-vid2vid student: 2-D only, the teacher's keypoint conventions, free view, its budget."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.bench.costmodel import predict
from compress.export import export_onnx
from compress.families.facevid2vid.pose import facevid2vid_rotation
from compress.families.registry import get_family
from compress.lint import lint_model, op_sites

FAMILY = get_family("facevid2vid")


def _student(name: str = "mobile-64") -> nn.Module:
    torch.manual_seed(0)
    return FAMILY.build_student(FAMILY.resolve_config(name, "student")).eval()


def _per_frame_inputs(student: nn.Module) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """The per-frame part's inputs by name, on two synthetic frames, and the part's module."""
    batch = next(iter(FAMILY.eval_batches("synthetic", (64, 64), 0, 1)))
    single = {"source": batch["source"][:1], "driving": batch["driving"][1:2]}
    inputs = next(iter(FAMILY.calibration_inputs(student, [single])))["generator.per_frame"]
    part = {p.name: p for p in FAMILY.parts(student)}["generator.per_frame"]
    return dict(zip([s.name for s in part.inputs], inputs)), part.module


def test_the_student_has_no_3d_layer_no_volume_warp_no_inverse_and_no_rank_above_5() -> None:
    student = _student()
    assert not any(isinstance(m, (nn.Conv3d, nn.BatchNorm3d)) for m in student.modules())
    for part in FAMILY.parts(student):
        sites = op_sites(part, student)
        assert max(s.rank for s in sites) <= 5, part.name
        assert all(s.rank == 4 for s in sites if s.name == "grid_sampler"), part.name
        assert not {s.name for s in sites} & {"inverse", "linalg_inv", "affine_grid_generator"}, part.name
    assert [f for f in lint_model(FAMILY, student) if f.severity == "error"] == []


def test_the_student_transforms_keypoints_as_the_teacher_does_from_the_same_pose_bins() -> None:
    teacher = FAMILY.build_teacher(FAMILY.resolve_config("demo-64", "teacher")).eval()
    frame = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        kp_canonical, he = teacher.kp_detector(frame), teacher.he_estimator(frame)
        ours = _student().transform_keypoints(kp_canonical, he)["value"]
    torch.testing.assert_close(ours, teacher.transform_keypoints(kp_canonical, he)["value"], rtol=1e-5, atol=1e-6)


def test_a_yaw_override_rotates_the_keypoints_as_the_rotation_matrix_says_and_changes_the_frame() -> None:
    inputs, animate = _per_frame_inputs(_student())
    generator = animate.generator
    seen: list[torch.Tensor] = []
    hook = generator.dense_motion_network.register_forward_hook(lambda m, args, out: seen.append(args[2]["value"]))
    with torch.no_grad():
        frame = animate(*inputs.values())[0]
        turned = dict(inputs, driving_yaw=inputs["driving_yaw"] + 20)
        frame_turned = animate(*turned.values())[0]
    hook.remove()
    x_c, t, delta = inputs["kp_canonical"], inputs["driving_t"], inputs["driving_exp"].reshape(1, -1, 3)
    rotation = facevid2vid_rotation(turned["driving_yaw"], turned["driving_pitch"], turned["driving_roll"])[0]
    expected = (x_c[0] @ rotation.T + t[0] + delta[0])[:, :2]  # projected to the image plane
    torch.testing.assert_close(seen[1][0], expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(seen[0], seen[1], atol=1e-3)
    assert (frame_turned - frame).abs().mean() > 1e-4


def test_the_free_view_inputs_are_plain_degrees_that_an_app_can_set() -> None:
    part = {p.name: p for p in FAMILY.parts(_student())}["generator.per_frame"]
    specs = {s.name: s for s in part.inputs}
    for angle in ("yaw", "pitch", "roll"):
        assert specs[f"driving_{angle}"].shape == (1,) and "degrees" in specs[f"driving_{angle}"].normalization


def test_the_sender_sends_at_most_51_numbers_per_frame_for_the_vox_256_student() -> None:
    sender = {p.name: p for p in FAMILY.parts(_student("mobile-256"))}["he_estimator"]
    assert sender.role == "sender" and sender.cadence == "per_frame"
    assert sum(math.prod(s.shape) for s in sender.outputs) == 3 + 3 + 15 * 3


@pytest.mark.slow
def test_the_vox_256_student_fits_3_mb_at_int8_and_30_fps_per_frame_on_an_iphone_8(tmp_path: Path) -> None:
    student = _student("mobile-256")
    assert sum(p.numel() for p in student.parameters()) <= 3_000_000  # one byte per int8 weight
    fps = {}
    for part in FAMILY.parts(student):
        path = export_onnx(part, tmp_path / f"{part.name}.onnx")
        fps[part.name] = 1000 / predict(path, "profile:iphone8")["ms"]
    assert fps["generator.per_frame"] >= 30 and fps["he_estimator"] >= 30, fps

"""FOMM's training objectives: distillation from a teacher, and FOMM's own unsupervised one.

The official objective is a VGG-19 perceptual pyramid plus equivariance of keypoints and
jacobians under random thin-plate-spline warps. No pretrained VGG weights can be had here, so
an L1 + SSIM image pyramid stands in for the perceptual loss, and the warps are random
similarity transforms (whose jacobian is known in closed form).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compress.families.fomm.ops import make_coordinate_grid
from compress.families.task import LossWeights
from compress.metrics import ssim_loss


class DistillWeights(LossWeights):
    """Weights of FOMM's distillation terms (`stages.distill.loss`); 0 switches a term off."""

    output_l1: float = 1.0
    output_ssim: float = 0.5
    scales: list[float] = [1.0, 0.5, 0.25]
    keypoints: float = 10.0
    jacobians: float = 1.0
    occlusion: float = 1.0
    masks: float = 0.1
    ground_truth: float = 0.0


class TeacherWeights(LossWeights):
    """Weights of FOMM's own unsupervised objective (`compress teacher train`)."""

    scales: list[float] = [1.0, 0.5, 0.25, 0.125]
    reconstruction: float = 10.0
    ssim: float = 1.0
    equivariance_value: float = 1.0
    equivariance_jacobian: float = 0.5


def pyramid_l1(pred: torch.Tensor, target: torch.Tensor, scales: list[float]) -> torch.Tensor:
    """Mean L1 over an image pyramid (area-downsampled copies at `scales`)."""
    total = pred.new_zeros(())
    for s in scales:
        a, b = (x if s == 1 else F.interpolate(x, scale_factor=s, mode="area") for x in (pred, target))
        total = total + F.l1_loss(a, b)
    return total / len(scales)


def _resized(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return (
        x
        if x.shape[-2:] == like.shape[-2:]
        else F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
    )


def distill_loss(
    teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], w: dict
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms whose weight is non-zero; returns (loss, {term: value})."""
    pred, ref = student["prediction"], teacher["prediction"]
    terms: dict[str, torch.Tensor] = {}
    if w.get("output_l1"):
        terms["output_l1"] = pyramid_l1(pred, ref, w.get("scales", [1.0]))
    if w.get("output_ssim"):
        terms["output_ssim"] = ssim_loss(pred, ref)
    if w.get("keypoints"):
        terms["keypoints"] = sum(F.l1_loss(student[k], teacher[k]) for k in ("kp_source_value", "kp_driving_value")) / 2
    if w.get("jacobians") and "kp_driving_jacobian" in student and "kp_driving_jacobian" in teacher:
        terms["jacobians"] = (
            sum(F.l1_loss(student[k], teacher[k]) for k in ("kp_source_jacobian", "kp_driving_jacobian")) / 2
        )
    if w.get("occlusion") and "occlusion_map" in student and "occlusion_map" in teacher:
        terms["occlusion"] = F.l1_loss(
            _resized(student["occlusion_map"], teacher["occlusion_map"]), teacher["occlusion_map"]
        )
    if w.get("masks") and "region_masks" in student and "driving_eye_mask" in batch:
        masks = student["region_masks"]
        target = torch.cat([batch["driving_eye_mask"], batch["driving_mouth_mask"]], dim=1)
        terms["masks"] = F.binary_cross_entropy(
            masks.clamp(1e-4, 1 - 1e-4), F.interpolate(target, size=masks.shape[-2:], mode="area")
        )
    if w.get("ground_truth"):
        terms["ground_truth"] = pyramid_l1(pred, batch["driving"], w.get("scales", [1.0]))
    loss = sum(w[k] * v for k, v in terms.items())
    return loss, {k: float(v.detach()) for k, v in terms.items()}  # type: ignore[return-value]


def random_similarity(
    batch: int, generator: torch.Generator, rotation: float = 0.2, scale: float = 0.1, shift: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rotations, zooms and shifts: (A [B,2,2], t [B,2]) acting on (x, y) in [-1, 1]."""
    u = torch.rand(batch, 4, generator=generator) * 2 - 1
    angle, zoom = u[:, 0] * rotation, 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    a = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    return a, u[:, 2:] * shift


def warp_frame(frame: torch.Tensor, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The frame seen through T(x) = A x + t: pixel x of the result samples `frame` at T(x)."""
    grid = make_coordinate_grid(frame.shape[-2:]).to(frame)[None]  # [1,H,W,2]
    coords = torch.einsum("bij,bhwj->bhwi", a, grid.expand(frame.shape[0], -1, -1, -1)) + t[:, None, None, :]
    return F.grid_sample(frame, coords, mode="bilinear", padding_mode="reflection", align_corners=True)


def unsupervised_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], w: dict, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """FOMM's objective: reconstruct driving from source with the keypoints of both, and keep
    keypoints (and jacobians) equivariant: kp(T-warped driving) mapped through T = kp(driving)."""
    source, driving = batch["source"], batch["driving"]
    kp_s, kp_d = model.kp_detector(source), model.kp_detector(driving)
    out = model.generator(source, kp_source=kp_s, kp_driving=kp_d)
    terms = {"reconstruction": pyramid_l1(out["prediction"], driving, w["scales"])}
    if w.get("ssim"):  # optional: costs a blur pyramid per step
        terms["ssim"] = ssim_loss(out["prediction"], driving)
    a, t = random_similarity(driving.shape[0], generator)
    kp_w = model.kp_detector(warp_frame(driving, a, t))
    mapped = torch.einsum("bij,bkj->bki", a, kp_w["value"]) + t[:, None, :]
    terms["equivariance_value"] = F.l1_loss(mapped, kp_d["value"])
    if "jacobian" in kp_d and w.get("equivariance_jacobian"):
        # d/dx of T at any point is A, so J_driving should equal A @ J_warped.
        composed = torch.einsum("bij,bkjl->bkil", a, kp_w["jacobian"])
        normed = torch.linalg.solve(kp_d["jacobian"], composed)  # training only: never exported
        eye = torch.eye(2).expand_as(normed)
        terms["equivariance_jacobian"] = F.l1_loss(normed, eye)
    loss = sum(w.get(k, 1.0) * v for k, v in terms.items())
    return loss, {k: float(v.detach()) for k, v in terms.items()}  # type: ignore[return-value]

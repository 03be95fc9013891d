"""face-vid2vid's training objectives: distillation into the mobile student, and the demo teacher's own.

No pretrained VGG-19 or head-pose network (Hopenet) can be had here. An L1 image pyramid stands
in for the perceptual loss (FOMM's objectives), and the synthetic clips' ground-truth yaw, pitch
and roll stand in for Hopenet's estimates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from compress.families.facevid2vid.pose import headpose_pred_to_degree
from compress.families.fomm.objectives import distill_loss as frame_distill_loss
from compress.families.fomm.objectives import pyramid_l1, random_similarity, warp_frame
from compress.families.task import LossWeights

FRAMES = ("source", "driving")
# The image-level terms FOMM's distillation computes; the motion terms are this family's.
FRAME_TERMS = ("output_l1", "output_ssim", "scales", "occlusion", "masks", "ground_truth")


class DistillWeights(LossWeights):
    """Weights of face-vid2vid's distillation terms (`stages.distill.loss`); 0 switches a term off."""

    output_l1: float = Field(1.0, description="L1 pyramid of the predicted frame vs the teacher's")
    output_ssim: float = Field(0.0, description="1 - SSIM of the predicted frame vs the teacher's")
    scales: list[float] = Field([1.0, 0.5, 0.25], description="pyramid scales of the frame terms")
    pose_kl: float = Field(0.1, description="KL of the student's 66-bin yaw/pitch/roll distributions vs the teacher's")
    angles: float = Field(0.01, description="L1 on yaw, pitch and roll, per degree")
    translation: float = Field(1.0, description="L1 on the translation t")
    expression: float = Field(1.0, description="L1 on the expression deltas")
    keypoints: float = Field(10.0, description="L1 on the canonical, source and driving 3-D keypoints")
    occlusion: float = Field(1.0, description="L1 on the occlusion map vs the teacher's")
    masks: float = Field(0.1, description="BCE of the SPADE region masks vs the clips' eye and mouth masks")
    ground_truth: float = Field(0.0, description="L1 pyramid of the predicted frame vs the real driving frame")


class TeacherWeights(LossWeights):
    """Weights of the demo teacher's objective (`compress teacher train`), the public train.py's
    terms without the GAN and the VGG."""

    scales: list[float] = Field([1.0, 0.5, 0.25, 0.125], description="pyramid scales of the reconstruction")
    reconstruction: float = Field(10.0, description="L1 pyramid of the predicted frame vs the driving frame")
    equivariance: float = Field(
        1.0, description="driving keypoints' image-plane (x, y) equivariant under random similarity warps"
    )
    headpose: float = Field(0.05, description="L1 of yaw/pitch/roll vs the clips' ground truth, per degree")
    expression: float = Field(0.5, description="mean size of the expression deltas")
    keypoint_prior: float = Field(1.0, description="keypoints apart (squared distance >= 0.1), mean depth 0.33")


def ground_truth_degrees(pose: torch.Tensor) -> torch.Tensor:
    """The synthetic clips' pose [B, 6] (radians) -> [B, 3] yaw, pitch, roll in face-vid2vid degrees.

    The renderer's pitch turns the face the other way round the x axis (its z points at the
    camera), so its sign flips; yaw and roll agree with R = Rx(pitch) Ry(yaw) Rz(roll).
    """
    return pose[:, :3] * torch.tensor([1.0, -1.0, 1.0], dtype=pose.dtype) * (180 / math.pi)


def distill_loss(
    teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], w: dict
) -> tuple[torch.Tensor, dict[str, float]]:
    """FOMM's frame terms plus the motion terms whose weight is non-zero and whose tensors match
    in shape (a teacher with other keypoint counts is distilled on frames and angles only)."""
    frame_weights = {k: w[k] for k in FRAME_TERMS} | {"keypoints": 0.0, "jacobians": 0.0}
    loss, values = frame_distill_loss(teacher, student, batch, frame_weights)
    terms: dict[str, torch.Tensor] = {}
    if w.get("pose_kl"):
        terms["pose_kl"] = _mean_over(teacher, student, "pose_logits", _kl)
    for term, key in (("angles", "angles"), ("translation", "t"), ("expression", "exp")):
        if w.get(term):
            terms[term] = _mean_over(teacher, student, key, F.l1_loss)
    if w.get("keypoints"):
        pairs = [(teacher[k], student[k]) for k in ("kp_canonical", "kp_source", "kp_driving") if k in teacher]
        terms["keypoints"] = _mean([F.l1_loss(s, t) for t, s in pairs if t.shape == s.shape])
    terms = {k: v for k, v in terms.items() if v is not None}
    loss = loss + sum(w[k] * v for k, v in terms.items())
    return loss, values | {k: float(v.detach()) for k, v in terms.items()}


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    return (
        F.kl_div(
            F.log_softmax(student_logits, dim=-1),
            F.log_softmax(teacher_logits, dim=-1),
            log_target=True,
            reduction="none",
        )
        .sum(-1)
        .mean()
    )


def _mean_over(teacher: dict, student: dict, key: str, fn) -> torch.Tensor | None:  # type: ignore[no-untyped-def]
    """fn(student's, teacher's) averaged over source and driving, where both have `key` in one shape."""
    pairs = [(student[k], teacher[k]) for k in (f"{f}_{key}" for f in FRAMES) if k in teacher and k in student]
    return _mean([fn(s, t) for s, t in pairs if s.shape == t.shape])


def _mean(values: list[torch.Tensor]) -> torch.Tensor | None:
    return sum(values) / len(values) if values else None  # type: ignore[return-value]


def keypoint_prior(kp: torch.Tensor, min_distance: float = 0.1, depth: float = 0.33) -> torch.Tensor:
    """The public keypoint prior: keypoints at least sqrt(min_distance) apart (penalised by the squared
    distance's shortfall) and their mean depth at `depth`."""
    squared = torch.cdist(kp, kp).pow(2)
    off_diagonal = 1 - torch.eye(kp.shape[1], dtype=kp.dtype)
    separation = (F.relu(min_distance - squared) * off_diagonal).sum(dim=(1, 2)).mean()
    return separation + (kp[..., 2].mean(dim=1) - depth).abs().mean()


def teacher_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], w: dict, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """Reconstruct driving from source; keep the driving keypoints' image-plane (x, y) equivariant under
    random similarity warps of the driving frame; head pose L1 to the ground truth (when the batch has
    it); small expression deltas; the keypoint prior on the driving keypoints."""
    source, driving = batch["source"], batch["driving"]
    kp_canonical = model.kp_detector(source)
    he_source, he_driving = model.he_estimator(source), model.he_estimator(driving)
    kp_source = model.transform_keypoints(kp_canonical, he_source)
    kp_driving = model.transform_keypoints(kp_canonical, he_driving)
    out = model.generator(source, kp_source=kp_source, kp_driving=kp_driving)
    terms = {"reconstruction": pyramid_l1(out["prediction"], driving, w["scales"])}
    a, t = random_similarity(driving.shape[0], generator)
    kp_warped = model.transform_keypoints(kp_canonical, model.he_estimator(warp_frame(driving, a, t)))["value"]
    mapped = torch.einsum("bij,bkj->bki", a, kp_warped[..., :2]) + t[:, None, :]
    terms["equivariance"] = F.l1_loss(mapped, kp_driving["value"][..., :2])
    if "driving_pose" in batch:
        terms["headpose"] = sum(
            F.l1_loss(degrees(he), ground_truth_degrees(batch[f"{frame}_pose"]))
            for frame, he in (("source", he_source), ("driving", he_driving))
        )
    terms["expression"] = he_driving["exp"].abs().mean()
    terms["keypoint_prior"] = keypoint_prior(kp_driving["value"])
    loss = sum(w[k] * v for k, v in terms.items())
    return loss, {k: float(v.detach()) for k, v in terms.items()}  # type: ignore[return-value]


def degrees(he: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, 3] yaw, pitch, roll in degrees from a head-pose output's 66-bin logits."""
    return torch.stack([headpose_pred_to_degree(he[name]) for name in ("yaw", "pitch", "roll")], dim=1)

"""CSE's training objectives: distillation (student vs teacher, plus ground truth where the data
has it) and the teacher's own ground-truth objective for `compress teacher train`.

Outputs are the family's forward dicts: "embedding" [B, D, H, W] (not normalised), "coarse_segm"
[B, 2, H, W] logits, "vertices" [B, V, D] unit vertex embeddings. Only an embedding's direction
decides its vertex, so every embedding term compares directions. Vertex soft assignments are
DensePose's, softmax over vertices of -|e/|e| - v|^2 / temperature, on a random sample of pixels
(all V vertices per pixel is B x H x W x V values: 2 GB at 112x112 and 27 554 vertices).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from compress.families.task import LossWeights


class DistillWeights(LossWeights):
    """Student vs teacher on the teacher's foreground, and vs ground truth where the data has it."""

    embedding_cosine: float = Field(1.0, ge=0, description="1 - cosine of the student's embedding vs the teacher's")
    vertex_kl: float = Field(
        1.0, ge=0, description="KL of the student's vertex soft assignment from the teacher's, on sampled pixels"
    )
    mask: float = Field(0.5, ge=0, description="cross-entropy of the student's coarse_segm vs the teacher's argmax")
    ground_truth_vertex: float = Field(
        0.25, ge=0, description="cross-entropy of the student's vertex soft assignment vs the true vertex"
    )
    ground_truth_mask: float = Field(0.25, ge=0, description="cross-entropy of the student's coarse_segm vs the mask")
    temperature: float = Field(
        0.05,
        gt=0,
        description="soft assignment of vertex_kl: softer than DensePose's 0.01, so neighbouring vertices share mass",
    )
    pixels_per_sample: int = Field(
        64,
        ge=1,
        description="pixels sampled per sample of the batch for vertex_kl and ground_truth_vertex: per sample, so "
        "that each distillation process samples for its slice of the batch (the soft assignments, over every vertex, "
        "cost most of a step)",
    )


class TeacherWeights(LossWeights):
    """DensePose's CSE loss on synthetic ground truth: SoftEmbeddingLoss and the mask cross-entropy."""

    embedding: float = Field(0.6, ge=0, description="cross-entropy of the vertex soft assignment (EMBED_LOSS_WEIGHT)")
    segmentation: float = Field(5.0, ge=0, description="cross-entropy of coarse_segm vs the mask (INDEX_WEIGHTS)")
    temperature: float = Field(0.05, gt=0, description="soft assignment: -|e - v|^2 / temperature")
    geodesic_sigma: float = Field(
        0.02,
        ge=0,
        description="target: softmax of -geodesic distance / sigma to the true vertex, in geodesic diameters "
        "(SoftEmbeddingLoss); 0 for one-hot (EmbeddingLoss)",
    )
    vertex_cosine: float = Field(
        0.0,
        ge=0,
        description="1 - cosine of the pixel embedding to its true vertex's row: pixels sit at their row, so the "
        "nearest row wins by a wide margin (not in DensePose's loss)",
    )
    pixels: int = Field(1024, ge=1, description="foreground pixels per batch the embedding terms sample")


def at_grid(ids: Tensor, size: tuple[int, int]) -> Tensor:
    """A [B, H, W] map (vertex ids, mask) on the coarser output grid [B, h, w]: the pixel at each
    cell's top-left (H and W multiples of h and w)."""
    step_h, step_w = ids.shape[-2] // size[0], ids.shape[-1] // size[1]
    return ids[:, ::step_h, ::step_w]


def log_assignment(embedding: Tensor, vertices: Tensor, temperature: float) -> Tensor:
    """[P, D] pixel embeddings, [V, D] unit vertices -> [P, V] log soft assignment."""
    unit = F.normalize(embedding, dim=1)
    return F.log_softmax(-(2 - 2 * unit @ vertices.T).clamp_min(0) / temperature, dim=1)


def pixels_of(where: Tensor, count: int, generator: torch.Generator | None = None) -> Tensor:
    """Flat indices (into B x H x W) of up to `count` pixels drawn without replacement from `where`."""
    candidates = torch.nonzero(where.flatten())[:, 0]
    if len(candidates) > count:
        candidates = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    return candidates


def flat_pixels(embedding: Tensor) -> Tensor:
    """[B, D, H, W] -> [B*H*W, D]."""
    return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of [B, H, W] values over a boolean mask; 0 when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def distill_loss(
    teacher_out: dict[str, Tensor], student_out: dict[str, Tensor], batch: dict[str, Tensor], weights: dict
) -> tuple[Tensor, dict[str, float]]:
    teacher_fg = teacher_out["coarse_segm"].argmax(1) == 1
    student_e, teacher_e = student_out["embedding"], teacher_out["embedding"]
    vertices = teacher_out["vertices"][0]  # the student keeps the teacher's table
    terms: dict[str, Tensor] = {}
    if weights["embedding_cosine"]:
        terms["embedding_cosine"] = masked_mean(1 - F.cosine_similarity(student_e, teacher_e, dim=1), teacher_fg)
    pixels = weights["pixels_per_sample"] * len(student_e)
    if weights["vertex_kl"]:
        chosen = pixels_of(teacher_fg, pixels)
        log_t = log_assignment(flat_pixels(teacher_e)[chosen], vertices, weights["temperature"])
        log_s = log_assignment(flat_pixels(student_e)[chosen], vertices, weights["temperature"])
        kl = (log_t.exp() * (log_t - log_s)).sum(1)
        terms["vertex_kl"] = kl.mean() if len(kl) else kl.sum()
    if weights["mask"]:
        terms["mask"] = F.cross_entropy(student_out["coarse_segm"], teacher_fg.long())
    if "vertex_ids" in batch and (weights["ground_truth_vertex"] or weights["ground_truth_mask"]):
        truth = at_grid(batch["vertex_ids"], student_e.shape[-2:])
        if weights["ground_truth_vertex"]:
            # Not a cosine to the true vertex's embedding: DensePose's loss only orders the vertices
            # (a softmax), so a teacher's embeddings need not point at their vertex, and a cosine term
            # would pull the student away from the teacher.
            chosen = pixels_of(truth >= 0, pixels)
            log_s = log_assignment(flat_pixels(student_e)[chosen], vertices, weights["temperature"])
            terms["ground_truth_vertex"] = F.nll_loss(log_s, truth.flatten()[chosen]) if len(chosen) else log_s.sum()
        if weights["ground_truth_mask"]:
            terms["ground_truth_mask"] = F.cross_entropy(student_out["coarse_segm"], (truth >= 0).long())
    loss = sum(weights[k] * v for k, v in terms.items())
    return loss, {k: float(v.detach()) for k, v in terms.items()}


def teacher_loss(
    outputs: dict[str, Tensor],
    vertices: Tensor,
    batch: dict[str, Tensor],
    geodesics: Tensor,
    weights: dict,
    generator: torch.Generator,
) -> tuple[Tensor, dict[str, float]]:
    """DensePose's CSE loss against synthetic ground truth. `vertices` [V, D] keep their graph (the
    embedder learns); `geodesics` [V, V] in geodesic diameters."""
    truth = at_grid(batch["vertex_ids"], outputs["embedding"].shape[-2:])
    terms: dict[str, Tensor] = {}
    chosen = pixels_of(truth >= 0, weights["pixels"], generator)
    embedding, true_ids = flat_pixels(outputs["embedding"])[chosen], truth.flatten()[chosen]
    if weights["embedding"]:
        log_p = log_assignment(embedding, vertices, weights["temperature"])
        if weights["geodesic_sigma"]:
            target = F.softmax(-geodesics[true_ids] / weights["geodesic_sigma"], dim=1)
            terms["embedding"] = -(target * log_p).sum(1).mean()
        else:
            terms["embedding"] = F.nll_loss(log_p, true_ids)
    if weights["vertex_cosine"]:
        # The soft assignment alone is best served by an embedding between the rows of the likely
        # vertices (a broad prediction where the pixel's vertex is uncertain): its nearest row then
        # wins by a cosine of 1e-3, and a student that matches its direction to 0.98 lands elsewhere.
        cosine = F.cosine_similarity(embedding, vertices[true_ids], dim=1)
        terms["vertex_cosine"] = (1 - cosine).mean() if len(cosine) else cosine.sum()
    if weights["segmentation"]:
        terms["segmentation"] = F.cross_entropy(outputs["coarse_segm"], (truth >= 0).long())
    loss = sum(weights[k] * v for k, v in terms.items())
    return loss, {k: float(v.detach()) for k, v in terms.items()}

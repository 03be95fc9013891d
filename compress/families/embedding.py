"""A small test family with a non-image output: per-pixel embeddings matched to vertex embeddings.

It exercises the family interface the way CSE (Continuous Surface Embeddings, DensePose) will:
the network maps an image to a unit D-vector per pixel; a pixel's surface point is the vertex
whose embedding is nearest. The "surface" is a unit square with an 8x8 grid of vertices, each
embedded by fixed Fourier features of its (u, v); the images show that square, textured by a
smooth colour function of (u, v), warped over a noise background.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.utils.data import Dataset

from compress.errors import CompressError
from compress.families.base import Batch, OnePartPipeline, Part, Prunable, Scores, TensorSpec, split_seed
from compress.families.registry import register_family
from compress.families.small import TableFamily, Tupled
from compress.families.task import Asset, LossWeights, Metric, Task

GRID = 8  # vertices per side of the surface: V = 64
EPS = 1e-6
CONFIGS: dict[str, dict[str, Any]] = {
    "teacher-32": {"width": 32, "depth": 3, "size": 32, "dim": 8},
    "student-32": {"width": 12, "depth": 2, "size": 32, "dim": 8},
    "teacher-64": {"width": 48, "depth": 4, "size": 64, "dim": 8},
    "student-64": {"width": 16, "depth": 2, "size": 64, "dim": 8},
}
DEFAULTS = {"teacher": "teacher-32", "student": "student-32"}


class EmbeddingWeights(LossWeights):
    """Distillation terms, all on foreground pixels (the background has no vertex)."""

    embedding_cosine: float = Field(1.0, description="1 - cosine of the student's embedding vs the teacher's")
    vertex_kl: float = Field(
        1.0, description="KL divergence of the student's soft assignment to vertices from the teacher's"
    )
    ground_truth: float = Field(0.0, description="cross-entropy of the student's soft assignment vs the true vertex")
    temperature: float = Field(
        0.05, gt=0, description="soft assignment: softmax over vertices of -(squared distance) / temperature"
    )


class EmbeddingTeacherWeights(LossWeights):
    """The teacher's objective: cross-entropy of its soft assignment vs the true vertex."""

    temperature: float = Field(
        0.05, gt=0, description="soft assignment: softmax over vertices of -(squared distance) / temperature"
    )


TASK = Task(
    description="per-pixel surface embeddings; a pixel's vertex is the nearest vertex embedding",
    flow="on_device",
    metrics=(
        Metric(
            "vertex_agreement",
            "",
            True,
            "share of foreground pixels whose nearest vertex is the reference's",
            default_max_drop=0.02,
        ),
        Metric("embedding_cosine", "", True, "mean cosine of foreground embeddings vs the reference's"),
        Metric(
            "vertex_error", "", False, "mean distance on the unit-square surface between predicted and reference vertex"
        ),
    ),
    loss=EmbeddingWeights,
    teacher_loss=EmbeddingTeacherWeights,
)


# -- the surface ---------------------------------------------------------------------------------
# Factories name the CPU: `Family.claims` builds models under torch.device("meta").
def vertex_uv() -> torch.Tensor:
    """[V, 2] (u, v) of each vertex; vertex k = i * GRID + j sits at (i, j) / (GRID - 1)."""
    i, j = torch.meshgrid(torch.arange(GRID, device="cpu"), torch.arange(GRID, device="cpu"), indexing="ij")
    return torch.stack([i.flatten(), j.flatten()], 1).float() / (GRID - 1)


def surface_embedding(uv: torch.Tensor, dim: int) -> torch.Tensor:
    """[N, 2] surface points -> [N, dim] unit embeddings: fixed random Fourier features of (u, v)."""
    if dim < 2 or dim % 2:
        raise CompressError(f"embedding family: dim must be even and >= 2, not {dim}")
    # seed 0, scale 0.75: at dim 8 any two vertices are at least 0.65 apart (unit vectors)
    freqs = 0.75 * torch.randn(2, dim // 2, generator=torch.Generator().manual_seed(0), device="cpu")
    angles = 2 * math.pi * uv @ freqs
    return F.normalize(torch.cat([angles.cos(), angles.sin()], 1), dim=1)


def vertex_table(dim: int) -> torch.Tensor:
    """[V, dim] the vertices' embeddings, the same for every model of that dim."""
    return surface_embedding(vertex_uv(), dim)


def texture(uv: torch.Tensor) -> torch.Tensor:
    """[..., 2] surface coordinates -> [3, ...] colour: red = u, green = v (so ids can be read back)."""
    u, v = uv.unbind(-1)
    return torch.stack([u, v, 0.5 + 0.3 * torch.cos(2 * math.pi * u) * torch.cos(2 * math.pi * v)])


class SurfaceImages(Dataset):
    """The textured square under a random affine warp and a mild smooth deformation, over smooth noise;
    "vertex" [H, W] is each pixel's nearest vertex (-1 on the background). Deterministic by seed."""

    def __init__(self, size: tuple[int, int], seed: int, samples: int):
        self.size, self.seed, self.samples = size, seed, samples
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, size[0]), torch.linspace(-1, 1, size[1]), indexing="ij")
        self.pixels = torch.stack([xs, ys], -1)  # [H, W, 2]

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.samples:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=g)

        angle, scale, shift = (rand(1) - 0.5), 0.5 + 0.4 * rand(2), 0.4 * (rand(2) - 0.5)
        c, s = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.cat([c, -s]), torch.cat([s, c])])  # image -> surface, inverse of the placement
        uv = ((self.pixels - shift) @ rotation.T / scale + 1) / 2
        uv = uv + 0.04 * torch.sin(math.pi * 3 * uv @ rand(2, 2) + 2 * math.pi * rand(2))  # smooth deformation
        mask = ((uv >= 0) & (uv <= 1)).all(-1)
        ij = (uv.clamp(0, 1) * (GRID - 1)).round().long()
        vertex = torch.where(mask, ij[..., 0] * GRID + ij[..., 1], -1)
        background = F.interpolate(rand(1, 3, 4, 4), size=self.size, mode="bicubic", align_corners=False)[0]
        background = (background + 0.1 * torch.randn((3, *self.size), generator=g)).clamp(0, 1)
        image = torch.where(mask, texture(uv.clamp(0, 1)), background)
        return {"image": image, "vertex": vertex, "mask": mask[None].float()}


# -- the networks ------------------------------------------------------------------------------
class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class EmbeddingNet(nn.Module):
    """Encoder (stride 2) -> residual body -> decoder with a skip -> 1x1 head, L2-normalised along D."""

    def __init__(self, width: int, depth: int, size: int, dim: int = 8):
        super().__init__()
        self.config = {"width": width, "depth": depth, "size": size, "dim": dim}
        self.stem = ConvBlock(3, width)
        self.down = ConvBlock(width, width * 2, stride=2)
        self.body = nn.ModuleList(ConvBlock(width * 2, width * 2) for _ in range(depth))
        self.up = ConvBlock(width * 2, width)
        self.head = nn.Conv2d(width, dim, 1)
        self.register_buffer("vertex_embeddings", vertex_table(dim))  # [V, D]: ships with the weights

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.stem(image)
        y = self.down(x)
        for block in self.body:
            y = y + block(y)
        e = self.head(self.up(F.interpolate(y, scale_factor=2.0, mode="nearest")) + x)
        return e / torch.sqrt((e * e).sum(1, keepdim=True) + EPS)


# -- matching embeddings to vertices -----------------------------------------------------------
def _sq_distances(embedding: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """[B, D, H, W] and [B, V, D] -> [B, V, H, W] squared distances."""
    cross = torch.einsum("bdhw,bvd->bvhw", embedding, vertices)
    return (embedding * embedding).sum(1, keepdim=True) - 2 * cross + (vertices * vertices).sum(-1)[..., None, None]


def _log_assignment(out: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    return F.log_softmax(-_sq_distances(out["embedding"], out["vertices"]) / temperature, dim=1)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of [B, H, W] over the mask, then over the batch."""
    return ((x * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)).mean()


def _metrics(
    ids: torch.Tensor, ref_ids: torch.Tensor, embedding: torch.Tensor, ref_embedding: torch.Tensor, mask: torch.Tensor
) -> dict[str, float]:
    uv = vertex_uv()
    return {
        "vertex_agreement": float(_masked_mean((ids == ref_ids).float(), mask)),
        "embedding_cosine": float(_masked_mean(F.cosine_similarity(embedding, ref_embedding, dim=1), mask)),
        "vertex_error": float(_masked_mean((uv[ids] - uv[ref_ids]).norm(dim=-1), mask)),
    }


@register_family
class EmbeddingFamily(TableFamily):
    name = "embedding"
    description = "per-pixel surface embeddings matched to vertex embeddings (a small stand-in for CSE) for tests"
    task = TASK
    default_input_size = (32, 32)
    checkpoint_layout = "a flat state dict of the embedding net (stem., down., body., up., head., vertex_embeddings)"
    config_table, default_configs, network = CONFIGS, DEFAULTS, EmbeddingNet

    def parts(self, model: nn.Module) -> list[Part]:
        s, d = model.config["size"], model.config["dim"]
        return [
            Part(
                name="embedder",
                role="app",
                cadence="per_frame",
                module=Tupled(model),
                inputs=[TensorSpec("image", (1, 3, s, s), description="camera frame")],
                outputs=[
                    TensorSpec(
                        "embedding",
                        (1, d, s, s),
                        value_range=(-1.0, 1.0),
                        normalization="unit L2 norm along D",
                        description="per-pixel embedding; the pixel's vertex is the nearest row of vertex_embeddings",
                    )
                ],
                description="per-pixel surface embeddings",
            )
        ]

    def prunables(self, model: nn.Module) -> list[Prunable]:
        s = model.config["size"]
        return [Prunable("embedder", model, (torch.rand(1, 3, s, s),), protected=[model.head])]

    def assets(self, model: nn.Module) -> list[Asset]:
        table = model.vertex_embeddings.detach().cpu().float().numpy()
        return [
            Asset(
                "vertex_embeddings",
                table,
                "unit embedding of each surface vertex; a pixel's vertex is the nearest row",
                {
                    "vertices": table.shape[0],
                    "dim": table.shape[1],
                    "grid": [GRID, GRID],
                    "order": f"row i * {GRID} + j is the vertex at (u, v) = (i, j) / {GRID - 1}",
                },
            )
        ]

    def forward(self, model: Any, batch: Batch) -> dict[str, torch.Tensor]:
        embedding = model(batch["image"])
        table = getattr(model, "vertex_embeddings", None)
        if table is None:  # exported parts hold no table: the family's own (the bundle's asset)
            table = vertex_table(embedding.shape[1])
        return {
            "embedding": embedding,
            "vertices": table.expand(len(embedding), -1, -1),
        }  # batched, as distill caches per sample

    def distill_loss(self, teacher_out, student_out, batch, weights):  # type: ignore[no-untyped-def]
        mask = batch["mask"][:, 0]
        log_s = _log_assignment(student_out, weights["temperature"])
        terms: dict[str, torch.Tensor] = {}
        if weights["embedding_cosine"]:
            terms["embedding_cosine"] = _masked_mean(
                1 - F.cosine_similarity(student_out["embedding"], teacher_out["embedding"], dim=1), mask
            )
        if weights["vertex_kl"]:
            log_t = _log_assignment(teacher_out, weights["temperature"])
            terms["vertex_kl"] = _masked_mean((log_t.exp() * (log_t - log_s)).sum(1), mask)
        if weights["ground_truth"]:
            terms["ground_truth"] = F.nll_loss(log_s, batch["vertex"], ignore_index=-1)
        loss = sum(weights[k] * v for k, v in terms.items())
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    def teacher_loss(self, model, batch, weights, generator):  # type: ignore[no-untyped-def]
        loss = F.nll_loss(
            _log_assignment(self.forward(model, batch), weights["temperature"]), batch["vertex"], ignore_index=-1
        )
        return loss, {"cross_entropy": float(loss.detach())}

    def score(
        self, outputs: dict[str, torch.Tensor], batch: Batch, reference: dict[str, torch.Tensor] | None = None
    ) -> Scores:
        mask, truth = batch["mask"][:, 0], batch["vertex"].clamp_min(0)  # background pixels are masked out
        embedding, vertices = outputs["embedding"], outputs["vertices"]
        ids = _sq_distances(embedding, vertices).argmin(1)
        true_embedding = vertices[torch.arange(len(truth))[:, None, None], truth].permute(0, 3, 1, 2)
        scores = {"vs_ground_truth": _metrics(ids, truth, embedding, true_embedding, mask)}
        if reference is not None:
            ref_ids = _sq_distances(reference["embedding"], reference["vertices"]).argmin(1)
            scores["vs_teacher"] = _metrics(ids, ref_ids, embedding, reference["embedding"], mask)
        return scores

    def baseline(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every pixel the embedding of the surface's centre: where a pixel lies on the surface, unknown."""
        b, _, h, w = batch["image"].shape
        dim = CONFIGS[DEFAULTS["student"]]["dim"]
        centre = surface_embedding(torch.tensor([[0.5, 0.5]], device="cpu"), dim)[0]
        return {
            "embedding": centre[None, :, None, None].expand(b, dim, h, w),
            "vertices": vertex_table(dim).expand(b, -1, -1),
        }

    def pipeline(self, parts):  # type: ignore[no-untyped-def]
        return OnePartPipeline(parts["embedder"], "image")

    def dataset(self, source: str, split: str, size: tuple[int, int], seed: int, samples: int) -> Dataset:
        if source != "synthetic":
            raise CompressError(f"embedding family: data {source!r}: only 'synthetic' is supported")
        return SurfaceImages(tuple(size), split_seed(seed, split), samples)

    def calibration_inputs(
        self, model: nn.Module, batches: Iterable[Batch]
    ) -> Iterator[dict[str, tuple[torch.Tensor, ...]]]:
        for b in batches:
            for image in b["image"].split(1):
                yield {"embedder": (image,)}

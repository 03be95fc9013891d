"""The CSE family: DensePose Continuous Surface Embeddings, model-zoo checkpoints in, two parts out.

One app on one device runs, per frame:
  embedder  person crop -> embedding [1, 16, h, w] and coarse_segm [1, 2, h, w]
  lookup    embedding, coarse_segm -> vertex id per pixel (-1: background), against the vertex
            table, which also ships as an asset for apps that match embeddings themselves
Teacher (`teacher.CseTeacher`) and student (`student.CseStudent`) share the interface the parts
use: `model(crop)` -> {"embedding", "coarse_segm"} on the same grid. The student keeps the
teacher's vertex table: `adopt_teacher` copies it in before distillation.

Scores are on the synthetic template (`mesh.template_mesh`), the mesh the data's ground truth
uses: geodesic errors in units of its geodesic diameter (`metrics.py`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.families.base import Batch, Family, Part, Prunable, Scores, TensorSpec
from compress.families.cse import objectives
from compress.families.cse.checkpoint import teacher_shapes
from compress.families.cse.checkpoint import teacher_state_dict as dense_branch
from compress.families.cse.configs import DEFAULT_TEACHER, TEACHER_CONFIGS, check_config, infer_config, teacher_config
from compress.families.cse.data import MeshRenders
from compress.families.cse.mesh import Mesh, template_mesh
from compress.families.cse.metrics import METRICS, correspondence_metrics, embedding_cosine
from compress.families.cse.student import (
    DEFAULT_STUDENT,
    STUDENT_CONFIGS,
    CseStudent,
    VertexLookup,
    check_student_config,
)
from compress.families.cse.teacher import CseTeacher
from compress.families.registry import register_family
from compress.families.task import Asset, Task

TASK = Task(
    description="dense correspondence: a 16-D surface embedding per pixel of a person crop, matched to mesh vertices",
    flow="on_device",
    metrics=METRICS,
    loss=objectives.DistillWeights,
    teacher_loss=objectives.TeacherWeights,
    baseline_label="every pixel the template's geodesic centre",
)
TEMPLATE_FEATURES = 32  # LBO eigenfunctions a demo teacher's embedder multiplies by its learned matrix


def _demo_teacher(pooler: int) -> dict[str, Any]:
    """A small teacher in the model zoo's key layout on the synthetic template, under 2 MB so that it can
    be committed: R18 basic blocks at widths 8-64, FPN and decoder at 32, 3 V1ConvX convs at 48, the
    template's 32 lowest LBO eigenfunctions; crop 8 x pooler -> output 4 x pooler."""
    config = teacher_config("R_50_FPN_s1x")
    config["resnets"].update(depth=18, stem_out_channels=16, res2_out_channels=8)
    config["fpn"]["out_channels"] = 32
    config["roi_densepose_head"].update(
        num_stacked_convs=3,
        conv_head_dim=48,
        decoder_conv_dims=32,
        decoder_num_classes=32,
        pooler_resolution=pooler,
        embedders={template_name(): {"type": "vertex_feature", "num_vertices": template_size()}},
    )
    config["roi_densepose_head"]["embedders"][template_name()]["feature_dim"] = TEMPLATE_FEATURES
    # ImageNet's std in BGR x 255: a teacher trained from scratch has no batch norm to absorb the scale.
    config["pixel_std"] = [57.375, 57.12, 58.395]
    return config


@cache
def template_name() -> str:
    return template_mesh().name


@cache
def template_size() -> int:
    return template_mesh().num_vertices


def demo_teacher_configs() -> dict[str, dict[str, Any]]:
    return {"demo-64": _demo_teacher(8), "demo-224": _demo_teacher(28)}


class EmbedderPart(nn.Module):
    """crop -> (embedding, coarse_segm) of a teacher or student, sharing its weights and train/eval mode."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = model.training

    def forward(self, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(crop)
        return out["embedding"], out["coarse_segm"]


class LookupPart(nn.Module):
    """(embedding, coarse_segm) -> (vertex_ids,)."""

    def __init__(self, lookup: VertexLookup):
        super().__init__()
        self.lookup = lookup

    def forward(self, embedding: torch.Tensor, coarse_segm: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.lookup(embedding, coarse_segm),)


class CsePipeline:
    """The deployed flow from part callables: each crop through the embedder (batch 1), then the lookup."""

    def __init__(self, parts: dict[str, Any]):
        self.parts = parts
        shape = getattr(parts["embedder"], "shapes", {}).get("crop")
        self.input_size = tuple(shape[-2:]) if shape else None

    def eval(self) -> CsePipeline:
        return self

    def __call__(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = []
        for crop in crops.split(1):
            embedding, coarse_segm = self.parts["embedder"](crop)[:2]
            outs.append((embedding, coarse_segm, self.parts["lookup"](embedding, coarse_segm)[0]))
        embedding, coarse_segm, ids = (torch.cat(t) for t in zip(*outs))
        return {"embedding": embedding, "coarse_segm": coarse_segm, "vertex_ids": ids.long()}


@register_family
class CseFamily(Family):
    name = "cse"
    description = (
        "DensePose Continuous Surface Embeddings (Neverova et al., NeurIPS 2020): per-pixel 16-D embeddings "
        "of a person crop matched to mesh-vertex embeddings"
    )
    task = TASK
    default_input_size = (224, 224)
    checkpoint_layout = (
        "detectron2 DensePose CSE keys (backbone.bottom_up.*, backbone.fpn_*, roi_heads.decoder.*, "
        "roi_heads.densepose_head.*, roi_heads.densepose_predictor.*, roi_heads.embedder.*), "
        "in a 'model' dict (model-zoo .pkl, .pth) or flat"
    )

    # -- construction -------------------------------------------------------------------
    def configs(self) -> dict[str, dict[str, Any]]:
        return {**copy.deepcopy(TEACHER_CONFIGS), **demo_teacher_configs(), **copy.deepcopy(STUDENT_CONFIGS)}

    def config_roles(self) -> dict[str, list[str]]:
        return {"teacher": [*TEACHER_CONFIGS, *demo_teacher_configs()], "student": list(STUDENT_CONFIGS)}

    def resolve_config(self, config: str | dict[str, Any] | None, role: str) -> dict[str, Any]:
        if role not in ("teacher", "student"):
            raise CompressError(f"cse: config role must be 'teacher' or 'student', not {role!r}")
        if role == "student":
            if isinstance(config, dict):
                return check_student_config(config)
            name = config or DEFAULT_STUDENT
            if name not in STUDENT_CONFIGS:
                raise CompressError(f"cse: unknown student config {name!r}; known: {', '.join(STUDENT_CONFIGS)}")
            return copy.deepcopy(STUDENT_CONFIGS[name])
        if isinstance(config, dict):
            check_config(config)
            return copy.deepcopy(config)
        demos = demo_teacher_configs()
        return demos[config] if config in demos else teacher_config(config or DEFAULT_TEACHER)

    def build_teacher(self, config: dict[str, Any]) -> nn.Module:
        """The teacher with random weights. An embedder of the synthetic template gets its LBO basis; one of
        another mesh (smpl_27554, the animals) gets a random orthonormal stand-in for the basis that a
        checkpoint brings, so that a random teacher's vertex table has unit rows in every direction."""
        teacher = CseTeacher(config)
        for name, spec in config["roi_densepose_head"]["embedders"].items():
            embedder = getattr(teacher.roi_heads.embedder, f"embedder_{name}")
            if embedder.embeddings.is_meta:  # claims() builds shapes only
                continue
            # detectron2 starts the matrix at zero and reads it from a checkpoint; trained from scratch,
            # zero rows would have no direction to learn from.
            nn.init.normal_(embedder.embeddings, std=spec.get("feature_dim", 1) ** -0.5)
            if spec["type"] != "vertex_feature":
                continue
            if name == template_name():
                embedder.features.copy_(template_mesh().basis(spec["feature_dim"]))
            else:
                # detectron2 reads the basis from the mesh's LBO file (INIT_FILE), which is not here. Left at
                # zero, every row of the table would be zero: no direction to match a pixel to, no clusters
                # for the two-level lookup.
                nn.init.orthogonal_(embedder.features)
        return teacher

    def build_student(self, config: dict[str, Any]) -> nn.Module:
        return CseStudent(config)

    def adopt_teacher(self, student: Any, teacher: nn.Module) -> None:
        """The student keeps its teacher's vertex table (its first mesh) and learns to point where the teacher does."""
        if isinstance(student, CseStudent) and isinstance(teacher, CseTeacher):
            with torch.no_grad():
                student.lookup.set_table(teacher.vertex_embeddings(0).to(student.lookup.similarity.weight))

    # -- public checkpoints ---------------------------------------------------------------
    def teacher_state_dict(self, raw: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
        """The dense branch of a detectron2 checkpoint (the detector's keys dropped), as float32."""
        return {k: v.float() for k, v in dense_branch(raw, path).items()}

    def claims(self, raw: dict[str, Any]) -> str | dict[str, Any] | None:
        """A named config with the checkpoint's key shapes (model zoo, demo), else the config read off
        them (other meshes or widths), checked by rebuilding the shapes; None: not a CSE checkpoint."""
        try:
            shapes = {k: tuple(v.shape) for k, v in self.teacher_state_dict(raw, "checkpoint").items()}
            inferred = infer_config(shapes)
            check_config(inferred)
        except CompressError:
            return None
        for name in self.config_roles()["teacher"]:
            if teacher_shapes(self.resolve_config(name, "teacher")) == shapes:
                return name
        return inferred if teacher_shapes(inferred) == shapes else None

    # -- deployable parts ---------------------------------------------------------------
    def parts(self, model: nn.Module) -> list[Part]:
        size = self.input_size(model.config)
        grid = _output_grid(model, size)
        table = _table(model)
        lookup = model.lookup if isinstance(model, CseStudent) else VertexLookup(table)
        embedding = TensorSpec(
            "embedding",
            (1, table.shape[1], *grid),
            value_range=(-1.0, 1.0),
            normalization="not normalised: only its direction decides the vertex",
            description="per-pixel surface embedding in the teacher's space; the vertex is the nearest table row",
        )
        coarse_segm = TensorSpec(
            "coarse_segm",
            (1, 2, *grid),
            value_range=(-1.0, 1.0),
            normalization="logits: background, foreground",
            description="the figure's mask (foreground where channel 1 > channel 0)",
        )
        return [
            Part(
                name="embedder",
                role="app",
                cadence="per_frame",
                module=EmbedderPart(model),
                inputs=[TensorSpec("crop", (1, 3, *size), description="the person box resized to a square")],
                outputs=[embedding, coarse_segm],
                description="surface embeddings and mask of a person crop",
            ),
            Part(
                name="lookup",
                role="app",
                cadence="per_frame",
                module=LookupPart(lookup),
                inputs=[embedding, coarse_segm],
                outputs=[
                    TensorSpec(
                        "vertex_ids",
                        (1, *grid),
                        layout="NHW",
                        value_range=(-1.0, float(len(table) - 1)),
                        normalization="integer-valued float: the vertex's row in vertex_embeddings; -1 background",
                        description="the mesh vertex of each pixel",
                    )
                ],
                description=f"nearest of the {len(table)} vertex embeddings per foreground pixel",
            ),
        ]

    def prunables(self, model: nn.Module) -> list[Prunable]:
        if not isinstance(model, CseStudent):
            raise CompressError("cse: only the student is pruned (the teacher is a model-zoo architecture)")
        size = self.input_size(model.config)
        # The heads' widths are the embedding and mask; the vertex table is the teacher's.
        protected = [model.predictor, model.lookup.similarity]
        return [Prunable("embedder", EmbedderPart(model), (torch.rand(1, 3, *size),), protected)]

    def assets(self, model: nn.Module) -> list[Asset]:
        table = _table(model).detach().cpu().float().numpy()
        return [
            Asset(
                "vertex_embeddings",
                table,
                "unit embedding of each mesh vertex; a pixel's vertex is the row of largest dot product "
                "with its embedding (the lookup part computes it)",
                {"vertices": table.shape[0], "dim": table.shape[1], "mesh": _mesh_name(model)},
            )
        ]

    def pipeline(self, parts):  # type: ignore[no-untyped-def]
        return CsePipeline(parts)

    # -- training and evaluation --------------------------------------------------------
    def forward(self, model: Any, batch: Batch) -> dict[str, torch.Tensor]:
        """{"embedding", "coarse_segm", "vertex_ids" [B, h, w] (-1: background)} and, for torch models,
        "vertices" [B, V, D] (batched: distillation caches outputs per sample)."""
        crops = batch["image"]
        size = self.model_input_size(model)
        if tuple(crops.shape[-2:]) != tuple(size):
            raise CompressError(
                f"cse: crops are {tuple(crops.shape[-2:])}, the model takes {tuple(size)}; "
                "render the data at its size (data.size) or pick a config of that size"
            )
        if isinstance(model, CsePipeline):
            return model(crops)
        out = dict(model(crops))
        table = _table(model)
        if isinstance(model, CseStudent):
            if not model.training:  # only scores read the ids; training would pay for the lookup every step
                out["vertex_ids"] = model.lookup(out["embedding"], out["coarse_segm"]).long()
        else:
            out["vertex_ids"] = model.closest_vertices(out["embedding"], coarse_segm=out["coarse_segm"])
        out["vertices"] = table.expand(len(crops), -1, -1)
        return out

    def distill_loss(self, teacher_out, student_out, batch, weights):  # type: ignore[no-untyped-def]
        if teacher_out["embedding"].shape != student_out["embedding"].shape:
            raise CompressError(
                f"cse: the teacher's output grid {tuple(teacher_out['embedding'].shape[-2:])} differs from the "
                f"student's {tuple(student_out['embedding'].shape[-2:])}; pick a student whose size is twice the "
                "teacher's (pooler_resolution x 8)"
            )
        return objectives.distill_loss(teacher_out, student_out, batch, weights)

    def teacher_loss(self, model, batch, weights, generator):  # type: ignore[no-untyped-def]
        mesh = template_mesh()
        out = model(batch["image"])
        geodesics = mesh.geodesics / mesh.diameter
        return objectives.teacher_loss(out, model.vertex_embeddings(0), batch, geodesics, weights, generator)

    def score(
        self, outputs: dict[str, torch.Tensor], batch: Batch, reference: dict[str, torch.Tensor] | None = None
    ) -> Scores:
        mesh = template_mesh()
        ids = _on_template(outputs["vertex_ids"], mesh)
        truth = objectives.at_grid(batch["vertex_ids"], ids.shape[-2:])
        scores = {"vs_ground_truth": _matched(correspondence_metrics(ids, truth, mesh.geodesics, mesh.diameter))}
        if reference is not None:
            ref_ids = _on_template(reference["vertex_ids"], mesh)
            vs_teacher = correspondence_metrics(ids, ref_ids, mesh.geodesics, mesh.diameter)
            vs_teacher["embedding_cosine"] = embedding_cosine(
                outputs["embedding"], reference["embedding"], mask=reference["vertex_ids"] >= 0
            )
            scores["vs_teacher"] = _matched(vs_teacher)
        return scores  # type: ignore[return-value]

    def baseline(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every pixel of the crop foreground, at the template's geodesic centre (least mean distance to all)."""
        mesh = template_mesh()
        b, _, h, w = batch["image"].shape
        grid = (h // 2, w // 2)
        centre = int(mesh.geodesics.mean(1).argmin())
        return {
            "embedding": torch.zeros(b, 16, *grid),
            "coarse_segm": torch.tensor([0.0, 1.0])[None, :, None, None].expand(b, 2, *grid),
            "vertex_ids": torch.full((b, *grid), centre),
        }

    # -- data ---------------------------------------------------------------------------
    def input_size(self, config: dict[str, Any]) -> tuple[int, int]:
        """A student's `size`; a teacher's crop gives its 4 x pooler grid at the student's stride 2."""
        if config.get("kind") == "student":
            return (config["size"], config["size"])
        side = 8 * config["roi_densepose_head"]["pooler_resolution"]
        return (side, side)

    def dataset(self, source: str, split: str, size: tuple[int, int], seed: int, samples: int) -> Any:
        if source != "synthetic":
            raise CompressError(f"cse: data {source!r}: only 'synthetic' (rendered meshes, ground truth) is supported")
        return MeshRenders(split, tuple(size), seed=seed, count=samples)

    @torch.no_grad()
    def calibration_inputs(
        self, model: nn.Module, batches: Iterable[Batch]
    ) -> Iterator[dict[str, tuple[torch.Tensor, ...]]]:
        model.eval()
        for batch in batches:
            for crop in batch["image"].split(1):
                out = model(crop)
                yield {"embedder": (crop,), "lookup": (out["embedding"], out["coarse_segm"])}


def _table(model: nn.Module) -> torch.Tensor:
    """[V, D] the unit vertex embeddings a model's pixels are matched to (a teacher's first mesh)."""
    return model.lookup.table if isinstance(model, CseStudent) else model.vertex_embeddings(0)


def _mesh_name(model: nn.Module) -> str:
    return "the teacher's first mesh" if isinstance(model, CseStudent) else model.mesh_names[0]


def _output_grid(model: nn.Module, size: tuple[int, int]) -> tuple[int, int]:
    if isinstance(model, CseStudent):
        return (size[0] // 2, size[1] // 2)
    head = model.config["roi_densepose_head"]
    side = head["pooler_resolution"] * 2 * head["up_scale"]
    return (side, side)


def _matched(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics of a batch in which the reference shows no figure at all (a random teacher's) have nothing
    to measure: NaN. Nothing was matched, so they take their worst values (0, or an error of one
    diameter); mask IoU, which is defined, says why."""
    worst = {m.name: 0.0 if m.higher_is_better else 1.0 for m in METRICS}
    return {k: worst[k] if v != v else v for k, v in metrics.items()}


def _on_template(ids: torch.Tensor, mesh: Mesh) -> torch.Tensor:
    """Vertex ids scored on the template's geodesics: an id the template does not have (a model on
    another mesh) counts as background."""
    ids = ids.long()
    return torch.where(ids < mesh.num_vertices, ids, -1)

"""The one abstraction every stage goes through: a model family.

A family knows its networks (what gets trained, pruned and saved), its deployable parts (what
gets exported, quantized, profiled and bundled) and its task (metrics, loss terms, app flow,
assets; see task.py). Stages never import a model, and never name a family's metric.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from compress.errors import CompressError
from compress.families.task import Asset, Cadence, LossWeights, Role, Task

Batch = dict[str, torch.Tensor]
Scores = dict[str, dict[str, float]]  # {"vs_ground_truth": {metric: value}, "vs_teacher": {...}}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a deployable part, as an app developer must feed it."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    value_range: tuple[float, float] | None = (0.0, 1.0)
    normalization: str = "RGB, float in [0, 1]"
    description: str = ""

    def random(self, generator: torch.Generator | None = None) -> torch.Tensor:
        lo, hi = self.value_range or (-1.0, 1.0)
        return lo + (hi - lo) * torch.rand(self.shape, generator=generator)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "value_range": list(self.value_range) if self.value_range else None,
            "normalization": self.normalization,
            "description": self.description,
        }


@dataclass
class Part:
    """A deployable network: one file per format in the bundle.

    `module.forward(*inputs)` takes tensors in `inputs` order and returns a tuple of tensors
    in `outputs` order; it must be export-friendly (static shapes, no torch.inverse,
    no affine_grid). `module` shares its weights with the family model.
    """

    name: str  # e.g. "kp_detector", "generator.per_frame"
    role: Role
    cadence: Cadence
    module: nn.Module
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    description: str = ""
    # The lowest ONNX opset that has this part's ops (a teacher's 5-D GridSample needs 20): exports
    # for host profiling use it; lint still reports the part at the recipe's opset.
    min_opset: int = 17

    def example_inputs(self, seed: int = 0) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(spec.random(g) for spec in self.inputs)


@dataclass
class Prunable:
    """A network that structured pruning may shrink, traced through a flat-tensor forward.

    `module` holds the real sub-network(s) (pruned in place); `example_inputs` drive the
    dependency-graph trace; `protected` are sub-modules whose output channels are part of
    an interface (keypoint heads, output convolutions) and must keep their width.
    """

    name: str
    module: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    protected: list[nn.Module] = field(default_factory=list)
    # Custom ops that DepGraph cannot see through, mapped to torch-pruning pruners.
    customized_pruners: dict[Any, Any] = field(default_factory=dict)


def batch_size(batch: Batch) -> int:
    return len(next(iter(batch.values())))


# Synthetic data of each split comes from its own seed, so held-out data never overlaps training's.
SPLIT_OFFSETS = {"train": 0, "eval": 1, "test": 1, "calibration": 2}


def split_seed(seed: int, split: str) -> int:
    return seed * 10 + SPLIT_OFFSETS[split]


class OnePartPipeline:
    """The pipeline of a family whose model is one part: each sample of a batch through the part
    (exported parts take batch 1), outputs concatenated; `input_size` from an onnxruntime part."""

    def __init__(self, part: Callable[..., tuple[torch.Tensor, ...]], input_name: str):
        self.part = part
        shape = getattr(part, "shapes", {}).get(input_name)
        self.input_size = tuple(shape[-2:]) if shape else None

    def eval(self) -> OnePartPipeline:
        return self

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.part(x)[0] for x in inputs.split(1)])


class Family:
    """Base class of a model family; subclasses register with `@register_family`.

    A family "model" is one nn.Module holding every network (e.g. FOMM: kp_detector and
    generator). Configs are plain dicts validated by the family.
    """

    name: str = ""
    description: str = ""
    task: Task
    # Size (H, W) of the frames the family works on, for GFLOPs and data loading.
    default_input_size: tuple[int, int] = (256, 256)
    # What `claims` looks for in a state dict, for the error when no family claims a checkpoint.
    checkpoint_layout: str = ""

    # -- construction -------------------------------------------------------------------
    def configs(self) -> dict[str, dict[str, Any]]:
        """Named configs (teacher and student), e.g. {"vox-256": {...}}."""
        raise NotImplementedError

    def config_roles(self) -> dict[str, list[str]]:
        """{"teacher": [config names], "student": [...]}, for `compress families`."""
        raise NotImplementedError

    def resolve_config(self, config: str | dict[str, Any] | None, role: str) -> dict[str, Any]:
        """A config name, a dict, or None (the family's default for `role`) -> full dict."""
        raise NotImplementedError

    def build_teacher(self, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def build_student(self, config: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def adopt_teacher(self, student: Any, teacher: nn.Module) -> None:
        """Copy into a student what it keeps from its teacher unchanged (CSE: the vertex table), before
        it is distilled; nothing by default."""

    @property
    def students_adopt(self) -> bool:
        """Whether `adopt_teacher` copies anything: a student's size and cost then depend on its teacher."""
        return type(self).adopt_teacher is not Family.adopt_teacher

    # -- public checkpoints ---------------------------------------------------------------
    def read_checkpoint(self, path: Path, trust: bool) -> dict[str, Any]:
        """A checkpoint file as a (nested) dict, read safely (families with other formats override)."""
        from compress.checkpoints import load_raw

        return load_raw(path, trust=trust)

    def claims(self, raw: dict[str, Any]) -> str | None:
        """The teacher config whose keys and shapes a checkpoint (as read) has, or None: not this family's.

        Configs are tried in `config_roles()["teacher"]` order, built on the meta device (no memory)."""
        try:
            state = self.teacher_state_dict(raw, "checkpoint")
        except CompressError:
            return None
        shapes = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
        for name in self.config_roles()["teacher"]:
            with torch.device("meta"):
                model = self.build_teacher(self.resolve_config(name, "teacher"))
            if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
                return name
        return None

    def teacher_state_dict(self, raw: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
        """Map a public checkpoint layout (already safely read) onto build_teacher's keys."""
        return raw

    def fit_teacher_config(self, config: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
        """A resolved teacher config narrowed to the networks a checkpoint (as read) holds, for families
        whose checkpoints may leave optional networks out; unchanged by default."""
        return config

    # -- what stages operate on --------------------------------------------------------
    def parts(self, model: nn.Module) -> list[Part]:
        raise NotImplementedError

    def prunables(self, model: nn.Module) -> list[Prunable]:
        raise NotImplementedError

    def assets(self, model: nn.Module) -> list[Asset]:
        """Constants that ship in the bundle beside the networks (none by default)."""
        return []

    # -- training -------------------------------------------------------------------------
    def forward(self, model: Any, batch: Batch) -> dict[str, torch.Tensor]:
        """Run the whole model (or a `pipeline`) on a training/eval batch: the outputs `score` reads."""
        raise NotImplementedError

    def loss_weights(self, weights: dict[str, Any] | None, schema: type[LossWeights] | None = None) -> dict[str, Any]:
        """Recipe loss weights validated by the family's loss schema, defaults filled in."""
        schema = schema or self.task.loss
        try:
            return schema.model_validate(weights or {}).model_dump()
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise CompressError(
                f"{self.name} loss weights: {problems}; terms: {', '.join(schema.model_fields)}"
            ) from None

    def distill_loss(
        self,
        teacher_out: dict[str, torch.Tensor],
        student_out: dict[str, torch.Tensor],
        batch: Batch,
        weights: dict[str, Any],
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, {term: value}) of the student against the teacher's outputs on one batch."""
        raise NotImplementedError

    def teacher_loss(
        self, model: nn.Module, batch: Batch, weights: dict[str, Any], generator: torch.Generator
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The objective `compress teacher train` minimises (a teacher trained from scratch)."""
        raise CompressError(f"{self.name}: this family has no teacher-training objective")

    # -- evaluation -----------------------------------------------------------------------
    def score(
        self, outputs: dict[str, torch.Tensor], batch: Batch, reference: dict[str, torch.Tensor] | None = None
    ) -> Scores:
        """Batch means of the task's metrics vs the batch's ground truth and (given) vs a reference's outputs."""
        raise NotImplementedError

    def baseline(self, batch: Batch) -> dict[str, torch.Tensor] | None:
        """Outputs of the trivial model a student must beat, scored like a model's; None if the task has none."""
        return None

    @torch.no_grad()
    def quality(self, model: Any, batches: Iterable[Batch], teacher: nn.Module | None = None) -> Scores:
        """The task's metrics of `model` over `batches`, vs ground truth and (given a teacher)
        vs the teacher's outputs."""
        return self.mean_scores(
            (
                batch,
                self.forward(_eval(model), batch),
                self.reference_outputs(teacher, batch) if teacher is not None else None,
            )
            for batch in batches
        )

    def reference_outputs(self, teacher: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The teacher's outputs on `batch` (eval mode), remembered per teacher, its weights' state and the
        batch's content: a run scores each model it makes (distilled, pruned, fine-tuned, quantized)
        against one frozen teacher on the same held-out batches, and a large teacher's forward costs far
        more than the student's (face-vid2vid's vox-256: about 1.1 TFLOP per frame)."""
        memo = _REFERENCES.setdefault(teacher, {})
        key = (_weights_state(teacher), _digest(batch))
        if key not in memo:
            with torch.no_grad():
                outputs = self.forward(teacher.eval(), batch)
            while len(memo) >= REFERENCE_MEMO_BATCHES:
                memo.pop(next(iter(memo)))
            memo[key] = outputs
        return dict(memo[key])

    def mean_scores(
        self, scored: Iterable[tuple[Batch, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]]
    ) -> Scores:
        """Sample-weighted means of `score` over (batch, outputs, reference) triples
        (protocols yield batches of different sizes)."""
        sums: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for batch, outputs, reference in scored:
            n = batch_size(batch)
            for group, values in self.score(outputs, batch, reference).items():
                counts[group] = counts.get(group, 0) + n
                for k, v in values.items():
                    sums.setdefault(group, {})[k] = sums.get(group, {}).get(k, 0.0) + n * float(v)
        return {g: {k: v / counts[g] for k, v in values.items()} for g, values in sums.items()}

    def eval_batches(self, source: str, size: tuple[int, int], seed: int, limit: int) -> Iterable[Batch]:
        """Held-out batches for `compress eval` and the bench: at most `limit` items (videos, images)."""
        from compress.batches import iterate_batches

        return iterate_batches(self.dataset(source, "test", size, seed, limit * 8), 8)

    def pipeline(self, parts: dict[str, Callable[..., tuple[torch.Tensor, ...]]]) -> Any:
        """An object that `forward` accepts in place of a torch model, backed by deployable parts
        (callables taking and returning tensors in the parts' I/O order: onnxruntime sessions,
        NNCF-quantized modules). It has `input_size`, the (H, W) it takes."""
        raise NotImplementedError

    # -- data ---------------------------------------------------------------------------
    def input_size(self, config: dict[str, Any]) -> tuple[int, int]:
        """(H, W) of the inputs a model built from `config` takes."""
        return self.default_input_size

    def model_input_size(self, model: Any) -> tuple[int, int]:
        """(H, W) a torch model or a `pipeline` takes."""
        size = getattr(model, "input_size", None)
        return tuple(size) if size else self.input_size(model.config)  # type: ignore[return-value]

    def dataset(self, source: str, split: str, size: tuple[int, int], seed: int, samples: int) -> Any:
        """A torch Dataset of `samples` items (dicts of tensors) of `split` from `source` ("synthetic" or a path)."""
        raise NotImplementedError

    def calibration_inputs(
        self, model: nn.Module, batches: Iterable[Batch]
    ) -> Iterator[dict[str, tuple[torch.Tensor, ...]]]:
        """For each sample of the batches, the inputs of every part: {part name: tuple of tensors}."""
        raise NotImplementedError

    # -- description ----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What `compress families --json` prints for this family."""
        return {
            "name": self.name,
            "description": self.description,
            "configs": self.config_roles(),
            "checkpoint_layout": self.checkpoint_layout,
            "input_size": list(self.default_input_size),
            "task": self.task.to_json(),
        }


# Teacher outputs `Family.reference_outputs` keeps: per teacher (dropped with it), the latest batches.
_REFERENCES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, str], dict[str, torch.Tensor]]] = (
    weakref.WeakKeyDictionary()
)
REFERENCE_MEMO_BATCHES = 8


def _weights_state(model: nn.Module) -> tuple[Any, ...]:
    """Identity and in-place version of every parameter and buffer: changes when any is modified or replaced."""
    return tuple((id(t), t._version) for t in (*model.parameters(), *model.buffers()))


def _digest(batch: Batch) -> str:
    h = hashlib.sha1()
    for name in sorted(batch):
        value = batch[name]
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            h.update(f"{value.dtype}{tuple(value.shape)}".encode())
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()


def _eval(model: Any) -> Any:
    return model.eval() if isinstance(model, nn.Module) else model


class FramePairFamily(Family):
    """A family that redraws a driving frame from a source frame of the same clip (FOMM, face-vid2vid):
    (source, driving) pairs to train on, FOMM's first-frame protocol to evaluate."""

    def dataset(self, source: str, split: str, size: tuple[int, int], seed: int, samples: int) -> Any:
        from compress.data.pairs import PairDataset

        return PairDataset(source, split, size, seed, samples)

    def eval_batches(self, source: str, size: tuple[int, int], seed: int, limit: int) -> Iterable[Batch]:
        """FOMM's first-frame protocol on at most `limit` held-out videos."""
        from compress.data.pairs import first_frame_protocol

        return first_frame_protocol(source, "test", size, seed=seed, max_videos=limit)

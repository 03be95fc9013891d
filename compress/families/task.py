"""What a family's networks are for, declared once: metrics, loss terms, app flow, assets.

Stages read the task and never a family's own names: the quantize gate bounds the drop of
the primary metric, summaries print it, the bundle picks its card and snippets by flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

Flow = Literal["video_call", "on_device"]
# Who runs a part: in a video call the sending or the receiving phone; on device, the one app.
Role = Literal["sender", "receiver", "app"]
# How often: once per call (or per app session) or for every frame.
Cadence = Literal["per_call", "per_frame"]
Reference = Literal["ground_truth", "teacher"]

FLOW_ROLES: dict[str, tuple[str, ...]] = {"video_call": ("sender", "receiver"), "on_device": ("app",)}


@dataclass(frozen=True)
class Metric:
    """One quality metric: its key in quality dicts, unit, direction and what it is measured against."""

    name: str
    unit: str
    higher_is_better: bool
    description: str = ""
    against: tuple[Reference, ...] = ("ground_truth", "teacher")
    # The int8 drop the quantize gate tolerates by default, in this metric's unit (primary metric only).
    default_max_drop: float | None = None

    def drop(self, before: float, after: float) -> float:
        """How much worse `after` is than `before` (positive = worse), in the metric's unit."""
        return before - after if self.higher_is_better else after - before

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b

    def format(self, value: float | None) -> str:
        """e.g. "psnr 24.30 dB"; for summaries and tables."""
        number = "n/a" if value is None else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
        return f"{self.name} {number}{' ' + self.unit if self.unit else ''}"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "against": list(self.against),
            "description": self.description,
        }


class LossWeights(BaseModel):
    """Base of a family's loss-term schema: fields are term weights (0 switches a term off)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class Task:
    """The task a family's models solve. `metrics[0]` is the primary metric that gates use."""

    description: str
    flow: Flow
    metrics: tuple[Metric, ...]
    loss: type[LossWeights]  # schema of stages.distill.loss (and prune.finetune.loss, quantize.qat.loss)
    teacher_loss: type[LossWeights] | None = None  # schema of `compress teacher train` weights
    # What `Family.baseline` outputs, in a few words, for reports ("output = source frame"); "" if it has none.
    baseline_label: str = ""

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    def headline(self, quality: dict[str, dict[str, float]]) -> str:
        """The primary metric vs ground truth, for stage summaries."""
        return f"{self.primary.format(quality.get('vs_ground_truth', {}).get(self.primary.name))} vs GT"

    def against(self, reference: Reference) -> tuple[Metric, ...]:
        return tuple(m for m in self.metrics if reference in m.against)

    def to_json(self) -> dict[str, object]:
        return {
            "description": self.description,
            "flow": self.flow,
            "primary_metric": self.primary.name,
            "metrics": [m.to_json() for m in self.metrics],
            "baseline_label": self.baseline_label,
            "loss_terms": self.loss().model_dump(),
        }


@dataclass(frozen=True)
class Asset:
    """A constant an app needs besides the networks (e.g. a table of vertex embeddings)."""

    name: str
    array: np.ndarray
    description: str = ""
    meta: dict[str, object] = field(default_factory=dict)

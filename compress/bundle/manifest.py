"""The bundle manifest: one pydantic schema (`schema_version` "1.2"), built from run outputs.

The manifest is the contract with app developers: the task and how an app runs the parts
(`flow`: a video call between two phones, or one app on one device), every shipped file
(models and assets) with its checksum, every tensor with its shape, layout and
normalization, where each input comes from (`feed`), and the run's quality, latency and
gate verdicts. docs/bundle.md documents it field by field; bump SCHEMA_VERSION on any
incompatible change.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from compress.codec.format import BitstreamFormat
from compress.errors import CompressError
from compress.families.base import Part, TensorSpec
from compress.families.task import FLOW_ROLES, Cadence, Flow, Reference, Role
from compress.recipe import check_semver

SCHEMA_VERSION = "1.2"
# Older versions read as this one: what changed since is optional (1.2 added latency intervals).
UPGRADABLE = ("1.1",)
MANIFEST = "manifest.json"
# int8: int8 ONNX (QDQ); int8-weights: Core ML 8-bit weights, float compute;
# w8a8: Core ML 8-bit weights and activations.
Precision = Literal["fp32", "fp16", "int8", "int8-weights", "w8a8"]
Frame = Literal["camera_frame", "reference_frame"]
# Where inputs come from in each flow: frames of the call, or what the app feeds; and other parts' outputs.
FEED_SOURCES: dict[str, tuple[str, ...]] = {
    "video_call": ("camera_frame", "reference_frame", "part_output"),
    "on_device": ("app_input", "part_output"),
}
ASSET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # the file is assets/<name>.bin
# Element types an asset may have: ones Swift, Kotlin and numpy read from raw little-endian bytes.
AssetDtype = Literal["float16", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "int64"]
# Input-name tokens that say which frame a value was computed on (FOMM style: kp_source, kp_driving).
REFERENCE_TOKENS = ("source", "src", "reference", "ref")
CAMERA_TOKENS = ("driving", "drv", "current", "target")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(Strict):
    path: str = Field(description="bundle-relative POSIX path")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _inside_bundle(cls, v: str) -> str:
        p = PurePosixPath(v)
        if not v or p.is_absolute() or "\\" in v or any(part in ("", ".", "..") for part in v.split("/")):
            raise ValueError(f"{v!r} is not a plain relative path inside the bundle")
        if v == MANIFEST:
            raise ValueError("the manifest cannot list itself")
        return v


class ModelFile(FileEntry):
    precision: Precision


class AssetFile(FileEntry):
    """A constant array an app needs besides the models: raw little-endian values in C order."""

    name: str = Field(pattern=ASSET_NAME)
    dtype: AssetDtype
    shape: list[int] = Field(description="C order; an empty list is a scalar")
    description: str = ""
    meta: dict[str, Any] = Field(
        default_factory=dict, description="facts the family adds, e.g. the mesh the rows belong to"
    )

    @model_validator(mode="after")
    def _bytes_fit_shape(self) -> AssetFile:
        expected = int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize
        if self.bytes != expected:
            raise ValueError(
                f"asset {self.name!r} has {self.bytes} bytes, but {self.dtype} {self.shape} takes {expected}"
            )
        return self


class Feed(Strict):
    """Where an input's value comes from: a frame of the call, the app, or a part's output."""

    source: Literal["camera_frame", "reference_frame", "app_input", "part_output"]
    part: str | None = None
    output: str | None = None
    frame: Frame | None = Field(None, description="video call part_output: the frame the producing part ran on")

    @model_validator(mode="after")
    def _complete(self) -> Feed:
        if (self.source == "part_output") != (self.part is not None and self.output is not None):
            raise ValueError("part and output are set exactly when source is part_output")
        if self.frame is not None and self.source != "part_output":
            raise ValueError("frame is set only when source is part_output")
        return self


class Tensor(Strict):
    name: str
    shape: list[int]
    dtype: str
    layout: str
    value_range: tuple[float, float] | None
    normalization: str
    description: str = ""


class InputTensor(Tensor):
    feed: Feed


class PartEntry(Strict):
    name: str
    role: Role
    cadence: Cadence
    description: str = ""
    files: dict[Literal["onnx", "coreml"], ModelFile] = Field(min_length=1)
    inputs: list[InputTensor]
    outputs: list[Tensor]


class MetricEntry(Strict):
    name: str
    unit: str = Field(description='e.g. "dB"; "" when unitless')
    higher_is_better: bool
    against: list[Reference] = Field(description="what the metric is measured against")
    description: str = ""


class TaskEntry(Strict):
    """What the models do and how their quality is measured (the family's task)."""

    description: str
    primary_metric: str
    metrics: list[MetricEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _primary_listed(self) -> TaskEntry:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metrics listed twice: {sorted({n for n in names if names.count(n) > 1})}")
        if self.primary_metric not in names:
            raise ValueError(f"primary_metric {self.primary_metric!r} is not one of the metrics {names}")
        return self


class Tool(Strict):
    name: str = "mobile-compress"
    version: str


class RecipeRef(Strict):
    name: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    stages: list[str]


class Teacher(Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    source: str | None = Field(None, description="checkpoint the teacher was loaded from, or random-init")


class MeasuredOn(Strict):
    """What the quality figures describe: the model files, the data and how many samples."""

    model: str
    data: str
    samples: int = Field(ge=0)


class Quality(Strict):
    vs_ground_truth: dict[str, float | None] | None = None
    vs_teacher: dict[str, float | None] | None = None
    measured_on: MeasuredOn | None = None


class RowGate(Strict):
    target_fps: float
    passed: bool
    straddles: bool = Field(False, description="a prediction whose interval holds the target: it cannot tell")


class LatencyRow(Strict):
    part: str
    format: str | None
    precision: str | None
    shipped: bool = Field(description="the measured file is the one in this bundle")
    device: str
    source: Literal["measured", "predicted"]
    threads: int | None = None
    p50_ms: float | None
    p90_ms: float | None = None
    p99_ms: float | None = None
    fps: float | None
    interval_ms: list[float | None] | None = Field(
        None, description="predicted rows: [low, high] ms the true latency may lie in (compress/bench/interval.py)"
    )
    extrapolated_share: float | None = Field(
        None, description="predicted rows: share of the ms in op types no reference network of the profile has"
    )
    gate: RowGate | None = None


class GateEntry(Strict):
    name: str
    target: float
    value: float | None
    passed: bool
    margin: float | None = None
    detail: str = ""


class Metrics(Strict):
    quality: Quality
    latency: list[LatencyRow]
    gates: list[GateEntry]


class Size(Strict):
    total_bytes: int = Field(ge=0, description="all model files")
    per_format: dict[str, int] = Field(description="what one app ships: the model files of one format")
    target_mb: float | None = None


class Manifest(Strict):
    schema_version: Literal["1.2"] = SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str
    family: str
    description: str = ""
    created_utc: str = Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    tool: Tool
    recipe: RecipeRef
    teacher: Teacher
    flow: Flow = Field(description="video_call: sender and receiver phones; on_device: one app")
    task: TaskEntry
    parts: list[PartEntry] = Field(min_length=1)
    assets: list[AssetFile] = Field(default_factory=list, description="files under assets/")
    metrics: Metrics
    size: Size
    documents: list[FileEntry] = Field(default_factory=list, description="MODEL_CARD.md and snippets")
    bitstream: BitstreamFormat | None = Field(
        None, description="video calls: how the sender's per-frame outputs are coded (docs/bitstream.md)"
    )

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        return check_semver(v)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        paths = [f.path for f in self.files()]
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        if dupes:
            raise ValueError(f"files listed twice: {', '.join(dupes)}")
        roles = FLOW_ROLES[self.flow]
        problems = [
            f"part {p.name!r} has role {p.role!r}, which {self.flow} bundles do not have (roles: {', '.join(roles)}); "
            "the family's task.flow and its parts' roles disagree"
            for p in self.parts
            if p.role not in roles
        ]
        outputs = {p.name: {o.name for o in p.outputs} for p in self.parts}
        for part in self.parts:
            for tensor in part.inputs:
                problem = _feed_problem(self.flow, tensor.feed, outputs)
                if problem:
                    problems.append(f"part {part.name!r} input {tensor.name!r} {problem}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def files(self) -> Iterator[FileEntry]:
        """Every file the bundle holds besides manifest.json."""
        for part in self.parts:
            yield from part.files.values()
        yield from self.assets
        yield from self.documents

    def part(self, name: str) -> PartEntry:
        return next(p for p in self.parts if p.name == name)

    @property
    def folder_name(self) -> str:
        return f"{self.name}-{self.version}"


def _feed_problem(flow: str, feed: Feed, outputs: dict[str, set[str]]) -> str | None:
    if feed.source not in FEED_SOURCES[flow]:
        return f"is fed by {feed.source}, which {flow} bundles do not have (feeds: {', '.join(FEED_SOURCES[flow])})"
    if feed.part is not None and feed.output not in outputs.get(feed.part, set()):
        return f"is fed by {feed.part}.{feed.output}, which the bundle does not have"
    if feed.part is not None and (feed.frame is None) == (flow == "video_call"):
        return (
            "is fed by a part output without the frame it ran on"
            if flow == "video_call"
            else "names a frame, which on-device feeds do not have"
        )
    return None


# -- reading ---------------------------------------------------------------------------------
def load_manifest(bundle: str | Path) -> Manifest:
    """Read and validate `bundle/manifest.json`; every schema problem is listed."""
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise CompressError(f"{path}: not found; is {bundle} a bundle folder (written by the bundle stage)?")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"{path}: not valid JSON ({exc})") from None
    found = data.get("schema_version") if isinstance(data, dict) else None
    if found in UPGRADABLE:
        data["schema_version"] = SCHEMA_VERSION
    elif found != SCHEMA_VERSION:
        # 1.0 has no task (metric units and directions) to fill in, so it is not upgraded on reading.
        rebuild = (
            "it has no flow, task or assets; rebuild it with the recipe's bundle stage or " if found == "1.0" else ""
        )
        raise CompressError(
            f"{path}: schema_version {found!r} is not supported (this mobile-compress reads {SCHEMA_VERSION}); "
            f"{rebuild}use the mobile-compress version that wrote the bundle"
        )
    return validate_manifest(data, str(path))


def validate_manifest(data: dict[str, Any], where: str) -> Manifest:
    """The manifest of `data`, or a CompressError listing every schema problem."""
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(x) for x in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise CompressError(
            f"{where}: does not match the manifest schema {SCHEMA_VERSION}:\n  " + "\n  ".join(lines)
        ) from None


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    path = folder / MANIFEST
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path


# -- building --------------------------------------------------------------------------------
def tensor_entry(spec: TensorSpec, feed: Feed | None = None) -> Tensor:
    if feed is None:
        return Tensor.model_validate(spec.to_json())
    return InputTensor.model_validate({**spec.to_json(), "feed": feed})


def part_entries(parts: list[Part], files: dict[str, dict[str, ModelFile]], flow: Flow) -> list[PartEntry]:
    """Manifest entries of the shipped parts, in the family's order, with every input wired for `flow`."""
    shipped = [p for p in parts if p.name in files]
    unknown = sorted(set(files) - {p.name for p in parts})
    if unknown:
        raise CompressError(
            f"shipped parts {unknown} are not parts of the model (it has {[p.name for p in parts]}); re-run export"
        )
    _check_unique_outputs(shipped)
    wire = wire_input if flow == "video_call" else wire_app_input
    return [
        PartEntry(
            name=p.name,
            role=p.role,
            cadence=p.cadence,
            description=p.description,
            files=files[p.name],
            inputs=[tensor_entry(spec, wire(p, spec, shipped)) for spec in p.inputs],
            outputs=[tensor_entry(spec) for spec in p.outputs],
        )
        for p in shipped
    ]


def _check_unique_outputs(parts: list[Part]) -> None:
    seen: dict[str, str] = {}
    for p in parts:
        for spec in p.outputs:
            if spec.name in seen:
                raise CompressError(
                    f"parts {seen[spec.name]!r} and {p.name!r} both output {spec.name!r}; output names must be unique"
                )
            seen[spec.name] = p.name


def wire_input(consumer: Part, spec: TensorSpec, parts: list[Part]) -> Feed:
    """Where `consumer`'s input `spec` comes from in a video call, found by name.

    An input named like a part's output takes that output; `kp_source_value` /
    `kp_driving_value` take `kp_value` computed on the reference / the camera frame.
    Other image inputs take a frame: the reference frame for per-call parts and for
    names with a reference token, the camera frame otherwise.
    """
    producers = {out.name: p for p in parts if p is not consumer for out in p.outputs}
    tokens = spec.name.split("_")
    if spec.name in producers:
        return _output_feed(consumer, spec, producers[spec.name], spec.name, None)
    for frame, marks in (("reference_frame", REFERENCE_TOKENS), ("camera_frame", CAMERA_TOKENS)):
        for mark in marks:
            if mark in tokens:
                base = "_".join(t for t in tokens if t != mark)
                if base in producers:
                    return _output_feed(consumer, spec, producers[base], base, frame)
    if is_image(spec):
        wants_reference = consumer.cadence == "per_call" or any(t in tokens for t in REFERENCE_TOKENS)
        return Feed(source="reference_frame" if wants_reference else "camera_frame")
    raise CompressError(
        f"part {consumer.name!r} input {spec.name!r}: no part outputs a tensor of that name and it is not an image; "
        "name it after the output it takes (e.g. 'kp_source_value' for 'kp_value' computed on the reference frame)"
    )


def wire_app_input(consumer: Part, spec: TensorSpec, parts: list[Part]) -> Feed:
    """Where `consumer`'s input `spec` comes from in an on-device app: the same-named output of a
    part that runs before it, else the app. No frame tokens: one app holds every value."""
    producer = next((p for p in parts if p is not consumer and spec.name in {o.name for o in p.outputs}), None)
    if producer is None:
        return Feed(source="app_input")
    if _app_order(producer, parts) > _app_order(consumer, parts):
        raise CompressError(
            f"part {consumer.name!r} input {spec.name!r} is {producer.name!r}'s output, "
            f"but {producer.name!r} runs after it "
            "(an app runs the per-call parts once first, then the per-frame parts, each in the family's order); "
            "reorder the family's parts"
        )
    return Feed(source="part_output", part=producer.name, output=spec.name)


def _app_order(part: Part, parts: list[Part]) -> tuple[bool, int]:
    return part.cadence == "per_frame", [p.name for p in parts].index(part.name)


def _output_feed(consumer: Part, spec: TensorSpec, producer: Part, output: str, frame: str | None) -> Feed:
    if consumer.role == "sender" and producer.role == "receiver":
        raise CompressError(
            f"sender part {consumer.name!r} input {spec.name!r} takes {producer.name!r}'s output, "
            "which only the receiver has"
        )
    ran_on = frame or (
        "reference_frame" if producer.cadence == "per_call" or consumer.cadence == "per_call" else "camera_frame"
    )
    if consumer.cadence == "per_call" and ran_on == "camera_frame":
        raise CompressError(
            f"part {consumer.name!r} runs once per call but its input {spec.name!r} changes every frame"
        )
    if producer.cadence == "per_call" and ran_on == "camera_frame":
        raise CompressError(
            f"part {consumer.name!r} input {spec.name!r} asks for {producer.name!r} on the camera frame, "
            "but that part runs once per call"
        )
    return Feed(source="part_output", part=producer.name, output=output, frame=ran_on)


def is_image(spec: TensorSpec | Tensor, channels: tuple[int, ...] = (1, 3, 4)) -> bool:
    """A batch of images: 4-D in NCHW or NHWC with one of `channels`."""
    axis = {"NCHW": 1, "NHWC": 3}.get(spec.layout)
    return axis is not None and len(spec.shape) == 4 and spec.shape[axis] in channels

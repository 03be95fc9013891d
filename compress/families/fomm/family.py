"""The FOMM family: official checkpoints in, three deployable parts out.

A video call fixes the source (reference) frame, so the networks split by cadence:
  kp_detector          sender,   per frame: camera frame -> keypoints (+ jacobians); the sender
                                            also runs it once on the reference frame it sends
  generator.per_call   receiver, per call:  reference frame -> source features
  generator.per_frame  receiver, per frame: reference frame, its features and keypoints,
                                            driving keypoints -> predicted frame
Parts and prunables only use the interface teacher and student share: `.config`,
`.kp_detector(image)` and `.generator(...)` / `.encode_source` / `.animate`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.families.base import Batch, FramePairFamily, Part, Prunable, Scores, TensorSpec
from compress.families.fomm.configs import DEFAULT_TEACHER, TEACHER_CONFIGS, frame_shape, num_channels, teacher_config
from compress.families.fomm.objectives import DistillWeights, TeacherWeights
from compress.families.fomm.teacher import FommModel, Keypoints
from compress.families.registry import register_family
from compress.families.task import Metric, Task
from compress.metrics import frame_metrics, keypoint_distance

DEFAULT_STUDENT = "mobile-256"
TASK = Task(
    description="reconstruct the camera frame from the reference frame and keypoints (video call)",
    flow="video_call",
    metrics=(
        Metric("psnr", "dB", True, "PSNR of the predicted frame", default_max_drop=0.3),
        Metric("l1", "", False, "mean absolute error of the predicted frame, pixels in [0, 1]"),
        Metric("ssim", "", True, "SSIM of the predicted frame (11x11 Gaussian window)"),
        Metric(
            "keypoint_distance",
            "",
            False,
            "mean distance of driving keypoints, coordinates in [-1, 1]",
            against=("teacher",),
        ),
    ),
    loss=DistillWeights,
    teacher_loss=TeacherWeights,
    baseline_label="output = source frame",
)
KP_FIELDS = ("value", "jacobian")
NETWORKS = ("kp_detector", "generator")
# Layers whose output channels are an interface (keypoints, jacobians, mask over K+1 motions,
# occlusion, RGB): pruning must keep their width.
INTERFACE_LAYERS = {
    "kp_detector": ("kp", "jacobian"),
    "generator": ("final", "blend", "dense_motion_network.mask", "dense_motion_network.occlusion", "region_masks.mix"),
}


def flat_keypoints(kp: Keypoints) -> tuple[torch.Tensor, ...]:
    return tuple(kp[f] for f in KP_FIELDS if f in kp)


def keypoints(tensors: tuple[torch.Tensor, ...]) -> Keypoints:
    return dict(zip(KP_FIELDS, tensors))


class FlatForward(nn.Module):
    """A flat-tensor forward around one network (stored under `network`), sharing its weights.

    It mirrors the network's train/eval mode: exporters put the wrapper back into its own mode
    afterwards, which must not flip the network's BatchNorms into training.
    """

    network = ""

    def __init__(self, net: nn.Module):
        super().__init__()
        setattr(self, self.network, net)
        self.training = net.training


class KeypointsModule(FlatForward):
    """kp_detector: image -> (value, jacobian)."""

    network = "kp_detector"

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return flat_keypoints(self.kp_detector(image))


class SourceEncoderModule(FlatForward):
    """generator.per_call: source -> (source_feature,)."""

    network = "generator"

    def forward(self, source: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.generator.encode_source(source),)


class AnimateModule(FlatForward):
    """generator.per_frame: (source, source_feature, *source keypoints, *driving keypoints) -> (prediction,)."""

    network = "generator"

    def forward(self, source: torch.Tensor, source_feature: torch.Tensor, *kp: torch.Tensor) -> tuple[torch.Tensor]:
        half = len(kp) // 2
        out = self.generator.animate(
            source, source_feature, kp_source=keypoints(kp[:half]), kp_driving=keypoints(kp[half:])
        )
        return (out["prediction"],)


class ReconstructModule(FlatForward):
    """The whole generator, for pruning: (source, *source keypoints, *driving keypoints) -> (prediction,)."""

    network = "generator"

    def forward(self, source: torch.Tensor, *kp: torch.Tensor) -> tuple[torch.Tensor]:
        half = len(kp) // 2
        out = self.generator(source, kp_source=keypoints(kp[:half]), kp_driving=keypoints(kp[half:]))
        return (out["prediction"],)


class JacobianSpec(TensorSpec):
    """Jacobians are 2x2 local affines that get inverted: random ones stay near the identity."""

    def random(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.rand(self.shape, generator=generator) * 0.5 - 0.25
        return torch.eye(2).expand(self.shape) + noise


def image_spec(name: str, channels: int, size: tuple[int, int], description: str) -> TensorSpec:
    return TensorSpec(name, (1, channels, *size), description=description)


def kp_specs(prefix: str, num_kp: int, with_jacobian: bool, frame: str) -> list[TensorSpec]:
    specs = [
        TensorSpec(
            f"{prefix}_value",
            (1, num_kp, 2),
            layout="NK2",
            value_range=(-1.0, 1.0),
            normalization=(
                "keypoint (x, y); (-1, -1) and (1, 1) are the centres of the top-left and bottom-right pixels"
            ),
            description=f"keypoints of the {frame}",
        )
    ]
    if with_jacobian:
        specs.append(
            JacobianSpec(
                f"{prefix}_jacobian",
                (1, num_kp, 2, 2),
                layout="NK22",
                value_range=None,
                normalization="2x2 local affine of the motion at each keypoint (row-major), near identity, invertible",
                description=f"jacobians of the {frame}",
            )
        )
    return specs


@register_family
class FommFamily(FramePairFamily):
    name = "fomm"
    description = (
        "First Order Motion Model (Siarohin et al., NeurIPS 2019): "
        "keypoints + jacobians, dense motion, occlusion-aware generator"
    )
    task = TASK
    default_input_size = frame_shape(TEACHER_CONFIGS[DEFAULT_TEACHER])
    checkpoint_layout = (
        "'kp_detector' and 'generator' state dicts (official layout) or keys prefixed "
        "'kp_detector.' / 'generator.', shaped like one of the teacher configs"
    )

    # -- construction -------------------------------------------------------------------
    def configs(self) -> dict[str, dict[str, Any]]:
        return {**copy.deepcopy(TEACHER_CONFIGS), **copy.deepcopy(_student_configs())}

    def config_roles(self) -> dict[str, list[str]]:
        return {"teacher": list(TEACHER_CONFIGS), "student": list(_student_configs())}

    def resolve_config(self, config: str | dict[str, Any] | None, role: str) -> dict[str, Any]:
        if role not in ("teacher", "student"):
            raise CompressError(f"fomm: config role must be 'teacher' or 'student', not {role!r}")
        if config is None:
            config = DEFAULT_TEACHER if role == "teacher" else DEFAULT_STUDENT
        if isinstance(config, dict):
            return copy.deepcopy(config)
        if role == "teacher":
            return teacher_config(config)
        students = _student_configs()
        if config not in students:
            raise CompressError(f"fomm: unknown student config {config!r}; known: {', '.join(students)}")
        return copy.deepcopy(students[config])

    def build_teacher(self, config: dict[str, Any]) -> nn.Module:
        return FommModel(config)

    def build_student(self, config: dict[str, Any]) -> nn.Module:
        from compress.families.fomm.student import build_student

        return build_student(config)

    def teacher_state_dict(self, raw: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
        """Official layout ({"kp_detector": sd, "generator": sd, "discriminator": ..., optimizers})
        or one flat dict with `kp_detector.` / `generator.` prefixes; `module.` (DataParallel) stripped."""
        if all(isinstance(raw.get(n), dict) for n in NETWORKS):
            state = {f"{n}.{_strip_module(k)}": v for n in NETWORKS for k, v in raw[n].items()}
        else:
            state = {_strip_module(k): v for k, v in raw.items() if isinstance(v, torch.Tensor)}
            state = {k: v for k, v in state.items() if k.split(".", 1)[0] in NETWORKS}
        if not any(k.startswith("kp_detector.") for k in state) or not any(k.startswith("generator.") for k in state):
            raise CompressError(
                f"{path}: not a FOMM checkpoint: expected 'kp_detector' and 'generator' state dicts (official "
                f"layout) or keys prefixed 'kp_detector.' / 'generator.'; found top-level keys {sorted(raw)[:10]}"
            )
        return state

    # -- deployable parts ---------------------------------------------------------------
    def parts(self, model: nn.Module) -> list[Part]:
        shapes = _probe(model)
        size, channels, k, jac = shapes["frame"], shapes["channels"], shapes["num_kp"], shapes["jacobian"]
        source = image_spec("source", channels, size, "reference frame (the one the sender sent at call start)")
        return [
            Part(
                name="kp_detector",
                role="sender",
                cadence="per_frame",
                module=KeypointsModule(model.kp_detector),
                inputs=[image_spec("image", channels, size, "camera frame (also run once on the reference frame)")],
                outputs=kp_specs("kp", k, jac, "image"),
                description="keypoints of each camera frame; the sender sends them instead of the frame",
            ),
            Part(
                name="generator.per_call",
                role="receiver",
                cadence="per_call",
                module=SourceEncoderModule(model.generator),
                inputs=[source],
                outputs=[_feature_spec(shapes["feature"])],
                description="encodes the reference frame once per call",
            ),
            Part(
                name="generator.per_frame",
                role="receiver",
                cadence="per_frame",
                module=AnimateModule(model.generator),
                inputs=[
                    source,
                    _feature_spec(shapes["feature"]),
                    *kp_specs("kp_source", k, jac, "reference frame"),
                    *kp_specs("kp_driving", k, jac, "camera frame"),
                ],
                outputs=[
                    image_spec("prediction", channels, size, "the reference frame animated by the driving keypoints")
                ],
                description="dense motion, warp of the source features, occlusion, decoder",
            ),
        ]

    def prunables(self, model: nn.Module) -> list[Prunable]:
        parts = {p.name: p for p in self.parts(model)}
        frame = parts["kp_detector"].example_inputs()
        kp = parts["generator.per_frame"].example_inputs()[2:]
        return [
            Prunable("kp_detector", KeypointsModule(model.kp_detector), frame, _interface_layers(model, "kp_detector")),
            Prunable(
                "generator", ReconstructModule(model.generator), (*frame, *kp), _interface_layers(model, "generator")
            ),
        ]

    # -- training and evaluation --------------------------------------------------------
    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """FOMM's reconstruction protocol: animate `source` with the keypoints of `driving` (same video)."""
        size = getattr(model, "input_size", None) or frame_shape(
            _model_config(model)
        )  # exported models carry their size
        for name in ("source", "driving"):
            if tuple(batch[name].shape[-2:]) != size:
                raise CompressError(
                    f"fomm: batch {name!r} frames are {tuple(batch[name].shape[-2:])}, the model is built for {size} "
                    "(its config's frame size); resize the data (data.size) or pick a config of that size"
                )
        kp_source = model.kp_detector(batch["source"])
        kp_driving = model.kp_detector(batch["driving"])
        out = dict(model.generator(batch["source"], kp_source=kp_source, kp_driving=kp_driving))
        for name, kp in (("kp_source", kp_source), ("kp_driving", kp_driving)):
            out.update({f"{name}_{f}": v for f, v in kp.items()})
        return out

    def score(
        self, outputs: dict[str, torch.Tensor], batch: Batch, reference: dict[str, torch.Tensor] | None = None
    ) -> Scores:
        scores = {"vs_ground_truth": frame_metrics(outputs["prediction"], batch["driving"])}
        if reference is not None:
            scores["vs_teacher"] = frame_metrics(outputs["prediction"], reference["prediction"])
            if "kp_driving_value" in outputs and "kp_driving_value" in reference:
                scores["vs_teacher"]["keypoint_distance"] = float(
                    keypoint_distance(outputs["kp_driving_value"], reference["kp_driving_value"])
                )
        return scores

    def input_size(self, config: dict[str, Any]) -> tuple[int, int]:
        return frame_shape(config)

    @torch.no_grad()
    def calibration_inputs(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]
    ) -> Iterator[dict[str, tuple[torch.Tensor, ...]]]:
        """Each (source, driving) pair of the batches as the inputs of the three parts (model in eval mode)."""
        model.eval()
        for batch in batches:
            for source, driving in zip(batch["source"].split(1), batch["driving"].split(1)):
                feature = model.generator.encode_source(source)
                kp_source, kp_driving = model.kp_detector(source), model.kp_detector(driving)
                yield {
                    "kp_detector": (driving,),
                    "generator.per_call": (source,),
                    "generator.per_frame": (source, feature, *flat_keypoints(kp_source), *flat_keypoints(kp_driving)),
                }

    def distill_loss(self, teacher_out, student_out, batch, weights):  # type: ignore[no-untyped-def]
        from compress.families.fomm.objectives import distill_loss

        return distill_loss(teacher_out, student_out, batch, weights)

    def teacher_loss(self, model, batch, weights, generator):  # type: ignore[no-untyped-def]
        from compress.families.fomm.objectives import unsupervised_loss

        return unsupervised_loss(model, batch, weights, generator)

    def baseline(self, batch: Batch) -> dict[str, torch.Tensor]:
        return {"prediction": batch["source"]}  # "output = source frame": no motion at all

    def pipeline(self, parts):  # type: ignore[no-untyped-def]
        from compress.families.fomm.runtime import ExportedFomm

        return ExportedFomm(parts)


def _student_configs() -> dict[str, dict[str, Any]]:
    from compress.families.fomm.student import STUDENT_CONFIGS

    return STUDENT_CONFIGS


def _strip_module(key: str) -> str:
    return key.removeprefix("module.")


def _feature_spec(shape: tuple[int, ...]) -> TensorSpec:
    return TensorSpec(
        "source_feature",
        shape,
        value_range=None,
        normalization="generator.per_call output, passed through unchanged",
        description="features of the reference frame, computed once per call",
    )


@torch.no_grad()
def _probe(model: nn.Module) -> dict[str, Any]:
    """Frame size from the config; keypoint count, jacobians and feature shape from one eval pass.

    Shapes are read from outputs rather than the config because pruning may change the feature
    width. Every module's train/eval mode is restored (BN statistics must not move).
    """
    config = _model_config(model)
    size, channels = frame_shape(config), num_channels(config)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        param = next(model.parameters())
        image = torch.zeros(1, channels, *size, dtype=param.dtype, device=param.device)
        kp = model.kp_detector(image)
        feature = model.generator.encode_source(image)
    finally:
        for m, training in modes.items():
            m.training = training
    return {
        "frame": size,
        "channels": channels,
        "num_kp": kp["value"].shape[1],
        "jacobian": "jacobian" in kp,
        "feature": tuple(feature.shape),
    }


def _model_config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise CompressError(
            f"fomm: {type(model).__name__} has no `config` dict; build it with the family's build_teacher/build_student"
        )
    return config


def _interface_layers(model: nn.Module, network: str) -> list[nn.Module]:
    net = getattr(model, network)
    layers = [net.get_submodule(n) for n in INTERFACE_LAYERS[network] if _has_submodule(net, n)]
    if not layers:
        raise CompressError(
            f"fomm: {network} has none of the interface layers {INTERFACE_LAYERS[network]}; "
            "pruning would change its outputs"
        )
    return layers


def _has_submodule(net: nn.Module, name: str) -> bool:
    try:
        return net.get_submodule(name) is not None
    except AttributeError:
        return False

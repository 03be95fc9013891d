"""The face-vid2vid family: public vox-256 / LivePortrait checkpoints in, three deployable parts out.

A video call fixes the source (reference) frame; the networks split by cadence:
  he_estimator         sender,   per frame: camera frame -> yaw, pitch, roll (degrees), t [3] and
                                            expression deltas [3K]: 3 + 3 + 3K numbers (51 at K = 15);
                                            the sender also runs it once on the reference frame
  generator.per_call   receiver, per call:  reference frame -> source features and canonical
                                            keypoints. The receiver has the reference picture, so
                                            the canonical keypoints need not be sent.
  generator.per_frame  receiver, per frame: source features, canonical keypoints, the reference's and
                                            the camera frame's pose and expression -> predicted frame.
                                            x = R x_c + t + delta is computed here in closed form, so
                                            the driving yaw, pitch and roll are plain inputs: an app
                                            overrides them to change the viewpoint (free view).
Parts, prunables and forward use the interface teacher and student share: `.config`,
`.kp_detector(image)`, `.he_estimator(image)`, `.transform_keypoints(kp, he)`, `.generator(...)` /
`.encode_source` / `.animate`. The teacher's parts carry its 5-D feature volume; lint names them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError
from compress.families.base import Batch, FramePairFamily, Part, Prunable, Scores, TensorSpec
from compress.families.facevid2vid import checkpoints
from compress.families.facevid2vid.configs import DEFAULT_TEACHER, TEACHER_CONFIGS, teacher_config
from compress.families.facevid2vid.objectives import DistillWeights, TeacherWeights, degrees, ground_truth_degrees
from compress.families.facevid2vid.pose import headpose_pred_to_degree, transform_canonical
from compress.families.fomm.family import TASK as FOMM_TASK
from compress.families.fomm.family import FlatForward, image_spec
from compress.families.fomm.student import MobileGenerator
from compress.families.registry import register_family
from compress.families.task import Metric, Task
from compress.metrics import frame_metrics, keypoint_distance

DEFAULT_STUDENT = "mobile-256"
TASK = Task(
    description="reconstruct the camera frame from the reference frame, head pose and expression (video call)",
    flow="video_call",
    metrics=(
        *FOMM_TASK.metrics[:3],  # psnr (primary), l1, ssim of the predicted frame
        Metric(
            "keypoint_distance",
            "",
            False,
            "mean distance of the driving 3-D keypoints, coordinates in [-1, 1]",
            against=("teacher",),
        ),
        Metric("pose_error", "deg", False, "mean absolute error of the driving yaw, pitch and roll"),
    ),
    loss=DistillWeights,
    teacher_loss=TeacherWeights,
    baseline_label="output = source frame",
)
ANGLES = ("yaw", "pitch", "roll")
VOLUME_GRID_SAMPLE_OPSET = 20  # ONNX GridSample takes the teacher's 5-D volume from opset 20 on
POSE_FIELDS = (*ANGLES, "t", "exp")
# Layers whose output width is an interface (pose bins, t, expression, keypoints and depth, mask over
# K + 1 motions, occlusion, RGB + blend, region mix): pruning must keep it.
INTERFACE_LAYERS = {
    "he_estimator": ("fc_yaw", "fc_pitch", "fc_roll", "fc_t", "fc_exp"),
    "kp_detector": ("kp", "depth"),
    "generator": (
        "final",
        "blend",
        "decoder.conv_img",
        "dense_motion_network.mask",
        "dense_motion_network.occlusion",
        "region_masks.mix",
        # The teacher's channel <-> (channel, depth) reshapes, which torch-pruning's graph cannot follow:
        # the appearance volume's 1x1 conv and the dense motion's per-keypoint feature compression.
        "second",
        "dense_motion_network.compress",
    ),
}


class HeadPoseModule(FlatForward):
    """he_estimator: image -> (yaw, pitch, roll in degrees, t, exp): the per-frame payload."""

    network = "he_estimator"

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        he = self.he_estimator(image)
        return (*(headpose_pred_to_degree(he[a]) for a in ANGLES), he["t"], he["exp"])


class HeadPoseLogitsModule(FlatForward):
    """he_estimator for pruning: image -> (yaw, pitch, roll logits, t, exp), every head."""

    network = "he_estimator"

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        he = self.he_estimator(image)
        return tuple(he[f] for f in POSE_FIELDS)


class CanonicalKeypointsModule(FlatForward):
    """kp_detector for pruning: image -> (canonical keypoints,)."""

    network = "kp_detector"

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.kp_detector(image)["value"],)


class SourceEncoderModule(nn.Module):
    """generator.per_call: source -> (source_feature, kp_canonical)."""

    def __init__(self, kp_detector: nn.Module, generator: nn.Module):
        super().__init__()
        self.kp_detector, self.generator = kp_detector, generator
        self.training = generator.training

    def forward(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.generator.encode_source(source), self.kp_detector(source)["value"]


class AnimateModule(FlatForward):
    """generator.per_frame: ([source,] source_feature, kp_canonical, source yaw, pitch, roll, t, exp,
    driving yaw, pitch, roll, t, exp) -> (prediction,). The mobile generator also reads the source
    frame (its image skip and dense motion); the teacher's reads only its feature volume."""

    network = "generator"

    def __init__(self, generator: nn.Module):
        super().__init__(generator)
        self.reads_source = isinstance(generator, MobileGenerator)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor]:
        source, inputs = (inputs[0], inputs[1:]) if self.reads_source else (None, inputs)
        feature, kp_canonical, pose = inputs[0], inputs[1], inputs[2:]
        kp_source = {"value": transform_canonical(kp_canonical, *pose[:5])}
        kp_driving = {"value": transform_canonical(kp_canonical, *pose[5:])}
        if self.reads_source:
            out = self.generator.animate(source, feature, kp_source, kp_driving)
        else:
            out = self.generator.animate(feature, kp_source, kp_driving)
        return (out["prediction"],)


class ReconstructModule(FlatForward):
    """The whole generator, for pruning: (source, kp_source, kp_driving) -> (prediction,)."""

    network = "generator"

    def forward(self, source: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.generator(source, kp_source={"value": kp_source}, kp_driving={"value": kp_driving})["prediction"],)


@dataclass(frozen=True)
class Payload:
    """How one model writes a frame's pose payload: each field's range and meaning."""

    angle_range: tuple[float, float]
    angle_convention: str
    t_range: tuple[float, float]
    t_meaning: str
    exp_range: tuple[float, float]
    exp_meaning: str


FACEVID2VID_PAYLOAD = Payload(
    angle_range=(-99.0, 96.0),
    angle_convention="the public face-vid2vid convention: R = Rx(pitch) Ry(yaw) Rz(roll), pi taken as 3.14",
    t_range=(-1.0, 1.0),
    t_meaning="translation of the keypoints, (x, y, z) in [-1, 1] frame units",
    exp_range=(-0.2, 0.2),
    exp_meaning="expression deltas, (x, y, z) per keypoint, frame units",
)


def pose_specs(prefix: str, num_kp: int, frame: str, payload: Payload = FACEVID2VID_PAYLOAD) -> list[TensorSpec]:
    """The payload of one frame: angles [1] in degrees, t [1, 3], exp [1, 3K]."""
    specs = [
        TensorSpec(
            prefixed(prefix, a),
            (1,),
            layout="N",
            value_range=payload.angle_range,
            normalization=f"degrees; {payload.angle_convention}",
            description=f"{a} of the {frame}",
        )
        for a in ANGLES
    ]
    return specs + [
        TensorSpec(
            prefixed(prefix, "t"),
            (1, 3),
            layout="NC",
            value_range=payload.t_range,
            normalization=payload.t_meaning,
            description=f"head translation of the {frame}",
        ),
        TensorSpec(
            prefixed(prefix, "exp"),
            (1, 3 * num_kp),
            layout="NC",
            value_range=payload.exp_range,
            normalization=payload.exp_meaning,
            description=f"expression of the {frame}",
        ),
    ]


def prefixed(prefix: str, field: str) -> str:
    """A payload tensor's name: `source_yaw` for the reference frame's, plain `yaw` for the sender's own."""
    return f"{prefix}_{field}" if prefix else field


def kp_spec(name: str, num_kp: int, description: str) -> TensorSpec:
    return TensorSpec(
        name,
        (1, num_kp, 3),
        layout="NK3",
        value_range=(-1.0, 1.0),
        normalization="keypoint (x, y, z); (x, y) = (-1, -1) and (1, 1) are the centres of the corner pixels",
        description=description,
    )


@register_family
class FaceVid2VidFamily(FramePairFamily):
    name = "facevid2vid"
    description = (
        "face-vid2vid (Wang, Mallya, Liu, CVPR 2021) and LivePortrait: canonical 3-D keypoints, head pose "
        "and expression; the mobile student warps 2-D features with the projected keypoints"
    )
    task = TASK
    default_input_size = (256, 256)
    checkpoint_layout = (
        "'generator', 'kp_detector' and 'he_estimator' state dicts (public face-vid2vid layout), keys prefixed "
        "'generator.' / 'kp_detector.' (or 'kp_extractor.') / 'he_estimator.', or a LivePortrait folder"
    )

    # -- construction -------------------------------------------------------------------
    def configs(self) -> dict[str, dict[str, Any]]:
        return {**{n: self.resolve_config(n, "teacher") for n in self.config_roles()["teacher"]}, **_students()}

    def config_roles(self) -> dict[str, list[str]]:
        return {"teacher": [*TEACHER_CONFIGS, "liveportrait-base"], "student": list(_students())}

    def resolve_config(self, config: str | dict[str, Any] | None, role: str) -> dict[str, Any]:
        if role not in ("teacher", "student"):
            raise CompressError(f"facevid2vid: config role must be 'teacher' or 'student', not {role!r}")
        if config is None:
            config = DEFAULT_TEACHER if role == "teacher" else DEFAULT_STUDENT
        if isinstance(config, dict):
            return copy.deepcopy(config)
        if role == "teacher":
            # A LivePortrait folder without the optional stitching file.
            if config == "liveportrait-base":
                return checkpoints.without_stitching(teacher_config("liveportrait"))
            return teacher_config(config)
        if config not in _students():
            raise CompressError(f"facevid2vid: unknown student config {config!r}; known: {', '.join(_students())}")
        return copy.deepcopy(_students()[config])

    def build_teacher(self, config: dict[str, Any]) -> nn.Module:
        return checkpoints.build_teacher(config)

    def build_student(self, config: dict[str, Any]) -> nn.Module:
        from compress.families.facevid2vid.student import build_student

        return build_student(config)

    def read_checkpoint(self, path, trust):  # type: ignore[no-untyped-def]
        return checkpoints.read_checkpoint(path, trust)

    def teacher_state_dict(self, raw: dict[str, Any], path: str) -> dict[str, torch.Tensor]:
        return checkpoints.teacher_state_dict(raw, path)

    def fit_teacher_config(self, config: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
        """A LivePortrait folder without the stitching file builds the teacher without stitching."""
        if config.get("variant") == "liveportrait" and checkpoints.STITCHING_FILE not in raw:
            return checkpoints.without_stitching(config)
        return config

    def claims(self, raw: dict[str, Any]) -> str | None:
        try:
            state = checkpoints.teacher_state_dict(raw, "checkpoint")
        except CompressError:
            return None
        name = checkpoints.claims({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
        if name == "liveportrait" and not checkpoints.has_stitching(state):
            return "liveportrait-base"
        return name

    # -- deployable parts ---------------------------------------------------------------
    def parts(self, model: nn.Module) -> list[Part]:
        if getattr(model, "config", {}).get("variant") == "liveportrait":
            from compress.families.facevid2vid.liveportrait_parts import liveportrait_parts

            return liveportrait_parts(model, self.input_size(model.config))
        shapes = _probe(model)
        size, k = shapes["frame"], shapes["num_kp"]
        source = image_spec("source", 3, size, "reference frame (the one the sender sent at call start)")
        feature = TensorSpec(
            "source_feature",
            shapes["feature"],
            value_range=None,
            normalization="generator.per_call output, passed through unchanged",
            description="features of the reference frame, computed once per call",
        )
        canonical = kp_spec("kp_canonical", k, "canonical keypoints of the reference frame, computed once per call")
        animate = AnimateModule(model.generator)
        return [
            Part(
                name="he_estimator",
                role="sender",
                cadence="per_frame",
                module=HeadPoseModule(model.he_estimator),
                inputs=[image_spec("image", 3, size, "camera frame (also run once on the reference frame)")],
                outputs=pose_specs("", k, "image"),
                description="head pose and expression of each camera frame: what the sender sends",
            ),
            Part(
                name="generator.per_call",
                role="receiver",
                cadence="per_call",
                module=SourceEncoderModule(model.kp_detector, model.generator),
                inputs=[source],
                outputs=[feature, canonical],
                description="encodes the reference frame and finds its canonical keypoints, once per call",
            ),
            Part(
                name="generator.per_frame",
                role="receiver",
                cadence="per_frame",
                module=animate,
                inputs=[
                    *([source] if animate.reads_source else []),
                    feature,
                    canonical,
                    *pose_specs("source", k, "reference frame"),
                    *pose_specs("driving", k, "camera frame (override yaw, pitch, roll for free view)"),
                ],
                outputs=[image_spec("prediction", 3, size, "the reference frame animated to the camera frame")],
                description="x = R x_c + t + delta, dense motion, warp of the source features, occlusion, decoder",
                min_opset=17 if animate.reads_source else VOLUME_GRID_SAMPLE_OPSET,
            ),
        ]

    def prunables(self, model: nn.Module) -> list[Prunable]:
        _require_facevid2vid(model, "prunable networks")
        shapes = _probe(model)
        frame = (torch.rand(1, 3, *shapes["frame"]),)
        kp = torch.rand(1, shapes["num_kp"], 3) * 2 - 1
        return [
            Prunable(
                "he_estimator", HeadPoseLogitsModule(model.he_estimator), frame, _interface(model, "he_estimator")
            ),
            Prunable(
                "kp_detector", CanonicalKeypointsModule(model.kp_detector), frame, _interface(model, "kp_detector")
            ),
            Prunable(
                "generator", ReconstructModule(model.generator), (*frame, kp, kp * 0.9), _interface(model, "generator")
            ),
        ]

    # -- training and evaluation --------------------------------------------------------
    def forward(self, model: Any, batch: Batch) -> dict[str, torch.Tensor]:
        """The public protocol: canonical keypoints of the source, head pose and expression of source and
        driving, x = R x_c + t + delta, generator. Outputs: prediction, occlusion_map, region_masks (those
        the model has), kp_canonical / kp_source / kp_driving [B, K, 3] and per frame (source_, driving_)
        angles [B, 3] (yaw, pitch, roll degrees), pose_logits [B, 3, bins], t, exp."""
        from compress.families.facevid2vid.runtime import ExportedFaceVid2Vid

        # Exported parts and students have a frame size; the public teachers run at any size.
        size = getattr(model, "input_size", None) or _frame_shape(getattr(model, "config", {}))
        for name in ("source", "driving"):
            if size is not None and tuple(batch[name].shape[-2:]) != tuple(size):
                raise CompressError(
                    f"facevid2vid: batch {name!r} frames are {tuple(batch[name].shape[-2:])}, the model takes "
                    f"{tuple(size)}; resize the data (data.size) or pick a config of that size"
                )
        if isinstance(model, ExportedFaceVid2Vid):
            return model.reconstruct(batch["source"], batch["driving"])
        if model.config.get("variant") == "liveportrait":
            return _liveportrait_forward(model, batch["source"], batch["driving"])
        source, driving = batch["source"], batch["driving"]
        kp_canonical = model.kp_detector(source)
        he = {"source": model.he_estimator(source), "driving": model.he_estimator(driving)}
        kp = {frame: model.transform_keypoints(kp_canonical, he[frame]) for frame in he}
        generated = model.generator(source, kp_source=kp["source"], kp_driving=kp["driving"])
        out = {k: generated[k] for k in ("prediction", "occlusion_map", "region_masks") if k in generated}
        out["kp_canonical"] = kp_canonical["value"]
        for frame in he:
            out[f"kp_{frame}"] = kp[frame]["value"]
            out[f"{frame}_angles"] = degrees(he[frame])
            out[f"{frame}_pose_logits"] = torch.stack([he[frame][a] for a in ANGLES], dim=1)
            out[f"{frame}_t"], out[f"{frame}_exp"] = he[frame]["t"], he[frame]["exp"]
        return out

    def score(
        self, outputs: dict[str, torch.Tensor], batch: Batch, reference: dict[str, torch.Tensor] | None = None
    ) -> Scores:
        truth = frame_metrics(outputs["prediction"], batch["driving"])
        if "driving_angles" in outputs and "driving_pose" in batch:
            truth["pose_error"] = _angle_error(outputs["driving_angles"], ground_truth_degrees(batch["driving_pose"]))
        scores = {"vs_ground_truth": truth}
        if reference is not None:
            scores["vs_teacher"] = frame_metrics(outputs["prediction"], reference["prediction"])
            kp, kp_ref = outputs.get("kp_driving"), reference.get("kp_driving")
            if kp is not None and kp_ref is not None and kp.shape == kp_ref.shape:
                scores["vs_teacher"]["keypoint_distance"] = float(keypoint_distance(kp, kp_ref))
            if "driving_angles" in outputs and "driving_angles" in reference:
                scores["vs_teacher"]["pose_error"] = _angle_error(
                    outputs["driving_angles"], reference["driving_angles"]
                )
        return scores

    def baseline(self, batch: Batch) -> dict[str, torch.Tensor]:
        """ "output = source frame": no motion at all, so the pose is the source's too."""
        outputs = {"prediction": batch["source"]}
        if "source_pose" in batch:
            outputs["driving_angles"] = ground_truth_degrees(batch["source_pose"])
        return outputs

    def input_size(self, config: dict[str, Any]) -> tuple[int, int]:
        return _frame_shape(config) or self.default_input_size

    @torch.no_grad()
    def calibration_inputs(
        self, model: nn.Module, batches: Iterable[Batch]
    ) -> Iterator[dict[str, tuple[torch.Tensor, ...]]]:
        """Each (source, driving) pair of the batches as the inputs of the three parts (model in eval mode)."""
        model.eval()
        parts = {p.name: p.module for p in self.parts(model)}
        reads_source = parts["generator.per_frame"].reads_source
        for batch in batches:
            for source, driving in zip(batch["source"].split(1), batch["driving"].split(1)):
                feature, kp_canonical = parts["generator.per_call"](source)
                pose = (*parts["he_estimator"](source), *parts["he_estimator"](driving))
                yield {
                    "he_estimator": (driving,),
                    "generator.per_call": (source,),
                    "generator.per_frame": (*((source,) if reads_source else ()), feature, kp_canonical, *pose),
                }

    def distill_loss(self, teacher_out, student_out, batch, weights):  # type: ignore[no-untyped-def]
        from compress.families.facevid2vid.objectives import distill_loss

        return distill_loss(teacher_out, student_out, batch, weights)

    def teacher_loss(self, model, batch, weights, generator):  # type: ignore[no-untyped-def]
        from compress.families.facevid2vid.objectives import teacher_loss

        _require_facevid2vid(model, "teacher training")
        return teacher_loss(model, batch, weights, generator)

    def pipeline(self, parts):  # type: ignore[no-untyped-def]
        from compress.families.facevid2vid.runtime import ExportedFaceVid2Vid

        return ExportedFaceVid2Vid(parts)


def _students() -> dict[str, dict[str, Any]]:
    from compress.families.facevid2vid.student import STUDENT_CONFIGS

    return STUDENT_CONFIGS


def _frame_shape(config: dict[str, Any]) -> tuple[int, int] | None:
    """(H, W) a config declares: a student's common_params.frame_shape, a demo teacher's frame_shape."""
    size = config.get("common_params", {}).get("frame_shape") or config.get("frame_shape")
    return (int(size[0]), int(size[1])) if size else None


def _angle_error(angles: torch.Tensor, reference: torch.Tensor) -> float:
    return float((angles - reference).abs().mean())


def _require_facevid2vid(model: nn.Module, what: str) -> None:
    if getattr(model, "config", {}).get("variant") == "liveportrait":
        raise CompressError(
            f"facevid2vid: {what} of the LivePortrait teacher are not supported yet; "
            "load it to evaluate it or distil from it"
        )


def _liveportrait_forward(model: nn.Module, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
    """LivePortrait's pipeline, as its generator.per_frame part runs it: the driving keypoints from the
    source's canonical keypoints and the driving frame's pose, expression and scale, stitched. Its 512x512
    output is area-resized to the input's size, so that it is scored and distilled at the student's
    resolution; its t is the translation it applies, (tx, ty, 0) (the pipeline drops tz)."""
    info = {"source": model.get_kp_info(source), "driving": model.get_kp_info(driving)}
    info["driving"]["kp"] = info["source"]["kp"]
    for kp_info in info.values():
        kp_info["t"] = torch.cat([kp_info["t"][:, :2], torch.zeros_like(kp_info["t"][:, 2:])], dim=1)
    x_s = model.transform_keypoint(info["source"])
    x_d = model.stitching(x_s, model.transform_keypoint(info["driving"]))
    decoded = model.warp_decode(model.extract_feature_3d(source), x_s, x_d)
    out = {
        "prediction": F.interpolate(decoded["out"], size=source.shape[-2:], mode="area"),
        "occlusion_map": decoded["occlusion_map"],
        "kp_canonical": info["source"]["kp"],
        "kp_source": x_s,
        "kp_driving": x_d,
    }
    for frame, kp_info in info.items():
        out[f"{frame}_angles"] = torch.cat([kp_info[a].reshape(-1, 1) for a in ANGLES], dim=1)
        out[f"{frame}_t"] = kp_info["t"]
    return out


@torch.no_grad()
def _probe(model: nn.Module) -> dict[str, Any]:
    """Frame size from the config; keypoint count and feature shape from one eval pass (pruning changes
    the feature width). Every module's train/eval mode is restored (BN statistics must not move)."""
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise CompressError(
            f"facevid2vid: {type(model).__name__} has no `config` dict; build it with the family's "
            "build_teacher/build_student"
        )
    size = FaceVid2VidFamily().input_size(config)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        param = next(model.parameters())
        image = torch.zeros(1, 3, *size, dtype=param.dtype, device=param.device)
        kp = model.kp_detector(image)["value"]
        feature = model.generator.encode_source(image)
    finally:
        for m, training in modes.items():
            m.training = training
    return {"frame": size, "num_kp": kp.shape[1], "feature": tuple(feature.shape)}


def _interface(model: nn.Module, network: str) -> list[nn.Module]:
    modules = dict(getattr(model, network).named_modules())
    return [modules[name] for name in INTERFACE_LAYERS[network] if name in modules]

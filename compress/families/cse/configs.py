"""Named CSE teacher configs (detectron2's `projects/DensePose/configs/cse/*.yaml`), and a config read
off a checkpoint's key shapes.

A config is JSON-able (it is stored in safetensors metadata); its sections and keys are detectron2's
MODEL.RESNETS / MODEL.FPN / MODEL.ROI_DENSEPOSE_HEAD options, lower-cased, plus `pixel_mean` and
`pixel_std` (MODEL.PIXEL_*, BGR 0-255). Only the dense branch is described: the detector is not built.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from compress.errors import CompressError
from compress.families.cse.backbone import BASIC_DEPTHS, BLOCKS_PER_STAGE

V1CONVX, DEEPLAB = "DensePoseV1ConvXHead", "DensePoseDeepLabHead"
SMPL_27554 = {"type": "vertex_feature", "num_vertices": 27554, "feature_dim": 256}
# detectron2's defaults (detectron2/config/defaults.py, densepose/config.py).
PIXEL_MEAN_BGR = [103.530, 116.280, 123.675]


def _zoo(depth: int, head: str) -> dict[str, Any]:
    """The architecture of a model-zoo CSE config: Base-DensePose-RCNN-FPN(-Human) with DEPTH and the head."""
    return {
        "kind": "teacher",
        "resnets": {
            "depth": depth,
            "stem_out_channels": 64,
            "res2_out_channels": 256,
            "num_groups": 1,
            "width_per_group": 64,
            "stride_in_1x1": True,
        },
        "fpn": {"out_channels": 256},
        "roi_densepose_head": {
            "name": head,
            "num_stacked_convs": 8,
            "conv_head_dim": 512,
            "conv_head_kernel": 3,
            "deeplab_norm": "GN",
            "deeplab_nonlocal_on": False,
            "decoder_conv_dims": 256,
            "decoder_num_classes": 256,
            "pooler_resolution": 28,
            "pooler_sampling_ratio": 2,
            "num_coarse_segm_channels": 2,
            "deconv_kernel": 4,
            "up_scale": 2,
            "embed_size": 16,
            "embedders": {"smpl_27554": dict(SMPL_27554)},
        },
        "pixel_mean": list(PIXEL_MEAN_BGR),
        "pixel_std": [1.0, 1.0, 1.0],
    }


# The soft variants (SoftEmbeddingLoss) share their plain twin's architecture; only training differs.
TEACHER_CONFIGS: dict[str, dict[str, Any]] = {
    f"densepose_rcnn_R_{depth}_FPN_{variant}s1x": _zoo(depth, DEEPLAB if "DL" in variant else V1CONVX)
    for depth in (50, 101)
    for variant in ("", "soft_", "DL_", "DL_soft_")
}
DEFAULT_TEACHER = "densepose_rcnn_R_50_FPN_DL_soft_s1x"  # the best R50 in the model zoo (66.1 GPS AP)


def teacher_config(name: str) -> dict[str, Any]:
    """A copy of a named config; the `densepose_rcnn_` prefix and a `.yaml` suffix may be left out."""
    key = name.removesuffix(".yaml")
    key = key if key.startswith("densepose_rcnn_") else f"densepose_rcnn_{key}"
    if key not in TEACHER_CONFIGS:
        raise CompressError(f"cse: unknown teacher config {name!r}; known: {', '.join(TEACHER_CONFIGS)}")
    return copy.deepcopy(TEACHER_CONFIGS[key])


def check_config(config: dict[str, Any]) -> None:
    """Raise CompressError naming what the teacher cannot build."""
    layout = _zoo(50, V1CONVX)
    for section in ("resnets", "fpn", "roi_densepose_head"):
        if not isinstance(config.get(section), dict):
            raise CompressError(f"cse config: missing section {section!r} (see compress/families/cse/configs.py)")
        keys, expected = set(config[section]), set(layout[section])
        if keys != expected:
            raise CompressError(
                f"cse config: {section}: unknown keys {sorted(keys - expected)}, missing keys {sorted(expected - keys)}"
            )
    depth = config["resnets"].get("depth")
    if depth not in BLOCKS_PER_STAGE:
        raise CompressError(f"cse config: resnets.depth {depth!r} is not one of {sorted(BLOCKS_PER_STAGE)}")
    head = config["roi_densepose_head"]
    if head.get("name") not in (V1CONVX, DEEPLAB):
        raise CompressError(f"cse config: roi_densepose_head.name {head.get('name')!r}: use {V1CONVX} or {DEEPLAB}")
    if head.get("decoder_num_classes") != config["fpn"].get("out_channels"):
        # detectron2 builds the head for FPN's width while the decoder feeds it decoder_num_classes.
        raise CompressError("cse config: roi_densepose_head.decoder_num_classes must equal fpn.out_channels")
    if not head.get("embedders"):
        raise CompressError("cse config: roi_densepose_head.embedders names no mesh")


# -- a config from a checkpoint's key shapes ------------------------------------------------------
BACKBONE = "backbone.bottom_up."
HEAD = "roi_heads.densepose_head."
EMBEDDER = re.compile(r"roi_heads\.embedder\.embedder_(.+)\.(features|embeddings)$")


def infer_config(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """The config whose teacher has these dense-branch key shapes. Options that no shape shows take
    the model zoo's values: stride_in_1x1, pooler 28 with sampling ratio 2, up_scale 2, pixel mean/std."""
    try:
        config = _zoo(_depth(shapes), DEEPLAB if f"{HEAD}ASPP.project.0.weight" in shapes else V1CONVX)
        resnets, head = config["resnets"], config["roi_densepose_head"]
        basic = resnets["depth"] in BASIC_DEPTHS
        resnets["stem_out_channels"] = shapes[f"{BACKBONE}stem.conv1.weight"][0]
        resnets["res2_out_channels"] = shapes[f"{BACKBONE}res2.0.conv{2 if basic else 3}.weight"][0]
        if not basic:  # basic blocks have no bottleneck: groups and width keep detectron2's defaults
            bottleneck = shapes[f"{BACKBONE}res2.0.conv1.weight"][0]
            resnets["num_groups"] = bottleneck // shapes[f"{BACKBONE}res2.0.conv2.weight"][1]
            resnets["width_per_group"] = bottleneck // resnets["num_groups"]
        config["fpn"]["out_channels"] = shapes["backbone.fpn_lateral2.weight"][0]
        first_conv = shapes[f"{HEAD}body_conv_fcn1.weight"]
        embed = shapes["roi_heads.densepose_predictor.embed_lowres.weight"]
        head.update(
            num_stacked_convs=sum(1 for k in shapes if re.fullmatch(rf"{re.escape(HEAD)}body_conv_fcn\d+\.weight", k)),
            conv_head_dim=first_conv[0],
            conv_head_kernel=first_conv[-1],
            deeplab_nonlocal_on=f"{HEAD}NLBlock.theta.weight" in shapes,
            # norm "" (plain convs with bias) shows only in a DeepLab head; V1ConvX keeps the default.
            deeplab_norm="" if head["name"] == DEEPLAB and f"{HEAD}body_conv_fcn1.norm.weight" not in shapes else "GN",
            decoder_conv_dims=shapes["roi_heads.decoder.p2.0.weight"][0],
            decoder_num_classes=shapes["roi_heads.decoder.predictor.weight"][0],
            embed_size=embed[1],
            deconv_kernel=embed[-1],
            num_coarse_segm_channels=shapes["roi_heads.densepose_predictor.coarse_segm_lowres.weight"][1],
            embedders=_embedders(shapes),
        )
    except (KeyError, IndexError, ZeroDivisionError) as exc:
        raise CompressError(f"not a DensePose CSE checkpoint: key {exc} missing or misshapen") from None
    return config


def _depth(shapes: dict[str, tuple[int, ...]]) -> int:
    blocks = tuple(
        len({k.split(".")[3] for k in shapes if k.startswith(f"{BACKBONE}res{stage}.")}) for stage in (2, 3, 4, 5)
    )
    basic = f"{BACKBONE}res2.0.conv3.weight" not in shapes
    for depth, per_stage in BLOCKS_PER_STAGE.items():
        if per_stage == blocks and (depth in BASIC_DEPTHS) == basic:
            return depth
    raise CompressError(f"not a detectron2 ResNet: {blocks} blocks in res2..res5")


def _embedders(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        if match := EMBEDDER.match(key):
            found.setdefault(match[1], {})[match[2]] = shape
    meshes = {}
    for name, tensors in sorted(found.items()):
        if "features" in tensors:
            meshes[name] = {
                "type": "vertex_feature",
                "num_vertices": tensors["features"][0],
                "feature_dim": tensors["features"][1],
            }
        else:
            meshes[name] = {"type": "vertex_direct", "num_vertices": tensors["embeddings"][0]}
    return meshes

"""The mobile CSE student: detection-free, one person crop in, the teacher's outputs out.

crop [B, 3, S, S] (RGB in [0, 1], the person box resized to a square as DensePose pools it) ->
MobileNet v2 inverted residuals to stride 32 -> image-level context -> a light FPN back to
stride 4 -> a 1x1 head predicting each 2x2 block of output cells -> depth to space:
{"embedding": [B, 16, S/2, S/2], "coarse_segm": [B, 2, S/2, S/2]}, the teacher's grid (S = 224
gives its 112x112). The embedding lives in the
teacher's space: the student keeps the teacher's vertex table (`lookup`) and is trained to
point where the teacher points, so a pixel's vertex is found exactly as the teacher's is.

Built for int8 on a phone CPU: no ConvTranspose (onnxruntime has no int8 kernel for it),
upsampling by resize and depth to space, BatchNorm everywhere (it folds), no GroupNorm. The last
step is learned (ESPCN's sub-pixel convolution) rather than bilinear: the teacher's mask edge
falls anywhere within a cell, and a third of the demo's figure pixels lie on it. With it the
demo student agreed with its teacher on 88.5 % of held-out pixels after 2500 distillation steps,
with bilinear upsampling on 87.7 % after 4000 (docs/models/cse.md). Forward passes read
channel counts from tensors, never from the config: structured pruning shrinks the layers.

The vertex lookup (`VertexLookup`) is a separate deployable part: embedding -> vertex id
per pixel, the argmax of the dot product with the unit vertex embeddings (the argmin of
DensePose's squared distance, since the vertex rows have unit norm), -1 on the background.

Config: {"kind": "student", "size": S, "width": w, "fpn_channels": F, "embed_size": 16,
"num_coarse_segm_channels": 2, "lookup": one of SEARCHES}. Widths are MobileNet v2's times w,
rounded to multiples of 8.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.errors import CompressError
from compress.families.mobile_blocks import ConvBlock, SeparableConv, make_divisible

# MobileNet v2's stages after the stem: (expansion, channels, blocks, stride).
STAGES = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 3, 2), (4, 64, 3, 2), (4, 96, 2, 1), (4, 160, 2, 2))
# The stages whose outputs the FPN reads: strides 4, 8, 16 and 32.
FPN_STAGES = (1, 2, 4, 5)
OUTPUT_STRIDE = 2  # the teacher's 112x112 grid for a 224x224 crop
CELLS_PER_SIDE = 4 // OUTPUT_STRIDE  # output cells per side of a cell of the finest FPN level (stride 4)
STUDENT_CONFIGS: dict[str, dict[str, Any]] = {
    "mobile-224": {
        "kind": "student",
        "size": 224,
        "width": 1.0,
        "fpn_channels": 64,
        "embed_size": 16,
        "num_coarse_segm_channels": 2,
        "lookup": "two_level_coarse",
    },
    "mobile-128": {
        "kind": "student",
        "size": 128,
        "width": 0.75,
        "fpn_channels": 48,
        "embed_size": 16,
        "num_coarse_segm_channels": 2,
        "lookup": "two_level",
    },
    # The 64x64 demo: mobile-224's widths. At half of them it agreed with the demo teacher on 86 %
    # of pixels after 2000 distillation steps and 88 % after 4000; at these widths 88 % after 2000
    # (with 48 FPN channels), for a step that costs about the same (rendering and the loss dominate).
    # The exact search: for the template's 2 624 vertices at 32x32 its file is 0.17 MB against the
    # two-level search's 1.3 MB of padded clusters, and it is predicted at 3.2 ms on the iPhone 8.
    "mobile-64": {
        "kind": "student",
        "size": 64,
        "width": 1.0,
        "fpn_channels": 64,
        "embed_size": 16,
        "num_coarse_segm_channels": 2,
        "lookup": "exact",
    },
}
DEFAULT_STUDENT = "mobile-224"
SEARCHES = ("exact", "two_level", "two_level_coarse")  # VertexLookup's searches, fastest last
INDEX_BUFFERS = ("centres", "members", "member_ids", "member_offset")
# The two-level search falls back to the exact one when its largest cluster exceeds this many
# times the mean size.
MAX_CLUSTER_SPREAD = 8


class InvertedResidual(nn.Module):
    """MobileNet v2: 1x1 expansion -> depthwise 3x3 (stride s) -> linear 1x1 projection, with a
    residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        hidden = in_channels * expansion
        expand = (
            [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
            if expansion > 1
            else []
        )
        self.body = nn.Sequential(
            *expand,
            SeparableConv(hidden, out_channels, stride=stride, last_relu=False),
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class Lateral(nn.Sequential):
    """1x1 conv + BN: a backbone level mapped to the FPN's width."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))


class CseStudent(nn.Module):
    """`student(crop)` -> {"embedding", "coarse_segm"} at S/2 (see the module docstring);
    `lookup` holds the vertex table and maps embeddings to vertex ids."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        self.config = check_student_config(config)
        width, fpn = config["width"], config["fpn_channels"]
        channels = make_divisible(32 * width)
        self.stem = ConvBlock(3, channels, stride=2)
        self.stages = nn.ModuleList()
        for expansion, out, blocks, stride in STAGES:
            out = make_divisible(out * width)
            layers = []
            for i in range(blocks):
                layers.append(InvertedResidual(channels, out, expansion, stride if i == 0 else 1))
                channels = out
            self.stages.append(nn.Sequential(*layers))
        level_channels = [make_divisible(STAGES[i][1] * width) for i in FPN_STAGES]
        self.laterals = nn.ModuleList(Lateral(c, fpn) for c in level_channels)
        # What the whole crop shows (which way the figure faces) decides left from right: a
        # global-pool vector added to the coarsest level reaches every pixel.
        self.context = nn.Sequential(nn.Conv2d(level_channels[-1], fpn, 1), nn.ReLU(inplace=True))
        self.smooth = nn.ModuleList(SeparableConv(fpn, fpn) for _ in FPN_STAGES[:-1])
        self.head = SeparableConv(fpn, fpn)
        outputs = config["embed_size"] + config["num_coarse_segm_channels"]
        self.predictor = nn.Conv2d(fpn, outputs * CELLS_PER_SIDE**2, 1)  # every output cell of a stride-4 cell
        self.lookup = VertexLookup(torch.zeros(1, config["embed_size"]), search=config["lookup"])

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.config["size"], self.config["size"])

    def forward(self, crop: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(crop)
        levels = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in FPN_STAGES:
                levels.append(x)
        top = self.laterals[-1](levels[-1]) + self.context(levels[-1].mean((2, 3), keepdim=True))
        for lateral, smooth, level in zip(reversed(self.laterals[:-1]), reversed(self.smooth), reversed(levels[:-1])):
            top = smooth(F.interpolate(top, scale_factor=2.0, mode="nearest") + lateral(level))
        out = F.pixel_shuffle(self.predictor(self.head(top)), CELLS_PER_SIDE)
        embed = self.config["embed_size"]
        return {"embedding": out[:, :embed], "coarse_segm": out[:, embed:]}


class VertexLookup(nn.Module):
    """(embedding [B, D, H, W], coarse_segm [B, 2, H, W]) -> vertex ids [B, H, W] as float (-1: background).

    The table is a frozen 1x1 convolution (weight [V, D, 1, 1], unit rows). The exact search
    scores every vertex (embedding . v) and takes the argmax. The two-level search takes the
    argmax over K centres (spherical k-means of the table), then over the members of that
    centre's cluster, gathered per pixel: about (K + M) / V of the exact work, M being the
    largest cluster. `cluster_count` balances the two levels for the table's size. With
    "two_level_coarse" the first level runs once per 2x2 block, on the block's mean embedding:
    a quarter of its cost, which is what lets 27 554 vertices reach 30 fps at 112x112. It can miss
    the exact vertex when it lies in another cluster (`docs/models/cse.md` states the measured
    loss). The clusters follow from the table deterministically, so they are rebuilt, never stored.

    Ids are float so every runtime's output is one type; float32 holds integers exactly up to
    2^24 vertices. A saved model's vertex count is its `similarity` layer's width (the
    structure spec), so loading restores any mesh's table.
    """

    def __init__(self, table: torch.Tensor, search: str = "exact"):
        super().__init__()
        if search not in SEARCHES:
            raise CompressError(f"cse lookup: search {search!r}: use one of {', '.join(SEARCHES)}")
        self.search = search
        self.similarity = nn.Conv2d(table.shape[1], table.shape[0], 1, bias=False)
        self.set_table(table)
        self.register_load_state_dict_post_hook(lambda module, _keys: module.index())

    @property
    def table(self) -> torch.Tensor:
        """[V, D] the unit vertex embeddings."""
        return self.similarity.weight[:, :, 0, 0]

    @property
    def two_level(self) -> bool:
        return hasattr(self, "members")

    def set_table(self, table: torch.Tensor) -> None:
        self.similarity.out_channels = table.shape[0]
        self.similarity.weight = nn.Parameter(table.detach().clone()[:, :, None, None], requires_grad=False)
        self.index()

    @torch.no_grad()
    def index(self) -> None:
        """The two-level search's clusters of the current table: centres [K, D], members [K, M, D],
        their ids [K, M] (-1 pads) and a score offset [K, M] that keeps pads from winning."""
        for name in INDEX_BUFFERS:
            self._buffers.pop(name, None)
        clusters = cluster_count(len(self.table))
        if self.search == "exact" or clusters >= len(self.table) // 2 or self.table.is_meta:
            return
        table = self.table.float()
        centres, assignment = (t.clone() for t in _clusters_of(table.numpy().tobytes(), tuple(table.shape), clusters))
        sizes = torch.bincount(assignment, minlength=len(centres))
        if sizes.max() > MAX_CLUSTER_SPREAD * len(table) / len(centres):
            return  # a degenerate table (rows all zero or alike): the gather would cost more than the exact search
        order = torch.argsort(assignment, stable=True)
        slot = torch.arange(len(table)) - torch.repeat_interleave(sizes.cumsum(0) - sizes, sizes)
        members = torch.zeros(len(centres), int(sizes.max()), table.shape[1])
        ids = torch.full(members.shape[:2], -1.0)
        members[assignment[order], slot] = table[order]
        ids[assignment[order], slot] = order.float()
        offset = torch.where(ids >= 0, 0.0, -4.0)  # a dot product of unit vectors is >= -1: pads never win
        for name, value in zip(INDEX_BUFFERS, (centres[:, :, None, None], members, ids, offset)):
            self.register_buffer(name, value.to(self.similarity.weight), persistent=False)

    def forward(self, embedding: torch.Tensor, coarse_segm: torch.Tensor) -> torch.Tensor:
        if self.two_level:
            if self.search == "two_level_coarse":
                blocks = F.conv2d(F.avg_pool2d(embedding, 2), self.centres).argmax(dim=1)[:, None].float()
                cluster = F.interpolate(blocks, scale_factor=2.0, mode="nearest")[:, 0].long()  # [B, H, W]
            else:
                cluster = F.conv2d(embedding, self.centres).argmax(dim=1)  # [B, H, W]
            candidates = self.members[cluster]  # [B, H, W, M, D]
            # A batched MatMul, [B, H, W, M, D] @ [B, H, W, D, 1]: priced as dense work, not elementwise.
            scores = (candidates @ embedding.permute(0, 2, 3, 1)[..., None])[..., 0] + self.member_offset[cluster]
            best = scores.argmax(dim=-1, keepdim=True)
            ids = self.member_ids[cluster].gather(-1, best)[..., 0]
        else:
            ids = self.similarity(embedding).argmax(dim=1).float()
        return torch.where(coarse_segm[:, 1] > coarse_segm[:, 0], ids, torch.full_like(ids, -1.0))


def cluster_count(vertices: int) -> int:
    """K for V vertices: the power of two nearest sqrt(40 V). The first level's cost grows with K, the
    second's gather with V / K; on the iPhone 8 cost profile this K is the cheapest (27 554 vertices at
    112x112: 512, 1024 and 2048 clusters predict 48.7, 46.7 and 64.2 ms)."""
    return 2 ** round(math.log2(math.sqrt(40 * vertices)))


@functools.lru_cache(maxsize=4)
def _clusters_of(table: bytes, shape: tuple[int, int], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`spherical_kmeans` of a float32 table given as bytes, kept for the tables seen last: a run's stages
    load the same student (and so rebuild the same clusters) several times, seconds each for smpl_27554."""
    return spherical_kmeans(torch.frombuffer(bytearray(table), dtype=torch.float32).view(shape), k)


def spherical_kmeans(points: torch.Tensor, k: int, iterations: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit centres [k, D] and each point's cluster [N] (the centre of largest dot product). Centres start
    at farthest-point samples from point 0, so a table always gives the same clusters."""
    chosen = [0]
    nearest = points @ points[0]
    for _ in range(k - 1):
        chosen.append(int(nearest.argmin()))
        nearest = torch.maximum(nearest, points @ points[chosen[-1]])
    centres = points[chosen]
    for _ in range(iterations):
        assignment = (points @ centres.T).argmax(1)
        sums = torch.zeros_like(centres).index_add_(0, assignment, points)
        empty = sums.norm(dim=1) == 0
        centres = torch.where(empty[:, None], centres, F.normalize(sums, dim=1))
    return centres, (points @ centres.T).argmax(1)


def check_student_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a student config, or CompressError naming what does not fit."""
    expected = set(STUDENT_CONFIGS[DEFAULT_STUDENT])
    if set(config) != expected:
        raise CompressError(
            f"cse student config: unknown keys {sorted(set(config) - expected)}, "
            f"missing keys {sorted(expected - set(config))}"
        )
    if config["lookup"] not in SEARCHES:
        raise CompressError(f"cse student config: lookup {config['lookup']!r}: use one of {', '.join(SEARCHES)}")
    if config["size"] % 32:
        raise CompressError(f"cse student config: size {config['size']} must be a multiple of 32 (stride 32)")
    return copy.deepcopy(config)


def build_student(config: dict[str, Any]) -> CseStudent:
    return CseStudent(config)

"""The DensePose CSE teacher for one person crop: detectron2's dense branch with its module names.

crop (RGB in [0, 1], H and W multiples of 32) -> BGR x 255 minus MODEL.PIXEL_MEAN over PIXEL_STD
(detectron2's input convention, applied here) -> ResNet-FPN p2..p5 on the crop as the whole image
(no resizing) -> decoder (one stride-4 map) -> ROIAlign of the box covering the whole crop
(28x28, aligned=False) -> DensePose head -> embedding predictor: {"embedding": [B, 16, 112, 112],
"coarse_segm": [B, 2, 112, 112]}. The detector (RPN, box head) is not built: the crop is the box.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from compress.errors import CompressError
from compress.families.cse.backbone import FPN, ResNet
from compress.families.cse.configs import DEEPLAB, check_config
from compress.families.cse.decoder import COMMON_STRIDE, Decoder
from compress.families.cse.embedder import Embedder
from compress.families.cse.heads import DeepLabHead, V1ConvXHead
from compress.families.cse.predictor import EmbeddingPredictor
from compress.families.cse.roi_align import roi_align

SIZE_DIVISIBILITY = 32  # p5's stride: detectron2 pads images to it; a crop must already be a multiple
# Distances per block in closest_vertices: 64 MB of float32 (DensePose's 10 000 pixels x 27 554 vertices
# would be 1.1 GB, and twice that with the norms).
BLOCK_DISTANCES = 2**24


def squared_euclidean_distances(points: torch.Tensor, vertices: torch.Tensor) -> torch.Tensor:
    """[M, D], [V, D] -> [M, V] in DensePose's order of operations, (-2 p).v + (|p|^2 + |v|^2), so that
    near-ties break alike."""
    distances = (-2 * points) @ vertices.T
    distances += (points * points).sum(1, keepdim=True) + (vertices * vertices).sum(1, keepdim=True).T
    return distances


class RoiHeads(nn.Module):
    """The dense half of detectron2's DensePoseROIHeads (keys `roi_heads.{decoder,densepose_head,
    densepose_predictor,embedder}.*`)."""

    def __init__(self, config: dict[str, Any], in_channels: int):
        super().__init__()
        head = config["roi_densepose_head"]
        self.decoder = Decoder(in_channels, head["decoder_conv_dims"], head["decoder_num_classes"])
        conv_args = (in_channels, head["conv_head_dim"], head["num_stacked_convs"], head["conv_head_kernel"])
        if head["name"] == DEEPLAB:
            self.densepose_head: nn.Module = DeepLabHead(
                *conv_args, norm=head["deeplab_norm"], nonlocal_on=head["deeplab_nonlocal_on"]
            )
        else:
            self.densepose_head = V1ConvXHead(*conv_args)
        self.densepose_predictor = EmbeddingPredictor(
            head["conv_head_dim"],
            head["embed_size"],
            head["num_coarse_segm_channels"],
            head["deconv_kernel"],
            head["up_scale"],
        )
        self.embedder = Embedder(head["embedders"], head["embed_size"])
        self.pooler_resolution = head["pooler_resolution"]
        self.pooler_sampling_ratio = head["pooler_sampling_ratio"]


class CseTeacher(nn.Module):
    """`teacher(crop)` -> {"embedding", "coarse_segm"} at 112x112 (see the module docstring);
    `vertex_embeddings(mesh)` -> [V, 16] unit rows; `closest_vertices(embedding)` -> vertex ids."""

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        check_config(config)
        self.config = copy.deepcopy(config)
        self.backbone = FPN(ResNet(**config["resnets"]), config["fpn"]["out_channels"])
        self.roi_heads = RoiHeads(config, config["fpn"]["out_channels"])
        self.ignored_keys: list[str] = []  # the detector's keys a loaded checkpoint had (checkpoint.py)
        # Not persistent, as in detectron2's GeneralizedRCNN: checkpoints that carry them are ignored there too.
        mean, std = (torch.tensor(config[k], dtype=torch.float32).view(1, 3, 1, 1) for k in ("pixel_mean", "pixel_std"))
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)

    @property
    def mesh_names(self) -> list[str]:
        return self.roi_heads.embedder.mesh_names

    def normalize(self, crop: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1] -> detectron2's network input: BGR in [0, 255], minus PIXEL_MEAN, over PIXEL_STD."""
        return (crop.flip(1) * 255.0 - self.pixel_mean) / self.pixel_std

    def forward(self, crop: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = crop.shape[-2:]
        if height % SIZE_DIVISIBILITY or width % SIZE_DIVISIBILITY:
            raise CompressError(f"cse teacher: crop size {height}x{width} must be a multiple of {SIZE_DIVISIBILITY}")
        features = self.backbone(self.normalize(crop))
        merged = self.roi_heads.decoder(features)
        pooled = roi_align(
            merged,
            (0.0, 0.0, float(width), float(height)),
            self.roi_heads.pooler_resolution,
            1.0 / COMMON_STRIDE,
            self.roi_heads.pooler_sampling_ratio,
        )
        return self.roi_heads.densepose_predictor(self.roi_heads.densepose_head(pooled))

    def vertex_embeddings(self, mesh: str | int = 0) -> torch.Tensor:
        """[V, D] unit-norm embeddings of a mesh's vertices, by name or by index in `mesh_names`."""
        name = self.mesh_names[mesh] if isinstance(mesh, int) else mesh
        if name not in self.mesh_names:
            raise CompressError(f"cse teacher: no embedder for mesh {name!r}; it has {', '.join(self.mesh_names)}")
        return self.roi_heads.embedder(name)

    @torch.no_grad()
    def closest_vertices(
        self,
        embedding: torch.Tensor,
        mesh: str | int = 0,
        coarse_segm: torch.Tensor | None = None,
        chunk_pixels: int | None = None,
    ) -> torch.Tensor:
        """embedding [B, D, H, W] -> [B, H, W] index of the vertex at least squared euclidean distance.

        DensePose's lookup, computed `chunk_pixels` pixels at a time (default: BLOCK_DISTANCES // V),
        so memory stays at about twice chunk_pixels x V floats. Given `coarse_segm` [B, 2, H, W],
        background pixels (argmax 0) get -1, as DensePose's evaluation marks them, and, as in
        DensePose, only the foreground pixels are searched.
        """
        vertices = self.vertex_embeddings(mesh).to(embedding)
        chunk_pixels = chunk_pixels or max(1, BLOCK_DISTANCES // len(vertices))
        pixels = embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])
        ids = torch.full((len(pixels),), -1, dtype=torch.long, device=embedding.device)
        searched = (
            torch.ones_like(ids, dtype=torch.bool) if coarse_segm is None else coarse_segm.argmax(dim=1).flatten() > 0
        )
        found = [
            squared_euclidean_distances(chunk, vertices).argmin(dim=1) for chunk in pixels[searched].split(chunk_pixels)
        ]
        if found:
            ids[searched] = torch.cat(found)
        return ids.view(embedding.shape[0], *embedding.shape[2:])


def build_teacher(config: dict[str, Any]) -> CseTeacher:
    return CseTeacher(config)

"""Vertex embeddings per mesh: unit-norm rows, one `embedder_<mesh>` module each (keys `roi_heads.embedder.*`).

`vertex_feature`: features [V, K] (a Laplace-Beltrami basis, frozen: a buffer) times a learned
[K, D] matrix; `vertex_direct`: a learned [V, D] table.
"""

from __future__ import annotations

import torch
from torch import nn

NORM_EPSILON = 1e-6  # detectron2's normalize_embeddings floor on a row's norm


def normalize_embeddings(embeddings: torch.Tensor) -> torch.Tensor:
    return embeddings / embeddings.norm(dim=1, keepdim=True).clamp(min=NORM_EPSILON)


class VertexFeatureEmbedder(nn.Module):
    def __init__(self, num_vertices: int, feature_dim: int, embed_dim: int, train_features: bool = False):
        super().__init__()
        features = torch.zeros(num_vertices, feature_dim)
        if train_features:
            self.features = nn.Parameter(features)
        else:
            self.register_buffer("features", features)
        self.embeddings = nn.Parameter(torch.zeros(feature_dim, embed_dim))

    def forward(self) -> torch.Tensor:
        return normalize_embeddings(self.features @ self.embeddings)


class VertexDirectEmbedder(nn.Module):
    def __init__(self, num_vertices: int, embed_dim: int):
        super().__init__()
        self.embeddings = nn.Parameter(torch.zeros(num_vertices, embed_dim))

    def forward(self) -> torch.Tensor:
        return normalize_embeddings(self.embeddings)


class Embedder(nn.Module):
    """{mesh name: spec} -> one embedder per mesh; spec: {"type": "vertex_feature" | "vertex_direct",
    "num_vertices": V, "feature_dim": K (vertex_feature)}. `mesh_names` keeps the config's order."""

    def __init__(self, meshes: dict[str, dict], embed_dim: int):
        super().__init__()
        self.mesh_names = list(meshes)
        for name, spec in meshes.items():
            if spec["type"] == "vertex_feature":
                module: nn.Module = VertexFeatureEmbedder(spec["num_vertices"], spec["feature_dim"], embed_dim)
            else:
                module = VertexDirectEmbedder(spec["num_vertices"], embed_dim)
            self.add_module(f"embedder_{name}", module)

    def forward(self, mesh_name: str) -> torch.Tensor:
        return getattr(self, f"embedder_{mesh_name}")()

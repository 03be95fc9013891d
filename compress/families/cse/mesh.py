"""The synthetic CSE template: a textured, articulated figure with its geodesics and LBO basis.

CSE maps pixels to the vertices of one template mesh. The public templates (SMPL, the animal
meshes) are licence-gated downloads, so the toolkit builds its own from a seed: an
icosphere pushed out into a torso with a head, two arms and two legs (radial lobes with a
smooth profile, so the surface stays star-shaped and every face keeps its orientation).
Pushing out stretches the faces along the limbs, so edges longer than `MAX_EDGE` are split
until none is left: vertices are about equally dense everywhere, and a pixel's nearest
vertex is as close on a hand as on the chest. Each limb is a bone for linear blend
skinning (`Mesh.skin`), which the renderer uses to pose the figure.

Per-vertex colours are a smooth random colour field plus a few dark spots: nearby vertices
differ a little, distant ones a lot, and the left and right limbs do not look alike.

Geodesic distances are shortest paths on the edge graph refined with "unfolded" diagonals
across each pair of adjacent faces (the straight line through their shared edge); they are
symmetric, zero on the diagonal, at least the straight-line distance and overestimate true
geodesics by a few per cent at most. The Laplace-Beltrami basis (cotangent weights, lumped
mass) is the vertex feature CSE's embedder multiplies by a learned matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
import torch
from torch import Tensor

SUBDIVISIONS = 3  # icosphere level before refinement: 642 vertices
MAX_EDGE = 0.09  # longest edge after refinement (the figure is about 2.5 tall): about 2 600 vertices
LIMBS = ("head", "left_arm", "right_arm", "left_leg", "right_leg")
# Rest pose, y up, figure facing +z. Per limb: direction from the torso centre, angular radius
# of its base on the unit sphere (radians) and length beyond the torso.
_LIMB_LAYOUT = {
    "head": ((0.0, 1.0, 0.0), 0.45, 0.42),
    "left_arm": ((-1.0, 0.42, 0.0), 0.36, 0.75),
    "right_arm": ((1.0, 0.42, 0.0), 0.36, 0.75),
    "left_leg": ((-0.4, -1.0, 0.0), 0.38, 0.8),
    "right_leg": ((0.4, -1.0, 0.0), 0.38, 0.8),
}
_TORSO_RADII = (0.5, 0.72, 0.34)
_SOURCE_BLOCK = 128


@dataclass(frozen=True, eq=False)
class Mesh:
    """A template mesh. Geodesics and the LBO basis are computed on first use and kept."""

    name: str
    vertices: Tensor  # [V, 3] float32, rest pose
    faces: Tensor  # [F, 3] int64, counter-clockwise seen from outside
    colours: Tensor  # [V, 3] float32 in [0, 1]
    skin: Tensor  # [V, len(LIMBS)] float32: how much each limb's bone moves each vertex (rows sum <= 1)
    joints: Tensor  # [len(LIMBS), 3] float32: the point each limb rotates about

    @property
    def num_vertices(self) -> int:
        return self.vertices.shape[0]

    @cached_property
    def geodesics(self) -> Tensor:
        """[V, V] float32 geodesic distances in the units of `vertices`."""
        return _all_pairs_shortest_paths(*_refined_edges(self.vertices.double().numpy(), self.faces.numpy()))

    @cached_property
    def diameter(self) -> float:
        """The largest geodesic distance between two vertices."""
        return float(self.geodesics.max())

    def basis(self, k: int) -> Tensor:
        """[V, k] float32: the first k Laplace-Beltrami eigenfunctions, mass-orthonormal."""
        if not 1 <= k <= self.num_vertices:
            raise ValueError(f"basis size {k}: must be 1..{self.num_vertices}")
        return self._eigenfunctions[:, :k].clone()

    @cached_property
    def _eigenfunctions(self) -> Tensor:
        return _laplace_beltrami_eigenfunctions(self.vertices.double().numpy(), self.faces.numpy())


@cache
def template_mesh(seed: int = 0) -> Mesh:
    """The figure drawn from `seed` (limb sizes, colours, spots); built once per process."""
    rng = np.random.default_rng([seed, 0x53E])
    limbs = [
        (_unit(np.add(axis, rng.normal(0, 0.06, 3))), width * rng.uniform(0.9, 1.1), length * rng.uniform(0.85, 1.15))
        for axis, width, length in _LIMB_LAYOUT.values()
    ]
    directions, faces = _refine(*_icosphere(SUBDIVISIONS), limbs)
    radius, heights = _radius(directions, limbs)
    vertices = directions * radius[:, None]
    skin = _smoothstep(heights / 0.5)  # the lower half of a limb bends, the upper half moves rigidly
    joints = np.stack([axis * _torso_radius(axis[None])[0] * 0.8 for axis, _, _ in limbs])
    name = f"synthetic_{len(vertices)}" + (f"_seed{seed}" if seed else "")
    return Mesh(
        name,
        torch.from_numpy(vertices).float(),
        torch.from_numpy(faces).long(),
        torch.from_numpy(_colours(vertices, rng)).float(),
        torch.from_numpy(skin).float(),
        torch.from_numpy(joints).float(),
    )


# -- shape ------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _icosphere(subdivisions: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit-sphere vertices [V, 3] and outward counter-clockwise faces [F, 3]."""
    t = (1 + 5**0.5) / 2
    v = _unit(
        np.array(
            [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t]]
            + [[0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
            dtype=np.float64,
        )
    )
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6]]
        + [[7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10]]
        + [[8, 6, 7], [9, 8, 1]]
    )
    for _ in range(subdivisions):
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        unique, inverse = np.unique(edges, axis=0, return_inverse=True)
        ab, bc, ca = inverse.reshape(3, -1) + len(v)  # midpoint vertex of each face edge
        a, b, c = f.T
        f = np.concatenate([np.stack(t, 1) for t in ((a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca))])
        v = np.concatenate([v, _unit(v[unique[:, 0]] + v[unique[:, 1]])])
    return v, f


def _refine(directions: np.ndarray, faces: np.ndarray, limbs: list) -> tuple[np.ndarray, np.ndarray]:
    """Split every edge longer than MAX_EDGE on the surface until none is left.

    A split edge gets a new vertex (midway in direction, on the surface); each face is cut
    by its split edges into 2, 3 or 4 faces, so neighbours stay conforming and the
    orientation is kept.
    """
    while True:
        points = directions * _radius(directions, limbs)[0][:, None]
        edge_of_face = np.sort(np.stack([faces, np.roll(faces, -1, 1)], -1), -1).reshape(-1, 2)  # k: corner k -> k+1
        edges, inverse = np.unique(edge_of_face, axis=0, return_inverse=True)
        long = np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1) > MAX_EDGE
        if not long.any():
            return directions, faces
        midpoint = np.full(len(edges), -1)
        midpoint[long] = len(directions) + np.arange(long.sum())
        directions = np.concatenate([directions, _unit(directions[edges[long, 0]] + directions[edges[long, 1]])])
        points = directions * _radius(directions, limbs)[0][:, None]
        split = midpoint[inverse.reshape(-1, 3)]  # [F, 3]: midpoint of edge k, or -1
        count = (split >= 0).sum(1)
        # Rotate each face to a canonical pattern: one split edge first; two: the unsplit one last.
        first = np.where(count == 1, (split >= 0).argmax(1), np.where(count == 2, (split < 0).argmax(1) + 1, 0))
        order = (np.arange(3) + first[:, None]) % 3
        a, b, c = np.take_along_axis(faces, order, 1).T
        ab, bc, ca = np.take_along_axis(split, order, 1).T
        # Two split edges leave a quad (a, ab, bc, c): cut it along its shorter diagonal.
        short = np.linalg.norm(points[a] - points[bc], axis=1) <= np.linalg.norm(points[ab] - points[c], axis=1)
        pieces = {
            0: [(a, b, c)],
            1: [(a, ab, c), (ab, b, c)],
            2: [(ab, b, bc), (a, ab, np.where(short, bc, c)), (np.where(short, a, ab), bc, c)],
            3: [(a, ab, ca), (ab, b, bc), (ca, bc, c), (ab, bc, ca)],
        }
        faces = np.concatenate([np.stack(t, 1)[count == n] for n, ts in pieces.items() for t in ts])


def _torso_radius(d: np.ndarray) -> np.ndarray:
    """Distance from the centre to the torso ellipsoid along unit directions d [N, 3]."""
    return 1 / np.sqrt(((d / np.array(_TORSO_RADII)) ** 2).sum(-1))


def _radius(d: np.ndarray, limbs: list) -> tuple[np.ndarray, np.ndarray]:
    """Surface radius along unit directions d [N, 3], and each limb's height profile [N, limbs] in [0, 1]."""
    heights = np.stack([np.clip(1 - np.arccos(np.clip(d @ axis, -1, 1)) / width, 0, 1) for axis, width, _ in limbs], 1)
    profile = _smoothstep(heights)  # flat where it meets the torso, round at the tip
    lengths = np.array([length for _, _, length in limbs])
    return _torso_radius(d) + (profile * lengths).max(1), heights


def _colours(vertices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field (random Fourier features) with a few dark spots."""
    frequencies = _unit(rng.normal(size=(24, 3))) * rng.uniform(1.5, 6.0, (24, 1))
    phases = rng.uniform(0, 2 * math.pi, 24)
    mixing = rng.normal(0, 0.3, (24, 3))
    colours = 1 / (1 + np.exp(-np.sin(vertices @ frequencies.T + phases) @ mixing))
    spots = vertices[rng.choice(len(vertices), 10, replace=False)]
    near = np.linalg.norm(vertices[:, None] - spots[None], axis=-1).min(1)
    return colours * (0.25 + 0.75 * _smoothstep((near - 0.06) / 0.05))[:, None]


# -- geodesics ----------------------------------------------------------------------------------
def _refined_edges(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Graph edges (i, j) [E, 2] with lengths [E]: mesh edges plus, for each pair of faces sharing
    an edge whose unfolded quad is convex, the straight line between their opposite vertices."""
    corner = np.concatenate([f, np.roll(f, -1, 1), np.roll(f, -2, 1)])  # rows: (a, b, c) for each corner
    a, b, c = corner.T
    key = np.minimum(b, c) * len(v) + np.maximum(b, c)  # the edge opposite corner a
    order = np.argsort(key, kind="stable")
    key, a, b, c = key[order], a[order], b[order], c[order]
    pair = np.flatnonzero(key[1:] == key[:-1])  # the two corners facing one interior edge
    p, q, s, t = a[pair], a[pair + 1], b[pair], c[pair]
    # Unfold q's face into p's plane about the edge (s, t); the diagonal is valid when it crosses the edge.
    e = _unit(v[t] - v[s])
    along_p, along_q = ((v[p] - v[s]) * e).sum(1), ((v[q] - v[s]) * e).sum(1)
    off_p = np.linalg.norm(v[p] - v[s] - along_p[:, None] * e, axis=1)
    off_q = np.linalg.norm(v[q] - v[s] - along_q[:, None] * e, axis=1)
    crossing = along_p + (along_q - along_p) * off_p / (off_p + off_q)
    length = np.linalg.norm(v[t] - v[s], axis=1)
    convex = (crossing > 0) & (crossing < length)
    diagonal = np.hypot(along_q - along_p, off_p + off_q)
    edges = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), 1), axis=0)
    pairs = np.concatenate([edges, np.stack([p, q], 1)[convex]])
    lengths = np.concatenate([np.linalg.norm(v[edges[:, 0]] - v[edges[:, 1]], axis=1), diagonal[convex]])
    return pairs, lengths, len(v)


def _all_pairs_shortest_paths(pairs: np.ndarray, lengths: np.ndarray, count: int) -> Tensor:
    """[V, V] shortest-path lengths: Bellman-Ford from many sources at once.

    Column s holds the distances from source s; a vertex's row improves from its neighbours'
    rows until nothing shortens (about 25 rounds here). Sources go in blocks of
    _SOURCE_BLOCK columns so the working matrix stays in cache: ten times faster than all at once.
    """
    both = np.concatenate([pairs, pairs[:, ::-1]])
    weights = np.concatenate([lengths, lengths])
    order = np.argsort(both[:, 0], kind="stable")
    both, weights = both[order], weights[order]
    degree = np.bincount(both[:, 0], minlength=count)
    slot = np.arange(len(both)) - np.repeat(np.cumsum(degree) - degree, degree)
    neighbour = torch.arange(count)[:, None].repeat(1, degree.max())  # padding: self, weight 0
    weight = torch.zeros(count, degree.max(), dtype=torch.float32)
    neighbour[both[:, 0], slot] = torch.from_numpy(both[:, 1])
    weight[both[:, 0], slot] = torch.from_numpy(weights).float()
    result = torch.empty(count, count)
    # Buffers are reused: allocating megabytes in the inner loop costs more than the arithmetic.
    before, step = torch.empty(count, _SOURCE_BLOCK), torch.empty(count, _SOURCE_BLOCK)
    for start in range(0, count, _SOURCE_BLOCK):
        sources = torch.arange(start, min(start + _SOURCE_BLOCK, count))
        dist = torch.full((count, len(sources)), math.inf)
        dist[sources, torch.arange(len(sources))] = 0
        before, step = before[:, : len(sources)], step[:, : len(sources)]
        while True:
            before.copy_(dist)
            _relax(dist, neighbour, weight, step)
            if torch.equal(before, dist):
                break
        result[:, sources] = dist
    return torch.minimum(result, result.T)  # float rounding differs along the two directions of a path


def _relax(dist: Tensor, neighbour: Tensor, weight: Tensor, step: Tensor) -> None:
    """One Bellman-Ford round in place: dist[v] = min(dist[v], dist[u] + |uv|) over neighbours u."""
    for k in range(neighbour.shape[1]):
        torch.index_select(dist, 0, neighbour[:, k], out=step)
        torch.minimum(dist, step.add_(weight[:, k, None]), out=dist)


# -- Laplace-Beltrami -------------------------------------------------------------------------
def _laplace_beltrami_eigenfunctions(v: np.ndarray, f: np.ndarray) -> Tensor:
    """All eigenfunctions of the cotangent Laplacian with lumped mass, lowest frequency first.

    Solves L phi = lambda M phi through the symmetric M^-1/2 L M^-1/2 (dense: V is a few
    thousand). Each eigenfunction's sign is fixed so its largest entry is positive.
    """
    n = len(v)
    laplacian = np.zeros((n, n))
    area = np.zeros(n)
    for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):  # the angle at corner i faces edge (j, k)
        u, w = v[f[:, j]] - v[f[:, i]], v[f[:, k]] - v[f[:, i]]
        cross = np.linalg.norm(np.cross(u, w), axis=1)
        cot = (u * w).sum(1) / cross
        np.add.at(laplacian, (f[:, j], f[:, k]), -cot / 2)
        np.add.at(laplacian, (f[:, k], f[:, j]), -cot / 2)
        np.add.at(area, f[:, i], cross / 6)  # a third of the face area to each corner
    laplacian[np.diag_indices(n)] = -laplacian.sum(1)
    scale = 1 / np.sqrt(area)
    # float32 LAPACK is three times faster; the low frequencies CSE uses are well separated.
    _, vectors = torch.linalg.eigh(torch.from_numpy(scale[:, None] * laplacian * scale[None, :]).float())
    functions = torch.from_numpy(scale).float()[:, None] * vectors
    return functions * functions.gather(0, functions.abs().argmax(0, keepdim=True)).sign()

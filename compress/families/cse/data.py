"""Synthetic CSE data: the template figure posed, lit and rendered with its vertex id per pixel.

Each sample is drawn from one seed with torch only, like the talking-head clips
(`compress.data.synthetic`): the figure's limbs bend (linear blend skinning), the body
stretches and wobbles, it turns to any yaw, a perspective camera looks at it from a random
distance, and a Lambert + ambient light shades it over a smooth random background. The
frame is the person box with a small random margin, resized to the output size whatever
its aspect, as DensePose pools a detected box. Random flat shapes then occlude parts of it.

Rasterisation is a vectorised z-buffer: every front-facing triangle lists the pixel centres
of its bounding box, barycentric coordinates (perspective-correct) decide which lie inside,
and the largest 1/depth wins each pixel. A pixel's vertex id is the vertex of its visible
triangle nearest to the surface point on the rest-pose template; background and occluded
pixels have id -1 and mask 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from compress.data.pairs import HELD_OUT, SPLITS
from compress.data.synthetic import noise_texture
from compress.errors import CompressError
from compress.families.cse.mesh import Mesh, template_mesh

MIN_SIZE = 16
_MAX_SAMPLES = 2**32  # per split; keeps the seed ranges of seeds and splits disjoint
# Largest bend per limb (radians, about each axis): head, arms, legs (`mesh.LIMBS` order).
_LIMB_BEND = torch.tensor([0.35, 0.9, 0.9, 0.5, 0.5])


def render_seed(seed: int, held_out: bool, index: int) -> int:
    """Seed of sample `index`: training and held-out samples never share one (even vs odd)."""
    return (seed * _MAX_SAMPLES + index) * 2 + int(held_out)


def render_sample(seed: int, size: int | tuple[int, int], mesh: Mesh | None = None) -> dict[str, Tensor]:
    """One sample drawn from `seed` at `size` (H, W).

    Returns "image" [3,H,W] float in [0,1], "mask" [H,W] float in {0,1} (visible figure) and
    "vertex_ids" [H,W] int64 (-1 off the figure).
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if min(h, w) < MIN_SIZE:
        raise CompressError(f"synthetic CSE sample size {(h, w)}: both sides must be at least {MIN_SIZE} pixels")
    mesh = mesh or template_mesh()
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        points = _posed_camera_points(mesh, gen)
        normals = _face_normals(points, mesh.faces)
        face, bary = _rasterize(points, mesh.faces, normals, _to_pixels(points, gen, h, w), h, w)
        image = _background(gen, h, w)
        covered = face >= 0
        corners, weights = mesh.faces[face[covered]], bary[covered, :, None]  # [P, 3], [P, 3, 1]
        light = _shading(gen, points, mesh.faces, normals, corners, weights)
        image.view(3, -1)[:, covered] = ((weights * mesh.colours[corners]).sum(1) * light).T.clamp(0, 1)
        # The corner nearest to the surface point, measured on the rest-pose template.
        rest = mesh.vertices[corners]
        nearest = (rest - (weights * rest).sum(1, keepdim=True)).norm(dim=-1).argmin(1, keepdim=True)
        ids = torch.full((h * w,), -1, dtype=torch.long)
        ids[covered] = corners.gather(1, nearest)[:, 0]
        ids = ids.view(h, w)
        _occlude(gen, image, ids)
        image = image * (0.85 + 0.3 * torch.rand(3, 1, 1, generator=gen))
        image = image + 0.03 * torch.rand(1, generator=gen) * torch.randn(image.shape, generator=gen)
    return {"image": image.clamp(0, 1), "mask": (ids >= 0).float(), "vertex_ids": ids}


class MeshRenders(Dataset):
    """`count` rendered samples of one split; item i is fixed by (seed, split, i).

    "train" and "calibration" draw from the training seeds, "test" and "eval" from held-out
    ones (the `compress.data.pairs` splits). Items are `render_sample` dicts.
    """

    def __init__(
        self, split: str, size: int | tuple[int, int], seed: int = 0, count: int = 1000, mesh: Mesh | None = None
    ) -> None:
        if split not in SPLITS:
            raise CompressError(f"data split {split!r}: expected one of {', '.join(SPLITS)}")
        if not 1 <= count <= _MAX_SAMPLES or seed < 0:
            raise CompressError(
                f"synthetic CSE data: need 1..{_MAX_SAMPLES} samples and seed >= 0 (got count={count}, seed={seed})"
            )
        self.split, self.size, self.seed, self.count = split, size, seed, count
        self.held_out = split in HELD_OUT
        self.mesh = mesh or template_mesh()

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        if not 0 <= i < self.count:
            raise IndexError(f"sample {i} out of range 0..{self.count - 1}")
        return render_sample(render_seed(self.seed, self.held_out, i), self.size, self.mesh)


# -- scene ----------------------------------------------------------------------------------
def _uniform(gen: torch.Generator, lo: float, hi: float, *shape: int) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape or (1,), generator=gen)


def _rotations(vectors: Tensor) -> Tensor:
    """Rotation matrices [N, 3, 3] from axis-angle vectors [N, 3] (Rodrigues)."""
    angle = vectors.norm(dim=1).clamp_min(1e-8)[:, None, None]
    x, y, z = (vectors / angle[:, :, 0]).unbind(1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], 1).view(-1, 3, 3)
    return torch.eye(3) + angle.sin() * k + (1 - angle.cos()) * k @ k


def _posed_camera_points(mesh: Mesh, gen: torch.Generator) -> Tensor:
    """The template posed and placed in front of the camera: [V, 3] (x right, y down, z forward)."""
    bends = _rotations((2 * torch.rand(len(_LIMB_BEND), 3, generator=gen) - 1) * _LIMB_BEND[:, None])
    joints = mesh.joints[:, None]
    moved = (mesh.vertices[None] - joints) @ bends.transpose(1, 2) + joints  # [limbs, V, 3]
    skin = mesh.skin.T[..., None]
    v = mesh.vertices * (1 - skin.sum(0)) + (skin * moved).sum(0)
    # Body shape: anisotropic scale and a smooth random displacement field.
    v = v * _uniform(gen, 0.85, 1.15, 3)
    frequencies = F.normalize(torch.randn(3, 3, generator=gen), dim=1) * _uniform(gen, 1.0, 3.0, 3, 1)
    wobble = torch.sin(v @ frequencies.T + _uniform(gen, 0, 2 * math.pi, 3))
    v = v + wobble @ (0.05 * torch.randn(3, 3, generator=gen))
    # Any yaw, a moderate pitch and roll, then the camera: y and z flip (a rotation, faces keep their side).
    yaw, pitch, roll = _uniform(gen, -math.pi, math.pi), _uniform(gen, -0.4, 0.4), _uniform(gen, -0.3, 0.3)
    about_x, about_y, about_z = _rotations(torch.diag(torch.cat([pitch, yaw, roll])))
    v = v @ (about_z @ about_x @ about_y).T
    return v * torch.tensor([1.0, -1.0, -1.0]) + torch.tensor([0.0, 0.0, float(_uniform(gen, 3.5, 8.0))])


def _to_pixels(points: Tensor, gen: torch.Generator, h: int, w: int) -> Tensor:
    """Perspective projection into the person box: [V, 2] (column, row), pixel centres at integers."""
    plane = points[:, :2] / points[:, 2:]
    lo, hi = plane.amin(0), plane.amax(0)
    margin = (hi - lo) * _uniform(gen, 0.02, 0.1, 2, 2)  # the box is a little larger than the figure
    lo, hi = lo - margin[0], hi + margin[1]
    return (plane - lo) / (hi - lo) * torch.tensor([w, h]) - 0.5


# -- rasterisation --------------------------------------------------------------------------
def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _face_normals(points: Tensor, faces: Tensor) -> Tensor:
    """[F, 3]: outward, of length twice the face's area."""
    corners = points[faces]
    return torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])


def _rasterize(points: Tensor, faces: Tensor, normals: Tensor, pixels: Tensor, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Visible face per pixel [H*W] (-1: none) and its perspective-correct barycentrics [H*W, 3]."""
    tri = pixels[faces]
    area = _cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    # Front-facing: the outward normal points back at the camera (at the origin).
    front = torch.nonzero(((normals * points[faces[:, 0]]).sum(1) < 0) & (area.abs() > 1e-9))[:, 0]
    tri, area, depth = tri[front], area[front], points[faces[front], 2]
    # Every pixel centre in each triangle's bounding box is a candidate.
    lo = tri.amin(1).ceil().clamp_min(0)
    hi = torch.minimum(tri.amax(1).floor(), torch.tensor([w - 1.0, h - 1.0]))
    span = (hi - lo + 1).clamp_min(0).long()
    count = span[:, 0] * span[:, 1]
    t = torch.repeat_interleave(torch.arange(len(tri)), count)
    offset = torch.arange(len(t)) - torch.repeat_interleave(count.cumsum(0) - count, count)
    xy = lo[t] + torch.stack([offset % span[t, 0], offset // span[t, 0]], 1)
    a, b, c = tri[t].unbind(1)
    w0, w1 = _cross(b - xy, c - xy) / area[t], _cross(c - xy, a - xy) / area[t]
    screen_bary = torch.stack([w0, w1, 1 - w0 - w1], 1)
    inside = (screen_bary >= -1e-6).all(1)
    inv_depth = torch.where(inside, (screen_bary / depth[t]).sum(1), -math.inf)
    # z-buffer: the nearest candidate per pixel; ties go to the later triangle.
    pixel = (xy[:, 1] * w + xy[:, 0]).long()
    nearest = torch.full((h * w,), -math.inf).scatter_reduce(0, pixel, inv_depth, "amax")
    won = inside & (inv_depth == nearest[pixel])
    owner = torch.full((h * w,), -1).scatter_reduce(0, pixel[won], torch.nonzero(won)[:, 0], "amax")
    face = torch.full((h * w,), -1)
    bary = torch.zeros(h * w, 3)
    hit = owner >= 0
    winner = owner[hit]
    face[hit] = front[t[winner]]
    bary[hit] = screen_bary[winner] / depth[t[winner]] / inv_depth[winner, None]
    return face, bary


# -- appearance -----------------------------------------------------------------------------
def _shading(
    gen: torch.Generator, points: Tensor, faces: Tensor, normals: Tensor, corners: Tensor, weights: Tensor
) -> Tensor:
    """Lambert + ambient light [P, 1] at the covered pixels, from interpolated vertex normals."""
    # Summing the area-weighted face normals at each vertex.
    vertex_normal = torch.zeros_like(points).index_add_(0, faces.flatten(), normals.repeat_interleave(3, 0))
    normal = F.normalize((weights * F.normalize(vertex_normal, dim=1)[corners]).sum(1), dim=1)
    # Light from the camera's side (z < 0), anywhere across the front hemisphere.
    light = F.normalize(torch.cat([_uniform(gen, -1, 1, 2), torch.tensor([-1.0])]), dim=0)
    ambient = _uniform(gen, 0.25, 0.6)
    return ambient + (1 - ambient) * (normal @ light).clamp_min(0)[:, None]


def _background(gen: torch.Generator, h: int, w: int) -> Tensor:
    """A smooth random texture between two random colours: [3, H, W]."""
    grid = int(torch.randint(2, 6, (1,), generator=gen))
    texture = F.interpolate(noise_texture(gen, 3, (grid, grid), 3), size=(h, w), mode="bilinear", align_corners=True)
    low, high = torch.rand(2, 3, 1, 1, generator=gen)
    return (low + (high - low) * texture[0]).contiguous()


def _occlude(gen: torch.Generator, image: Tensor, ids: Tensor) -> None:
    """Draw 0-2 one-colour ellipses or rectangles over the image, clearing the vertex ids they cover."""
    h, w = ids.shape
    y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    for _ in range(int(torch.multinomial(torch.tensor([0.5, 0.3, 0.2]), 1, generator=gen))):
        centre, half, angle = _uniform(gen, -0.9, 0.9, 2), _uniform(gen, 0.1, 0.45, 2), _uniform(gen, 0, math.pi)
        dx, dy = x - centre[0], y - centre[1]
        u, v = (dx * angle.cos() + dy * angle.sin()) / half[0], (-dx * angle.sin() + dy * angle.cos()) / half[1]
        ellipse = bool(torch.rand(1, generator=gen) < 0.5)
        shape = (u**2 + v**2 <= 1) if ellipse else ((u.abs() <= 1) & (v.abs() <= 1))
        shade = 0.8 + 0.2 * u.clamp(-1, 1)  # a soft gradient, so occluders are not perfectly flat
        image[:, shape] = (torch.rand(3, 1, generator=gen) * shade[shape]).clamp(0, 1)
        ids[shape] = -1

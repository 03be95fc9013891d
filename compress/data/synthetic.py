"""Procedural talking-head clips: a face-like figure that turns, nods, blinks and talks.

Everything is drawn from one seed with torch only, so tests and the demo generate the data
they use instead of shipping video files. The head is a textured sphere squashed into an
ellipse: each pixel inside it is mapped back through the head rotation to face coordinates,
where the eyes, brows, nose and mouth are ellipses. Skin texture, hair and features
therefore move and foreshorten with the head as on a real face, which gives keypoint-based
animation models real motion to learn. Edges are one-pixel linear ramps of an ellipse
distance (anti-aliased); masks are the exact insides of the same ellipses.

Coordinates follow FOMM keypoints: x right, y down, pixel centres spanning [-1, 1] along
each axis (FOMM's `make_coordinate_grid`, i.e. `grid_sample(..., align_corners=True)`).
Geometry is laid out in an isotropic frame where the shorter image side spans [-1, 1], so a
non-square clip shows the same round face with more background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from compress.errors import CompressError

POSE_NAMES = ("yaw", "pitch", "roll", "tx", "ty", "scale")
EXPRESSION_NAMES = ("eye_open", "mouth_open", "smile", "brow_raise")
# Left/right as seen in the image. Mouth and eye points lie inside their masks
# (the lip points sit mid-way through the lip thickness).
LANDMARK_NAMES = (
    "left_eye",
    "right_eye",
    "left_brow",
    "right_brow",
    "nose_tip",
    "mouth_left",
    "mouth_right",
    "upper_lip",
    "lower_lip",
    "chin",
)
MIN_SIZE = 8

# Face layout in face coordinates (unit sphere seen from the front, x right, y down).
_EYE_Y = -0.12
_EYE_HALF = (0.16, 0.095)
_IRIS_R, _PUPIL_R = 0.07, 0.032
_BROW_Y, _BROW_HALF = -0.34, (0.17, 0.035)
_NOSE_TIP = (0.0, 0.13)
_MOUTH_Y = 0.42
_CHIN_Y = 0.82


@dataclass
class Clip:
    """A rendered clip and its ground truth, all per frame."""

    frames: Tensor  # [T, 3, H, W] float in [0, 1]
    eye_mask: Tensor  # [T, 1, H, W] float in {0, 1}, both eyes (visible eyeball)
    mouth_mask: Tensor  # [T, 1, H, W] float in {0, 1}, lips and opening
    landmarks: Tensor  # [T, L, 2] (x, y) in [-1, 1], order of LANDMARK_NAMES
    pose: Tensor  # [T, 6] POSE_NAMES; angles in radians, tx/ty in the isotropic frame
    expression: Tensor  # [T, 4] EXPRESSION_NAMES


@dataclass
class _Appearance:
    """Who is in the clip: colours, proportions and textures, fixed for the whole clip."""

    skin: Tensor  # [3]
    hair: Tensor
    lips: Tensor
    iris: Tensor
    clothes: Tensor
    background: Tensor
    head_half: tuple[float, float]  # ellipse half-width, half-height at scale 1
    eye_x: float
    mouth_half_width: float
    hairline: float  # face y above which hair grows (more negative: higher forehead)
    face_texture: Tensor  # [1, 2, S, S]: skin detail, hair streaks
    background_texture: Tensor  # [1, 3, S, S]


@dataclass
class _Motion:
    """Per-frame signals, each [T]."""

    yaw: Tensor
    pitch: Tensor
    roll: Tensor
    tx: Tensor
    ty: Tensor
    scale: Tensor
    eye_open: Tensor
    mouth_open: Tensor
    smile: Tensor
    brow: Tensor
    gaze_x: Tensor
    gaze_y: Tensor
    light_x: Tensor
    light_y: Tensor
    gradient: Tensor  # strength of the whole-image lighting ramp
    gradient_angle: Tensor


def render_clip(seed: int, frames: int, size: int | tuple[int, int]) -> Clip:
    """Render `frames` frames of the talking head drawn from `seed` at `size` (H, W).

    Deterministic: the same seed gives the same person and motion at any size, and a
    shorter clip is a prefix of a longer one.
    """
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < MIN_SIZE or w < MIN_SIZE:
        raise CompressError(f"synthetic clip size {(h, w)}: both sides must be at least {MIN_SIZE} pixels")
    if frames < 1:
        raise CompressError(f"synthetic clip frames={frames}: must be at least 1")
    gen = torch.Generator().manual_seed(int(seed))
    look = _draw_appearance(gen)
    motion = _draw_motion(gen, torch.arange(frames, dtype=torch.float32))
    with torch.no_grad():
        return _render(look, motion, h, w)


# -- random draws (order matters for determinism; none depends on frames or size) -----------
def _uniform(gen: torch.Generator, lo: float, hi: float, n: int = 1) -> Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def noise_texture(gen: torch.Generator, channels: int, grid: tuple[int, int], octaves: int, size: int = 128) -> Tensor:
    """Fractal value noise in [0, 1]: random grids upsampled bicubically, finer ones weaker."""
    tex = torch.zeros(1, channels, size, size)
    for o in range(octaves):
        coarse = torch.rand(1, channels, grid[0] * 2**o, grid[1] * 2**o, generator=gen)
        tex += 0.5**o * F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    tex -= tex.amin(dim=(2, 3), keepdim=True)
    return tex / tex.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def _draw_appearance(gen: torch.Generator) -> _Appearance:
    tone = _uniform(gen, 0, 1)
    skin = torch.tensor([0.96, 0.80, 0.69]) * (1 - tone) + torch.tensor([0.42, 0.28, 0.20]) * tone
    skin = (skin + _uniform(gen, -0.04, 0.04, 3)).clamp(0, 1)
    hair_lum, hair_tint = _uniform(gen, 0.05, 0.65), _uniform(gen, 0, 1)
    hair = hair_lum * (torch.tensor([1.0, 0.85, 0.6]) * hair_tint + torch.tensor([0.8, 0.7, 0.65]) * (1 - hair_tint))
    lips = skin * torch.tensor([0.85, 0.5, 0.5])
    iris = torch.rand(3, generator=gen) * 0.45
    clothes = torch.rand(3, generator=gen) * 0.8 + 0.1
    background = torch.rand(3, generator=gen) * 0.6 + 0.3
    head_half = (float(_uniform(gen, 0.40, 0.47)), float(_uniform(gen, 0.55, 0.62)))
    eye_x = float(_uniform(gen, 0.30, 0.37))
    mouth_half_width = float(_uniform(gen, 0.19, 0.25))
    hairline = float(_uniform(gen, -0.62, -0.45))
    skin_detail = noise_texture(gen, 1, (4, 4), 5)
    hair_streaks = noise_texture(gen, 1, (2, 12), 3)  # stretched along y: strands
    background_texture = noise_texture(gen, 3, (3, 3), 4)
    return _Appearance(
        skin,
        hair,
        lips,
        iris,
        clothes,
        background,
        head_half,
        eye_x,
        mouth_half_width,
        hairline,
        torch.cat([skin_detail, hair_streaks], dim=1),
        background_texture,
    )


def _smooth(gen: torch.Generator, t: Tensor, periods: tuple[float, float], terms: int = 3) -> Tensor:
    """A smooth random signal in [-1, 1]: a few sinusoids with periods (in frames) in `periods`."""
    weights = torch.rand(terms, generator=gen) + 0.2
    weights = weights / weights.sum()
    period = _uniform(gen, *periods, n=terms)
    phase = _uniform(gen, 0, 2 * math.pi, n=terms)
    return (weights[:, None] * torch.sin(2 * math.pi * t[None] / period[:, None] + phase[:, None])).sum(0)


def _blinks(gen: torch.Generator, t: Tensor) -> Tensor:
    """Eye openness in [0, 1]: quick blinks (about 5 frames) every 14-40 frames."""
    period = float(_uniform(gen, 14, 40))
    first = float(_uniform(gen, 2, period))
    count = int(t[-1].item() // period) + 2 if len(t) else 0
    centres = first + period * torch.arange(count) + _uniform(gen, -3, 3, n=count) * (torch.arange(count) > 0)
    closed = torch.exp(-(((t[:, None] - centres[None]) / 1.3) ** 2)).sum(1).clamp(max=1)
    return 1 - closed * 0.97


def _draw_motion(gen: torch.Generator, t: Tensor) -> _Motion:
    def signal(amplitude: float, offset: float, periods: tuple[float, float]) -> Tensor:
        return _uniform(gen, -offset, offset) + amplitude * _smooth(gen, t, periods)

    yaw = signal(0.45, 0.15, (20, 70))
    pitch = signal(0.25, 0.08, (24, 80))
    roll = signal(0.18, 0.06, (30, 90))
    tx = signal(0.14, 0.06, (30, 90))
    ty = signal(0.08, 0.04, (30, 90))
    scale = 1 + signal(0.07, 0.05, (40, 120))
    eye_open = _blinks(gen, t)
    # Speech: fast open/close cycles gated by a slow "talking" envelope.
    talking = (0.6 + 0.6 * _smooth(gen, t, (30, 80))).clamp(0, 1)
    mouth_open = (talking * (0.5 + 0.7 * _smooth(gen, t, (5, 14)))).clamp(0, 1)
    smile = signal(0.6, 0.3, (30, 90)).clamp(-0.4, 1)
    brow = signal(0.8, 0.2, (20, 60)).clamp(-1, 1)
    gaze_x, gaze_y = signal(0.6, 0.3, (15, 50)), signal(0.4, 0.2, (15, 50))
    light_x, light_y = signal(0.6, 0.3, (40, 120)), signal(0.4, 0.2, (40, 120)) - 0.3
    gradient = 0.2 * (0.5 + 0.5 * _smooth(gen, t, (30, 90)))
    gradient_angle = _uniform(gen, 0, 2 * math.pi) + 1.5 * _smooth(gen, t, (60, 160))
    return _Motion(
        yaw,
        pitch,
        roll,
        tx,
        ty,
        scale,
        eye_open,
        mouth_open,
        smile,
        brow,
        gaze_x,
        gaze_y,
        light_x,
        light_y,
        gradient,
        gradient_angle,
    )


# -- rendering --------------------------------------------------------------------------------
def _ellipse_distance(x: Tensor, y: Tensor, a: Tensor | float, b: Tensor | float) -> Tensor:
    """Signed distance to an axis-aligned ellipse, first order: f / |grad f| with f = rho^2 - 1.

    Exact in sign, accurate near the edge (which is all anti-aliasing needs), and finite
    at the centre, unlike the normalised-radius approximation for thin ellipses.
    """
    f = (x / a) ** 2 + (y / b) ** 2 - 1
    grad = 2 * torch.sqrt((x / a**2) ** 2 + (y / b**2) ** 2)
    return f / (grad + 1e-6)


def _coverage(distance: Tensor, pixel: float | Tensor) -> Tensor:
    """Fraction of a pixel inside a shape: a one-pixel linear ramp across the edge."""
    return (0.5 - distance / pixel).clamp(0, 1)


def _over(img: Tensor, alpha: Tensor, colour: Tensor) -> Tensor:
    """Composite `colour` ([3] or [T,3,H,W]) over img [T,3,H,W] with alpha [T,H,W], in place."""
    if colour.dim() == 1:
        colour = colour[None, :, None, None].expand_as(img)
    return img.lerp_(colour, alpha[:, None])


def _sample(texture: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Texture [1,C,S,S] at coordinates x, y [T,H,W] (repeating by reflection) -> [T,C,H,W]."""
    grid = torch.stack(torch.broadcast_tensors(x, y), dim=-1)
    return F.grid_sample(
        texture.expand(grid.shape[0], -1, -1, -1), grid, mode="bilinear", padding_mode="reflection", align_corners=True
    )


def _col(v: Tensor) -> Tensor:
    """[T] -> [T,1,1] to broadcast a per-frame value over pixels."""
    return v[:, None, None]


def _isotropic_grid(h: int, w: int) -> tuple[Tensor, Tensor, float]:
    """Pixel centres in the isotropic frame (shorter side spans [-1, 1]) and the pixel size."""
    pixel = 2 / (min(h, w) - 1)
    x = (torch.arange(w, dtype=torch.float32) - (w - 1) / 2) * pixel
    y = (torch.arange(h, dtype=torch.float32) - (h - 1) / 2) * pixel
    return x[None, None, :], y[None, :, None], pixel


def _render(look: _Appearance, m: _Motion, h: int, w: int) -> Clip:
    t = m.yaw.shape[0]
    gx, gy, pixel = _isotropic_grid(h, w)
    img = _background(look, gx, gy, t)
    img = _body(img, look, m, gx, gy, pixel)

    # Head frame: undo translation and roll, normalise by the head ellipse -> unit disk (u, v).
    rw, rh = (look.head_half[0] * _col(m.scale), look.head_half[1] * _col(m.scale))
    dx, dy = gx - _col(m.tx), gy - _col(m.ty)
    cr, sr = torch.cos(_col(m.roll)), torch.sin(_col(m.roll))
    lx, ly = cr * dx + sr * dy, -sr * dx + cr * dy
    head = _coverage(_ellipse_distance(lx, ly, rw, rh), pixel)
    u, v = lx / rw, ly / rh
    z = (1 - u**2 - v**2).clamp_min(0).sqrt()

    # Back through yaw then pitch to face coordinates (qx, qy, qz) on the unit sphere.
    cy, sy = torch.cos(_col(m.yaw)), torch.sin(_col(m.yaw))
    cp, sp = torch.cos(_col(m.pitch)), torch.sin(_col(m.pitch))
    ax, az = u * cy - z * sy, u * sy + z * cy
    qx, qy, qz = ax, v * cp - az * sp, v * sp + az * cp
    # Pixel size in face units (ignoring foreshortening, which only softens edges near the rim).
    face_pixel = pixel / (min(look.head_half) * _col(m.scale))

    img = _over(img, head, _skin(look, m, qx, qy, qz, u, v, z))
    front = (qz * 4).clamp(0, 1)  # features fade out only where they would wrap behind the head
    img, eye_mask = _eyes(img, look, m, qx, qy, head * front, face_pixel)
    img = _brows_and_nose(img, look, m, qx, qy, head * front, face_pixel)
    img, mouth_mask = _mouth(img, look, m, qx, qy, head * front, face_pixel)
    img = _lighting_ramp(img, m, gx, gy)

    pose = torch.stack([m.yaw, m.pitch, m.roll, m.tx, m.ty, m.scale], dim=1)
    expression = torch.stack([m.eye_open, m.mouth_open, m.smile, m.brow], dim=1)
    return Clip(img.clamp(0, 1), eye_mask[:, None], mouth_mask[:, None], _landmarks(look, m, h, w), pose, expression)


def _background(look: _Appearance, gx: Tensor, gy: Tensor, frames: int) -> Tensor:
    """A static textured wall (the camera does not move), computed once for all frames."""
    tex = _sample(look.background_texture, gx * 0.7, gy * 0.7)
    wall = look.background[None, :, None, None] * (0.75 + 0.5 * (tex - 0.5)) + 0.08 * (tex - 0.5)
    return wall.expand(frames, -1, -1, -1).clone()


def _body(img: Tensor, look: _Appearance, m: _Motion, gx: Tensor, gy: Tensor, pixel: float) -> Tensor:
    """Shoulders and neck; they follow the head's translation partly, so motion is not rigid."""
    hw, hh = look.head_half
    bx, by = gx - 0.5 * _col(m.tx), gy - 0.3 * _col(m.ty) - 1.25
    shoulders = _coverage(_ellipse_distance(bx, by, 0.85, 0.55), pixel)
    folds = _sample(look.face_texture[:, :1], bx * 0.8, by * 0.8)[:, 0]
    img = _over(
        img,
        shoulders,
        look.clothes[None, :, None, None] * (0.8 + 0.4 * folds[:, None]) * (1 - 0.3 * (gy[:, None] + 1) / 2),
    )
    nx, ny = gx - 0.85 * _col(m.tx), gy - 0.85 * _col(m.ty) - hh * 1.05
    neck = _coverage(_ellipse_distance(nx, ny, hw * 0.42, hh * 0.8), pixel)
    return _over(img, neck, look.skin * 0.72)


def _skin(look: _Appearance, m: _Motion, qx: Tensor, qy: Tensor, qz: Tensor, u: Tensor, v: Tensor, z: Tensor) -> Tensor:
    """Head colour [T,3,H,W]: textured skin and hair on the sphere, Lambert-shaded."""
    tex = _sample(look.face_texture, qx, qy)
    skin = look.skin[None, :, None, None] * (0.88 + 0.24 * tex[:, :1])
    hair = look.hair[None, :, None, None] * (0.55 + 0.9 * tex[:, 1:2])
    # Hair above a wavy hairline and over the back of the head (seen at the rim when turning).
    hairline = look.hairline + 0.06 * torch.sin(qx * 7)
    hair_alpha = torch.maximum(((hairline - qy) * 25).clamp(0, 1), (-qz * 6).clamp(0, 1))
    colour = skin + (hair - skin) * hair_alpha[:, None]
    light = torch.stack([_col(m.light_x), _col(m.light_y), torch.ones_like(_col(m.light_x))])
    light = light / light.norm(dim=0, keepdim=True)
    lambert = (u * light[0] + v * light[1] + z * light[2]).clamp_min(0)
    return colour * (0.45 + 0.6 * lambert)[:, None]


def _eyes(
    img: Tensor, look: _Appearance, m: _Motion, qx: Tensor, qy: Tensor, visible: Tensor, px: Tensor
) -> tuple[Tensor, Tensor]:
    # Both eyes in one pass: mirror the face about x = 0 (the eyes never reach the midline).
    side = torch.sign(qx)
    ex, ey = qx.abs() - look.eye_x, qy - _EYE_Y
    half_h = _EYE_HALF[1] * _col(m.eye_open).clamp_min(0.02)
    inside = _ellipse_distance(ex, ey, _EYE_HALF[0], half_h)
    eye = _coverage(inside, px) * visible
    img = _over(img, eye, torch.tensor([0.93, 0.92, 0.88]))
    ix, iy = ex - 0.06 * side * _col(m.gaze_x), ey - 0.03 * _col(m.gaze_y)  # gaze is not mirrored
    iris = _coverage(_ellipse_distance(ix, iy, _IRIS_R, _IRIS_R), px) * eye
    img = _over(img, iris, look.iris)
    pupil = _coverage(_ellipse_distance(ix, iy, _PUPIL_R, _PUPIL_R), px) * eye
    img = _over(img, pupil, torch.tensor([0.03, 0.03, 0.03]))
    # Upper lid line: a thin dark rim that stays visible when the eye is closed.
    lid = _coverage(_ellipse_distance(ex, ey + 0.25 * half_h, _EYE_HALF[0] * 1.05, half_h * 0.9 + 0.012), px)
    img = _over(img, (lid - eye).clamp(0, 1) * 0.6 * visible, look.hair * 0.5)
    return img, ((inside < 0) & (visible > 0.5)).float()


def _brows_and_nose(
    img: Tensor, look: _Appearance, m: _Motion, qx: Tensor, qy: Tensor, visible: Tensor, px: Tensor
) -> Tensor:
    bx, by = qx.abs() - look.eye_x, qy - _BROW_Y + 0.06 * _col(m.brow)  # mirrored: both brows
    tilt = by + 0.12 * bx * _col(m.brow)  # raised brows arch outwards
    brow = _coverage(_ellipse_distance(bx, tilt, *_BROW_HALF), px) * visible
    img = _over(img, brow * 0.9, look.hair * 0.8)
    ridge = _coverage(_ellipse_distance(qx, qy, 0.055, 0.14), px) * visible
    img = _over(img, ridge * 0.25, look.skin * 1.1)
    base = _coverage(_ellipse_distance(qx, qy - _NOSE_TIP[1] - 0.01, 0.09, 0.035), px) * visible
    return _over(img, base * 0.45, look.skin * 0.55)


def _mouth_shape(look: _Appearance, m: _Motion) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-frame [T] half-width, outer (lips) half-height, opening half-height and smile curve."""
    half_w = look.mouth_half_width + 0.04 * m.smile - 0.03 * m.mouth_open
    opening = 0.11 * m.mouth_open + 0.002
    outer = opening + 0.045
    return half_w, outer, opening, 1.2 * m.smile


def _mouth(
    img: Tensor, look: _Appearance, m: _Motion, qx: Tensor, qy: Tensor, visible: Tensor, px: Tensor
) -> tuple[Tensor, Tensor]:
    half_w, outer, opening, curve = (_col(s) for s in _mouth_shape(look, m))
    my = qy - _MOUTH_Y + curve * qx**2  # smiling lifts the corners
    lips_d = _ellipse_distance(qx, my, half_w, outer)
    lips = _coverage(lips_d, px) * visible
    img = _over(img, lips, look.lips)
    cavity = _coverage(_ellipse_distance(qx, my, half_w * 0.85, opening), px) * lips
    img = _over(img, cavity, torch.tensor([0.25, 0.05, 0.06]))
    teeth = _coverage(my + 0.35 * opening, px) * cavity
    img = _over(img, teeth, torch.tensor([0.92, 0.9, 0.85]))
    mask = ((lips_d < 0) & (visible > 0.5)).float()
    return img, mask


def _lighting_ramp(img: Tensor, m: _Motion, gx: Tensor, gy: Tensor) -> Tensor:
    """A whole-image brightness ramp whose direction and strength drift (room lighting)."""
    along = torch.cos(_col(m.gradient_angle)) * gx + torch.sin(_col(m.gradient_angle)) * gy
    return img * (1 + _col(m.gradient) * along)[:, None]


def _landmarks(look: _Appearance, m: _Motion, h: int, w: int) -> Tensor:
    """Project face-coordinate points through pitch, yaw, roll, scale, translation -> [T, L, 2]."""
    t = m.yaw.shape[0]
    half_w, outer, opening, curve = _mouth_shape(look, m)
    corner_x = 0.85 * half_w
    corner_y = _MOUTH_Y - curve * corner_x**2
    mid_lip = (outer + opening) / 2
    brow_y = _BROW_Y - 0.06 * m.brow
    ex = torch.full((t,), look.eye_x)
    points = torch.stack(
        [
            torch.stack([-ex, torch.full((t,), _EYE_Y)], 1),
            torch.stack([ex, torch.full((t,), _EYE_Y)], 1),
            torch.stack([-ex, brow_y], 1),
            torch.stack([ex, brow_y], 1),
            torch.tensor(_NOSE_TIP).expand(t, 2),
            torch.stack([-corner_x, corner_y], 1),
            torch.stack([corner_x, corner_y], 1),
            torch.stack([torch.zeros(t), _MOUTH_Y - mid_lip], 1),
            torch.stack([torch.zeros(t), _MOUTH_Y + mid_lip], 1),
            torch.tensor([0.0, _CHIN_Y]).expand(t, 2),
        ],
        dim=1,
    )  # [T, L, 2]
    qx, qy = points[..., 0], points[..., 1]
    qz = (1 - qx**2 - qy**2).clamp_min(0).sqrt()
    yaw, pitch, roll = m.yaw[:, None], m.pitch[:, None], m.roll[:, None]
    by, bz = qy * torch.cos(pitch) + qz * torch.sin(pitch), -qy * torch.sin(pitch) + qz * torch.cos(pitch)
    px, py = qx * torch.cos(yaw) + bz * torch.sin(yaw), by
    lx, ly = px * look.head_half[0] * m.scale[:, None], py * look.head_half[1] * m.scale[:, None]
    x = torch.cos(roll) * lx - torch.sin(roll) * ly + m.tx[:, None]
    y = torch.sin(roll) * lx + torch.cos(roll) * ly + m.ty[:, None]
    # Isotropic frame -> per-axis [-1, 1] (pixel centres at the ends).
    s = min(h, w) - 1
    return torch.stack([x * s / (w - 1), y * s / (h - 1)], dim=-1)

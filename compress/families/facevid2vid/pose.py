"""Head pose: 66-bin logits to degrees, rotation matrices, the keypoint transformation x = R x_c + t + delta.

face-vid2vid (public `demo.py`) and LivePortrait (`src/utils/camera.py`,
`live_portrait_wrapper.py`) differ in every convention below; each function names whose it is.
The trained weights depend on these exact formulas, quirks included, so they are not "fixed".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Degrees per bin and the degree of bin 0: face-vid2vid's bins span [-99, 96], LivePortrait's [-97.5, 97.5].
BIN_DEGREES = 3
FACEVID2VID_BIN_OFFSET = 99.0
LIVEPORTRAIT_BIN_OFFSET = 97.5


def headpose_pred_to_degree(logits: torch.Tensor, offset: float = FACEVID2VID_BIN_OFFSET) -> torch.Tensor:
    """[B, bins] logits -> [B] degrees: the softmax expectation of the bin index, times 3, minus `offset`."""
    index = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
    return (F.softmax(logits, dim=1) * index).sum(dim=1) * BIN_DEGREES - offset


def _rotations(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rotations [B, 3, 3] about the x, y and z axes by angles [B] in radians."""
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rot_x = [one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()]
    rot_y = [y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()]
    rot_z = [z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one]
    return tuple(torch.stack(m, dim=1).unflatten(1, (3, 3)) for m in (rot_x, rot_y, rot_z))


def facevid2vid_rotation(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """face-vid2vid's R = Rx(pitch) Ry(yaw) Rz(roll) [B, 3, 3], from degrees [B] converted with pi written as 3.14."""
    rot_x, rot_y, rot_z = _rotations(*(angle / 180 * 3.14 for angle in (pitch, yaw, roll)))
    return rot_x @ rot_y @ rot_z


def keypoint_transformation(
    kp_canonical: torch.Tensor,
    he: dict[str, torch.Tensor],
    yaw: torch.Tensor | None = None,
    pitch: torch.Tensor | None = None,
    roll: torch.Tensor | None = None,
) -> torch.Tensor:
    """face-vid2vid's keypoints x = R x_c + t + delta [B, K, 3] from canonical ones [B, K, 3] and the
    HEEstimator's output `he` ({"yaw", "pitch", "roll"} logits, "t" [B, 3], "exp" [B, 3K]).

    yaw, pitch, roll: degrees [B] that override the estimated ones (the public `free_view`).
    """
    yaw = headpose_pred_to_degree(he["yaw"]) if yaw is None else yaw
    pitch = headpose_pred_to_degree(he["pitch"]) if pitch is None else pitch
    roll = headpose_pred_to_degree(he["roll"]) if roll is None else roll
    return transform_canonical(kp_canonical, yaw, pitch, roll, he["t"], he["exp"])


def transform_canonical(
    kp_canonical: torch.Tensor,
    yaw: torch.Tensor,
    pitch: torch.Tensor,
    roll: torch.Tensor,
    t: torch.Tensor,
    exp: torch.Tensor,
) -> torch.Tensor:
    """x = R x_c + t + delta [B, K, 3]: canonical keypoints [B, K, 3], degrees [B], t [B, 3], exp [B, 3K].

    Closed form (sin, cos, matmul; no inverse), so the mobile receiver exports it as it is.
    """
    rotation = facevid2vid_rotation(yaw, pitch, roll)
    return torch.matmul(kp_canonical, rotation.transpose(1, 2)) + t.unsqueeze(1) + exp.unflatten(1, (-1, 3))


def liveportrait_rotation(pitch: torch.Tensor, yaw: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """LivePortrait's (Rz(roll) Ry(yaw) Rx(pitch))^T [B, 3, 3], from degrees [B] or [B, 1] (math.pi);
    it multiplies row vectors from the right, x R, so the rotation applied is Rz Ry Rx."""
    rot_x, rot_y, rot_z = _rotations(*(angle.reshape(-1) / 180 * math.pi for angle in (pitch, yaw, roll)))
    return (rot_z @ rot_y @ rot_x).transpose(1, 2)

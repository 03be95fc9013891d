"""The procedural talking-head generator: shapes, determinism, ground truth and motion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from compress.data.synthetic import EXPRESSION_NAMES, LANDMARK_NAMES, POSE_NAMES, Clip, render_clip
from compress.errors import CompressError


def _pixel(landmarks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[..., 2] coordinates in [-1, 1] (pixel centres at the ends) -> integer (col, row)."""
    scale = torch.tensor([w - 1, h - 1], dtype=torch.float32)
    return ((landmarks + 1) / 2 * scale).round().long()


def test_clip_has_frames_masks_landmarks_and_pose_of_the_documented_shapes() -> None:
    clip = render_clip(0, 32, 64)
    assert clip.frames.shape == (32, 3, 64, 64)
    assert clip.frames.min() >= 0 and clip.frames.max() <= 1
    assert clip.eye_mask.shape == clip.mouth_mask.shape == (32, 1, 64, 64)
    assert set(clip.eye_mask.unique().tolist()) <= {0.0, 1.0}
    assert clip.landmarks.shape == (32, len(LANDMARK_NAMES), 2)
    assert clip.landmarks.abs().max() <= 1
    assert clip.pose.shape == (32, len(POSE_NAMES))
    assert clip.expression.shape == (32, len(EXPRESSION_NAMES))


def test_same_seed_gives_the_same_clip_and_another_seed_a_different_one() -> None:
    a, b, c = render_clip(7, 4, 32), render_clip(7, 4, 32), render_clip(8, 4, 32)
    assert torch.equal(a.frames, b.frames) and torch.equal(a.landmarks, b.landmarks)
    assert (a.frames - c.frames).abs().mean() > 0.02


def test_a_shorter_clip_is_a_prefix_of_a_longer_one() -> None:
    short, long = render_clip(3, 5, 32), render_clip(3, 12, 32)
    assert torch.allclose(short.frames, long.frames[:5])
    assert torch.allclose(short.landmarks, long.landmarks[:5])


def test_a_wide_clip_shows_the_same_face_with_more_background() -> None:
    square, wide = render_clip(5, 3, (48, 48)), render_clip(5, 3, (48, 80))
    # Offsets from the image centre in pixels are identical: same face, same size.
    square_px = square.landmarks * torch.tensor([47, 47]) / 2
    wide_px = wide.landmarks * torch.tensor([79, 47]) / 2
    assert torch.allclose(square_px, wide_px, atol=1e-4)
    assert torch.allclose(wide.frames[..., 16:64], square.frames, atol=0.03)


def test_256_pixel_clips_render() -> None:
    clip = render_clip(1, 2, 256)
    assert clip.frames.shape == (2, 3, 256, 256)
    assert clip.eye_mask.sum() > 100  # the eyes are large enough to see at this size


@pytest.fixture(scope="module", params=range(3))
def clip_96px(request: pytest.FixtureRequest) -> Clip:
    return render_clip(request.param, 16, 96)


def test_open_eye_landmarks_fall_inside_the_eye_mask(clip_96px: Clip) -> None:
    cols_rows = _pixel(clip_96px.landmarks, 96, 96)
    for t in torch.nonzero(clip_96px.expression[:, 0] > 0.6).flatten().tolist():
        for name in ("left_eye", "right_eye"):
            col, row = cols_rows[t, LANDMARK_NAMES.index(name)].tolist()
            assert clip_96px.eye_mask[t, 0, row, col] == 1, f"frame {t}, {name}"


def test_mouth_landmarks_fall_within_a_pixel_of_the_mouth_mask(clip_96px: Clip) -> None:
    # The lips can be thinner than a pixel at their corners: allow one pixel of rasterisation.
    near_mouth = F.max_pool2d(clip_96px.mouth_mask, 3, stride=1, padding=1)
    cols_rows = _pixel(clip_96px.landmarks, 96, 96)
    for name in ("mouth_left", "mouth_right", "upper_lip", "lower_lip"):
        for t in range(len(cols_rows)):
            col, row = cols_rows[t, LANDMARK_NAMES.index(name)].tolist()
            assert near_mouth[t, 0, row, col] == 1, f"frame {t}, {name}"


@pytest.fixture(scope="module", params=range(3))
def clip_48_frames(request: pytest.FixtureRequest) -> Clip:
    return render_clip(request.param, 48, 64)


def test_eyes_blink_within_48_frames(clip_48_frames: Clip) -> None:
    clip = clip_48_frames
    openness = clip.expression[:, 0]
    area = clip.eye_mask.sum(dim=(1, 2, 3))
    assert openness.min() < 0.3
    assert area[openness.argmin()] < 0.5 * area[openness.argmax()]


def test_mouth_opening_grows_the_mouth_mask(clip_48_frames: Clip) -> None:
    clip = clip_48_frames
    opening = clip.expression[:, 1]
    area = clip.mouth_mask.sum(dim=(1, 2, 3))
    assert opening.max() - opening.min() > 0.5
    assert area[opening.argmax()] > 1.5 * area[opening.argmin()]


def test_head_moves_smoothly(clip_48_frames: Clip) -> None:
    px = _pixel(clip_48_frames.landmarks, 64, 64).float()
    travel = px.amax(0) - px.amin(0)  # per landmark, over the clip
    step = (px[1:] - px[:-1]).abs().amax()
    assert travel.mean() > 4  # pixels: the head really moves
    assert step <= 3  # and never jumps between frames


def test_lighting_changes_over_time() -> None:
    clip = render_clip(2, 64, 32)
    background = clip.frames[:, :, :4, :4].mean(dim=(1, 2, 3))  # a corner of the static wall
    assert background.max() - background.min() > 0.01


def test_too_small_a_size_is_refused() -> None:
    with pytest.raises(CompressError, match="at least 8 pixels"):
        render_clip(0, 2, (4, 64))

"""Reading videos and frame folders: layout, crop/resize, and the errors users will hit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from media_writers import centre_square, gray_ramp, write_empty_mp4, write_frames, write_image, write_mp4

from compress.data.video import find_videos, read_video
from compress.errors import CompressError


def test_mp4_is_decoded_into_resized_frames_in_order(tmp_path: Path) -> None:
    frames = gray_ramp(10, 144, 176)
    video = read_video(write_mp4(tmp_path / "a.mp4", frames), 32)
    assert video.shape == (10, 3, 32, 32) and video.dtype == torch.float32
    expected = torch.from_numpy(frames[:, 0, 0, 0]).float() / 255
    assert torch.allclose(video.mean(dim=(1, 2, 3)), expected, atol=0.02)


def test_mpeg4_codec_is_read_too(tmp_path: Path) -> None:
    video = read_video(write_mp4(tmp_path / "a.mp4", gray_ramp(4, 48, 64), codec="mpeg4"), 16)
    assert video.shape == (4, 3, 16, 16)


@pytest.mark.parametrize("height, width", [(60, 120), (120, 60)])
def test_wide_and_tall_frames_are_cropped_around_the_centre(tmp_path: Path, height: int, width: int) -> None:
    folder = write_frames(tmp_path / "v", np.stack([centre_square(height, width)] * 2))
    video = read_video(folder, 30)
    assert video.shape == (2, 3, 30, 30)
    assert torch.equal(video[:, 1], torch.ones(2, 30, 30))  # only the green square survives
    assert torch.equal(video[:, 0], torch.zeros(2, 30, 30))


def test_non_square_target_crops_to_its_aspect_ratio(tmp_path: Path) -> None:
    frame = np.zeros((80, 80, 3), np.uint8)
    frame[..., 0] = 255
    frame[20:60] = (0, 255, 0)  # a 1:2 target keeps the middle 40 rows: only green
    video = read_video(write_frames(tmp_path / "v", frame[None]), (10, 20))
    assert video.shape == (1, 3, 10, 20)
    assert torch.equal(video[0, 1], torch.ones(10, 20))


def test_jpg_frame_folder_is_one_video_sorted_by_name(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "v", gray_ramp(3, 24, 24), suffix=".jpg")
    video = read_video(folder, 8)
    assert video.shape == (3, 3, 8, 8)
    assert video[0].mean() < video[1].mean() < video[2].mean()


def test_fomm_layout_lists_each_split(tmp_path: Path) -> None:
    write_frames(tmp_path / "train" / "a", gray_ramp(2, 32, 32))
    write_mp4(tmp_path / "train" / "b.mp4", gray_ramp(2, 32, 32))
    (tmp_path / "train" / "notes.txt").write_text("not a video")
    write_frames(tmp_path / "test" / "c", gray_ramp(2, 32, 32))
    assert find_videos(tmp_path, "train") == [tmp_path / "train" / "a", tmp_path / "train" / "b.mp4"]
    assert find_videos(tmp_path, "test") == [tmp_path / "test" / "c"]


def test_a_single_video_file_serves_every_split(tmp_path: Path) -> None:
    video = write_mp4(tmp_path / "one.mp4", gray_ramp(2, 32, 32))
    assert find_videos(video, "train") == find_videos(video, "test") == [video]


def test_a_single_folder_of_frames_serves_every_split(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "clip", gray_ramp(2, 16, 16))
    assert find_videos(folder, "train") == find_videos(folder, "test") == [folder]


def test_empty_split_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(CompressError, match=rf"no videos in {tmp_path / 'train'}: expected .mp4 files"):
        find_videos(tmp_path, "train")


def test_folder_without_fomm_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    with pytest.raises(CompressError, match="FOMM layout"):
        find_videos(tmp_path, "train")


def test_unreadable_video_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 10)
    with pytest.raises(CompressError, match=rf"{bad}: cannot read this video"):
        read_video(bad, 16)


def test_zero_frame_video_is_named(tmp_path: Path) -> None:
    empty = write_empty_mp4(tmp_path / "empty.mp4")
    with pytest.raises(CompressError, match=rf"{empty}: video has no frames"):
        read_video(empty, 16)


def test_frames_of_mixed_size_are_named(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "v", gray_ramp(2, 32, 32))
    write_image(folder / "00002.png", gray_ramp(1, 32, 48)[0])
    with pytest.raises(CompressError, match=rf"{folder}: frames of different sizes \(32x32 then 48x32 at 00002.png\)"):
        read_video(folder, 16)

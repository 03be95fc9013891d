"""Reading face videos: FOMM dataset layout, video files and folders of frames, via PyAV.

A video is one file (.mp4 and other containers FFmpeg reads) or one folder of .png/.jpg
frames, sorted by name. Frames are centre-cropped to the target aspect ratio (a square for
the usual square input) and resized with an anti-aliased bilinear filter, in chunks so a
long high-resolution video never sits in memory at full size.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from compress.errors import CompressError

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".mkv", ".webm", ".gif"})
FRAME_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
_CHUNK = 32  # frames resized at once


def find_videos(root: str | Path, split: str) -> list[Path]:
    """The videos of `split` ("train" or "test") under a FOMM-layout folder, or [root] for one video.

    `root` may be a video file, a folder of frames (one video), or a folder holding
    `train/` and `test/`, each with video files or folders of frames.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise CompressError(f"{root}: video or dataset folder not found")
    if _frame_files(root):
        return [root]
    folder = root / split
    if not folder.is_dir():
        raise CompressError(
            f"{root}: expected the FOMM layout ({root}/train and {root}/test holding .mp4 files or "
            f"folders of .png/.jpg frames), a folder of frames, or a video file; {folder} is missing"
        )
    videos = sorted(p for p in folder.iterdir() if _is_video(p))
    if not videos:
        raise CompressError(f"no videos in {folder}: expected .mp4 files or folders of .png/.jpg frames")
    return videos


def read_video(path: str | Path, size: int | tuple[int, int]) -> torch.Tensor:
    """All frames of a video file or frame folder -> [T, 3, H, W] float in [0, 1].

    Frames are centre-cropped to the aspect ratio of `size` (H, W), then resized to it.
    """
    return read_video_uint8(path, size).float() / 255


def read_video_uint8(path: str | Path, size: int | tuple[int, int]) -> torch.Tensor:
    """Like `read_video`, as [T, 3, H, W] uint8 (a quarter of the memory, for caching)."""
    path = Path(path)
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    frames = _decode_folder(path) if path.is_dir() else _decode_file(path)
    chunks, shape, chunk = [], None, []
    for name, frame in frames:
        if shape is None:
            shape = frame.shape
        elif frame.shape != shape:
            raise CompressError(
                f"{path}: frames of different sizes ({_wh(shape)} then {_wh(frame.shape)} at {name}); "
                "every frame of one video must have the same size"
            )
        chunk.append(frame)
        if len(chunk) == _CHUNK:
            chunks.append(_crop_resize(chunk, h, w))
            chunk = []
    if chunk:
        chunks.append(_crop_resize(chunk, h, w))
    if not chunks:
        raise CompressError(f"{path}: video has no frames")
    return torch.cat(chunks)


def frame_rate(path: str | Path) -> Fraction | None:
    """Frames per second of a video file's first video stream; None for frame folders and
    files that do not state it."""
    path = Path(path)
    if path.is_dir():
        return None
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate if container.streams.video else None
    except av.FFmpegError as exc:
        raise CompressError(f"{path}: cannot read this video ({exc}); is it a valid video file?") from None
    return Fraction(rate) if rate else None


def _is_video(path: Path) -> bool:
    if path.is_dir():
        return bool(_frame_files(path))
    return path.suffix.lower() in VIDEO_SUFFIXES


def _frame_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES)


def _wh(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _decode_file(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(frame label, HxWx3 uint8 RGB) for every frame of the first video stream."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CompressError(f"{path}: video has no frames (the file holds no video stream)")
            for i, frame in enumerate(container.decode(container.streams.video[0])):
                yield f"frame {i}", frame.to_ndarray(format="rgb24")
    except av.FFmpegError as exc:
        raise CompressError(f"{path}: cannot read this video ({exc}); is it a valid video file?") from None


def _decode_folder(folder: Path) -> Iterator[tuple[str, np.ndarray]]:
    files = _frame_files(folder)
    if not files:
        raise CompressError(f"{folder}: no .png/.jpg frames in this folder")
    for f in files:
        try:
            with av.open(str(f)) as container:
                frame = next(container.decode(video=0), None)
        except av.FFmpegError as exc:
            raise CompressError(f"{f}: cannot read this image ({exc})") from None
        if frame is None:
            raise CompressError(f"{f}: image has no picture")
        yield f.name, frame.to_ndarray(format="rgb24")


def _crop_resize(frames: list[np.ndarray], h: int, w: int) -> torch.Tensor:
    """Centre crop HxWx3 uint8 frames to the aspect h:w, resize to (h, w) -> [N, 3, h, w] uint8."""
    fh, fw = frames[0].shape[:2]
    if fw * h > fh * w:  # too wide: keep the full height
        cw = max(1, round(fh * w / h))
        x0, y0, ch = (fw - cw) // 2, 0, fh
    else:
        ch = max(1, round(fw * h / w))
        x0, y0, cw = 0, (fh - ch) // 2, fw
    batch = torch.from_numpy(np.stack([f[y0 : y0 + ch, x0 : x0 + cw] for f in frames]))
    batch = batch.permute(0, 3, 1, 2).float()
    if (ch, cw) != (h, w):
        batch = F.interpolate(batch, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return batch.round_().clamp_(0, 255).to(torch.uint8)

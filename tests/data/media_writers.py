"""Write real video files and frame images with PyAV for the data tests."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def write_mp4(path: Path, frames: np.ndarray, codec: str = "libx264", fps: int = 10) -> Path:
    """frames [T, H, W, 3] uint8 RGB -> an H.264 (or `codec`) .mp4 at `path`."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def write_empty_mp4(path: Path) -> Path:
    """A valid .mp4 container whose video track got no frames."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuv420p"
        out.start_encoding()
    return path


def write_image(path: Path, frame: np.ndarray) -> Path:
    """frame [H, W, 3] uint8 RGB -> .png or .jpg (by suffix) at `path`."""
    codec = "png" if path.suffix == ".png" else "mjpeg"
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream(codec)
        stream.height, stream.width = frame.shape[:2]
        stream.pix_fmt = "rgb24" if codec == "png" else "yuvj444p"
        out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path


def write_frames(folder: Path, frames: np.ndarray, suffix: str = ".png") -> Path:
    """A folder of numbered frame images, one video in the FOMM png layout."""
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        write_image(folder / f"{i:05d}{suffix}", frame)
    return folder


def gray_ramp(count: int, height: int, width: int) -> np.ndarray:
    """[T, H, W, 3] uint8 frames of uniform grey, frame k brighter than frame k-1."""
    levels = np.linspace(40, 220, count).round().astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (count, height, width, 3)).copy()


def centre_square(height: int, width: int) -> np.ndarray:
    """[H, W, 3] uint8: the centred min(H, W) square green, the bands outside it red."""
    frame = np.zeros((height, width, 3), np.uint8)
    frame[..., 0] = 255
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    frame[y0 : y0 + side, x0 : x0 + side] = (0, 255, 0)
    return frame

"""What a person looks at after a call: the received video, and a side-by-side preview
(camera | received | classical codec) as an mp4 and as a PNG strip of a few frames."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from compress.checkpoints import atomic_path

VIEW_CRF = 12  # near-transparent: the preview must show the call's artefacts, not its own
STRIP_FRAMES = 6


def write_video(path: Path, frames: np.ndarray, fps: Fraction) -> Path:
    """[T, H, W, 3] uint8 RGB -> an H.264 .mp4 (odd sizes padded by one edge pixel)."""
    frames = _even(frames)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(VIEW_CRF)}
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            container.mux(stream.encode())
    return path


def write_preview(video: Path, png: Path, columns: list[tuple[str, np.ndarray]], fps: Fraction) -> None:
    """Columns of equally long [T, H, W, 3] uint8 clips side by side: an mp4, and a PNG whose
    rows are the columns' labels and whose columns are frames spread over the clip."""
    write_video(video, np.concatenate([frames for _, frames in columns], axis=2), fps)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(columns[0][1])
    picks = np.linspace(0, count - 1, min(STRIP_FRAMES, count)).round().astype(int)
    fig, axes = plt.subplots(len(columns), len(picks), figsize=(1.6 * len(picks), 1.7 * len(columns)), squeeze=False)
    for row, (label, frames) in enumerate(columns):
        for col, index in enumerate(picks):
            ax = axes[row][col]
            ax.imshow(frames[index])
            ax.set_xticks([]), ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label, fontsize=7)
            if row == 0:
                ax.set_title(f"frame {index}", fontsize=7)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _even(frames: np.ndarray) -> np.ndarray:
    """H.264 in 4:2:0 needs even sides: repeat the last row / column when one is odd."""
    h, w = frames.shape[1:3]
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")

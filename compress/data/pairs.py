"""(source, driving) frame pairs for training, calibration and evaluation.

Every item is two frames of the same video, as FOMM trains: the model must redraw the
driving frame from the source frame and the motion between them. A source is "synthetic"
(procedural talking heads, `compress.data.synthetic`) or a video dataset
(`compress.data.video`). Splits: "train" and "calibration" use the training videos
(FOMM layout `train/`; for synthetic data, the training seeds), "test" and "eval" the
held-out ones (`test/`; seeds disjoint from training).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from compress.data.synthetic import render_clip
from compress.data.video import find_videos, read_video_uint8
from compress.errors import CompressError

SPLITS = ("train", "calibration", "test", "eval")
HELD_OUT = frozenset({"test", "eval"})
SYNTHETIC = "synthetic"
_MAX_CLIPS = 2**20  # synthetic clips per split; keeps the seed ranges of splits disjoint


def synthetic_clip_seed(seed: int, held_out: bool, index: int) -> int:
    """Seed of synthetic clip `index`: training and held-out seeds never coincide (even vs odd)."""
    return (seed * _MAX_CLIPS + index) * 2 + int(held_out)


class ClipStore:
    """The clips of one split, decoded or rendered on first use and kept in an LRU cache.

    `store[v]` is a dict: "frames" [T,3,H,W] uint8 and, for synthetic clips, "eye_mask",
    "mouth_mask" [T,1,H,W] bool, "landmarks" [T,L,2] float and "pose" [T,6] float.
    """

    def __init__(
        self,
        source: str | Path,
        split: str,
        size: int | tuple[int, int],
        seed: int = 0,
        synthetic_clips: int = 32,
        frames_per_clip: int = 32,
        cache_clips: int = 64,
    ) -> None:
        if split not in SPLITS:
            raise CompressError(f"data split {split!r}: expected one of {', '.join(SPLITS)}")
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.synthetic = str(source) == SYNTHETIC
        self.held_out = split in HELD_OUT
        if self.synthetic:
            if not 1 <= synthetic_clips <= _MAX_CLIPS or seed < 0:
                raise CompressError(
                    f"synthetic data: need 1..{_MAX_CLIPS} clips and seed >= 0 "
                    f"(got clips={synthetic_clips}, seed={seed})"
                )
            self.names = [f"synthetic:{synthetic_clip_seed(seed, self.held_out, k)}" for k in range(synthetic_clips)]
            self.videos: list[Path] = []
        else:
            self.videos = find_videos(source, "test" if self.held_out else "train")
            self.names = [str(p) for p in self.videos]
        self.seed, self.frames_per_clip, self.cache_clips = seed, frames_per_clip, cache_clips
        self._cache: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, v: int) -> dict[str, torch.Tensor]:
        if v in self._cache:
            self._cache.move_to_end(v)
            return self._cache[v]
        clip = self._load(v)
        self._cache[v] = clip
        if len(self._cache) > self.cache_clips:
            self._cache.popitem(last=False)
        return clip

    def _load(self, v: int) -> dict[str, torch.Tensor]:
        if not self.synthetic:
            return {"frames": read_video_uint8(self.videos[v], self.size)}
        clip = render_clip(synthetic_clip_seed(self.seed, self.held_out, v), self.frames_per_clip, self.size)
        return {
            "frames": (clip.frames * 255).round().to(torch.uint8),
            "eye_mask": clip.eye_mask.bool(),
            "mouth_mask": clip.mouth_mask.bool(),
            "landmarks": clip.landmarks,
            "pose": clip.pose,
        }


class PairDataset(Dataset):
    """`samples` (source, driving) pairs; item i is fixed by (seed, split, i).

    Item i comes from video i % (number of videos), its two frames drawn (distinct when
    the video has two or more) by a generator seeded with (seed, split, i). Items are dicts:
    "source", "driving" [3,H,W] float in [0,1], "video" int, and for synthetic data
    "driving_eye_mask", "driving_mouth_mask" [1,H,W] float in {0,1} and
    "source_landmarks", "driving_landmarks" [L,2], "source_pose", "driving_pose" [6] (yaw, pitch,
    roll in radians, tx, ty, scale: `compress.data.synthetic.POSE_NAMES`). `clip_options` (synthetic_clips,
    frames_per_clip, cache_clips) go to the `ClipStore`.
    """

    def __init__(
        self,
        source: str | Path,
        split: str,
        size: int | tuple[int, int],
        seed: int = 0,
        samples: int = 1000,
        **clip_options: int,
    ) -> None:
        if samples < 1:
            raise CompressError(f"data samples={samples}: must be at least 1")
        self.clips = ClipStore(source, split, size, seed, **clip_options)
        self.split, self.seed, self.samples = split, seed, samples

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        if not 0 <= i < self.samples:
            raise IndexError(f"pair {i} out of range 0..{self.samples - 1}")
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), i])
        v = i % len(self.clips)
        clip = self.clips[v]
        count = clip["frames"].shape[0]
        src, drv = (int(k) for k in rng.choice(count, size=2, replace=count < 2))
        return {**_pair(clip, src, drv), "video": v}


def first_frame_protocol(
    source: str | Path,
    split: str = "test",
    size: int | tuple[int, int] = 256,
    *,
    seed: int = 0,
    batch_size: int = 16,
    synthetic_clips: int = 8,
    frames_per_clip: int = 32,
    max_videos: int | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """FOMM's reconstruction evaluation: per video, its first frame drives every later frame.

    Yields batches (at most `batch_size`, never mixing videos) with the keys of a
    `PairDataset` item stacked, plus "frame" (driving frame index). A one-frame video
    yields nothing. Videos are decoded one at a time (nothing is cached).
    """
    if batch_size < 1:
        raise CompressError(f"batch_size={batch_size}: must be at least 1")
    clips = ClipStore(source, split, size, seed, synthetic_clips, frames_per_clip, cache_clips=0)
    for v in range(len(clips) if max_videos is None else min(max_videos, len(clips))):
        clip = clips[v]
        count = clip["frames"].shape[0]
        for start in range(1, count, batch_size):
            drv = torch.arange(start, min(start + batch_size, count))
            pair = _pair(clip, torch.zeros_like(drv), drv)
            yield {**pair, "video": torch.full((len(drv),), v), "frame": drv}


def _pair(clip: dict[str, torch.Tensor], src: int | torch.Tensor, drv: int | torch.Tensor) -> dict[str, torch.Tensor]:
    """Frames `src` and `drv` of a clip (ints: one pair; index tensors: a batch) with their ground truth."""
    frames = clip["frames"]
    pair = {"source": frames[src].float() / 255, "driving": frames[drv].float() / 255}
    if "landmarks" in clip:
        pair["driving_eye_mask"] = clip["eye_mask"][drv].float()
        pair["driving_mouth_mask"] = clip["mouth_mask"][drv].float()
        pair["source_landmarks"] = clip["landmarks"][src].clone()  # not a view into the cache
        pair["driving_landmarks"] = clip["landmarks"][drv].clone()
        pair["source_pose"] = clip["pose"][src].clone()
        pair["driving_pose"] = clip["pose"][drv].clone()
    return pair

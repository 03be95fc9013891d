"""Training and evaluation data: procedural talking heads, face videos, (source, driving) pairs."""

from compress.data.pairs import SPLITS, ClipStore, PairDataset, first_frame_protocol
from compress.data.synthetic import EXPRESSION_NAMES, LANDMARK_NAMES, POSE_NAMES, Clip, render_clip
from compress.data.video import find_videos, read_video

__all__ = [
    "EXPRESSION_NAMES",
    "LANDMARK_NAMES",
    "POSE_NAMES",
    "SPLITS",
    "Clip",
    "ClipStore",
    "PairDataset",
    "find_videos",
    "first_frame_protocol",
    "read_video",
    "render_clip",
]

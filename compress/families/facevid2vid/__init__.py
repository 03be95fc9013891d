"""face-vid2vid family, teacher half: the public vox-256 re-implementation's and LivePortrait's networks,
key-compatible with their checkpoints (not yet a registered Family: the mobile student comes next)."""

from compress.families.facevid2vid.checkpoints import (
    build_teacher,
    claims,
    load_facevid2vid_teacher,
    read_checkpoint,
    teacher_state_dict,
)
from compress.families.facevid2vid.configs import TEACHER_CONFIGS, teacher_config
from compress.families.facevid2vid.liveportrait import LivePortraitModel
from compress.families.facevid2vid.teacher import FaceVid2VidModel

__all__ = [
    "TEACHER_CONFIGS",
    "FaceVid2VidModel",
    "LivePortraitModel",
    "build_teacher",
    "claims",
    "load_facevid2vid_teacher",
    "read_checkpoint",
    "teacher_config",
    "teacher_state_dict",
]

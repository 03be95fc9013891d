"""Small face-vid2vid and LivePortrait teacher configs: every network of the full ones, at 32x32 and a few channels.

The public-parity reference (data/public_reference.npz) was produced on these.
"""

from __future__ import annotations

import copy
from typing import Any

TINY_SPADE: dict[str, Any] = {
    "kind": "teacher",
    "variant": "facevid2vid",
    "generator": "spade",
    "common_params": {"num_kp": 4, "image_channel": 3, "feature_channel": 8, "estimate_jacobian": False},
    "kp_detector_params": {
        "temperature": 0.1,
        "block_expansion": 4,
        "max_features": 32,
        "scale_factor": 0.5,
        "num_blocks": 2,
        "reshape_channel": 64,
        "reshape_depth": 4,
    },
    "he_estimator_params": {"block_expansion": 8, "max_features": 64, "num_bins": 66},
    "generator_params": {
        "block_expansion": 8,
        "max_features": 32,
        "num_down_blocks": 2,
        "reshape_channel": 8,
        "reshape_depth": 4,
        "num_resblocks": 1,
        "estimate_occlusion_map": True,
        "dense_motion_params": {
            "block_expansion": 4,
            "max_features": 16,
            "num_blocks": 2,
            "reshape_depth": 4,
            "compress": 2,
        },
    },
}


def tiny_original() -> dict[str, Any]:
    """TINY_SPADE with the original generator, 3 keypoints and no keypoint-detector downsampling."""
    config = copy.deepcopy(TINY_SPADE)
    config["generator"] = "original"
    config["common_params"]["num_kp"] = 3
    config["kp_detector_params"]["scale_factor"] = 1
    config["generator_params"]["num_resblocks"] = 2
    return config


TINY_LIVEPORTRAIT: dict[str, Any] = {
    "kind": "teacher",
    "variant": "liveportrait",
    "appearance_feature_extractor_params": {
        "image_channel": 3,
        "block_expansion": 8,
        "num_down_blocks": 2,
        "max_features": 32,
        "reshape_channel": 8,
        "reshape_depth": 4,
        "num_resblocks": 1,
    },
    "motion_extractor_params": {
        "num_kp": 4,
        "backbone": "convnextv2_tiny",
        "depths": [1, 1, 2, 1],
        "dims": [8, 16, 24, 32],
    },
    "warping_module_params": {
        "num_kp": 4,
        "block_expansion": 8,
        "max_features": 32,
        "num_down_blocks": 2,
        "reshape_channel": 8,
        "estimate_occlusion_map": True,
        "dense_motion_params": {
            "block_expansion": 4,
            "max_features": 16,
            "num_blocks": 2,
            "reshape_depth": 4,
            "compress": 2,
        },
    },
    "spade_generator_params": {"upscale": 2, "block_expansion": 8, "max_features": 32, "num_down_blocks": 2},
    "stitching_retargeting_module_params": {
        "stitching": {"input_size": 24, "hidden_sizes": [16, 16], "output_size": 14},
        "lip": {"input_size": 14, "hidden_sizes": [16], "output_size": 12},
        "eye": {"input_size": 15, "hidden_sizes": [16, 8], "output_size": 12},
    },
}


TINY_ORIGINAL = tiny_original()

"""Same weights, same outputs as the public face-vid2vid and LivePortrait code.

data/public_reference.npz holds, per small config, the config, the SHA-256 of the weights (from
weights.fill_deterministic, so none are stored), the inputs and every output of the public
modules run on those weights; produced outside the repo, see docs/models/facevid2vid.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.families.facevid2vid import build_teacher
from compress.families.facevid2vid.he_estimator import HEEstimator
from compress.families.facevid2vid.pose import (
    LIVEPORTRAIT_BIN_OFFSET,
    facevid2vid_rotation,
    headpose_pred_to_degree,
    liveportrait_rotation,
)
from tests.families.facevid2vid.weights import fill_deterministic

DATA = Path(__file__).parent / "data"
Outputs = dict[str, torch.Tensor]


def reference(tag: str) -> tuple[dict, str, Outputs, Outputs]:
    """(config, weights digest, inputs, expected outputs) of one tag."""
    with np.load(DATA / "public_reference.npz") as ref:
        arrays = {k.removeprefix(f"{tag}/"): ref[k] for k in ref.files if k.startswith(f"{tag}/")}
    config = json.loads(str(arrays.get("config", "{}")))
    digest = str(arrays.get("weights_sha256", ""))
    inputs = {k.removeprefix("input/"): torch.from_numpy(v) for k, v in arrays.items() if k.startswith("input/")}
    expected = {k.removeprefix("output/"): torch.from_numpy(v) for k, v in arrays.items() if k.startswith("output/")}
    return config, digest, inputs, expected


def weights_digest(model: torch.nn.Module) -> str:
    import hashlib

    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def deterministic(model: torch.nn.Module) -> torch.nn.Module:
    return fill_deterministic(model).eval()


def facevid2vid_protocol(model, inputs: Outputs) -> Outputs:
    """The public demo.py's calls: canonical keypoints of the source, both transformed, the generator."""
    he = {
        side: {k.split(".")[1]: v for k, v in inputs.items() if k.startswith(f"{side}.")}
        for side in ("he_source", "he_driving")
    }
    kp_canonical = model.kp_detector(inputs["source"])
    kp_source = model.transform_keypoints(kp_canonical, he["he_source"])
    kp_driving = model.transform_keypoints(kp_canonical, he["he_driving"])
    out = model.generator(inputs["source"], kp_source=kp_source, kp_driving=kp_driving)
    return {
        "kp_canonical": kp_canonical["value"],
        "kp_source": kp_source["value"],
        "kp_driving": kp_driving["value"],
        **out,
    }


def liveportrait_protocol(model, inputs: Outputs) -> Outputs:
    """LivePortrait's wrapper calls, as its pipeline chains them."""
    feature_3d = model.extract_feature_3d(inputs["source"])
    info_source, info_driving = model.get_kp_info(inputs["source"]), model.get_kp_info(inputs["driving"])
    x_s, x_d = model.transform_keypoint(info_source), model.transform_keypoint(info_driving)
    x_d_stitched = model.stitching(x_s, x_d)
    decoded = model.warp_decode(feature_3d, x_s, x_d_stitched)
    return {
        "feature_3d": feature_3d,
        **{f"kp_info_source.{k}": v for k, v in info_source.items()},
        **{f"kp_info_driving.{k}": v for k, v in info_driving.items()},
        "x_s": x_s,
        "x_d": x_d,
        "x_d_stitched": x_d_stitched,
        **{f"warp_decode.{k}": v for k, v in decoded.items()},
        "retarget_eye": model.retarget_eye(x_s, inputs["eye_close_ratio"]),
        "retarget_lip": model.retarget_lip(x_s, inputs["lip_close_ratio"]),
    }


def assert_matches(run: Callable[..., Outputs], model: torch.nn.Module, inputs: Outputs, expected: Outputs) -> None:
    """Every expected output within the float32 rounding bound of `test_fomm_teacher`, and 1e-4 relative.

    Both sides are float32 runs of one computation whose kernels round differently: each is off
    the exact result by about this machine's float32 error (measured against a float64 run), so
    four times it, with a floor of a few float32 ulps, bounds an implementation that computes the
    same function.
    """
    with torch.no_grad():
        out = run(model, inputs)
        exact = run(model.double(), {k: v.double() for k, v in inputs.items()})
    missing = set(expected) - set(out)
    assert not missing, f"outputs the public code has and ours lacks: {sorted(missing)}"
    for name, value in expected.items():
        scale = float(exact[name].abs().max())
        rounding = float((out[name].double() - exact[name]).abs().max()) / scale
        bound = min(max(4 * rounding, 1e-6), 1e-4)
        rel = float((out[name].double() - value.double()).abs().max()) / scale
        assert rel <= bound, f"{name}: relative error {rel:.2e} > {bound:.2e} (float32 rounding here {rounding:.2e})"


@pytest.mark.parametrize("tag", ["spade", "original"])
def test_facevid2vid_matches_the_public_code_on_the_same_weights(tag):
    config, digest, inputs, expected = reference(tag)
    model = deterministic(build_teacher(config))
    assert weights_digest(model) == digest, "weights.fill_deterministic no longer gives the reference's weights"
    assert_matches(facevid2vid_protocol, model, inputs, expected)


def test_liveportrait_matches_the_public_wrapper_on_the_same_weights():
    config, digest, inputs, expected = reference("liveportrait")
    model = deterministic(build_teacher(config))
    assert weights_digest(model) == digest, "weights.fill_deterministic no longer gives the reference's weights"
    assert_matches(liveportrait_protocol, model, inputs, expected)


def test_full_size_he_estimator_matches_the_public_one():
    # The public HEEstimator hard-codes its widths: checked at full size (30 M parameters) on 64x64 frames.
    config, digest, inputs, expected = reference("he_estimator")
    model = deterministic(HEEstimator(**config["args"]))
    assert weights_digest(model) == digest
    assert_matches(lambda m, x: m(x["image"]), model, inputs, expected)


def test_pose_conventions_match_the_public_functions():
    _, _, inputs, expected = reference("pose")
    yaw, pitch, roll, logits = inputs["yaw"], inputs["pitch"], inputs["roll"], inputs["logits"]
    torch.testing.assert_close(facevid2vid_rotation(yaw, pitch, roll), expected["facevid2vid"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(liveportrait_rotation(pitch, yaw, roll), expected["liveportrait"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(headpose_pred_to_degree(logits), expected["facevid2vid_degrees"])
    torch.testing.assert_close(
        headpose_pred_to_degree(logits, LIVEPORTRAIT_BIN_OFFSET), expected["liveportrait_degrees"]
    )

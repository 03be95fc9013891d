"""On-device bundles: one app runs every part (the generic family's restoration net), with assets."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from tiny_call import FRAME
from tiny_call import TASK as CALL_TASK
from torch import nn

from compress.bundle import load_manifest, verify_bundle
from compress.bundle.manifest import wire_app_input
from compress.bundle.stage import ShippedFile, write_bundle
from compress.errors import CompressError
from compress.families.base import Part, TensorSpec
from compress.families.task import Asset
from compress.run import sha256_file

TABLE = np.arange(24, dtype=np.float32).reshape(6, 4) / 7  # e.g. a [V, D] vertex-embedding table
FACES = np.arange(9, dtype=np.int32).reshape(3, 3)


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _with_table(restore, tmp_path: Path, **overrides: object) -> Path:
    out = tmp_path / "b"
    assets = [Asset("vertex_embedding", TABLE, "one row per mesh vertex", {"mesh": "test"})]
    write_bundle(out, restore.source(assets=assets, **overrides))
    return out


def test_an_on_device_bundle_of_the_generic_family_builds_and_verifies(app_bundle: Path) -> None:
    assert verify_bundle(app_bundle)["ok"]
    m = load_manifest(app_bundle)
    assert (m.flow, m.task.primary_metric, [x.name for x in m.task.metrics]) == (
        "on_device",
        "psnr",
        ["psnr", "l1", "ssim"],
    )
    assert [(p.name, p.role, p.cadence) for p in m.parts] == [("net", "app", "per_frame")]
    assert m.parts[0].inputs[0].feed.model_dump(exclude_none=True) == {"source": "app_input"}
    assert sorted(p.name for p in (app_bundle / "snippets").iterdir()) == ["OnDevice.kt", "on_device.py"]


def test_the_manifest_says_each_metric_s_unit_and_direction(app_bundle: Path) -> None:
    task = json.loads((app_bundle / "manifest.json").read_text())["task"]
    assert task["description"] == "restore a frame from a noisy, blurred copy"
    assert [(x["name"], x["unit"], x["higher_is_better"], x["against"]) for x in task["metrics"]] == [
        ("psnr", "dB", True, ["ground_truth", "teacher"]),
        ("l1", "", False, ["ground_truth", "teacher"]),
        ("ssim", "", True, ["ground_truth", "teacher"]),
    ]


def test_app_parts_in_a_video_call_bundle_are_refused(restore, tmp_path: Path) -> None:
    with pytest.raises(
        CompressError,
        match=r"part 'net' has role 'app', which video_call bundles do not have \(roles: sender, receiver\)",
    ):
        write_bundle(tmp_path / "b", restore.source(task=CALL_TASK))
    assert not (tmp_path / "b").exists()


def test_sender_and_receiver_parts_in_an_on_device_bundle_are_all_refused(tiny, restore, tmp_path: Path) -> None:
    with pytest.raises(CompressError) as err:
        write_bundle(tmp_path / "b", tiny.source(task=restore.task))
    for part, role in [
        ("kp_detector", "sender"),
        ("generator.per_call", "receiver"),
        ("generator.per_frame", "receiver"),
    ]:
        assert f"part {part!r} has role {role!r}, which on_device bundles do not have (roles: app)" in str(err.value)


def test_an_input_is_fed_by_an_earlier_part_s_same_named_output_or_by_the_app() -> None:
    image, features = TensorSpec("image", FRAME), TensorSpec("features", (1, 8), value_range=None)
    encoder = Part("encoder", "app", "per_call", nn.Identity(), [image], [features])
    head = Part("head", "app", "per_frame", nn.Identity(), [image, features], [TensorSpec("output", FRAME)])
    parts = [head, encoder]  # per-call parts run first, wherever the family lists them
    assert wire_app_input(head, features, parts).model_dump(exclude_none=True) == {
        "source": "part_output",
        "part": "encoder",
        "output": "features",
    }
    assert wire_app_input(head, image, parts).model_dump(exclude_none=True) == {"source": "app_input"}


def test_a_part_cannot_take_the_output_of_a_part_that_runs_after_it() -> None:
    features = TensorSpec("features", (1, 8), value_range=None)
    setup = Part("setup", "app", "per_call", nn.Identity(), [features], [])
    tracker = Part("tracker", "app", "per_frame", nn.Identity(), [TensorSpec("image", FRAME)], [features])
    with pytest.raises(
        CompressError, match=r"'setup' input 'features' is 'tracker''s output, but 'tracker' runs after it"
    ):
        wire_app_input(setup, features, [tracker, setup])


def test_an_asset_is_listed_with_its_sha256_dtype_and_shape(restore, tmp_path: Path) -> None:
    bundle = _with_table(restore, tmp_path)
    [entry] = json.loads((bundle / "manifest.json").read_text())["assets"]
    assert entry == {
        "path": "assets/vertex_embedding.bin",
        "sha256": sha256_file(bundle / "assets" / "vertex_embedding.bin"),
        "bytes": 96,
        "name": "vertex_embedding",
        "dtype": "float32",
        "shape": [6, 4],
        "description": "one row per mesh vertex",
        "meta": {"mesh": "test"},
    }
    assert verify_bundle(bundle)["files"] == 5  # model, asset, card, 2 snippets


def test_assets_are_raw_little_endian_c_order_whatever_the_array_s_layout(restore, tmp_path: Path) -> None:
    big_endian_transposed = np.asfortranarray(TABLE.astype(">f4"))
    write_bundle(tmp_path / "b", restore.source(assets=[Asset("vertex_embedding", big_endian_transposed)], snippets=[]))
    assert (tmp_path / "b" / "assets" / "vertex_embedding.bin").read_bytes() == TABLE.astype("<f4").tobytes(order="C")


def test_a_tampered_asset_fails_verify_naming_the_file(restore, tmp_path: Path) -> None:
    bundle = _with_table(restore, tmp_path)
    asset = bundle / "assets" / "vertex_embedding.bin"
    expected = sha256_file(asset)
    asset.write_bytes(asset.read_bytes()[:-4] + np.float32(1e6).tobytes())
    with pytest.raises(CompressError) as err:
        verify_bundle(bundle)
    assert f"assets/vertex_embedding.bin: sha256 mismatch: expected {expected}, actual {sha256_file(asset)}" in str(
        err.value
    )


def test_an_asset_whose_bytes_do_not_fit_its_shape_is_a_schema_error(restore, tmp_path: Path) -> None:
    bundle = _with_table(restore, tmp_path)
    data = json.loads((bundle / "manifest.json").read_text())
    data["assets"][0]["shape"] = [6, 5]
    (bundle / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(CompressError, match=r"asset 'vertex_embedding' has 96 bytes, but float32 \[6, 5\] takes 120"):
        load_manifest(bundle)


def test_on_device_python_snippet_runs_against_the_bundle(app_bundle: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(app_bundle / "snippets" / "on_device.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"output": [1, 3, 32, 32]}


def test_on_device_python_snippet_restores_what_the_torch_model_restores(app_bundle: Path, restore) -> None:
    snippet = _import(app_bundle / "snippets" / "on_device.py")
    frame = snippet.frame_from_rgb(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    model = snippet.OnDeviceModel()
    model.start({})
    restored = model.run({"image": frame})["output"]

    net = restore.parts[0].module
    with torch.no_grad():
        expected = net(torch.from_numpy(frame))[0].double()
        exact = copy.deepcopy(net).double()(torch.from_numpy(frame).double())[0]
    # onnxruntime and torch are float32 runs of one computation whose kernels round differently:
    # each is off the exact (float64) result by about torch's float32 error measured here, so four
    # times it, floored at a few float32 ulps of the [0, 1] output, bounds a faithful export.
    bound = max(4 * float((expected - exact).abs().max()), 1e-6)
    assert float((torch.from_numpy(restored).double() - expected).abs().max()) <= bound


def test_on_device_python_snippet_loads_each_asset_with_its_dtype_and_shape(restore, tmp_path: Path) -> None:
    assets = [Asset("vertex_embedding", TABLE), Asset("faces", FACES)]
    write_bundle(tmp_path / "b", restore.source(assets=assets, snippets=["python"]))
    loaded = _import(tmp_path / "b" / "snippets" / "on_device.py").OnDeviceModel().assets
    assert sorted(loaded) == ["faces", "vertex_embedding"]
    for asset in assets:
        assert loaded[asset.name].dtype == asset.array.dtype
        np.testing.assert_array_equal(loaded[asset.name], asset.array)


def test_kotlin_and_swift_on_device_snippets_use_the_manifest_names(restore, tmp_path: Path) -> None:
    package = tmp_path / "net.mlpackage"  # any folder: the Swift snippet only names the package
    package.mkdir()
    (package / "Manifest.json").write_text("{}")
    files = {"net": {"onnx": ShippedFile(restore.onnx["net"], "fp32"), "coreml": ShippedFile(package, "fp16")}}
    bundle = _with_table(restore, tmp_path, files=files, snippets=["swift", "kotlin", "python"])
    kotlin, swift = ((bundle / "snippets" / name).read_text() for name in ("OnDevice.kt", "OnDevice.swift"))
    assert 'private val net = loadModel(context, "models/net.onnx")' in kotlin
    assert 'values += net.infer(mapOf("image" to inputs.getValue("image")))' in kotlin
    assert '"vertex_embedding" to loadAsset(context, "assets/vertex_embedding.bin", intArrayOf(6, 4)),' in kotlin
    assert 'net = try loadModel("net")' in swift
    assert 'values.merge(try predict(net, ["image": inputs["image"]!])) { _, new in new }' in swift
    assert '"vertex_embedding": try loadAsset("vertex_embedding", shape: [6, 4]),' in swift
    for text in (kotlin, swift):
        assert "class OnDeviceModel" in text and not re.search(r"\{\{|Sender|Receiver", text)


def test_kotlin_and_swift_snippets_read_float32_assets_only(restore, tmp_path: Path) -> None:
    with pytest.raises(CompressError, match=r"the kotlin snippet reads float32 assets only, not faces \(int32\)"):
        write_bundle(tmp_path / "b", restore.source(assets=[Asset("faces", FACES)], snippets=["python", "kotlin"]))


def test_the_card_of_an_on_device_bundle_has_no_call_wording_and_lists_the_task_metrics(
    restore, tmp_path: Path
) -> None:
    card = (_with_table(restore, tmp_path) / "MODEL_CARD.md").read_text()
    assert not re.search(r"\bcall|sender|receiver|face|reference frame|camera frame", card, re.IGNORECASE)
    assert (
        "Restore a frame from a noisy, blurred copy, with the generic family, on one device: "
        "one app runs every part: net (every frame)." in card
    )
    assert "|  | psnr (dB, higher is better) | l1 (lower is better) | ssim (higher is better) |" in card
    assert "| vs teacher | 35 | 0.01 | 0.97 |" in card
    assert "| vertex_embedding | `assets/vertex_embedding.bin` | float32 | 6x4 |" in card
    assert "`snippets/on_device.py`" in card and "| net | app | every frame | onnx |" in card

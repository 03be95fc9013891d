"""Usage snippets: rendered from templates with the manifest's names; the Python one really runs."""

from __future__ import annotations

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
from tiny_call import FRAME, export_onnx
from torch import nn

from compress.bundle.manifest import load_manifest
from compress.bundle.snippets import fill, render_snippet
from compress.bundle.stage import ShippedFile, write_bundle
from compress.errors import CompressError
from compress.families.base import Part, TensorSpec


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("video_call", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_snippet_runs_the_call_flow_against_the_bundle(bundle: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(bundle / "snippets" / "video_call.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"prediction": [1, 3, 32, 32]}


def test_python_snippet_renders_what_the_torch_model_renders(bundle: Path, tiny) -> None:
    snippet = _import(bundle / "snippets" / "video_call.py")
    rng = np.random.default_rng(1)
    reference, camera = (snippet.frame_from_rgb(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2))
    sender, receiver = snippet.Sender(), snippet.Receiver()
    receiver.start_call(sender.start_call(reference))
    rendered = receiver.render(sender.frame(camera))["prediction"]

    kp, per_call, per_frame = (p.module for p in tiny.parts)
    with torch.no_grad():
        ref, cam = torch.from_numpy(reference), torch.from_numpy(camera)
        expected = per_frame(per_call(ref)[0], kp(ref)[0], kp(cam)[0])[0].numpy()
    np.testing.assert_allclose(rendered, expected, atol=1e-5)


def test_the_sender_sends_only_keypoints_per_frame(bundle: Path) -> None:
    snippet = _import(bundle / "snippets" / "video_call.py")
    message = snippet.Sender().frame(np.zeros(FRAME, np.float32))
    assert sorted(message) == ["kp_jacobian", "kp_value"]


def test_kotlin_snippet_uses_the_manifest_names(bundle: Path) -> None:
    text = (bundle / "snippets" / "VideoCall.kt").read_text()
    m = load_manifest(bundle)
    for part in m.parts:
        assert f'"{part.files["onnx"].path}"' in text
        for tensor in part.inputs:
            assert f'"{tensor.name}" to ' in text
    assert 'values += kpDetector.infer(mapOf("image" to cameraFrame))' in text
    assert '"kp_driving_value" to keypoints.getValue("kp_value")' in text
    assert '"kp_source_value" to call.getValue("kp_value")' in text
    assert "{{" not in text


def test_a_receiver_only_bundle_sends_the_camera_frame(tmp_path: Path, tiny) -> None:
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Sigmoid()).eval()
    part = Part("net", "receiver", "per_frame", net, [TensorSpec("image", FRAME)], [TensorSpec("output", FRAME)])
    onnx = export_onnx(part, tmp_path / "net.onnx")
    write_bundle(
        tmp_path / "b",
        tiny.source(parts=[part], files={"net": {"onnx": ShippedFile(onnx, "fp32")}}, snippets=["python"]),
    )
    snippet = _import(tmp_path / "b" / "snippets" / "video_call.py")
    frame = np.full(FRAME, 0.5, np.float32)
    message = snippet.Sender().frame(frame)
    assert list(message) == ["camera_frame"]
    out = snippet.Receiver().render(message)["output"]
    np.testing.assert_allclose(out, net(torch.from_numpy(frame))[0:1].detach().numpy(), atol=1e-5)


def test_a_snippet_needs_its_model_format(bundle: Path) -> None:
    with pytest.raises(CompressError, match="swift snippet loads coreml models, which parts"):
        render_snippet(load_manifest(bundle), "swift")


def test_fill_drops_empty_mark_lines_and_refuses_unknown_marks() -> None:
    assert fill("a\n{{ x }}\nb {{ y }}\n", {"x": "", "y": "1"}) == "a\nb 1\n"
    with pytest.raises(CompressError, match=r"unknown marks \['z'\]"):
        fill("{{ z }}", {})


def test_templates_only_use_known_marks(bundle: Path) -> None:
    m = load_manifest(bundle)
    for language in ("python", "kotlin"):
        _, text = render_snippet(m, language)
        assert not re.search(r"\{\{ \w+ \}\}", text)


def test_a_part_that_needs_a_later_part_s_output_is_refused(tiny, tmp_path: Path) -> None:
    feature = TensorSpec("feature", (1, 4), value_range=None)
    head = Part("head", "receiver", "per_frame", nn.Identity(), [feature], [TensorSpec("output", (1, 4))])
    body = Part("body", "receiver", "per_frame", nn.Identity(), [TensorSpec("image", FRAME)], [feature])
    some_file = ShippedFile(tiny.onnx["kp_detector"], "fp32")
    with pytest.raises(
        CompressError,
        match=r"part 'head' input 'feature' \(receiver_per_frame@camera_frame\) cannot be fed.*part order",
    ):
        write_bundle(
            tmp_path / "b",
            tiny.source(
                parts=[head, body],
                files={"head": {"onnx": some_file}, "body": {"onnx": some_file}},
                snippets=["python"],
            ),
        )

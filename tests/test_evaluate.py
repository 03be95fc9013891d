"""`compress eval`: the FOMM reconstruction protocol on videos, bundles (through onnxruntime) and the demo teacher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from compress.checkpoints import save_model
from compress.data.synthetic import render_clip
from compress.families.registry import get_family
from tests.data.media_writers import write_mp4

ROOT = Path(__file__).parent.parent
DEMO_TEACHER = ROOT / "recipes" / "teachers" / "fomm-demo-64.safetensors"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compress", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture
def student_file(tmp_path):
    family = get_family("fomm")
    config = family.resolve_config("mobile-64", "student")
    torch.manual_seed(0)
    return save_model(
        tmp_path / "student.safetensors", family.build_student(config), family="fomm", kind="student", config=config
    )


def test_a_folder_of_odd_sized_mp4_files_evaluates(tmp_path, student_file):
    for i in range(2):
        clip = render_clip(seed=i, frames=6, size=(144, 176))
        frames = (clip.frames.permute(0, 2, 3, 1) * 255).round().byte().numpy()
        (tmp_path / "videos" / "test").mkdir(parents=True, exist_ok=True)
        write_mp4(tmp_path / "videos" / "test" / f"clip{i}.mp4", np.ascontiguousarray(frames))
    proc = run_cli("eval", str(student_file), "--data", str(tmp_path / "videos"), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["runtime"] == "torch" and report["model"]["samples"] == report["baseline"]["samples"] == 10
    assert {"l1", "psnr", "ssim"} <= set(report["baseline"])


def test_empty_video_folder_exits_2(tmp_path, student_file):
    (tmp_path / "videos" / "test").mkdir(parents=True)
    proc = run_cli("eval", str(student_file), "--data", str(tmp_path / "videos"))
    assert proc.returncode == 2 and "no videos" in proc.stderr


@pytest.mark.slow
def test_a_bundle_evaluates_through_onnxruntime_like_torch(tmp_path, student_file):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "eval-bundle",
                "family": "fomm",
                "teacher": {"checkpoint": str(student_file.parent / "teacher.safetensors")},
                "stages": [
                    {"export": {"formats": ["onnx"], "real_inputs": 0}},
                    {"bundle": {"formats": ["onnx"], "out": str(tmp_path / "bundle")}},
                ],
            }
        )
    )
    family = get_family("fomm")
    config = family.resolve_config("mobile-64", "student")
    torch.manual_seed(1)
    save_model(
        student_file.parent / "teacher.safetensors",
        family.build_student(config),
        family="fomm",
        kind="student",
        config=config,
    )
    run = run_cli("run", str(recipe), "--out", str(tmp_path / "runs"))
    assert run.returncode == 0, run.stderr
    via_onnx = json.loads(run_cli("eval", str(tmp_path / "bundle"), "--videos", "2", "--json").stdout)
    via_torch = json.loads(
        run_cli("eval", str(student_file.parent / "teacher.safetensors"), "--videos", "2", "--json").stdout
    )
    assert via_onnx["runtime"] == "onnxruntime (bundle)"
    assert via_onnx["model"]["l1"] == pytest.approx(via_torch["model"]["l1"], rel=1e-3)


@pytest.fixture(scope="module")
def demo_teacher_eval():
    proc = run_cli("eval", str(DEMO_TEACHER), "--data", "synthetic", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_demo_teacher_beats_the_source_frame_baseline_on_every_metric(demo_teacher_eval):
    model, baseline = demo_teacher_eval["model"], demo_teacher_eval["baseline"]
    assert model["l1"] < baseline["l1"] and model["psnr"] > baseline["psnr"] and model["ssim"] > baseline["ssim"]

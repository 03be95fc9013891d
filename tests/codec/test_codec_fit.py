"""A bundle's bitstream format: the payload read from its manifest, steps chosen by measurement."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.bundle import load_manifest
from compress.bundle.stage import write_bundle
from compress.codec import fit
from compress.codec.fit import STEPS, add_bitstream, choose_steps, fit_clips
from compress.codec.flow import load_flow
from compress.families.registry import get_family
from tests.bundle.tiny_call import Tiny, TinyModel, export_onnx, make_parts


def test_the_payload_is_the_sender_outputs_that_a_receiver_reads(call_bundle: Path) -> None:
    # the tiny receiver reads kp_value on both frames and never kp_jacobian: sending it would be waste
    assert load_flow(call_bundle).payload == [("kp_detector", "kp_value")]


def test_the_manifest_carries_the_fitted_format(call_bundle: Path) -> None:
    fmt = load_manifest(call_bundle).bitstream
    assert fmt is not None and fmt.version == 1 and fmt.coder == "rans32"
    assert [(t.part, t.name, t.shape) for t in fmt.tensors] == [("kp_detector", "kp_value", [1, 5, 2])]
    assert all(t.step in STEPS for t in fmt.tensors)


def test_steps_coarsen_only_while_the_psnr_loss_stays_within_the_target(call_bundle: Path) -> None:
    flow = load_flow(call_bundle)
    observed = [flow.observe(c, 30) for c in fit_clips("synthetic", flow.frame_size, clips=1, frames=12)]
    assert set(choose_steps(flow, observed, loss_db=-1.0).values()) == {STEPS[-1]}  # any loss is too much: the finest
    assert set(choose_steps(flow, observed, loss_db=100.0).values()) == {STEPS[0]}  # any loss is fine: the coarsest


def test_a_bundle_without_a_sender_gets_no_bitstream(tmp_path: Path) -> None:
    torch.manual_seed(0)
    parts = [dataclasses.replace(p, role="app") for p in make_parts(TinyModel().eval())]
    onnx = {p.name: export_onnx(p, tmp_path / f"{p.name}.onnx") for p in parts}
    teacher = tmp_path / "teacher.safetensors"
    teacher.write_bytes(np.zeros(8, np.uint8).tobytes())
    bundle = tmp_path / "on-device"
    write_bundle(bundle, Tiny(parts, onnx, teacher).source(task=get_family("generic").task))  # an on-device task
    notes: list[str] = []
    assert add_bitstream(bundle, "synthetic", notes.append).bitstream is None
    assert load_manifest(bundle).bitstream is None and notes == []


def test_the_bundle_stage_fits_on_as_many_clips_and_frames_as_it_is_told(
    call_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(call_bundle, bundle)
    asked = []
    real = fit.fit_clips
    monkeypatch.setattr(
        fit,
        "fit_clips",
        lambda source, size, clips, frames: asked.append((clips, frames)) or real(source, size, clips, frames),
    )
    assert add_bitstream(bundle, "synthetic", print, clips=1, frames=8).bitstream is not None
    add_bitstream(bundle, "synthetic", print)
    assert asked == [(1, 8), (fit.FIT_CLIPS, fit.FIT_FRAMES)]

"""`compress profile`: targets (file, run folder, bundle) x devices, rows and the JSON output."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import pytest

from compress.bench import profile as prof
from compress.errors import CompressError

ROW = {"file", "part", "device", "source", "threads", "p50_ms", "p90_ms", "p99_ms", "fps"}


def test_a_model_file_is_profiled_on_the_host_as_a_measured_row(tiny_onnx):
    (row,) = prof.profile(tiny_onnx, "host", threads=1, warmup=1, runs=5, top_ops=2)
    assert ROW <= set(row)
    assert (row["part"], row["device"], row["source"], row["threads"]) == ("tiny", "host", "measured", 1)
    assert row["fps"] == pytest.approx(1000 / row["p50_ms"])
    assert 1 <= len(row["ops"]) <= 2


def test_a_profile_device_gives_a_predicted_row_with_its_priciest_nodes(tiny_onnx):
    (row,) = prof.profile(tiny_onnx, "profile:iphone8", top_ops=3)
    assert row["source"] == "predicted"
    assert row["p50_ms"] == row["p90_ms"] == row["p99_ms"] > 0
    assert [op["ms"] for op in row["ops"]] == sorted((op["ms"] for op in row["ops"]), reverse=True)


def test_a_run_folder_profiles_its_shipped_models(tiny_onnx, tmp_path):
    run = tmp_path / "run"
    (run / "quantize").mkdir(parents=True)
    shutil.copy(tiny_onnx, run / "quantize" / "net.int8.onnx")
    shipped = {"net": {"onnx": {"path": "quantize/net.int8.onnx", "precision": "int8"}}}
    (run / "summary.json").write_text(
        json.dumps({"artifacts": {"shipped": shipped, "exported": {"net": {"onnx": "export/missing.onnx"}}}})
    )
    (row,) = prof.profile(run, "profile:iphone8")
    assert row["part"] == "net" and row["file"].endswith("quantize/net.int8.onnx")


def test_a_run_folder_falls_back_to_its_exported_models(tiny_onnx, tmp_path):
    (tmp_path / "export").mkdir()
    shutil.copy(tiny_onnx, tmp_path / "export" / "a.onnx")
    (tmp_path / "summary.json").write_text(
        json.dumps({"artifacts": {"exported": {"part.a": {"onnx": "export/a.onnx"}}}})
    )
    assert [r["part"] for r in prof.profile(tmp_path, "profile:iphone8")] == ["part.a"]


def test_a_bundle_profiles_every_part_in_the_format_the_device_runs(tiny_onnx, tmp_path):
    for name in ("sender", "receiver"):
        shutil.copy(tiny_onnx, tmp_path / f"{name}.onnx")
        (tmp_path / f"{name}.mlpackage").mkdir()
    parts = [
        {"name": n, "files": {"onnx": {"path": f"{n}.onnx"}, "coreml": {"path": f"{n}.mlpackage"}}}
        for n in ("sender", "receiver")
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"parts": parts}))
    rows = prof.profile(tmp_path, "profile:iphone8")
    assert [(r["part"], Path(r["file"]).suffix) for r in rows] == [("sender", ".onnx"), ("receiver", ".onnx")]


def test_a_run_without_models_says_to_run_export(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"artifacts": {"teacher": "teacher.safetensors"}}))
    with pytest.raises(CompressError, match="export stage"):
        prof.profile(tmp_path, "host")


def test_a_bundle_listing_a_missing_file_names_it(tmp_path):
    (tmp_path / "manifest.json").write_text(
        json.dumps({"parts": [{"name": "p", "files": {"onnx": {"path": "gone.onnx"}}}]})
    )
    with pytest.raises(CompressError, match="gone.onnx"):
        prof.profile(tmp_path, "host")


def test_an_unknown_target_or_device_is_a_clear_error(tiny_onnx, tmp_path):
    with pytest.raises(CompressError, match="no such file"):
        prof.profile(tmp_path / "nope.onnx")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CompressError, match="not an .onnx file"):
        prof.profile(tmp_path / "notes.txt")
    with pytest.raises(CompressError, match="unknown device"):
        prof.profile(tiny_onnx, "tpu")
    with pytest.raises(CompressError, match="holds no coreml model"):
        prof.profile(tiny_onnx, "coreml")


def test_host_options_are_checked(tiny_onnx):
    with pytest.raises(CompressError, match="unknown option"):
        prof.profile(tiny_onnx, "host?turbo=1")
    with pytest.raises(CompressError, match="priority must be"):
        prof.profile(tiny_onnx, "host?priority=max")


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML predicts on macOS")
def test_the_coreml_device_explains_it_needs_macos(tmp_path):
    (tmp_path / "m.mlpackage").mkdir()
    with pytest.raises(CompressError, match="need macOS"):
        prof.profile(tmp_path / "m.mlpackage", "coreml")


def test_profile_command_prints_json_rows(tiny_onnx, capsys):
    prof.profile_command(str(tiny_onnx), "profile:iphone8", as_json=True)
    (row,) = json.loads(capsys.readouterr().out)
    assert ROW <= set(row) and row["source"] == "predicted"


def test_profile_command_prints_a_table_with_the_op_breakdown(tiny_onnx, capsys):
    prof.profile_command(str(tiny_onnx), "profile:iphone8", top=2)
    out = capsys.readouterr().out
    assert "p50 ms" in out and "slowest ops" in out and "Conv" in out and "interval ms" in out


def test_a_corrupt_onnx_file_is_refused_naming_it_exit_2(tmp_path):
    from tests.test_cli import run_cli

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    proc = run_cli("profile", str(bad))
    assert (
        proc.returncode == 2 and f"{bad}: not a readable ONNX model" in proc.stderr and "Traceback" not in proc.stderr
    )

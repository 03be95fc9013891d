"""adb devices: onnxruntime_perf_test's report parsed from recorded outputs, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.bench import adb
from compress.errors import CompressError

DATA = Path(__file__).parent / "data"


def test_a_recent_report_gives_percentiles_in_ms():
    stats = adb.parse_perf_test_output((DATA / "perf_test_ort1.17_android.txt").read_text())
    assert stats["mean_ms"] == pytest.approx(37.624333)
    assert (stats["p50_ms"], stats["p90_ms"], stats["p99_ms"]) == pytest.approx((37.2917, 39.1042, 44.9633))
    assert stats["fps"] == pytest.approx(1000 / 37.2917)


def test_a_1_x_report_without_total_in_the_average_line_is_read():
    stats = adb.parse_perf_test_output((DATA / "perf_test_ort1.10_android.txt").read_text())
    assert stats["mean_ms"] == pytest.approx(53.8807) and stats["p50_ms"] == pytest.approx(53.4012)


def test_an_old_report_without_percentiles_falls_back_to_the_mean_for_fps():
    stats = adb.parse_perf_test_output((DATA / "perf_test_ort0.5_android.txt").read_text())
    assert stats["p50_ms"] is None and stats["p99_ms"] is None
    assert stats["fps"] == pytest.approx(1000 / 66.4021)


def test_a_failed_run_shows_what_the_binary_printed():
    with pytest.raises(CompressError, match="libonnxruntime.so"):
        adb.parse_perf_test_output((DATA / "perf_test_error.txt").read_text())


@pytest.fixture
def perf_test(tmp_path: Path) -> Path:
    binary = tmp_path / "onnxruntime_perf_test"
    binary.write_bytes(b"\x7fELF")
    return binary


def test_the_device_string_needs_the_perf_test_binary(perf_test):
    t = adb.parse_device(f"adb:R58M123?perf_test={perf_test}&taskset=0f")
    assert (t.serial, t.perf_test, t.taskset) == ("R58M123", perf_test, "0f")
    assert adb.parse_device(f"adb?perf_test={perf_test}").taskset == "f0"
    with pytest.raises(CompressError, match="perf_test=/path/to/onnxruntime_perf_test"):
        adb.parse_device("adb:R58M123")
    with pytest.raises(CompressError, match="not found"):
        adb.parse_device("adb?perf_test=/nonexistent/onnxruntime_perf_test")
    with pytest.raises(CompressError, match="hexadecimal"):
        adb.parse_device(f"adb?perf_test={perf_test}&taskset=big")


def test_without_adb_on_path_the_error_says_how_to_get_it(perf_test, tiny_onnx, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(CompressError, match="adb tool is not on PATH"):
        adb.measure([tiny_onnx], f"adb?perf_test={perf_test}")


def test_only_ready_devices_count_as_connected():
    assert adb.parse_devices((DATA / "adb_devices.txt").read_text()) == ["R58M40ABCDE"]


def test_a_serial_that_is_not_ready_is_named_with_the_ready_ones(perf_test):
    serials = adb.parse_devices((DATA / "adb_devices.txt").read_text())
    with pytest.raises(CompressError, match="adb:0A1B2C3D4E: no such device connected and authorized .*R58M40ABCDE"):
        adb.check_device(adb.parse_device(f"adb:0A1B2C3D4E?perf_test={perf_test}"), serials)


def test_no_phone_or_several_phones_without_a_serial_are_clear_errors(perf_test):
    target = adb.parse_device(f"adb?perf_test={perf_test}")
    with pytest.raises(CompressError, match="no Android device connected"):
        adb.check_device(target, [])
    with pytest.raises(CompressError, match="several devices connected .*adb:SERIAL"):
        adb.check_device(target, ["A", "B"])
    adb.check_device(target, ["A"])

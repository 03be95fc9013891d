"""The host device: onnxruntime in a pinned subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from compress.bench import host
from compress.bench.remote_runner import time_runs
from compress.errors import CompressError


def test_host_reports_ordered_percentiles_fps_and_the_slowest_ops(tiny_onnx):
    (r,) = host.measure([tiny_onnx], threads=1, warmup=1, runs=8, top=3)
    assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    assert r["fps"] == pytest.approx(1000 / r["p50_ms"])
    assert len(r["times_ms"]) == 8 and len(r["cpu_times_ms"]) == 8
    assert 1 <= len(r["ops"]) <= 3
    assert all(op["ms"] >= 0 and 0 <= op["share"] <= 1 for op in r["ops"])
    assert [op["ms"] for op in r["ops"]] == sorted((op["ms"] for op in r["ops"]), reverse=True)


def test_the_runner_pins_itself_to_the_requested_cores(tiny_onnx):
    core = max(os.sched_getaffinity(0))
    cmd = host.runner_command(sys.executable, str(host.RUNNER), [str(tiny_onnx)], 1, 0, 1, 0, [core])
    out = host.parse_runner_output(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout, "test")
    assert out["cores"] == [core]


def test_default_cores_are_the_last_ones_this_process_may_use():
    allowed = sorted(os.sched_getaffinity(0))
    assert host.default_cores(1) == allowed[-1:]
    assert host.default_cores(len(allowed) + 5) == allowed


def test_zero_threads_is_refused(tiny_onnx):
    with pytest.raises(CompressError, match="--threads 0"):
        host.measure([tiny_onnx], threads=0)


def test_cores_this_machine_does_not_have_are_refused():
    with pytest.raises(CompressError, match="allows CPUs"):
        host.parse_cores("4096")


def test_a_broken_model_file_fails_with_the_runner_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CompressError, match="host: measuring .*bad.onnx failed"):
        host.measure([bad], runs=1, warmup=0, top=0)


def test_interleaved_timing_runs_every_model_once_per_round_each_round_starting_one_further():
    calls = []

    class Session:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, outputs, feeds) -> None:
            calls.append(self.name)

    times = time_runs([(Session("a"), {}), (Session("b"), {})], warmup=2, runs=3)
    assert calls == ["a", "a", "b", "b"] + ["a", "b", "b", "a", "a", "b"]  # each model's warmup, then rounds
    assert [len(wall) for wall, _ in times] == [3, 3]


def test_the_host_times_models_together_when_asked_to_interleave(tiny_onnx):
    results = host.measure([tiny_onnx, tiny_onnx], warmup=1, runs=4, top=0, interleave=True)
    assert [len(r["times_ms"]) for r in results] == [4, 4]

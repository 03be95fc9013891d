"""`adb[:SERIAL]`: measure on an Android phone with onnxruntime's own benchmark binary.

    adb:R58M123ABC?perf_test=~/ort-android/onnxruntime_perf_test&taskset=f0

Pushes the model and `onnxruntime_perf_test` (built for the phone's ABI, e.g. with
onnxruntime's build.sh --android) to /data/local/tmp, runs it pinned to the big cores with
`taskset MASK` (f0: CPUs 4-7, the big cluster of most 4+4 phones) and parses its report. The
binary does one untimed warm-up run of its own before the timed ones.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from compress.errors import CompressError

REMOTE_DIR = "/data/local/tmp/compress-bench"
OPTIONS = ("perf_test", "taskset")
# onnxruntime_perf_test's report: "Average time cost:X ms" (0.x), "Average inference time cost: X ms"
# (1.x; "... cost total:" in newer releases) and, in recent releases, "P50 Latency: X s" lines
# for P50, P90, P95, P99, P999 (performance_runner.cc).
AVERAGE = re.compile(r"^Average (?:inference )?time cost(?: total)?:\s*([0-9.eE+-]+)\s*ms", re.M)
PERCENTILE = re.compile(r"^(P\d+|Min|Max) Latency:\s*([0-9.eE+-]+)\s*s", re.M)


@dataclass(frozen=True)
class AdbTarget:
    serial: str | None
    perf_test: Path
    taskset: str = "f0"


def parse_device(device: str) -> AdbTarget:
    """adb[:SERIAL]?perf_test=PATH[&taskset=HEXMASK]"""
    head, _, query_text = device.partition("?")
    if head != "adb" and not head.startswith("adb:"):
        raise CompressError(f"--device {device}: expected adb[:SERIAL]?perf_test=PATH")
    serial = head.partition(":")[2] or None
    query = {k: v[-1] for k, v in parse_qs(query_text).items()}
    unknown = set(query) - set(OPTIONS)
    if unknown:
        raise CompressError(
            f"--device {device}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(OPTIONS)}"
        )
    if "perf_test" not in query:
        raise CompressError(
            f"--device {device}: say where the Android onnxruntime_perf_test binary is: "
            f"adb{':' + serial if serial else ''}?perf_test=/path/to/onnxruntime_perf_test "
            "(build it with onnxruntime's build.sh --android)"
        )
    perf_test = Path(query["perf_test"]).expanduser()
    if not perf_test.is_file():
        raise CompressError(f"--device {device}: onnxruntime_perf_test not found at {perf_test}")
    taskset = query.get("taskset", "f0")
    if not re.fullmatch(r"[0-9a-fA-F]+", taskset):
        raise CompressError(f"--device {device}: taskset must be a hexadecimal CPU mask such as f0")
    return AdbTarget(serial, perf_test, taskset)


def parse_perf_test_output(text: str) -> dict[str, float | None]:
    """p50/p90/p99 ms (None when this onnxruntime is too old to print them), mean ms and fps."""
    mean = AVERAGE.search(text)
    if mean is None:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise CompressError(f"adb: onnxruntime_perf_test printed no 'Average inference time cost' line:\n{tail}")
    pct = {name: float(value) * 1e3 for name, value in PERCENTILE.findall(text)}
    mean_ms = float(mean.group(1))
    p50 = pct.get("P50")
    return {
        "mean_ms": mean_ms,
        "p50_ms": p50,
        "p90_ms": pct.get("P90"),
        "p99_ms": pct.get("P99"),
        "min_ms": pct.get("Min"),
        "fps": 1e3 / (p50 or mean_ms),
    }


def _adb(target: AdbTarget, *args: str, timeout: float = 600) -> str:
    cmd = ["adb", *(["-s", target.serial] if target.serial else []), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise CompressError(
            f"adb: `{shlex.join(cmd)}` failed (exit {proc.returncode}):\n{(proc.stderr or proc.stdout).strip()[-2000:]}"
        )
    return proc.stdout


def parse_devices(text: str) -> list[str]:
    """Serials that `adb devices` lists as ready (not offline, unauthorized, ...)."""
    rows = (line.split() for line in text.splitlines()[1:])
    return [row[0] for row in rows if len(row) >= 2 and row[1] == "device"]


def check_device(target: AdbTarget, serials: list[str]) -> None:
    """The device to use is connected and unambiguous, given the ready `serials`."""
    if target.serial and target.serial not in serials:
        raise CompressError(
            f"adb:{target.serial}: no such device connected and authorized "
            f"(adb devices lists: {', '.join(serials) or 'none'})"
        )
    if not serials:
        raise CompressError(
            "adb: no Android device connected (adb devices lists none ready); plug the phone in and allow USB debugging"
        )
    if not target.serial and len(serials) > 1:
        raise CompressError(f"adb: several devices connected ({', '.join(serials)}); pick one with --device adb:SERIAL")


def connected_serials() -> list[str]:
    if shutil.which("adb") is None:
        raise CompressError(
            "adb: the adb tool is not on PATH; install Android platform-tools (apt-get install adb) "
            "and enable USB debugging on the phone"
        )
    return parse_devices(subprocess.run(["adb", "devices"], capture_output=True, text=True, timeout=60).stdout)


def measure(
    models: list[Path], device: str, threads: int = 1, warmup: int = 5, runs: int = 30, top: int = 10
) -> list[dict[str, Any]]:
    """Measure each model on the phone; `warmup` and `top` are the binary's own (one warm-up, no op table)."""
    target = parse_device(device)
    check_device(target, connected_serials())
    binary = f"{REMOTE_DIR}/onnxruntime_perf_test"
    _adb(target, "shell", f"mkdir -p {REMOTE_DIR}")
    _adb(target, "push", str(target.perf_test), binary)
    library = target.perf_test.with_name("libonnxruntime.so")  # a --build_shared_lib build needs it beside the binary
    if library.is_file():
        _adb(target, "push", str(library), f"{REMOTE_DIR}/{library.name}")
    _adb(target, "shell", f"chmod 755 {binary}")
    results = []
    for i, model in enumerate(models):
        remote = f"{REMOTE_DIR}/model-{i}.onnx"
        _adb(target, "push", str(model), remote)
        cmd = (
            f"cd {REMOTE_DIR} && LD_LIBRARY_PATH={REMOTE_DIR} taskset {target.taskset} {binary} "
            f"-e cpu -m times -r {runs} -x {threads} -y 1 -I {remote}"
        )
        stats = parse_perf_test_output(_adb(target, "shell", cmd))
        results.append({"model": str(model), "threads": threads, "warmup": 1, "runs": runs, **stats, "ops": []})
        _adb(target, "shell", f"rm -f {remote}")
    return results

"""The `host` device: onnxruntime on this machine's CPU, in a pinned subprocess.

The measurement runs in a fresh interpreter (remote_runner.py, the same runner `ssh://`
devices use) so that the caller's threads (torch, a previous session) do not share its cores,
and so that the CPU mask is set before onnxruntime creates its thread pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from compress.errors import CompressError

RUNNER = Path(__file__).with_name("remote_runner.py")


def default_cores(threads: int) -> list[int]:
    """The last `threads` CPUs this process may use (CPU 0 takes most interrupts)."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-threads:] if threads <= len(allowed) else allowed


def parse_cores(text: str) -> list[int]:
    try:
        cores = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise CompressError(f"host?cores={text}: expected comma-separated CPU ids such as 0,1") from None
    allowed = os.sched_getaffinity(0)
    if not cores or not set(cores) <= allowed:
        raise CompressError(f"host?cores={text}: this machine allows CPUs {sorted(allowed)}")
    return cores


def runner_command(
    python: str,
    runner: str,
    models: list[str],
    threads: int,
    warmup: int,
    runs: int,
    top: int,
    cores: list[int] | None = None,
    priority: str = "normal",
    interleave: bool = False,
) -> list[str]:
    cmd = [
        python,
        runner,
        *models,
        "--threads",
        str(threads),
        "--warmup",
        str(warmup),
        "--runs",
        str(runs),
        "--top",
        str(top),
        "--priority",
        priority,
    ]
    if cores:
        cmd += ["--cores", ",".join(str(c) for c in cores)]
    if interleave:
        cmd.append("--interleave")
    return cmd


def parse_runner_output(stdout: str, where: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise CompressError(f"{where}: the latency runner printed no JSON result:\n{stdout[-2000:]}") from None


def measure(
    models: list[Path],
    threads: int = 1,
    warmup: int = 5,
    runs: int = 30,
    top: int = 10,
    cores: list[int] | None = None,
    priority: str = "normal",
    interleave: bool = False,
) -> list[dict[str, Any]]:
    """p50/p90/p99/fps (and the `top` slowest ops) of each model, measured here.

    `priority` "realtime" or "high" shields the runs from other processes where this user may
    ask for it (root); it is what calibration and validation use on a shared machine.
    `interleave` times the models in rounds of one run each, so that run i of every model
    shares the machine's load of that moment (`times_ms[i]` of two models form a pair).
    """
    if threads < 1:
        raise CompressError(f"--threads {threads}: must be at least 1")
    cores = cores or default_cores(threads)
    cmd = runner_command(
        sys.executable, str(RUNNER), [str(m) for m in models], threads, warmup, runs, top, cores, priority, interleave
    )
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompressError(f"host: measuring {', '.join(str(m) for m in models)} failed:\n{proc.stderr[-2000:]}")
    return parse_runner_output(proc.stdout, "host")["results"]

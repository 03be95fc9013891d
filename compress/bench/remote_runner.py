"""Measure ONNX models with onnxruntime and print JSON: the one runner for `host` and `ssh://` devices.

Self-contained on purpose: it is copied to remote devices that have only python3, numpy and
onnxruntime, so it imports nothing from this project.

    python3 remote_runner.py MODEL [MODEL ...] --threads 1 --warmup 5 --runs 30 [--cores 0,1] [--top 10]
        [--priority normal|high|realtime] [--interleave]

Each model gets a sequential session with `threads` intra-op threads and one inter-op thread,
random inputs (symbolic dimensions set to 1), `warmup` untimed runs, then `runs` timed runs.
`--interleave` times the models in rounds instead, one run of each model per round, so that
whatever else loads the machine at a moment slows every model alike: run i of one model and
run i of another can then be compared as a pair. Each round starts one model further on, so
that no model always runs first (or always after the same one, whose data fills the caches).
A second, profiling session (kept out of the timings: profiling slows every node) gives the
per-op table. The process pins itself to `cores` before onnxruntime starts any thread, so the
worker threads inherit the mask.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

# ORT type strings of the inputs the runner can synthesise.
DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
PROFILED_RUNS = 5


def session_options(ort, threads: int, spinning: bool = True):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if not spinning:  # a spinning worker at real-time priority would starve the rest of the machine
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def raise_priority(level: str) -> str:
    """Ask for `level` (realtime: SCHED_FIFO; high: nice -20); returns the level obtained.

    On a shared machine other processes preempt a normal-priority benchmark mid-run; only the
    root user (or CAP_SYS_NICE) gets the higher levels, others fall back without error.
    """
    if level == "realtime":
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            return "realtime"
        except (AttributeError, OSError):
            level = "high"
    if level == "high":
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -20)
            return "high"
        except (AttributeError, OSError):
            pass
    return "normal"


def random_inputs(session, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        if inp.type not in DTYPES:
            raise SystemExit(f"input {inp.name!r} has type {inp.type}, which the runner cannot synthesise")
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        dtype = DTYPES[inp.type]
        if np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.random(shape, dtype=np.float32).astype(dtype)
        else:
            feeds[inp.name] = np.zeros(shape, dtype=dtype)
    return feeds


def time_runs(sessions: list, warmup: int, runs: int) -> list[tuple[list[float], list[float]]]:
    """Wall-clock and calling-thread CPU milliseconds of each timed run of each (session, feeds),
    in rounds of one run of each, round i starting with session i (modulo their number).

    With one intra-op thread onnxruntime computes on the calling thread, so its CPU time is the
    latency without the time other processes held the core: the figure to compare on a busy machine.
    """
    for session, feeds in sessions:
        for _ in range(warmup):
            session.run(None, feeds)
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in sessions]
    for i in range(runs):
        first = i % len(sessions)
        for k in [*range(first, len(sessions)), *range(first)]:
            (session, feeds), (wall, cpu) = sessions[k], times[k]
            start, start_cpu = time.perf_counter(), time.thread_time()
            session.run(None, feeds)
            cpu.append((time.thread_time() - start_cpu) * 1e3)
            wall.append((time.perf_counter() - start) * 1e3)
    return times


def op_table(ort, model: str, threads: int, feeds: dict, top: int, spinning: bool) -> list[dict]:
    """Mean time per run of the `top` slowest nodes (and their fastest run: calibration's single-kernel
    figure, least disturbed by the rest of the machine), from onnxruntime's profiler trace."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = session_options(ort, threads, spinning)
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        for _ in range(PROFILED_RUNS + 1):
            session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    durations: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            key = (e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"))
            durations.setdefault(key, []).append((e["ts"], e["dur"]))
    rows = []
    for (node, op_type), samples in durations.items():
        timed = [d for _, d in sorted(samples)][1:] or [samples[0][1]]  # the first run allocates: leave it out
        rows.append({"node": node, "op_type": op_type, "ms": sum(timed) / len(timed) / 1e3, "min_ms": min(timed) / 1e3})
    total = sum(r["ms"] for r in rows) or 1.0
    rows.sort(key=lambda r: r["ms"], reverse=True)
    return [{**r, "share": r["ms"] / total} for r in rows[:top]]


def summarise(times: list[float]) -> dict:
    p50, p90, p99 = (float(np.percentile(times, q)) for q in (50, 90, 99))
    return {
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "mean_ms": float(np.mean(times)),
        "fps": 1e3 / p50,
        "times_ms": times,
    }


def measure(
    models: list[str], threads: int, warmup: int, runs: int, top: int, spinning: bool = True, seed: int = 0
) -> list[dict]:
    """The timings of `models` measured together, in interleaved rounds (one run of each per round)."""
    import onnxruntime as ort

    sessions = []
    for model in models:
        session = ort.InferenceSession(
            model, session_options(ort, threads, spinning), providers=["CPUExecutionProvider"]
        )
        sessions.append((session, random_inputs(session, seed)))
    results = []
    for model, (_, feeds), (wall, cpu) in zip(models, sessions, time_runs(sessions, warmup, runs)):
        result = {
            "model": model,
            "threads": threads,
            "warmup": warmup,
            "runs": runs,
            **summarise(wall),
            "cpu_times_ms": cpu,
        }
        result["ops"] = op_table(ort, model, threads, feeds, top, spinning) if top > 0 else []
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--top", type=int, default=10, help="rows of the per-op table (0: no profiling pass)")
    parser.add_argument("--cores", default="", help="comma-separated CPU ids to pin to (Linux)")
    parser.add_argument("--priority", choices=["normal", "high", "realtime"], default="normal")
    parser.add_argument("--interleave", action="store_true", help="time the models in rounds of one run each")
    args = parser.parse_args(argv)
    if args.cores:
        os.sched_setaffinity(0, {int(c) for c in args.cores.split(",")})  # before onnxruntime creates its threads
    priority = raise_priority(args.priority)
    import onnxruntime as ort

    spinning = priority != "realtime"
    if args.interleave:
        results = measure(args.models, args.threads, args.warmup, args.runs, args.top, spinning)
    else:
        results = [
            r for m in args.models for r in measure([m], args.threads, args.warmup, args.runs, args.top, spinning)
        ]
    json.dump(
        {
            "onnxruntime": ort.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cores": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "priority": priority,
            "results": results,
        },
        sys.stdout,
    )
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

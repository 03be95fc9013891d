"""`compress profile`: latency of ONNX / Core ML files, run folders and bundles on a device.

Devices:
  host[?cores=0,1&priority=normal|high|realtime]    onnxruntime on this CPU (measured)
  ssh://user@host[:port][?identity=..&known_hosts=..&python=..&cores=..]   a Linux device (measured)
  adb[:SERIAL]?perf_test=PATH[&taskset=f0]           an Android phone (measured)
  coreml                                             Core ML on this Mac's CPU (measured)
  profile:NAME                                       the cost model of compress/bench/devices/NAME.yaml (predicted)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from compress.bench import costmodel
from compress.bench.interval import INTERVAL_KEYS, interval_text
from compress.errors import CompressError

# The interval keys are null on measured rows (compress/bench/interval.py).
ROW_KEYS = ("file", "part", "device", "source", "threads", "p50_ms", "p90_ms", "p99_ms", "fps", *INTERVAL_KEYS)


@dataclass(frozen=True)
class ModelFile:
    part: str
    format: str  # "onnx" | "coreml"
    path: Path


def format_of(path: Path) -> str | None:
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix in (".mlpackage", ".mlmodel"):
        return "coreml"
    return None


def resolve_target(target: str | Path) -> list[ModelFile]:
    """Every model file a target names: a model file, a run folder (summary.json) or a bundle (manifest.json)."""
    path = Path(target)
    if not path.exists():
        raise CompressError(
            f"{path}: no such file or folder (expected an .onnx file, an .mlpackage, a run folder or a bundle)"
        )
    fmt = format_of(path)
    if fmt:
        return [ModelFile(path.stem, fmt, path)]
    if (path / "manifest.json").is_file():
        return _bundle_files(path)
    if (path / "summary.json").is_file():
        return _run_files(path)
    raise CompressError(f"{path}: not an .onnx file, .mlpackage, run folder (summary.json) or bundle (manifest.json)")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CompressError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CompressError(f"{path}: expected a JSON object")
    return data


def _bundle_files(folder: Path) -> list[ModelFile]:
    manifest = _read_json(folder / "manifest.json")
    try:
        files = [
            ModelFile(p["name"], fmt, folder / entry["path"])
            for p in manifest["parts"]
            for fmt, entry in p["files"].items()
        ]
    except (KeyError, TypeError) as exc:
        raise CompressError(
            f"{folder / 'manifest.json'}: expected parts[i].name and parts[i].files[format].path ({exc})"
        ) from None
    return _existing(files, folder / "manifest.json")


def _run_files(folder: Path) -> list[ModelFile]:
    artifacts = _read_json(folder / "summary.json").get("artifacts") or {}
    if not (artifacts.get("shipped") or artifacts.get("exported")):
        raise CompressError(
            f"{folder / 'summary.json'}: the run has no shipped or exported models yet; run its export stage first"
        )
    return _existing(
        [ModelFile(m.part, m.format, folder / m.rel) for m in run_models(artifacts)], folder / "summary.json"
    )


@dataclass(frozen=True)
class RunModel:
    part: str
    format: str
    rel: str  # run-relative path
    precision: str


def run_models(artifacts: dict[str, Any], precision: str = "shipped") -> list[RunModel]:
    """A run's models: shipped ({part: {format: {path, precision}}}, else the fp32 exports),
    the exports ({part: {format: path}}) or the int8 models ({part: {format: path}})."""
    a = artifacts
    if precision == "shipped" and a.get("shipped"):
        return [
            RunModel(part, fmt, e["path"], e.get("precision", "fp32"))
            for part, by_fmt in a["shipped"].items()
            for fmt, e in by_fmt.items()
        ]
    key = "quantized" if precision == "int8" else "exported"
    if not a.get(key):
        stage = "quantize" if key == "quantized" else "export"
        raise CompressError(
            f"profile (precision: {precision}): the run has no {key} models; "
            f"add a {stage} stage before profile in the recipe"
        )
    label = "int8" if key == "quantized" else "fp32"
    return [RunModel(part, fmt, rel, label) for part, by_fmt in a[key].items() for fmt, rel in by_fmt.items()]


def _existing(files: list[ModelFile], source: Path) -> list[ModelFile]:
    missing = [str(f.path) for f in files if not f.path.exists()]
    if missing:
        raise CompressError(f"{source}: lists model files that are missing: {', '.join(missing)}")
    return files


# -- devices ---------------------------------------------------------------------------------
def device_kind(device: str) -> str:
    """host | ssh | adb | coreml | profile, from a --device string."""
    head = device.split("?", 1)[0]
    if head in ("host", "coreml"):
        return head
    if head == "adb" or head.startswith("adb:"):
        return "adb"
    if device.startswith("ssh://"):
        return "ssh"
    if device.startswith("profile:"):
        return "profile"
    raise CompressError(
        f"--device {device}: unknown device; use host, ssh://user@host[:port], adb[:SERIAL], coreml or profile:NAME "
        f"(profiles: {', '.join(sorted(p.stem for p in costmodel.DEVICES_DIR.glob('*.yaml')))})"
    )


def device_format(device: str) -> str:
    """The model format a device runs."""
    return "coreml" if device_kind(device) == "coreml" else "onnx"


def _host_options(device: str) -> dict[str, Any]:
    from compress.bench.host import parse_cores

    query = {k: v[-1] for k, v in parse_qs(device.partition("?")[2]).items()}
    unknown = set(query) - {"cores", "priority"}
    if unknown:
        raise CompressError(
            f"--device {device}: unknown option(s) {', '.join(sorted(unknown))}; known: cores, priority"
        )
    if query.get("priority", "normal") not in ("normal", "high", "realtime"):
        raise CompressError(f"--device {device}: priority must be normal, high or realtime")
    return {
        "cores": parse_cores(query["cores"]) if "cores" in query else None,
        "priority": query.get("priority", "normal"),
    }


def measure_files(
    paths: list[Path], device: str, threads: int, warmup: int, runs: int, top: int
) -> list[dict[str, Any]]:
    """Raw per-file results of one device, in the order of `paths`."""
    kind = device_kind(device)
    if kind == "host":
        from compress.bench import host

        return host.measure(paths, threads, warmup, runs, top, **_host_options(device))
    if kind == "ssh":
        from compress.bench import ssh

        return ssh.measure(paths, device, threads, warmup, runs, top)
    if kind == "adb":
        from compress.bench import adb

        return adb.measure(paths, device, threads, warmup, runs, top)
    if kind == "coreml":
        from compress.bench import coreml

        return coreml.measure(paths, threads, warmup, runs, top)
    return [predicted(p, device, threads, top) for p in paths]


def predicted(path: Path, device: str, threads: int, top: int) -> dict[str, Any]:
    pred = costmodel.predict(path, device, threads)
    ops = sorted(pred["nodes"], key=lambda item: item[1], reverse=True)[:top]
    total = pred["ms"] or 1.0
    ms = pred["ms"]
    return {
        "model": str(path),
        "threads": threads,
        "p50_ms": ms,
        "p90_ms": ms,
        "p99_ms": ms,
        "fps": 1e3 / ms if ms else None,
        **{k: pred[k] for k in INTERVAL_KEYS},
        "ops": [{"node": c.name, "op_type": c.op_type, "ms": node_ms, "share": node_ms / total} for c, node_ms in ops],
    }


def profile(
    target: str | Path, device: str = "host", threads: int = 1, warmup: int = 5, runs: int = 30, top_ops: int = 10
) -> list[dict[str, Any]]:
    """Latency rows of every model file in `target` that `device` runs.

    Each row: file, part, device, source ("measured" | "predicted"), threads, p50_ms, p90_ms,
    p99_ms, fps, ops (the `top_ops` slowest nodes: node, op_type, ms, share); a predicted row also
    interval_ms ([low, high]), interval_coverage, extrapolated_share and extrapolated_op_types.
    """
    if threads < 1:
        raise CompressError(f"--threads {threads}: must be at least 1")
    fmt = device_format(device)
    files = [f for f in resolve_target(target) if f.format == fmt]
    if not files:
        raise CompressError(f"{target}: holds no {fmt} model, which --device {device} runs")
    for f in files:
        check_readable(f)
    raw = measure_files([f.path for f in files], device, threads, warmup, runs, top_ops)
    source = "predicted" if device_kind(device) == "profile" else "measured"
    return [to_row(f.path, f.part, device, source, r) for f, r in zip(files, raw)]


def check_readable(file: ModelFile) -> None:
    """Refuse an ONNX file that does not parse here, naming it, before a device (or a subprocess) chokes on it."""
    if file.format != "onnx":
        return
    import onnx

    try:
        onnx.load(str(file.path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, truncated files other errors
        raise CompressError(
            f"{file.path}: not a readable ONNX model ({type(exc).__name__}: {str(exc)[:200]}); "
            "re-export it (compress run RECIPE --until export) or check the download"
        ) from None


def to_row(file: Path | str, part: str, device: str, source: str, raw: dict[str, Any]) -> dict[str, Any]:
    values = {
        "file": str(file),
        "part": part,
        "device": device,
        "source": source,
        **{k: raw.get(k) for k in ROW_KEYS[4:]},
    }
    return {**values, "ops": raw.get("ops", [])}


# -- the CLI command -------------------------------------------------------------------------
def profile_command(
    target: str,
    device: str = "host",
    threads: int = 1,
    warmup: int = 5,
    runs: int = 30,
    top: int = 10,
    as_json: bool = False,
) -> list[dict[str, Any]]:
    """`compress profile TARGET --device D ...`: print a table per file (or JSON) and return the rows."""
    rows = profile(target, device, threads, warmup, runs, top)
    if as_json:
        print(json.dumps([{k: r[k] for k in ROW_KEYS} | {"ops": r["ops"]} for r in rows], indent=2))
    else:
        print_rows(rows)
    return rows


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_rows(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title="latency")
    for col in ("part", "device", "source", "threads", "p50 ms", "p90 ms", "p99 ms", "fps"):
        summary.add_column(col, justify="left" if col in ("part", "device", "source") else "right")
    for r in rows:
        summary.add_row(
            r["part"],
            r["device"],
            r["source"],
            str(r["threads"] or "-"),
            _ms(r["p50_ms"]),
            _ms(r["p90_ms"]),
            _ms(r["p99_ms"]),
            "-" if r["fps"] is None else f"{r['fps']:.1f}",
        )
    console.print(summary)
    predicted = [r for r in rows if r.get("interval_ms")]
    if predicted:
        intervals = Table(
            title="predictions: where the true latency lies with the profile's nominal coverage (docs/latency.md)",
            title_justify="left",
        )
        for col in ("part", "device", "p50 ms", "interval ms", "coverage", "extrapolated"):
            intervals.add_column(col, justify="left" if col in ("part", "device") else "right")
        for r in predicted:
            intervals.add_row(
                r["part"],
                r["device"],
                _ms(r["p50_ms"]),
                interval_text(r["interval_ms"]),
                f"{r['interval_coverage'] * 100:.0f}%",
                f"{r['extrapolated_share'] * 100:.0f}%",
            )
        console.print(intervals)
    for r in rows:
        if not r["ops"]:
            continue
        ops = Table(title=f"{r['part']} on {r['device']}: slowest ops ({r['source']})", title_justify="left")
        for col in ("node", "op", "ms", "share"):
            ops.add_column(col, justify="left" if col in ("node", "op") else "right")
        for op in r["ops"]:
            ops.add_row(op["node"], op["op_type"], f"{op['ms']:.3f}", f"{op['share'] * 100:.1f}%")
        console.print(ops)

"""`ssh://user@host[:port]`: measure on a connected Linux device over OpenSSH.

    ssh://pi@raspberrypi.local?identity=~/.ssh/id_ed25519&known_hosts=~/.ssh/known_hosts&python=python3&cores=4,5,6,7

Copies the models and remote_runner.py (needs only python3, numpy and onnxruntime on the device)
into a fresh temporary folder on the device, runs the measurement there, reads back its JSON and
removes the folder. Key-based authentication only (BatchMode: never a password prompt); an
unknown host key is accepted on first use and checked afterwards (StrictHostKeyChecking
accept-new), against `known_hosts` when given.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from compress.bench.host import RUNNER, parse_runner_output, runner_command
from compress.errors import CompressError

OPTIONS = ("identity", "known_hosts", "python", "cores", "priority", "timeout")


@dataclass(frozen=True)
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    known_hosts: Path | None = None
    python: str = "python3"
    cores: str = ""
    priority: str = "normal"
    timeout: float = 600.0

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def options(self) -> list[str]:
        """OpenSSH options shared by ssh and scp."""
        opts = [
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "ConnectTimeout=15",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.port:
            opts += ["-o", f"Port={self.port}"]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.identity:
            opts += ["-o", f"IdentityFile={self.identity}", "-o", "IdentitiesOnly=yes"]
        return opts


def parse_device(device: str) -> SshTarget:
    """ssh://[user@]host[:port][?identity=..&known_hosts=..&python=..&cores=..&priority=..&timeout=..]"""
    url = urlsplit(device)
    if url.scheme != "ssh" or not url.hostname:
        raise CompressError(f"--device {device}: expected ssh://user@host[:port], e.g. ssh://pi@192.168.1.20:22")
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    unknown = set(query) - set(OPTIONS)
    if unknown:
        raise CompressError(
            f"--device {device}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(OPTIONS)}"
        )
    try:
        port = url.port
        timeout = float(query.get("timeout", 600))
    except ValueError as exc:
        raise CompressError(f"--device {device}: {exc}") from None
    paths = {k: Path(query[k]).expanduser() for k in ("identity", "known_hosts") if k in query}
    if "identity" in paths and not paths["identity"].is_file():
        raise CompressError(f"--device {device}: identity file {paths['identity']} not found")
    if query.get("priority", "normal") not in ("normal", "high", "realtime"):
        raise CompressError(f"--device {device}: priority must be normal, high or realtime")
    return SshTarget(
        url.hostname,
        url.username,
        port,
        paths.get("identity"),
        paths.get("known_hosts"),
        query.get("python", "python3"),
        query.get("cores", ""),
        query.get("priority", "normal"),
        timeout,
    )


def _run(cmd: list[str], target: SshTarget, what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=target.timeout)
    except subprocess.TimeoutExpired:
        raise CompressError(
            f"ssh://{target.destination}: {what} took more than {target.timeout:.0f} s (raise ?timeout=)"
        ) from None
    if proc.returncode != 0:
        hint = (
            " (check the key: ssh-copy-id, ?identity=; and the host key in known_hosts)"
            if proc.returncode == 255
            else ""
        )
        raise CompressError(
            f"ssh://{target.destination}: {what} failed (exit {proc.returncode}){hint}:\n{proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout


def measure(
    models: list[Path], device: str, threads: int = 1, warmup: int = 5, runs: int = 30, top: int = 10
) -> list[dict[str, Any]]:
    """Measure each model on the device; results as the host's, model paths the local ones."""
    target = parse_device(device)
    for tool in ("ssh", "scp"):
        if shutil.which(tool) is None:
            raise CompressError(
                f"--device {device}: the {tool} client is not installed (apt-get install openssh-client)"
            )
    ssh = ["ssh", *target.options(), target.destination]
    remote_dir = _run(ssh + ["mktemp -d /tmp/compress-bench.XXXXXX"], target, "creating a folder on the device").strip()
    try:
        with tempfile.TemporaryDirectory() as staging:
            # Copies under unique names: two parts may both be called model.onnx.
            names = [f"model-{i}.onnx" for i in range(len(models))]
            for name, model in zip(names, models):
                (Path(staging) / name).symlink_to(Path(model).resolve())
            files = [str(RUNNER)] + [str(Path(staging) / n) for n in names]
            _run(
                ["scp", "-q", *target.options(), *files, f"{target.destination}:{remote_dir}/"],
                target,
                "copying the models",
            )
        cores = [int(c) for c in target.cores.split(",") if c] or None
        remote_models = [f"{remote_dir}/{n}" for n in names]
        cmd = runner_command(
            target.python,
            f"{remote_dir}/{RUNNER.name}",
            remote_models,
            threads,
            warmup,
            runs,
            top,
            cores,
            target.priority,
        )
        out = _run(ssh + [shlex.join(cmd)], target, "measuring")
    finally:
        subprocess.run(ssh + [f"rm -rf {shlex.quote(remote_dir)}"], capture_output=True, timeout=60)
    results = parse_runner_output(out, f"ssh://{target.destination}")["results"]
    return [{**r, "model": str(m)} for r, m in zip(results, models)]

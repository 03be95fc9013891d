"""A real OpenSSH server on 127.0.0.1 for the ssh:// device tests.

`ensure_sshd()` finds sshd or installs it (`apt-get install -y openssh-server`, as root with
Debian's mirror reachable); `LoopbackSshd` starts `sshd -D -f CONFIG` on a free high port with a
temporary host key and an authorized_keys holding a fresh client key. Nothing listens beyond
loopback, and the server stops with the context.

    python tests/bench/sshd.py   # start one by hand; prints the device string, Ctrl-C stops it
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


class SshdUnavailable(Exception):
    """sshd is missing and this machine cannot install it (not root, or no apt-get): a reason to skip."""


def find_sshd() -> str | None:
    return shutil.which("sshd") or next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)


def ensure_sshd() -> str:
    """The sshd binary, installed with apt-get if needed; RuntimeError when an install was possible and failed."""
    found = find_sshd()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SshdUnavailable("sshd is not installed and this user cannot apt-get install openssh-server")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log = []
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server", "openssh-client"],
    ):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        log.append(f"$ {' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
        if proc.returncode != 0:
            break
    found = find_sshd()
    if not found:
        raise RuntimeError("could not install openssh-server for the ssh:// device test:\n" + "\n".join(log))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, capture_output=True)


class LoopbackSshd:
    """sshd on 127.0.0.1:<free port> for the current user, key auth only; a context manager."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.port = free_port()
        self.user = getpass.getuser()
        self.identity = self.folder / "client_key"
        self.known_hosts = self.folder / "known_hosts"
        self.proc: subprocess.Popen | None = None

    @property
    def device(self) -> str:
        """The --device string for this server (the caller adds ?python=... when needed)."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}?identity={self.identity}&known_hosts={self.known_hosts}"

    def __enter__(self) -> LoopbackSshd:
        sshd = ensure_sshd()
        self.folder.mkdir(parents=True, exist_ok=True)
        host_key = self.folder / "host_key"
        _keygen(host_key)
        _keygen(self.identity)
        authorized = self.folder / "authorized_keys"
        authorized.write_text((self.folder / "client_key.pub").read_text())
        authorized.chmod(0o600)
        config = self.folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"AuthorizedKeysFile {authorized}",
                    f"PidFile {self.folder / 'sshd.pid'}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",  # the temporary folder's permissions are the test runner's, not ~/.ssh's
                    "UsePAM no",
                    "Subsystem sftp internal-sftp",  # scp speaks SFTP since OpenSSH 9
                    "",
                ]
            )
        )
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation folder
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._wait_listening()
        return self

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"sshd exited with {self.proc.returncode}:\n{self.proc.stdout.read() if self.proc.stdout else ''}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"sshd did not listen on 127.0.0.1:{self.port} within {timeout:.0f} s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, LoopbackSshd(Path(tmp)) as server:
        print(f"{server.device}&python={sys.executable}", flush=True)
        try:
            server.proc.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            pass

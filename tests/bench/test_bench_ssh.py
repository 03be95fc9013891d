"""ssh:// devices: a real end-to-end run through OpenSSH's sshd on loopback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sshd import LoopbackSshd, SshdUnavailable

from compress.bench import profile as prof
from compress.bench import ssh
from compress.errors import CompressError


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    try:
        with LoopbackSshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server
    except SshdUnavailable as exc:
        pytest.skip(str(exc))


def known(sshd: LoopbackSshd) -> bool:
    """Whether known_hosts holds the server's key (entries may be hashed: ask ssh-keygen)."""
    found = subprocess.run(
        ["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(sshd.known_hosts)], capture_output=True
    )
    return found.returncode == 0


def remote_folders() -> set[Path]:
    return set(Path("/tmp").glob("compress-bench.*"))  # the "device" is this machine


def test_a_model_is_measured_on_an_ssh_device_and_the_remote_folder_removed(sshd, tiny_onnx):
    device = f"{sshd.device}&python={sys.executable}"
    before = remote_folders()
    (row,) = prof.profile(tiny_onnx, device, threads=1, warmup=1, runs=5, top_ops=2)
    assert (row["device"], row["source"], row["file"]) == (device, "measured", str(tiny_onnx))
    assert 0 < row["p50_ms"] <= row["p99_ms"] and row["ops"]
    assert known(sshd)  # the host key was accepted on first use
    assert remote_folders() == before


def test_two_parts_with_the_same_file_name_are_both_measured(sshd, tiny_onnx, tmp_path):
    (tmp_path / "b").mkdir()
    other = tmp_path / "b" / "tiny.onnx"
    other.write_bytes(tiny_onnx.read_bytes())
    results = ssh.measure([tiny_onnx, other], f"{sshd.device}&python={sys.executable}", warmup=0, runs=2, top=0)
    assert [r["model"] for r in results] == [str(tiny_onnx), str(other)]


def test_a_key_the_server_does_not_accept_fails_without_prompting(sshd, tiny_onnx, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    device = f"ssh://{sshd.user}@127.0.0.1:{sshd.port}?identity={stranger}&known_hosts={sshd.known_hosts}"
    with pytest.raises(CompressError, match="failed .*check the key"):
        ssh.measure([tiny_onnx], device, runs=1)


def test_a_missing_remote_python_is_reported(sshd, tiny_onnx):
    with pytest.raises(CompressError, match="measuring failed"):
        ssh.measure([tiny_onnx], f"{sshd.device}&python=/nonexistent/python3", runs=1)


def test_device_strings_are_parsed_and_checked(tmp_path):
    key = tmp_path / "id"
    key.write_text("k")
    t = ssh.parse_device(f"ssh://pi@10.1.2.3:2222?identity={key}&python=/usr/bin/python3&cores=4,5")
    assert (t.user, t.host, t.port, t.python, t.cores, t.identity) == (
        "pi",
        "10.1.2.3",
        2222,
        "/usr/bin/python3",
        "4,5",
        key,
    )
    assert "BatchMode=yes" in t.options() and "StrictHostKeyChecking=accept-new" in t.options()
    with pytest.raises(CompressError, match="unknown option"):
        ssh.parse_device("ssh://pi@h?password=x")
    with pytest.raises(CompressError, match="identity file"):
        ssh.parse_device(f"ssh://pi@h?identity={tmp_path / 'none'}")
    with pytest.raises(CompressError, match="expected ssh://"):
        ssh.parse_device("ssh://")

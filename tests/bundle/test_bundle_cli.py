"""`compress bundle verify|publish|pull` through the real command entry point."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.cli import main


def _compress(*args: str) -> int:
    """The exit code of `compress ARGS` (main exits only on errors)."""
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_verify_publish_and_pull_from_the_command_line(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _compress("bundle", "verify", str(bundle)) == 0
    assert "ok: tiny-call 1.2.3: 6 files" in capsys.readouterr().out
    assert _compress("bundle", "publish", str(bundle), "--to", str(tmp_path / "reg")) == 0
    assert "tiny-call 1.2.3: published" in capsys.readouterr().out
    assert _compress("bundle", "pull", str(tmp_path / "reg"), "tiny-call", "--to", str(tmp_path / "apps")) == 0
    assert f"pulled and verified: {tmp_path / 'apps' / 'tiny-call-1.2.3'}" in capsys.readouterr().out


def test_a_tampered_bundle_fails_verify_with_exit_code_2(bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (bundle / "models" / "kp_detector.onnx").write_bytes(b"not a model")
    assert _compress("bundle", "verify", str(bundle)) == 2
    assert "models/kp_detector.onnx: sha256 mismatch: expected" in capsys.readouterr().err

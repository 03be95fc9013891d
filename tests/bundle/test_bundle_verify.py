"""`compress bundle verify` and the atomic bundle write."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compress.bundle import verify_bundle
from compress.bundle.stage import write_bundle
from compress.errors import CompressError
from compress.run import sha256_file


def test_a_fresh_bundle_verifies(bundle: Path) -> None:
    report = verify_bundle(bundle)
    assert (report["name"], report["version"], report["ok"]) == ("tiny-call", "1.2.3", True)
    assert report["files"] == 6  # 3 models, the card, 2 snippets


def test_a_tampered_file_is_named_with_expected_and_actual_sha256(bundle: Path) -> None:
    model = bundle / "models" / "kp_detector.onnx"
    expected = sha256_file(model)
    model.write_bytes(model.read_bytes()[:-1] + b"\0")
    with pytest.raises(CompressError) as err:
        verify_bundle(bundle)
    assert f"models/kp_detector.onnx: sha256 mismatch: expected {expected}, actual {sha256_file(model)}" in str(
        err.value
    )


def test_missing_extra_and_tampered_files_are_all_reported(bundle: Path) -> None:
    (bundle / "snippets" / "VideoCall.kt").unlink()
    (bundle / "models" / "notes.txt").write_text("unlisted")
    (bundle / "MODEL_CARD.md").write_text("# edited")
    with pytest.raises(CompressError) as err:
        verify_bundle(bundle)
    msg = str(err.value)
    assert "(3 problems)" in msg
    assert "snippets/VideoCall.kt: listed in the manifest but missing" in msg
    assert "models/notes.txt: not listed in the manifest (an extra file)" in msg
    assert "MODEL_CARD.md: sha256 mismatch" in msg


def test_a_symlink_in_place_of_a_listed_file_is_reported(bundle: Path, tmp_path: Path) -> None:
    card = bundle / "MODEL_CARD.md"
    copy = tmp_path / "card.md"
    copy.write_bytes(card.read_bytes())
    card.unlink()
    os.symlink(copy, card)
    with pytest.raises(CompressError, match="MODEL_CARD.md: listed in the manifest but a link"):
        verify_bundle(bundle)


def test_a_folder_without_manifest_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(CompressError, match="manifest.json: not found"):
        verify_bundle(tmp_path)


def test_a_failed_write_keeps_the_previous_bundle(bundle: Path, tiny) -> None:
    before = {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    with pytest.raises(CompressError, match="swift snippet loads coreml models"):
        write_bundle(bundle, tiny.source(snippets=["python", "swift"]))
    assert {p: p.read_bytes() for p in bundle.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in bundle.parent.iterdir()) == [bundle.name]  # no temporary left


def test_a_folder_that_is_not_a_bundle_is_never_replaced(tiny, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(CompressError, match="exists and is not a bundle"):
        write_bundle(tmp_path, tiny.source())
    assert (tmp_path / "mine.txt").read_text() == "keep me"

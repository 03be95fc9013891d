"""Registry: reproducible archives, publish (also concurrently), pull from a folder or over HTTP."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import tarfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from compress.bundle import publish, pull, verify_bundle
from compress.bundle.registry import archive_bytes, semver_key
from compress.bundle.stage import write_bundle
from compress.errors import CompressError


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A registry folder and the URL of a real HTTP server on loopback serving it."""
    root = tmp_path / "registry"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- archives --------------------------------------------------------------------------------
def test_archives_are_reproducible_whatever_the_file_times_and_modes(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy" / bundle.name
    shutil.copytree(bundle, copy)
    for p in copy.rglob("*"):
        os.utime(p, (1_000_000, 1_000_000))
        if p.is_file():
            p.chmod(0o600)
    assert archive_bytes(bundle) == archive_bytes(bundle) == archive_bytes(copy)


def test_archive_entries_are_sorted_with_fixed_metadata(bundle: Path) -> None:
    data = archive_bytes(bundle)
    assert data[3] & 0x08 == 0 and data[4:8] == b"\0\0\0\0"  # gzip: no file name, mtime 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and all(n.startswith("tiny-call-1.2.3/") for n in names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o644)}


# -- publish ---------------------------------------------------------------------------------
def test_publish_adds_the_archive_to_the_index(bundle: Path, tmp_path: Path) -> None:
    result = publish(bundle, tmp_path / "reg")
    index = json.loads((tmp_path / "reg" / "index.json").read_text())
    entry = index["bundles"]["tiny-call"]["1.2.3"]
    assert result["status"] == "published"
    assert entry["archive"] == "tiny-call/tiny-call-1.2.3.tar.gz"
    assert entry["sha256"] == hashlib.sha256((tmp_path / "reg" / entry["archive"]).read_bytes()).hexdigest()
    assert entry["created"] == json.loads((bundle / "manifest.json").read_text())["created_utc"]


def test_publishing_the_same_bundle_again_is_a_no_op(bundle: Path, tmp_path: Path) -> None:
    publish(bundle, tmp_path / "reg")
    index = (tmp_path / "reg" / "index.json").read_bytes()
    assert publish(bundle, tmp_path / "reg")["status"] == "unchanged"
    assert (tmp_path / "reg" / "index.json").read_bytes() == index


def test_a_different_bundle_under_a_published_version_is_refused(bundle: Path, tiny, tmp_path: Path) -> None:
    publish(bundle, tmp_path / "reg")
    write_bundle(bundle, tiny.source(created=datetime(2020, 1, 1, tzinfo=UTC)))
    with pytest.raises(
        CompressError, match="tiny-call 1.2.3 is already published with a different content.*bump the recipe's version"
    ):
        publish(bundle, tmp_path / "reg")


def test_a_tampered_bundle_is_not_published(bundle: Path, tmp_path: Path) -> None:
    (bundle / "MODEL_CARD.md").write_text("# edited")
    with pytest.raises(CompressError, match="MODEL_CARD.md: sha256 mismatch"):
        publish(bundle, tmp_path / "reg")
    assert not (tmp_path / "reg" / "index.json").exists()


def test_concurrent_publishes_all_land_in_the_index(tiny, tmp_path: Path) -> None:
    versions = [f"1.0.{i}" for i in range(6)]
    bundles = [tmp_path / v for v in versions]
    for folder, v in zip(bundles, versions, strict=True):
        write_bundle(folder, tiny.source(version=v))
    registry = tmp_path / "reg"
    with multiprocessing.get_context("fork").Pool(len(bundles)) as pool:
        results = pool.starmap(publish, [(b, registry) for b in bundles])
    assert sorted(r["version"] for r in results) == versions
    index = json.loads((registry / "index.json").read_text())
    assert sorted(index["bundles"]["tiny-call"]) == versions
    for entry in index["bundles"]["tiny-call"].values():
        assert hashlib.sha256((registry / entry["archive"]).read_bytes()).hexdigest() == entry["sha256"]


# -- pull ------------------------------------------------------------------------------------
def test_pull_over_http_gives_back_the_identical_bundle(bundle: Path, served: tuple[Path, str], tmp_path: Path) -> None:
    root, url = served
    publish(bundle, root)
    pulled = pull(url, "tiny-call@1.2.3", tmp_path / "apps")
    assert pulled == tmp_path / "apps" / "tiny-call-1.2.3"
    assert _files(pulled) == _files(bundle)
    assert verify_bundle(pulled)["ok"]


def test_pull_without_a_version_takes_the_highest_semver(tiny, tmp_path: Path) -> None:
    for v in ("1.9.0", "1.10.0", "1.2.3"):
        write_bundle(tmp_path / v, tiny.source(version=v))
        publish(tmp_path / v, tmp_path / "reg")
    assert pull(tmp_path / "reg", "tiny-call", tmp_path / "apps").name == "tiny-call-1.10.0"


def test_semver_order_follows_precedence_rules() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.2.0",
        "1.10.0+build.5",
    ]
    assert sorted(reversed(ordered), key=semver_key) == ordered


def test_pull_names_unknown_bundles_and_versions(bundle: Path, tmp_path: Path) -> None:
    publish(bundle, tmp_path / "reg")
    with pytest.raises(CompressError, match="no bundle named 'other'"):
        pull(tmp_path / "reg", "other", tmp_path / "apps")
    with pytest.raises(CompressError, match=r"tiny-call has no version 9.9.9 \(it has 1.2.3\)"):
        pull(tmp_path / "reg", "tiny-call@9.9.9", tmp_path / "apps")


def test_an_archive_that_does_not_match_the_index_is_refused(
    bundle: Path, served: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = served
    entry = publish(bundle, root)
    archive = root / entry["archive"]
    archive.write_bytes(archive.read_bytes() + b"\0")
    with pytest.raises(CompressError, match=f"sha256 mismatch: expected {entry['sha256']}, actual "):
        pull(url, "tiny-call@1.2.3", tmp_path / "apps")
    assert not (tmp_path / "apps" / "tiny-call-1.2.3").exists()


def _file(name: str, data: bytes = b"x") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def _special(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        tar.addfile(info)

    return add


def _registry_with(root: Path, add: Callable[[tarfile.TarFile], None]) -> None:
    """A registry whose index honestly lists an archive made of `add`'s members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        _file("tiny-call-1.2.3/manifest.json", b"{}")(tar)
        add(tar)
    data = buf.getvalue()
    (root / "tiny-call").mkdir(parents=True)
    (root / "tiny-call" / "tiny-call-1.2.3.tar.gz").write_bytes(data)
    entry = {
        "archive": "tiny-call/tiny-call-1.2.3.tar.gz",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "created": "2020-01-01T00:00:00Z",
    }
    (root / "index.json").write_text(json.dumps({"schema_version": "1.0", "bundles": {"tiny-call": {"1.2.3": entry}}}))


@pytest.mark.parametrize(
    "member, message",
    [
        (_file("tiny-call-1.2.3/../../escaped.txt"), r"'\.\.' in the path leaves the target folder"),
        (_file("/tmp/escaped.txt"), "/tmp/escaped.txt: absolute path"),
        (_file("elsewhere/file.txt"), r"outside the bundle folder tiny-call-1\.2\.3/"),
        (
            _special("tiny-call-1.2.3/link", tarfile.SYMTYPE, "../../escaped.txt"),
            "symlink to '../../escaped.txt' leaves the target folder",
        ),
        (
            _special("tiny-call-1.2.3/hard", tarfile.LNKTYPE, "/etc/passwd"),
            "hardlink to '/etc/passwd' leaves the target folder",
        ),
        (_special("tiny-call-1.2.3/tty", tarfile.CHRTYPE), "device file"),
    ],
    ids=["dotdot", "absolute", "outside-top", "symlink", "hardlink", "device"],
)
def test_unsafe_archives_are_refused_before_anything_is_extracted(
    member, message: str, served: tuple[Path, str], tmp_path: Path
) -> None:
    root, url = served
    _registry_with(root, member)
    apps = tmp_path / "deep" / "apps"
    with pytest.raises(CompressError, match=message) as err:
        pull(url, "tiny-call@1.2.3", apps)
    assert "refusing to extract an unsafe archive" in str(err.value)
    assert list(apps.iterdir()) == [] and not (tmp_path / "escaped.txt").exists()


def test_pull_never_replaces_a_folder_that_is_not_a_bundle(bundle: Path, tmp_path: Path) -> None:
    publish(bundle, tmp_path / "reg")
    mine = tmp_path / "apps" / "tiny-call-1.2.3"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(CompressError, match="exists and is not a bundle"):
        pull(tmp_path / "reg", "tiny-call@1.2.3", tmp_path / "apps")
    assert (mine / "notes.txt").read_text() == "keep me"

"""A bundle registry: a plain folder that any static web server can serve.

    REGISTRY/index.json                          {"schema_version",
                                                  "bundles": {name: {version: {archive, sha256, bytes, created}}}}
    REGISTRY/<name>/<name>-<version>.tar.gz      one reproducible archive per version
    REGISTRY/.index.lock                         publishers serialise on it (fcntl)

Archives are reproducible: the same bundle gives the same bytes (sorted entries, fixed
mtime/uid/gid/owner names/modes, gzip header without a name or time), so publishing the same
bundle again is a no-op and a different bundle under a published version is refused.
Pulling trusts nothing: the archive's sha256 must match the index, every member must be a
regular file or folder inside `<name>-<version>/`, and the extracted bundle must verify.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import re
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from compress.bundle.manifest import MANIFEST, load_manifest
from compress.bundle.verify import verify_bundle
from compress.checkpoints import atomic_path
from compress.errors import CompressError
from compress.recipe import SEMVER

INDEX = "index.json"
LOCK = ".index.lock"
INDEX_SCHEMA = "1.0"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
FETCH_TIMEOUT_S = 60


# -- reproducible archives -------------------------------------------------------------------
def write_archive(bundle: Path, out: BinaryIO, top: str) -> None:
    """tar.gz of the bundle's files under `top/`, byte-identical for identical files."""
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()):
                rel = path.relative_to(bundle).as_posix()
                info = tarfile.TarInfo(f"{top}/{rel}")
                info.size = path.stat().st_size
                info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
                with open(path, "rb") as f:
                    tar.addfile(info, f)


def archive_bytes(bundle: str | Path) -> bytes:
    """The reproducible archive of a bundle folder, in memory (bundles are a few MB)."""
    bundle = Path(bundle)
    buf = io.BytesIO()
    write_archive(bundle, buf, load_manifest(bundle).folder_name)
    return buf.getvalue()


# -- publish ---------------------------------------------------------------------------------
def publish(bundle: str | Path, registry: str | Path) -> dict[str, Any]:
    """Add a verified bundle to a registry folder; safe against concurrent publishers.

    Returns {"name", "version", "archive", "sha256", "bytes", "created", "status"} with status
    "published" or "unchanged" (the same archive was already there).
    """
    bundle, registry = Path(bundle), Path(registry)
    verify_bundle(bundle)
    manifest = load_manifest(bundle)
    data = archive_bytes(bundle)
    entry = {
        "archive": f"{manifest.name}/{manifest.folder_name}.tar.gz",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "created": manifest.created_utc,
    }
    registry.mkdir(parents=True, exist_ok=True)
    with _locked(registry):
        index = _read_index_file(registry)
        known = index["bundles"].get(manifest.name, {}).get(manifest.version)
        if known is not None and known["sha256"] == entry["sha256"]:
            return {"name": manifest.name, "version": manifest.version, **known, "status": "unchanged"}
        if known is not None:
            raise CompressError(
                f"{registry}: {manifest.name} {manifest.version} is already published with a different content "
                f"(sha256 {known['sha256']}, this bundle's archive {entry['sha256']}); bump the recipe's version"
            )
        with atomic_path(registry / entry["archive"]) as tmp:
            tmp.write_bytes(data)
        index["bundles"].setdefault(manifest.name, {})[manifest.version] = entry
        with atomic_path(registry / INDEX) as tmp:
            tmp.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return {"name": manifest.name, "version": manifest.version, **entry, "status": "published"}


@contextmanager
def _locked(registry: Path) -> Iterator[None]:
    with open(registry / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_index_file(registry: Path) -> dict[str, Any]:
    path = registry / INDEX
    if not path.exists():
        return {"schema_version": INDEX_SCHEMA, "bundles": {}}
    return _parse_index(path.read_bytes(), str(path))


def _parse_index(raw: bytes, where: str) -> dict[str, Any]:
    try:
        index = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CompressError(f"{where}: not a valid registry index ({exc})") from None
    if (
        not isinstance(index, dict)
        or index.get("schema_version") != INDEX_SCHEMA
        or not isinstance(index.get("bundles"), dict)
    ):
        raise CompressError(
            f"{where}: not a registry index of schema {INDEX_SCHEMA} (expected {{'schema_version', 'bundles'}})"
        )
    return index


# -- pull ------------------------------------------------------------------------------------
def pull(source: str | Path, spec: str, to: str | Path) -> Path:
    """Download NAME[@VERSION] (default: the highest semver) from a registry folder or http(s) URL,
    check its sha256, extract it safely into `to/<name>-<version>` and verify it."""
    name, _, version = spec.partition("@")
    if not NAME.match(name) or (version and not SEMVER.match(version)):
        raise CompressError(f"{spec!r}: expected NAME or NAME@VERSION, e.g. fomm-mobile@1.2.0")
    index = _parse_index(_read(source, INDEX), _location(source, INDEX))
    versions = index["bundles"].get(name)
    if not versions:
        raise CompressError(
            f"{_location(source, INDEX)}: no bundle named {name!r} "
            f"(it has: {', '.join(sorted(index['bundles'])) or 'none'})"
        )
    version = version or max(versions, key=semver_key)
    if version not in versions:
        raise CompressError(
            f"{_location(source, INDEX)}: {name} has no version {version} "
            f"(it has {', '.join(sorted(versions, key=semver_key))})"
        )
    entry = versions[version]
    archive = _safe_relative(entry.get("archive", ""), f"{_location(source, INDEX)}: {name} {version} archive")
    data = _read(source, archive)
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.get("sha256"):
        raise CompressError(
            f"{_location(source, archive)}: sha256 mismatch: expected {entry.get('sha256')}, actual {actual}; "
            "the archive was changed or damaged"
        )
    top = f"{name}-{version}"
    target = Path(to) / top
    if target.is_dir() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise CompressError(f"{target}: exists and is not a bundle; refusing to replace it (pull --to another folder)")
    with atomic_path(target) as tmp:
        safe_extract(data, tmp, top, _location(source, archive))
        bundle = tmp / top
        verify_bundle(bundle)
        manifest = load_manifest(bundle)
        if (manifest.name, manifest.version) != (name, version):
            raise CompressError(
                f"{_location(source, archive)}: holds {manifest.name} {manifest.version}, "
                f"not {name} {version} as the index says"
            )
        _hoist(bundle, tmp)
    return target


def _hoist(bundle: Path, tmp: Path) -> None:
    """Make tmp hold the bundle's files itself (the archive wraps them in one folder)."""
    for child in list(bundle.iterdir()):
        os.replace(child, tmp / child.name)
    bundle.rmdir()


def safe_extract(data: bytes, dest: Path, top: str, where: str) -> None:
    """Extract a tar.gz held in memory into dest, refusing anything but files and folders under top/."""
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            problems = [p for m in members if (p := _member_problem(m, top))]
            if problems:
                raise CompressError(f"{where}: refusing to extract an unsafe archive:\n  " + "\n  ".join(problems))
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
        raise CompressError(f"{where}: not a readable tar.gz archive ({exc})") from None


def _member_problem(m: tarfile.TarInfo, top: str) -> str | None:
    name = m.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return f"{name}: absolute path"
    if ".." in parts:
        return f"{name}: '..' in the path leaves the target folder"
    if not parts or parts[0] != top:
        return f"{name}: outside the bundle folder {top}/"
    if m.issym() or m.islnk():
        kind = "symlink" if m.issym() else "hardlink"
        base = PurePosixPath(name).parent if m.issym() else PurePosixPath()
        escapes = m.linkname.startswith("/") or _leaves(base / m.linkname)
        return (
            f"{name}: {kind} to {m.linkname!r}{' leaves the target folder' if escapes else ''}; "
            "bundles hold regular files only"
        )
    if not (m.isfile() or m.isdir()):
        return f"{name}: device file, fifo or other special file; bundles hold regular files only"
    return None


def _leaves(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def _safe_relative(path: str, what: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path or urllib.parse.urlparse(path).scheme:
        raise CompressError(f"{what}: {path!r} is not a relative path inside the registry")
    return path


def _is_url(source: str | Path) -> bool:
    return isinstance(source, str) and urllib.parse.urlparse(source).scheme in ("http", "https")


def _location(source: str | Path, rel: str) -> str:
    if _is_url(source):
        return urllib.parse.urljoin(str(source).rstrip("/") + "/", urllib.parse.quote(rel))
    return str(Path(source) / rel)


def _read(source: str | Path, rel: str) -> bytes:
    """A registry file's bytes, from a folder or over http(s)."""
    where = _location(source, rel)
    if not _is_url(source):
        if isinstance(source, str) and "://" in source:
            raise CompressError(f"{source}: a registry is a folder or an http(s) URL")
        try:
            return Path(where).read_bytes()
        except OSError as exc:
            raise CompressError(f"{where}: cannot read ({exc.strerror}); is {source} a registry folder?") from None
    try:
        with urllib.request.urlopen(where, timeout=FETCH_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise CompressError(f"{where}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CompressError(f"{where}: cannot download ({getattr(exc, 'reason', exc)})") from None


def semver_key(version: str) -> tuple[Any, ...]:
    """Sort key for semver 2.0 precedence: 1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0."""
    core, _, pre = version.split("+", 1)[0].partition("-")
    major, minor, patch = (int(x) for x in core.split("."))
    if not pre:
        return (major, minor, patch, 1, ())
    ids = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in pre.split("."))
    return (major, minor, patch, 0, ids)


def publish_command(bundle: str | Path, registry: str | Path) -> None:
    """`compress bundle publish PATH --to REGISTRY`."""
    r = publish(bundle, registry)
    what = "published" if r["status"] == "published" else "unchanged (already published with the same content)"
    print(f"{r['name']} {r['version']}: {what}: {Path(registry) / r['archive']} sha256 {r['sha256']}")


def pull_command(source: str, spec: str, to: str | Path) -> None:
    """`compress bundle pull SOURCE NAME[@VERSION] --to DIR`."""
    path = pull(source, spec, to)
    print(f"{spec}: pulled and verified: {path}")

"""`compress bundle verify`: the manifest matches the schema and every file matches the manifest."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from compress.bundle.manifest import MANIFEST, load_manifest
from compress.errors import CompressError
from compress.run import sha256_file


def verify_bundle(path: str | Path) -> dict[str, Any]:
    """Check schema, presence, size and sha256 of every listed file (models, assets, card, snippets),
    and that nothing else is there.

    Returns a report (name, version, files checked, bytes); raises CompressError listing every problem.
    """
    root = Path(path)
    if not root.is_dir():
        raise CompressError(f"{root}: not a folder; pass a bundle folder such as exported/<name>-<version>")
    manifest = load_manifest(root)
    problems: list[str] = []
    listed = {f.path: f for f in manifest.files()}
    for rel, entry in listed.items():
        file = root / rel
        if file.is_symlink() or not file.is_file():
            problems.append(f"{rel}: listed in the manifest but {'a link' if file.is_symlink() else 'missing'}")
            continue
        actual = sha256_file(file)
        if actual != entry.sha256:
            problems.append(
                f"{rel}: sha256 mismatch: expected {entry.sha256}, actual {actual} "
                "(the file was changed after bundling)"
            )
        elif file.stat().st_size != entry.bytes:
            problems.append(f"{rel}: size mismatch: expected {entry.bytes} bytes, actual {file.stat().st_size}")
    for rel in _files_on_disk(root):
        if rel != MANIFEST and rel not in listed:
            problems.append(f"{rel}: not listed in the manifest (an extra file)")
    model_bytes = sum(f.bytes for p in manifest.parts for f in p.files.values())
    if manifest.size.total_bytes != model_bytes:
        problems.append(
            f"{MANIFEST}: size.total_bytes is {manifest.size.total_bytes} but the model files add up to {model_bytes}"
        )
    if problems:
        raise CompressError(
            f"{root}: bundle verification failed ({len(problems)} problem{'s' * (len(problems) > 1)}):\n  "
            + "\n  ".join(problems)
        )
    return {
        "bundle": str(root),
        "name": manifest.name,
        "version": manifest.version,
        "schema_version": manifest.schema_version,
        "files": len(listed),
        "bytes": sum(f.bytes for f in listed.values()),
        "ok": True,
    }


def _files_on_disk(root: Path) -> list[str]:
    """Every non-folder entry under root (links included, not followed), as POSIX paths."""
    found = []
    for folder, dirs, files in os.walk(root):
        base = Path(folder)
        entries = files + [d for d in dirs if (base / d).is_symlink()]
        found += [(base / name).relative_to(root).as_posix() for name in entries]
    return sorted(found)


def verify_command(path: str | Path) -> None:
    """`compress bundle verify PATH`: one line on success; CompressError (exit 2) listing problems otherwise."""
    report = verify_bundle(path)
    print(
        f"ok: {report['name']} {report['version']}: {report['files']} files, "
        f"{report['bytes'] / 1e6:.2f} MB match {Path(path) / MANIFEST}"
    )

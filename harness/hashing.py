"""Content hashes for provenance and caches."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_manifest(path: str | Path) -> tuple[str, dict[str, str]]:
    """(digest, {relative file name: sha256}) of every file under a folder; the digest is the sha256 of the sorted
    `name  sha256` lines (as `sha256sum` prints them), so it changes when any file's name or bytes change."""
    root = Path(path)
    files = {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest(), files

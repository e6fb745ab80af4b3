"""Where recutils keeps downloaded data and computed embeddings, and file checksums."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder: ``$RECUTILS_CACHE`` or ``~/.cache/recutils`` (created if missing)."""
    path = Path(os.environ.get("RECUTILS_CACHE", Path.home() / ".cache" / "recutils")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

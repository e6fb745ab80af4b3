"""Where recutils keeps downloaded data and computed embeddings, and file checksums."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` once the block succeeds.

    Readers never see a half-written file: ``os.replace`` within one folder is atomic,
    so ``path`` holds either the old content or the whole new one. If the block fails,
    the temporary file is removed and ``path`` is left as it was. Two processes writing
    the same path at once both succeed; the last rename wins, and both wrote the same
    bytes when the content is a function of the cache key.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def warn_rebuild(path: str | Path, problem: object) -> None:
    """Say that a cache entry could not be used and is being rebuilt."""
    warnings.warn(f"cache entry {path} is unusable ({problem}); rebuilding it", RuntimeWarning, stacklevel=3)

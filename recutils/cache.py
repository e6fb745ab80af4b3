"""Where recutils keeps downloaded data and computed entries: checksums, atomic files and folders, locks."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder: ``$RECUTILS_CACHE`` or ``~/.cache/recutils`` (created if missing)."""
    path = Path(os.environ.get("RECUTILS_CACHE", Path.home() / ".cache" / "recutils")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def kernel_paths() -> str:
    """The CPU code paths that computed results depend on: torch's kernel level ("AVX2",
    "AVX512", ...; ``ATEN_CPU_CAPABILITY`` lowers it), and whether MKL follows ``MKL_CBWR``
    (:func:`mkl_follows_cbwr`). Kernels of another level add in another order, so an embedding
    or a trained model computed on them differs in its last bits, and training carries that
    further: every computed cache entry is keyed by this too.
    """
    import torch  # here, so that cache_dir() stays usable without torch loaded

    level = torch.backends.cpu.get_cpu_capability()
    return level if mkl_follows_cbwr() else f"{level}, MKL on its own vendor paths"


@functools.cache  # a process's answer cannot change, and every cache key asks
def mkl_follows_cbwr() -> bool:
    """Whether torch's MKL takes this CPU for Intel's, the only CPUs on which it follows
    ``MKL_CBWR``: an Intel CPU, or any CPU with ``recutils/native/mkl_cnr.c`` preloaded (the
    Makefile preloads it). On AMD's CPUs without it, MKL runs paths of its own whatever
    ``MKL_CBWR`` says, and trained models differ from those made on Intel's.
    """
    import torch

    try:
        own = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")).mkl_serv_intel_cpu_true
    except (OSError, AttributeError):
        return True  # a torch without MKL inside: there is no MKL path to follow
    try:
        # MKL calls its vendor check through the dynamic linker, so a preloaded answer, first
        # in the global scope, is the one it gets.
        answer = ctypes.CDLL(None).mkl_serv_intel_cpu_true
    except AttributeError:
        answer = own
    return bool(answer())


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


@contextlib.contextmanager
def atomic_folder(folder: str | Path, replace: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``folder`` to fill; renamed onto ``folder`` once the block succeeds.

    A cache entry that is a folder appears whole or not at all. When another process stored the
    same entry first, its copy is kept; with ``replace`` (the entry there is damaged) it is
    swapped for this one. The temporary folder is removed whatever happens.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        yield partial
        if replace:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(partial, folder)
        except OSError:
            pass  # another process renamed its (identical) entry into place first
    finally:
        shutil.rmtree(partial, ignore_errors=True)


@contextlib.contextmanager
def cache_lock(kind: str, key: str) -> Iterator[None]:
    """Hold an exclusive lock on the cache entry ``key`` of ``kind`` for the block.

    Two processes about to compute the same entry (``make test`` runs two workers over the
    notebooks side by side, and both need chapter 4's towers) would both compute it.
    Inside this lock the second waits for the first, then finds the entry stored. The
    lock is a file under ``{cache}/locks``. Where ``fcntl`` is missing (Windows) the
    block runs unlocked, and two processes may then both compute the entry.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = cache_dir() / "locks"
    folder.mkdir(exist_ok=True)
    with open(folder / f"{kind}-{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def warn_rebuild(path: str | Path, problem: object) -> None:
    """Say that a cache entry could not be used and is being rebuilt."""
    warnings.warn(f"cache entry {path} is unusable ({problem}); rebuilding it", RuntimeWarning, stacklevel=3)


def cached_folder(
    kind: str,
    key: str,
    load: Callable[[Path], object],
    build: Callable[[], object],
    save: Callable[[Path], object],
    use_cache: bool = True,
) -> Path:
    """Load the cache entry ``{cache}/{kind}/{key}`` (a folder), or build it and store it whole.

    Under :func:`cache_lock`, so a second process that needs the same entry waits for the
    first and then loads it. An entry that cannot be loaded (half-written, truncated,
    damaged: ``load`` raises) is rebuilt with a warning and replaced (:func:`atomic_folder`).
    Without ``use_cache`` it only builds, reading and writing nothing. Returns: the entry's folder.
    """
    folder = cache_dir() / kind / key
    with cache_lock(kind, key) if use_cache else contextlib.nullcontext():
        broken = False
        if use_cache and folder.exists():
            try:
                load(folder)
                return folder
            except Exception as exc:  # a half-written, truncated or damaged entry: build it again
                warn_rebuild(folder, f"{type(exc).__name__}: {exc}")
                broken = True
        build()
        if use_cache:
            with atomic_folder(folder, replace=broken) as partial:
                save(partial)
    return folder

"""Side-by-side timing for ``make bench``: alternating repetitions, medians and ratios.

A shared machine drifts (another job starts, the CPU clocks down), so candidates are
never timed one after the other in blocks. Each repetition runs every candidate once,
in an order that reverses from one repetition to the next (A B, B A, A B, ...), and
results are compared as ratios of medians.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch


def compare(
    candidates: Mapping[str, Callable[[], object]], repeats: int = 3, warmup: bool = True
) -> pd.DataFrame:
    """Time each candidate ``repeats`` times, alternating their order.

    Args:
        candidates: name → a function of no arguments doing the work once.
        repeats: timed runs per candidate.
        warmup: run every candidate once, untimed, first (loads, caches, JIT).
    Returns: one row per candidate: ``median_s``, ``min_s``, ``max_s`` and ``runs``
        (the list of times, in seconds), in the order given.
    """
    if not candidates:
        raise ValueError("no candidates to compare")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(candidates)
    if warmup:
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repetition in range(repeats):
        for name in names if repetition % 2 == 0 else reversed(names):
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return pd.DataFrame(
        {
            "median_s": [float(np.median(times[n])) for n in names],
            "min_s": [min(times[n]) for n in names],
            "max_s": [max(times[n]) for n in names],
            "runs": [times[n] for n in names],
        },
        index=pd.Index(names, name="candidate"),
    )


def speed_ratio(table: pd.DataFrame, candidate: str, reference: str) -> float:
    """How many times faster ``candidate`` is than ``reference`` (ratio of median times)."""
    for name in (candidate, reference):
        if name not in table.index:
            raise KeyError(f"{name!r} is not among the candidates {list(table.index)}")
    return float(table.loc[reference, "median_s"] / table.loc[candidate, "median_s"])


def loglog_slope(x: np.ndarray | list[float], y: np.ndarray | list[float]) -> tuple[float, float]:
    """Least-squares fit of log y = slope · log x + intercept.

    A slope of 1 means cost grows linearly with x, 2 quadratically.
    Returns: (slope, intercept), natural logarithms.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or len(x) < 2:
        raise ValueError(f"need two equally long series of at least 2 points, got {len(x)} and {len(y)}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a log–log fit needs positive values")
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(intercept)


def run_in_subprocess(function: Callable[..., Any], **kwargs: Any) -> tuple[Any, int, int]:
    """Run ``function(**kwargs)`` in a fresh process and measure its peak memory.

    Peak resident memory only ever grows within a process, so each measurement
    needs its own. ``function`` must be importable (defined at a module's top level).
    Returns: the function's return value; the process's peak resident set in bytes;
        and its resident set just before the call (after the imports), so the
        difference is the most the work itself added.
    """
    pool = multiprocessing.get_context("spawn").Pool(1)
    try:
        return pool.apply(_call_and_measure, (function, kwargs))
    finally:
        pool.close()
        pool.join()


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024  # reported in kB


def _call_and_measure(function: Callable[..., Any], kwargs: dict[str, Any]) -> tuple[Any, int, int]:
    # A spawned process starts as a fork of its parent, and getrusage's peak keeps the
    # parent's size; resetting the kernel's high-water mark (Linux) makes the peak this
    # call's own.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_bytes("VmRSS")
    result = function(**kwargs)
    return result, _status_bytes("VmHWM"), before


VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
#: The CPU families whose results are kept apart, widest first: "avx512" when the CPU has
#: avx512f, else "avx2" (with or without AVX-VNNI), else "other".
FAMILIES = ("avx512", "avx2", "other")
FAMILY_NAMES = {"avx512": "AVX-512", "avx2": "AVX2 only", "other": "neither AVX2 nor AVX-512"}
#: Variables that pick a library's kernels (the Makefile's code-path switches) or its threads:
#: a speed measured under one setting says nothing about another.
KERNEL_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_ENABLE_INSTRUCTIONS",
    "NPY_DISABLE_CPU_FEATURES",
    "OPENBLAS_CORETYPE",
    "OMP_NUM_THREADS",
)


def _cpuinfo() -> tuple[str, list[str]]:
    """The CPU's model name and the :data:`VECTOR_FLAGS` it has (empty where /proc/cpuinfo is missing)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.readlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
        present = next(line.split(":", 1)[1].split() for line in lines if line.startswith("flags"))
        return cpu, [flag for flag in VECTOR_FLAGS if flag in present]
    except (OSError, StopIteration):
        return cpu, []


def cpu_family(flags: str | list[str] | None = None) -> str:
    """The CPU family of :data:`FAMILIES` for ``flags`` (a space-separated string, as the result
    files' ``vector_instructions`` hold, or a list); default this machine's flags."""
    if flags is None:
        flags = _cpuinfo()[1]
    present = set(flags.split() if isinstance(flags, str) else flags)
    return "avx512" if "avx512f" in present else "avx2" if "avx2" in present else "other"


def results_path(folder: str | Path, family: str | None = None) -> Path:
    """Where ``make bench`` keeps the results of a CPU family: ``{folder}/latest-{family}.json``
    (default family: this machine's)."""
    family = family or cpu_family()
    if family not in FAMILIES:
        raise ValueError(f"unknown CPU family {family!r}; choose one of {', '.join(FAMILIES)}")
    return Path(folder) / f"latest-{family}.json"


def machine_key(*libraries: str) -> dict[str, Any]:
    """What a speed measured here depends on: the CPU, its vector instructions, torch's threads and
    kernel level, the kernel-picking variables that are set, and the versions of ``libraries``.

    Timings cached under this key (:func:`cached_choice`) are reused only on a machine and in an
    environment that would time the same.
    """
    from recutils.cache import kernel_paths

    cpu, flags = _cpuinfo()
    versions = {}
    for name in ("torch", "numpy", *libraries):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "flags": " ".join(flags),
        "threads": torch.get_num_threads(),
        "kernel": kernel_paths(),
        "variables": {name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ},
        "versions": versions,
    }


_CHOICES: dict[str, dict[str, Any]] = {}


def cached_choice(
    kind: str, key: Mapping[str, Any], measure: Callable[[], dict[str, Any]], refresh: bool = False
) -> dict[str, Any]:
    """A choice made by timing, measured once per ``key`` and kept in ``{cache}/routes/{kind}-*.json``.

    Args:
        kind: what is chosen ("exact-index", "encoder").
        key: everything the timing depends on (:func:`machine_key` plus the problem's shape).
        measure: times the candidates; returns a JSON-serialisable record of the choice.
        refresh: time again even when a choice is cached (and keep the new one).
    Returns: the record, with ``key`` and ``measured`` (the UTC time it was timed) added. An
        unreadable entry is timed again.
    """
    from recutils.cache import atomic_path, cache_dir

    text = json.dumps(dict(key), sort_keys=True, default=str)
    digest = hashlib.sha256(f"{kind}|{text}".encode()).hexdigest()[:24]
    path = cache_dir() / "routes" / f"{kind}-{digest}.json"
    if str(path) in _CHOICES and not refresh:
        return _CHOICES[str(path)]
    record = None
    if path.is_file() and not refresh:
        try:
            record = json.loads(path.read_text())
            if record.get("key") != json.loads(text):
                record = None
        except (OSError, json.JSONDecodeError, AttributeError):
            record = None
    if record is None:
        record = dict(measure())
        record["key"] = json.loads(text)
        record["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        with atomic_path(path) as partial:
            partial.write_text(json.dumps(record, indent=1) + "\n")
    _CHOICES[str(path)] = record
    return record


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, GPU, library versions."""
    cpu, flags = _cpuinfo()
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        # What int8, bf16 and wide fp32 products can use: they decide which precision pays.
        "vector_instructions": " ".join(flags) or "unknown",
        "family": cpu_family(flags),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(pages * page_size / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


@dataclass
class BenchmarkResults:
    """A ``make bench`` result file, read back: what the performance appendix shows."""

    machine: dict[str, Any]
    date: str
    tables: dict[str, pd.DataFrame]  # "section/table" → table
    targets: pd.DataFrame  # section, target, value, goal, met
    runs: pd.DataFrame  # section, date, cpu, vector_instructions, quick, seconds: when and where each section last ran

    @property
    def family(self) -> str:
        """The CPU family the results were measured on (:func:`cpu_family` of the recorded flags)."""
        return self.machine.get("family") or cpu_family(self.machine.get("vector_instructions", ""))

    def has_table(self, section: str, name: str) -> bool:
        return f"{section}/{name}" in self.tables

    def table(self, section: str, name: str) -> pd.DataFrame:
        key = f"{section}/{name}"
        if key not in self.tables:
            raise KeyError(f"no table {key!r} in the results; run make bench (tables: {sorted(self.tables)})")
        return self.tables[key]


def read_family_results(folder: str | Path) -> dict[str, BenchmarkResults]:
    """Every CPU family's results in ``folder`` (``latest-{family}.json``), in :data:`FAMILIES` order.

    Raises FileNotFoundError when there is none.
    """
    found = {family: read_results(results_path(folder, family)) for family in FAMILIES
             if results_path(folder, family).is_file()}
    if not found:
        raise FileNotFoundError(f"no benchmark results in {folder} (latest-<family>.json); run make bench")
    for family, results in found.items():
        if results.family != family:
            raise ValueError(
                f"{results_path(folder, family)} was measured on a {results.family} CPU, not {family}"
            )
    return found


def read_results(path: str | Path) -> BenchmarkResults:
    """Read one result file, ``benchmarks/results/latest-<family>.json`` (by ``benchmarks/run.py``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no benchmark results at {path}; run make bench")
    try:
        raw = json.loads(path.read_text())
        sections = raw["sections"]
        tables = {
            f"{section}/{name}": pd.DataFrame(records)
            for section, content in sections.items()
            for name, records in content["tables"].items()
        }
        targets = pd.DataFrame(
            [
                {"section": section, **target}
                for section, content in sections.items()
                for target in content["targets"]
            ]
        )
        runs = pd.DataFrame(
            [
                {
                    "section": section,
                    "date": content["date"],
                    "cpu": content["cpu"],
                    "vector_instructions": content["vector_instructions"],
                    "quick": content["quick"],
                    "seconds": content["seconds"],
                }
                for section, content in sections.items()
            ]
        )
        return BenchmarkResults(raw["machine"], raw["date"], tables, targets, runs)
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a benchmark result file ({error!r}); rerun make bench") from error


def book_texts() -> dict[str, list[str]]:
    """Every text the book encodes from its two datasets, by corpus (no text twice).

    MovieLens item texts (title and genres), and the clothing reviews' texts and titles.
    """
    from recutils.data import load_clothing_reviews, load_movielens_100k
    from recutils.embeddings import item_text

    reviews = load_clothing_reviews()
    corpora = {
        "MovieLens item texts": item_text(load_movielens_100k().items),
        "clothing review texts": reviews["review_text"].dropna().astype(str).tolist(),
        "clothing review titles": reviews["title"].dropna().astype(str).tolist(),
    }
    seen: set[str] = set()
    out = {}
    for name, texts in corpora.items():
        out[name] = [t for t in dict.fromkeys(texts) if t not in seen]
        seen.update(out[name])
    return out


def matched_spectrum_vectors(real: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` unit vectors drawn from a Gaussian with the mean and covariance of ``real``.

    Text embeddings are far from uniform on the sphere: a few directions carry much of
    the variance. Sampling with the real vectors' mean and covariance (hence the same
    eigenvalue spectrum) gives more vectors of that shape, to size an index beyond
    the texts at hand.

    Args:
        real: (m, dim) real vectors, m > dim.
        n: vectors to draw.
    Returns: (n, dim) float32 unit vectors.
    """
    if real.ndim != 2 or len(real) <= real.shape[1]:
        raise ValueError(f"need more real vectors than dimensions, got shape {tuple(real.shape)}")
    x = real.double()
    mean = x.mean(dim=0)
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(x.T))
    root = eigenvectors * eigenvalues.clamp(min=0).sqrt()
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(n, x.shape[1])
    for start in range(0, n, 65_536):  # in blocks: a million float64 draws would be 3 GB
        draws = torch.randn(min(65_536, n - start), x.shape[1], generator=generator, dtype=torch.float64)
        out[start : start + len(draws)] = torch.nn.functional.normalize(mean + draws @ root.T, dim=1).float()
    return out

"""The book section: the wall time of each notebook, executed as ``make test`` runs them.

Each notebook runs in a fresh kernel on one CPU thread, on the code paths the Makefile gives
the notebooks (``BENCH_NOTEBOOK_ENV``, set by ``make bench`` from its ``AVX2_PATHS``), so the
caches the book's own runs filled are the ones read. ``--cold-book`` runs them against an
empty cache folder instead: every encoding and training is paid again, in one process, in
file order (``make test`` shares them between two workers, so its wall time is about half). The
table goes into the CPU family's result file like every section, so each family keeps its own
notebook times.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from targets import target_row

ROOT = Path(__file__).resolve().parent.parent
#: Warm: each chapter's share of the 12-minute `make test` (two workers side by side, after the
#: unit tests and before the HTML and browser checks leave about 7 minutes to each worker).
WARM_SECONDS_PER_NOTEBOOK = 180.0
WARM_MINUTES_ALL = 14.0
#: Cold: 35 minutes for `make test` from a fresh clone, about 30 of them for the notebooks on two workers.
COLD_MINUTES_ALL = 60.0


@contextmanager
def notebook_environment(cold: bool) -> Iterator[None]:
    """The variables the notebooks' kernels inherit: one thread, the Makefile's code paths and,
    when ``cold``, an empty cache folder. Restored afterwards."""
    values = dict(item.split("=", 1) for item in shlex.split(os.environ.get("BENCH_NOTEBOOK_ENV", "")))
    values |= {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory(prefix="recutils-cold-") as empty:
        if cold:
            values["RECUTILS_CACHE"] = empty
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def bench_book(quick: bool, cold: bool = False) -> dict:
    import nbformat
    from nbclient import NotebookClient

    notebooks = sorted((ROOT / "book").glob("*.ipynb"))[: 1 if quick else None]
    # The kernels the notebooks ran on: the Makefile's forced AVX2 paths, or each library's own
    # (the CPU family of the result file says which CPU; this says which of its code paths).
    forced = "ONEDNN_MAX_CPU_ISA=AVX2" in os.environ.get("BENCH_NOTEBOOK_ENV", "")
    paths = "avx2 (forced)" if forced else "native"
    rows = []
    with notebook_environment(cold):
        for path in notebooks:
            notebook = nbformat.read(path, as_version=4)
            started = time.perf_counter()
            # From book/, as the book's runs execute them; the executed copy is thrown away.
            NotebookClient(notebook, timeout=3600, resources={"metadata": {"path": str(path.parent)}}).execute()
            rows.append({"notebook": path.name, "cache": "cold" if cold else "warm", "code_paths": paths,
                         "seconds": time.perf_counter() - started})
            print(f"  executed {path.name} in {rows[-1]['seconds']:.0f} s ({rows[-1]['cache']})", flush=True)
    table = pd.DataFrame(rows)
    total = float(table.seconds.sum())
    if cold:
        targets = [target_row("all notebooks cold, summed, minutes", total / 60, f"<= {COLD_MINUTES_ALL:g}",
                              COLD_MINUTES_ALL, higher_is_better=False)]
    else:
        targets = [target_row("all notebooks warm, summed, minutes", total / 60, f"<= {WARM_MINUTES_ALL:g}",
                              WARM_MINUTES_ALL, higher_is_better=False)]
        targets += [
            target_row(f"{row.notebook} warm, s", row.seconds, f"<= {WARM_SECONDS_PER_NOTEBOOK:g}",
                       WARM_SECONDS_PER_NOTEBOOK, higher_is_better=False)
            for row in table.itertuples()
        ]
    total_row = {"notebook": "total", "cache": table.cache.iloc[0], "code_paths": paths, "seconds": total}
    table = pd.concat([table, pd.DataFrame([total_row])],
                      ignore_index=True)
    return {"tables": {"notebooks": table}, "targets": targets}

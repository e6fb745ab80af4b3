"""The book section: the wall time of each notebook, executed as ``make book`` does."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from targets import target_row

ROOT = Path(__file__).resolve().parent.parent


def bench_book(quick: bool) -> dict:
    import nbformat
    from nbclient import NotebookClient

    # The performance appendix only renders this file (seconds), and would read it half-written.
    notebooks = [
        path for path in sorted((ROOT / "book").glob("*.ipynb")) if path.stem != "appendix_performance"
    ]
    notebooks = notebooks[: 1 if quick else None]
    rows = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        started = time.perf_counter()
        # As `make book` runs them (from book/), but the executed copy is thrown away.
        NotebookClient(notebook, timeout=1800, resources={"metadata": {"path": str(path.parent)}}).execute()
        rows.append({"notebook": path.name, "seconds": time.perf_counter() - started})
        print(f"  executed {path.name} in {rows[-1]['seconds']:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    total = float(table.seconds.sum())
    table = pd.concat([table, pd.DataFrame([{"notebook": "total", "seconds": total}])], ignore_index=True)
    target = target_row("whole book executed, minutes", total / 60, "<= 15", 15.0, higher_is_better=False)
    return {"tables": {"notebooks": table}, "targets": [target]}

"""``make bench``: how fast each step of the book is, and how its cost grows.

Sections (all by default; choose with ``--sections encode retrieval``):

- encode: recutils ``TextEncoder`` vs sentence-transformers on the same texts and
  weights; the int8 routes (torch dynamic, ONNX Runtime with several recipes) and ONNX
  Runtime fp32, each with its minimum cosine to the fp32 vectors; the effect of the kept
  int8 route on P2 NDCG@10 (over seeds).
- retrieval: exact top-10 (recutils, torch) vs FAISS ``IndexFlatIP`` for 1–16 and
  1,000 queries, on real MiniLM vectors of the book's texts expanded with samples of
  the same covariance; FAISS HNSW and IVF on those vectors: recall@10 against exact,
  speed, build time, memory; synthetic clustered vectors as a labelled contrast.
- training: two-tower examples/s, epoch time and peak memory as interactions grow;
  full-catalogue scoring time as items grow; log–log slopes.
- gpu: encoder throughput (fp32, fp16, bf16) and exact search on a CUDA device, or
  a table that says "not measured: no CUDA device"; nothing else needs one.
- serving: the book's recommender behind its HTTP API on loopback: p50/p95/p99 latency and
  throughput at 1-64 concurrent clients for known users (exact and HNSW), new-user text (int8)
  and deliberately bad requests; the HNSW lists' agreement with exact.
- book: wall time of each notebook, warm (or ``--cold-book``: empty caches), as ``make test`` runs them.

Comparisons run side by side (alternating order, several repetitions) and are
reported as ratios of medians. Results go to ``benchmarks/results/latest-<family>.json``
(all tables, the machine, the date), one file per CPU family (``avx512`` when the CPU has
avx512f, else ``avx2``: :func:`recutils.benchmark.cpu_family`), so a run refreshes its own
family's file and leaves the other's; one CSV per table, ``<section>_<table>-<family>.csv``.
The book's performance appendix renders every family's file side by side. ``--quick`` runs
tiny sizes, to check the runner itself.

Each section is a module beside this runner (``encode.py``, ``retrieval.py``, ``training.py``,
``gpu.py``, ``serving.py``, ``book.py``), its targets made by ``targets.py``; this file keeps the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Progress bars (encoding, training) would bury the tables. tqdm reads this when it is
# imported, and child processes inherit it.
os.environ["TQDM_DISABLE"] = "1"
# torch and FAISS each bring an OpenMP pool; spinning idle threads of one steal the cores
# from the other. Read once, when the first pool starts, so it is set before any import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from book import bench_book  # noqa: E402
from encode import bench_encode  # noqa: E402
from gpu import bench_gpu  # noqa: E402
from retrieval import bench_retrieval  # noqa: E402
from serving import bench_serving  # noqa: E402
from training import bench_training  # noqa: E402

from recutils.benchmark import FAMILIES, machine_description, results_path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

SECTIONS: dict[str, Callable[..., dict]] = {
    "encode": bench_encode,
    "retrieval": bench_retrieval,
    "training": bench_training,
    "gpu": bench_gpu,
    "serving": bench_serving,
    "book": bench_book,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the runner")
    parser.add_argument(
        "--p2-tower",
        action="store_true",
        help="also train the two-tower over seeds on fp32 and int8 vectors (about 6 min)",
    )
    parser.add_argument(
        "--cold-book",
        action="store_true",
        help="run the book section against an empty cache: every encoding and training again (about an hour)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the result files")
    args = parser.parse_args(argv)
    options = {"encode": {"p2_tower": args.p2_tower}, "book": {"cold": args.cold_book}}

    machine = machine_description()
    family = machine["family"]
    assert family in FAMILIES
    path = results_path(args.out, family)
    results = json.loads(path.read_text()) if path.is_file() else {"sections": {}}
    results.update(machine=machine, date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    print(f"CPU family {family} ({machine['vector_instructions']}): results go to {path}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        print(f"[{name}]", flush=True)
        started = time.perf_counter()
        section = SECTIONS[name](args.quick, **options.get(name, {}))
        results["sections"][name] = {
            "date": results["date"],
            # A family's file can hold sections run on different machines: each says which.
            "cpu": machine["cpu"],
            "vector_instructions": machine["vector_instructions"],
            "quick": args.quick,
            "seconds": time.perf_counter() - started,
            "targets": section["targets"],
            "tables": {key: table.to_dict(orient="records") for key, table in section["tables"].items()},
        }
        for key, table in section["tables"].items():
            table.to_csv(args.out / f"{name}_{key}-{family}.csv", index=False)
            print(f"\n{name}: {key}\n{table.to_string(index=False, float_format=lambda v: f'{v:.4g}')}\n")
        for target in section["targets"]:
            print(
                f"  {'MET ' if target['met'] else 'MISS'} {target['target']}: {target['value']:.4g} (goal {target['goal']})"
            )
        # Written after every section, so a long run that stops keeps what it measured.
        path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

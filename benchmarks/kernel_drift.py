"""How far the CPU's code paths move the book's numbers: the same computations run once on the
AVX2 paths every library can be forced onto (what `make test` uses) and once on each library's
own fastest kernels, each in a fresh process, on one thread, with no cache.

    .venv/bin/python benchmarks/kernel_drift.py     # about 8 minutes on 2 cores

On an AVX2-only CPU both runs take the same paths and every drift should be 0. On an AVX-512 CPU
the gap is what a reader on the other family would see if the paths were not forced; it sets
the tolerance of the notebooks' learned cells (recutils.outputcheck). A third run forces the paths
without the Makefile's MKL shim: on an Intel CPU it is the forced run bit for bit; on another
vendor's, MKL ignores MKL_CBWR and the gap is what the shim removes. The two forced runs go side
by side on two cores. Writes benchmarks/results/kernel_drift.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORCED = {  # the Makefile's CPU_PATHS=avx2 switches, with its MKL shim (`make bench` builds it)
    "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "Haswell"),
    "LD_PRELOAD": str(ROOT / ".venv" / "lib" / "libmkl-cnr.so"),
}
SEEDS = (0, 1, 2)


def measure(out: Path) -> None:
    """Runs in the child process: item vectors, EASE, iALS and three quick two-towers on P1."""
    import torch

    from recutils.baselines import EASE
    from recutils.cache import mkl_follows_cbwr
    from recutils.data import load_movielens_100k
    from recutils.embeddings import item_text
    from recutils.metrics import evaluate
    from recutils.mf import ImplicitALS
    from recutils.split import temporal_split, validation_split
    from recutils.text import TextEncoder
    from recutils.twotower import TwoTower
    from recutils.variants import BOOK_SETTINGS, VARIANTS

    torch.set_num_threads(1)
    data = load_movielens_100k()
    p1 = temporal_split(data.interactions)
    vectors = TextEncoder(use_cache=False).encode(item_text(data.items), progress=False)
    torch.save(vectors, out.with_suffix(".pt"))
    ndcg = lambda model: float(evaluate(model, p1)["NDCG@10"].iloc[0])  # noqa: E731
    towers = [
        TwoTower(vectors, validation=validation_split(p1), use_cache=False, progress=False, seed=seed,
                 **{**BOOK_SETTINGS, **VARIANTS["logq"][1]}).fit(p1.train)
        for seed in SEEDS
    ]
    result = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_follows_cbwr": mkl_follows_cbwr(),
        "EASE": ndcg(EASE(l2=300.0).fit(p1.train)),
        "iALS": ndcg(ImplicitALS(factors=128, regularization=10.0, seed=0).fit(p1.train)),
        "two-tower (logq, per seed)": [ndcg(t) for t in towers],
        "two-tower epochs (per seed)": [t.validation_log_.best_epoch for t in towers],
    }
    out.write_text(json.dumps(result))


def main() -> None:
    if not Path(FORCED["LD_PRELOAD"]).is_file():
        raise SystemExit(f"{FORCED['LD_PRELOAD']} is missing: build it with make {FORCED['LD_PRELOAD']}")
    without_shim = {k: v for k, v in FORCED.items() if k != "LD_PRELOAD"}
    configurations = {"avx2 (forced)": FORCED, "avx2 (forced), MKL without the shim": without_shim, "native": {}}
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        names = list(configurations)
        for batch in (names[:2], names[2:]):  # two at a time on two cores
            children = {}
            for name in batch:
                env = {k: v for k, v in os.environ.items() if k not in FORCED} | configurations[name]
                out = Path(folder) / f"run{names.index(name)}"
                children[name] = (subprocess.Popen([sys.executable, __file__, "--child", str(out)],
                                                   env=env | {"OMP_NUM_THREADS": "1"}), out)
            for name, (process, out) in children.items():
                if process.wait() != 0:
                    raise SystemExit(f"the {name} run failed")
                runs[name] = json.loads(out.read_text()) | {"vectors": str(out.with_suffix(".pt"))}
        import torch

        vectors = {name: torch.load(runs[name].pop("vectors")) for name in runs}
    forced = runs["avx2 (forced)"]
    drift = {}
    for name, label in (("native", ""), ("avx2 (forced), MKL without the shim", " without the MKL shim")):
        other = runs[name]
        tower_gap = [abs(x - y) for x, y in zip(forced["two-tower (logq, per seed)"], other["two-tower (logq, per seed)"])]
        drift |= {
            f"item vectors{label}: max |difference|": float((vectors["avx2 (forced)"] - vectors[name]).abs().max()),
            f"EASE NDCG@10{label}: |difference|": abs(forced["EASE"] - other["EASE"]),
            f"iALS NDCG@10{label}: |difference|": abs(forced["iALS"] - other["iALS"]),
            f"two-tower NDCG@10{label}: max |difference| over seeds": max(tower_gap),
            f"two-tower NDCG@10{label}: max relative difference":
                max(g / x for g, x in zip(tower_gap, forced["two-tower (logq, per seed)"])),
        }
    from recutils.benchmark import machine_description

    result = {"cpu": machine_description()["cpu"], "runs": runs, "drift": drift}
    path = ROOT / "benchmarks" / "results" / "kernel_drift.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        measure(Path(sys.argv[2]))
    else:
        main()

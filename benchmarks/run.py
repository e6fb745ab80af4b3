"""``make bench``: how fast each step of the book is, and how its cost grows.

Sections (all by default; choose with ``--sections encode retrieval``):

- encode: recutils ``TextEncoder`` vs sentence-transformers on the same texts and
  weights; int8 (CPU) or bf16 (GPU); the effect of int8 vectors on P2 NDCG@10.
- retrieval: exact top-10 (recutils, torch) vs FAISS ``IndexFlatIP``; FAISS HNSW and
  IVF: recall@10 against exact, speed, memory.
- training: two-tower examples/s, epoch time and peak memory as interactions grow;
  full-catalogue scoring time as items grow; log–log slopes.
- book: wall time of each notebook, executed as ``make book`` does.

Comparisons run side by side (alternating order, several repetitions) and are
reported as ratios of medians. Results go to ``benchmarks/results/latest.json`` (all
tables, the machine, the date) and one CSV per table; the book's performance
appendix renders that file. ``--quick`` runs tiny sizes, to check the runner itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

# Progress bars (encoding, training) would bury the tables. tqdm reads this when it is
# imported, and child processes inherit it.
os.environ["TQDM_DISABLE"] = "1"

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from recutils.benchmark import (  # noqa: E402
    compare,
    loglog_slope,
    machine_description,
    run_in_subprocess,
    speed_ratio,
)
from recutils.index import ExactIndex, FaissIndex, recall_at_k  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
K = 10


# --- encoding -----------------------------------------------------------------------------


def bench_encode(quick: bool) -> dict:
    from sentence_transformers import SentenceTransformer

    from recutils.data import load_clothing_reviews, load_movielens_100k
    from recutils.embeddings import item_text
    from recutils.text import TextEncoder, default_model_path

    data = load_movielens_100k()
    reviews = load_clothing_reviews()["review_text"].dropna().astype(str).tolist()
    corpora = {"MovieLens item texts": item_text(data.items), "clothing reviews": reviews[:2000]}
    if quick:
        corpora = {name: texts[:100] for name, texts in corpora.items()}
    ours = TextEncoder(use_cache=False)
    reference = SentenceTransformer(str(default_model_path()), device=str(ours.device))
    faster = "bf16" if ours.device.type == "cuda" else "int8"
    low = TextEncoder(use_cache=False, precision=faster)

    encoders = {
        "sentence-transformers": lambda texts: reference.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False
        ).cpu(),
        "recutils fp32": lambda texts: ours.encode(texts, progress=False),
        f"recutils {faster}": lambda texts: low.encode(texts, progress=False),
    }
    rows = []
    for corpus, texts in corpora.items():
        rows += _compare_encoders(corpus, texts, encoders, repeats=2 if quick else 3)
        print(f"  encoded {corpus}", flush=True)
    speed = pd.DataFrame(rows)
    quality = _p2_effect(data, precisions=("fp32", faster), quick=quick)
    ours_rows = speed[speed.encoder == "recutils fp32"]
    low_rows = speed[speed.encoder == f"recutils {faster}"]
    targets = [
        _target(
            "recutils fp32 at least as fast as sentence-transformers",
            float(ours_rows.speed_vs_sentence_transformers.min()),
            ">= 1.0",
            1.0,
        ),
        _target(
            "same vectors as sentence-transformers (max abs difference)",
            float(speed[speed.encoder == "sentence-transformers"].max_abs_diff_vs_recutils_fp32.max()),
            "<= 1e-5",
            1e-5,
            higher_is_better=False,
        ),
        _target(
            f"{faster} throughput vs fp32",
            float((ours_rows.median_s.to_numpy() / low_rows.median_s.to_numpy()).min()),
            ">= 2.0",
            2.0,
        ),
        _target(
            f"{faster} min cosine to fp32 vectors",
            float(low_rows.min_cosine_vs_recutils_fp32.min()),
            ">= 0.99",
            0.99,
        ),
    ]
    return {"tables": {"speed": speed, "p2_ndcg": quality}, "targets": targets}


def _compare_encoders(
    corpus: str, texts: list[str], encoders: dict[str, Callable[[list[str]], torch.Tensor]], repeats: int
) -> list[dict]:
    """Time every encoder on ``texts`` side by side; compare their vectors with recutils fp32."""
    out: dict[str, torch.Tensor] = {}

    def run(name: str) -> Callable[[], None]:
        return lambda: out.__setitem__(name, encoders[name](texts))

    table = compare({name: run(name) for name in encoders}, repeats=repeats)
    rows = []
    for name, row in table.iterrows():
        rows.append(
            {
                "corpus": corpus,
                "encoder": name,
                "texts": len(texts),
                "median_s": row["median_s"],
                "min_s": row["min_s"],
                "max_s": row["max_s"],
                "texts_per_s": len(texts) / row["median_s"],
                "speed_vs_sentence_transformers": speed_ratio(table, name, "sentence-transformers"),
                "max_abs_diff_vs_recutils_fp32": float((out[name] - out["recutils fp32"]).abs().max()),
                "min_cosine_vs_recutils_fp32": float((out[name] * out["recutils fp32"]).sum(dim=1).min()),
            }
        )
    return rows


def _p2_effect(data, precisions: tuple[str, ...], quick: bool) -> pd.DataFrame:
    """P2 (cold items) NDCG@10 of the book's text models with vectors of each precision."""
    from recutils.cf import ContentRecommender
    from recutils.embeddings import item_text
    from recutils.metrics import evaluate
    from recutils.split import cold_item_split, validation_split
    from recutils.text import TextEncoder
    from recutils.twotower import TwoTower

    p2 = cold_item_split(data.interactions)
    rows = []
    for precision in precisions:
        vectors = TextEncoder(precision=precision).encode(item_text(data.items), progress=False)
        models = [ContentRecommender(vectors, label="BERT content (mean of items)")]
        if not quick:
            # Chapter 4's text-only tower on P2; trained once per precision, then cached.
            models.append(
                TwoTower(
                    vectors,
                    validation=validation_split(p2),
                    epochs=15,
                    patience=3,
                    refit=False,
                    label="two-tower (text only)",
                )
            )
        for model in models:
            ndcg = float(evaluate(model.fit(p2.train), p2)["NDCG@10"].iloc[0])
            rows.append({"model": model.name, "precision": precision, "NDCG@10": ndcg})
    return pd.DataFrame(rows)


# --- retrieval ----------------------------------------------------------------------------


def synthetic_vectors(
    n: int, n_queries: int, dim: int, clustered: bool, seed: int
) -> tuple[torch.Tensor, ...]:
    """(n, dim) item and (n_queries, dim) query unit vectors.

    Uniform: directions drawn uniformly (no structure; the hardest case for an
    approximate index). Clustered: 1,000 random centres plus noise of the same norm, so
    a point's cosine to its centre is about 0.7, closer to what text embeddings look like.
    """
    generator = torch.Generator().manual_seed(seed)
    total = n + n_queries
    points = torch.randn(total, dim, generator=generator)
    if clustered:
        centres = torch.nn.functional.normalize(torch.randn(1000, dim, generator=generator), dim=1)
        points = centres[torch.randint(1000, (total,), generator=generator)] + points / dim**0.5
    points = torch.nn.functional.normalize(points, dim=1)
    return points[:n], points[n:]


def bench_retrieval(quick: bool) -> dict:
    sizes = [5_000, 20_000] if quick else [100_000, 1_000_000]
    n_queries = 100 if quick else 1_000
    dim = 384
    exact_rows, ann_rows, targets = [], [], []
    for distribution in ("clustered", "uniform"):
        for n in sizes:
            items, queries = synthetic_vectors(n, n_queries, dim, distribution == "clustered", seed=n)
            torch_index = ExactIndex(items)
            flat = FaissIndex(items, "flat")
            out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            table = compare(
                {
                    name: _store(out, name, index.search, queries)
                    for name, index in (("recutils exact", torch_index), ("FAISS IndexFlatIP", flat))
                },
                repeats=3,
            )
            truth = out["recutils exact"][1]
            same = (
                torch.sort(out["FAISS IndexFlatIP"][1], dim=1).values == torch.sort(truth, dim=1).values
            ).all(dim=1)
            exact_rows.append(
                {
                    "distribution": distribution,
                    "items": n,
                    "queries": n_queries,
                    "recutils_median_s": table.loc["recutils exact", "median_s"],
                    "faiss_flat_median_s": table.loc["FAISS IndexFlatIP", "median_s"],
                    "recutils_speed_vs_faiss": speed_ratio(table, "recutils exact", "FAISS IndexFlatIP"),
                    "same_top10_share": float(same.float().mean()),
                    "max_score_diff": float(
                        (out["recutils exact"][0] - out["FAISS IndexFlatIP"][0]).abs().max()
                    ),
                }
            )
            del flat
            ann_rows += _bench_approximate(items, queries, truth, torch_index, distribution, quick)
            print(f"  searched {distribution} {n:,}", flush=True)
    exact, ann = pd.DataFrame(exact_rows), pd.DataFrame(ann_rows)
    targets.append(
        _target(
            "recutils exact speed vs FAISS IndexFlatIP",
            float(exact.recutils_speed_vs_faiss.min()),
            ">= 0.8",
            0.8,
        )
    )
    targets.append(
        _target("identical top-10 (share of queries)", float(exact.same_top10_share.min()), "= 1.0", 1.0)
    )
    for (distribution, n), group in ann.groupby(["distribution", "items"]):
        good = group[group["recall@10"] >= 0.95]
        best = float(good.speed_vs_exact.max()) if len(good) else 0.0
        targets.append(
            _target(
                f"approximate index ≥10× exact at recall@10 ≥ 0.95 ({distribution}, {n:,} items)",
                best,
                ">= 10",
                10.0,
            )
        )
    return {"tables": {"exact": exact, "approximate": ann}, "targets": targets}


def _bench_approximate(items, queries, truth, exact_index, distribution: str, quick: bool) -> list[dict]:
    """Build HNSW (up to 100k items: its build is slow here) and IVF; sweep their search width."""
    n = len(items)
    configs: list[tuple[str, dict, str, list[int]]] = [("ivf", {}, "nprobe", [4, 16, 64, 256])]
    if n <= 100_000:
        configs.insert(0, ("hnsw", {"hnsw_m": 32, "ef_construction": 80}, "ef_search", [16, 64, 256]))
    rows = []
    for kind, params, knob, values in configs:
        started = time.perf_counter()
        index = FaissIndex(items, kind, **params)
        build_s = time.perf_counter() - started
        memory = index.memory_bytes
        found: dict[int, torch.Tensor] = {}
        searches = {"exact": _store({}, "exact", exact_index.search, queries)}
        for value in values:
            searches[f"{knob}={value}"] = _search_with(index, knob, value, queries, found)
        table = compare(searches, repeats=3)
        for value in values:
            rows.append(
                {
                    "distribution": distribution,
                    "items": n,
                    "index": kind,
                    "setting": f"{knob}={value}",
                    "recall@10": recall_at_k(found[value], truth),
                    "median_s": table.loc[f"{knob}={value}", "median_s"],
                    "speed_vs_exact": speed_ratio(table, f"{knob}={value}", "exact"),
                    "build_s": build_s,
                    "memory_mb": memory / 2**20,
                    "exact_memory_mb": exact_index.memory_bytes / 2**20,
                }
            )
        del index
    return rows


def _store(out: dict, name: str, search: Callable, queries: torch.Tensor) -> Callable[[], None]:
    """A no-argument search for ``compare`` that keeps its result in ``out[name]``."""
    return lambda: out.__setitem__(name, search(queries, K))


def _search_with(
    index: FaissIndex, knob: str, value: int, queries: torch.Tensor, found: dict[int, torch.Tensor]
) -> Callable[[], None]:
    """A no-argument search at one setting of the index's knob, keeping the ids in ``found[value]``."""

    def search() -> None:
        if knob == "ef_search":
            index.index.hnsw.efSearch = value
        else:
            index.index.nprobe = value
        found[value] = index.search(queries, K)[1]

    return search


# --- training and scoring cost ------------------------------------------------------------


def _synthetic_interactions(n_interactions: int, n_items: int, per_user: int, seed: int):
    """Users with ``per_user`` distinct items each, drawn with Zipf-like popularity."""
    from recutils.split import Interactions

    rng = np.random.default_rng(seed)
    n_users = max(1, n_interactions // per_user)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    items = np.concatenate(
        [rng.choice(n_items, per_user, replace=False, p=popularity) for _ in range(n_users)]
    )
    frame = pd.DataFrame(
        {
            "user": np.repeat(np.arange(n_users), per_user),
            "item": items,
            "rating": 1,
            "timestamp": np.arange(len(items)),
        }
    )
    return Interactions(frame, n_users, n_items)


def train_one_epoch(n_interactions: int, n_items: int) -> dict:
    """One epoch of the book's default two-tower on synthetic data (run in its own process)."""
    from recutils.twotower import TwoTower

    train = _synthetic_interactions(n_interactions, n_items, per_user=20, seed=0)
    vectors = synthetic_vectors(n_items, 0, 384, clustered=True, seed=1)[0]
    model = TwoTower(vectors, use_cache=False, epochs=1).fit(train)
    epoch_s = model.log_.epoch_seconds[0]
    return {"epoch_s": epoch_s, "examples_per_s": len(train) / epoch_s}


def bench_training(quick: bool) -> dict:
    sizes = [2_000, 5_000] if quick else [10_000, 30_000, 100_000, 300_000, 1_000_000]
    n_items = 500 if quick else 5_000
    training = []
    for n in sizes:
        result, peak, before = run_in_subprocess(train_one_epoch, n_interactions=n, n_items=n_items)
        training.append(
            {
                "interactions": n,
                "items": n_items,
                **result,
                "peak_memory_mb": peak / 2**20,
                "memory_above_imports_mb": (peak - before) / 2**20,
            }
        )
        print(f"  trained on {n:,} interactions", flush=True)
    training = pd.DataFrame(training)

    from recutils.twotower import TwoTower

    catalogue_sizes = [2_000, 10_000] if quick else [10_000, 30_000, 100_000, 300_000, 1_000_000]
    n_users = 256
    scoring = []
    for n_items in catalogue_sizes:
        train = _synthetic_interactions(n_users * 20, n_items, per_user=20, seed=2)
        vectors = synthetic_vectors(n_items, 0, 384, clustered=True, seed=3)[0]
        model = TwoTower(vectors, use_cache=False, epochs=1).fit(train)
        table = compare({"score": partial(model.score, torch.arange(n_users))}, repeats=3)
        scoring.append(
            {
                "items": n_items,
                "users": n_users,
                "median_s": table.loc["score", "median_s"],
                "min_s": table.loc["score", "min_s"],
                "max_s": table.loc["score", "max_s"],
            }
        )
        print(f"  scored {n_items:,} items", flush=True)
    scoring = pd.DataFrame(scoring)
    slopes = pd.DataFrame(
        [
            {
                "cost": "epoch time vs interactions",
                "slope": loglog_slope(training.interactions, training.epoch_s)[0],
            },
            {
                "cost": "memory above imports vs interactions",
                "slope": loglog_slope(training.interactions, training.memory_above_imports_mb)[0],
            },
            {"cost": "scoring time vs items", "slope": loglog_slope(scoring["items"], scoring.median_s)[0]},
        ]
    )
    return {"tables": {"training": training, "scoring": scoring, "slopes": slopes}, "targets": []}


# --- the book -----------------------------------------------------------------------------


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
    target = _target("whole book executed, minutes", total / 60, "<= 15", 15.0, higher_is_better=False)
    return {"tables": {"notebooks": table}, "targets": [target]}


# --- running and reporting ----------------------------------------------------------------

SECTIONS: dict[str, Callable[[bool], dict]] = {
    "encode": bench_encode,
    "retrieval": bench_retrieval,
    "training": bench_training,
    "book": bench_book,
}


def _target(name: str, value: float, goal: str, threshold: float, higher_is_better: bool = True) -> dict:
    met = value >= threshold if higher_is_better else value <= threshold
    return {"target": name, "value": value, "goal": goal, "met": bool(met)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the runner")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for latest.json and the CSVs")
    args = parser.parse_args(argv)

    previous = args.out / "latest.json"
    results = json.loads(previous.read_text()) if previous.is_file() else {"sections": {}}
    results.update(machine=machine_description(), date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        print(f"[{name}]", flush=True)
        started = time.perf_counter()
        section = SECTIONS[name](args.quick)
        results["sections"][name] = {
            "date": results["date"],
            "quick": args.quick,
            "seconds": time.perf_counter() - started,
            "targets": section["targets"],
            "tables": {key: table.to_dict(orient="records") for key, table in section["tables"].items()},
        }
        for key, table in section["tables"].items():
            table.to_csv(args.out / f"{name}_{key}.csv", index=False)
            print(f"\n{name}: {key}\n{table.to_string(index=False, float_format=lambda v: f'{v:.4g}')}\n")
        for target in section["targets"]:
            print(
                f"  {'MET ' if target['met'] else 'MISS'} {target['target']}: {target['value']:.4g} (goal {target['goal']})"
            )
        # Written after every section, so a long run that stops keeps what it measured.
        (args.out / "latest.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    print(f"\nresults: {args.out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

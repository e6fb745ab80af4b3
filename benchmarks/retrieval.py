"""The retrieval section: exact top-k vs FAISS on the book's vectors, and approximate indexes' recall."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
import torch
from targets import target_row

from recutils.benchmark import compare, speed_ratio
from recutils.index import BATCH_CLASSES, CPU_ROUTES, ExactIndex, FaissIndex, exact_routes, recall_at_k

K = 10


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


def real_vectors(quick: bool, n_queries: int) -> tuple[torch.Tensor, torch.Tensor, pd.DataFrame]:
    """MiniLM vectors of every text the book has, split into items and held-out queries.

    Encoded by the ONNX fp32 route (the same vectors as torch fp32 to about 1e-6, twice
    as fast) and cached like any embedding.
    Returns: (m, 384) items, (n_queries, 384) queries (a seeded sample of the texts), and
        a table of the corpora and their sizes.
    """
    from recutils.benchmark import book_texts
    from recutils.text import TextEncoder

    encoder = TextEncoder(precision="onnx-fp32")
    corpora = book_texts()
    if quick:
        corpora = {name: texts[:400] for name, texts in corpora.items()}
    vectors = torch.cat([encoder.encode(texts, progress=False) for texts in corpora.values()])
    order = torch.randperm(len(vectors), generator=torch.Generator().manual_seed(0))
    table = pd.DataFrame({"corpus": list(corpora), "texts": [len(t) for t in corpora.values()]})
    return vectors[order[n_queries:]], vectors[order[:n_queries]], table


def realistic_items(real: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """``n`` item vectors: every real one, then samples matching their covariance spectrum."""
    from recutils.benchmark import matched_spectrum_vectors

    if n <= len(real):
        return real[:n]
    return torch.cat([real, matched_spectrum_vectors(real, n - len(real), seed=seed)])


def bench_retrieval(quick: bool) -> dict:
    sizes = [5_000, 20_000] if quick else [100_000, 1_000_000]
    n_queries = 100 if quick else 1_000
    small_batches = [1, 4, 16]
    real, real_queries, corpora = real_vectors(quick, n_queries)
    print(f"  {len(real) + len(real_queries):,} real vectors", flush=True)
    exact_rows, route_rows = [], []
    for n in sizes:
        items = realistic_items(real, n, seed=n)
        torch_index, flat = ExactIndex(items), FaissIndex(items, "flat")
        # The router times its routes on these items once, here, outside the timed searches.
        router = exact_routes(torch_index.vectors)
        route_rows += [
            {"items": n, "batch_class": name, "probe_queries": probe, "chosen": router["routes"][name],
             **{f"{route}_median_s": router["timings"][name].get(route) for route in CPU_ROUTES}}
            for name, _, probe in BATCH_CLASSES
        ]
        for q in [*small_batches, n_queries]:
            queries = real_queries[:q]
            out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            table = compare(
                {
                    name: _store(out, name, index.search, queries)
                    for name, index in (("recutils exact", torch_index), ("FAISS IndexFlatIP", flat))
                },
                repeats=3 if q == n_queries else 9,
            )
            ours, theirs = out["recutils exact"], out["FAISS IndexFlatIP"]
            exact_rows.append(
                {
                    "vectors": "real + matched-spectrum samples" if n > len(real) else "real",
                    "items": n,
                    "queries": q,
                    # The route ExactIndex's router took for this batch size on this machine.
                    "recutils_route": torch_index.route_for(q),
                    "recutils_median_s": table.loc["recutils exact", "median_s"],
                    "faiss_flat_median_s": table.loc["FAISS IndexFlatIP", "median_s"],
                    "recutils_speed_vs_faiss": speed_ratio(table, "recutils exact", "FAISS IndexFlatIP"),
                    "same_top10_share": float((ours[1] == theirs[1]).all(dim=1).float().mean()),
                    "same_top10_set_share": float(
                        (torch.sort(ours[1], dim=1).values == torch.sort(theirs[1], dim=1).values)
                        .all(dim=1)
                        .float()
                        .mean()
                    ),
                    "max_score_diff": float((ours[0] - theirs[0]).abs().max()),
                }
            )
        del flat, torch_index
        print(f"  exact search over {n:,} items", flush=True)
    exact = pd.DataFrame(exact_rows)

    ann_rows = []
    sampled = "real + matched-spectrum samples"
    datasets = [("real", len(real)), (sampled, sizes[0]), (sampled, sizes[1])]
    for vectors, n in datasets:
        items = realistic_items(real, n, seed=n)
        truth_index = ExactIndex(items)
        truth = truth_index.search(real_queries, K)[1]
        ann_rows += _bench_approximate(items, real_queries, truth, truth_index, vectors, quick)
        print(f"  approximate search, {vectors}, {n:,} items", flush=True)
    # The contrast: synthetic clusters, much easier for an approximate index than text vectors.
    items, queries = synthetic_vectors(sizes[0], n_queries, real.shape[1], clustered=True, seed=sizes[0])
    truth_index = ExactIndex(items)
    truth = truth_index.search(queries, K)[1]
    contrast = "synthetic clustered (contrast)"
    ann_rows += _bench_approximate(items, queries, truth, truth_index, contrast, quick)
    ann = pd.DataFrame(ann_rows)

    routes = pd.DataFrame(route_rows)
    large = exact[exact.queries == n_queries]
    small = exact[exact.queries < n_queries]
    targets = [
        target_row(
            f"exact top-10, {n_queries:,} queries: recutils speed vs FAISS IndexFlatIP "
            f"(worst of {', '.join(f'{n:,}' for n in sizes)} items)",
            float(large.recutils_speed_vs_faiss.min()),
            ">= 1.0",
            1.0,
        ),
        target_row(
            f"exact top-10, {small_batches[0]}–{small_batches[-1]} queries: "
            "recutils speed vs FAISS IndexFlatIP (worst case)",
            float(small.recutils_speed_vs_faiss.min()),
            ">= 2.0",
            2.0,
        ),
        target_row(
            "identical top-10 items to FAISS (share of queries)",
            float(exact.same_top10_set_share.min()),
            "= 1.0",
            1.0,
        ),
    ]
    for (vectors, n), group in ann.groupby(["vectors", "items"], sort=False):
        good = group[group["recall@10"] >= 0.95]
        targets.append(
            target_row(
                f"approximate index ≥10× exact at recall@10 ≥ 0.95 ({vectors}, {n:,} items)",
                float(good.speed_vs_exact.max()) if len(good) else 0.0,
                ">= 10",
                10.0,
            )
        )
    tables = {"exact": exact, "routes": routes, "approximate": ann, "corpora": corpora}
    return {"tables": tables, "targets": targets}


def _bench_approximate(items, queries, truth, exact_index, vectors: str, quick: bool) -> list[dict]:
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
                    "vectors": vectors,
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

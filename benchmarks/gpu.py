"""The gpu section: encoder throughput in fp32, fp16 and bf16 and exact search on a CUDA device, if any."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pandas as pd
import torch
from encode import REVIEWS_TIMED
from retrieval import K, synthetic_vectors

from recutils.benchmark import compare, speed_ratio
from recutils.index import ExactIndex


def bench_gpu(quick: bool) -> dict:
    """Encoder throughput (fp32, fp16, bf16) and exact search on a CUDA device, when there is one."""
    if not torch.cuda.is_available():
        rows = [
            {"measurement": m, "device": "none", "result": "not measured: no CUDA device"}
            for m in ("encoder throughput (fp32, fp16, bf16)", "exact top-10 search")
        ]
        return {"tables": {"gpu": pd.DataFrame(rows)}, "targets": []}
    from recutils.data import load_clothing_reviews, load_movielens_100k
    from recutils.embeddings import item_text
    from recutils.onnx_encoder import fidelity
    from recutils.text import TextEncoder

    device = torch.cuda.get_device_name(0)
    reviews = load_clothing_reviews()["review_text"].dropna().astype(str).tolist()
    corpora = {
        "MovieLens item texts": item_text(load_movielens_100k().items),
        "clothing reviews": reviews[:REVIEWS_TIMED],
    }
    if quick:
        corpora = {name: texts[:100] for name, texts in corpora.items()}
    encoders = {"fp32": TextEncoder(use_cache=False), "bf16": TextEncoder(use_cache=False, precision="bf16")}
    encoders["fp16"] = TextEncoder(use_cache=False)
    encoders["fp16"].model = encoders["fp16"].model.half()
    rows = []
    for corpus, texts in corpora.items():
        out: dict[str, torch.Tensor] = {}

        def run(name: str) -> Callable[[], None]:
            def go() -> None:
                out[name] = encoders[name].encode(texts, progress=False)
                torch.cuda.synchronize()

            return go

        table = compare({name: run(name) for name in encoders}, repeats=3)
        for name in encoders:
            rows.append(
                {
                    "measurement": f"encode {corpus}",
                    "device": device,
                    "setting": name,
                    "texts_per_s": len(texts) / table.loc[name, "median_s"],
                    "speed_vs_fp32": speed_ratio(table, name, "fp32"),
                    "min_cosine_vs_fp32": fidelity(out[name], out["fp32"]).min_cosine,
                }
            )
    n = 20_000 if quick else 1_000_000
    items, queries = synthetic_vectors(n, 1000, 384, clustered=True, seed=n)
    index = ExactIndex(items, device="cuda")
    for q in (1, 16, 1000):
        table = compare({"search": partial(_synchronised, index.search, queries[:q])}, repeats=5)
        rows.append(
            {
                "measurement": f"exact top-10, {n:,} items",
                "device": device,
                "setting": f"{q} queries",
                "median_s": table.loc["search", "median_s"],
            }
        )
    return {"tables": {"gpu": pd.DataFrame(rows)}, "targets": []}


def _synchronised(search: Callable, queries: torch.Tensor) -> None:
    search(queries, K)
    torch.cuda.synchronize()

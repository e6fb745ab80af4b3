"""The encode section: recutils' encoder vs sentence-transformers, the int8 and ONNX routes, int8 on P2."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pandas as pd
import torch
from targets import not_measured, target_row

from recutils.benchmark import compare, speed_ratio

# Clothing reviews timed per repetition (long texts: about 20 s each for fp32 on 2 cores).
REVIEWS_TIMED = 1000
# The int8 recipe was chosen on the timed reviews, so its fidelity is also read on these,
# which played no part in the choice (untimed).
REVIEWS_HELD_OUT = 3000


def bench_encode(quick: bool, p2_tower: bool = False) -> dict:
    from sentence_transformers import SentenceTransformer

    from recutils.data import load_clothing_reviews, load_movielens_100k
    from recutils.embeddings import item_text
    from recutils.onnx_encoder import DEFAULT_INT8_RECIPE, INT8_RECIPES, fidelity
    from recutils.text import INT8_ROUTE, TextEncoder, default_model_path

    data = load_movielens_100k()
    reviews = load_clothing_reviews()["review_text"].dropna().astype(str).tolist()
    corpora = {"MovieLens item texts": item_text(data.items), "clothing reviews": reviews[:REVIEWS_TIMED]}
    if quick:
        corpora = {name: texts[:100] for name, texts in corpora.items()}
    ours = TextEncoder(use_cache=False)
    if ours.device.type == "cuda":
        # The int8 routes are CPU-only; a GPU run measures half precision instead (see bench_gpu).
        skipped = not_measured("int8 encoding", "a CPU run (int8 runs on the CPU only)")
        return {"tables": {}, "targets": [skipped]}
    reference = SentenceTransformer(str(default_model_path()), device="cpu")
    routes = {
        "torch int8 (dynamic)": {"precision": "torch-int8"},
        "ONNX Runtime fp32": {"precision": "onnx-fp32"},
    }
    routes |= {f"ONNX Runtime int8 ({r})": {"precision": "onnx-int8", "int8_recipe": r} for r in INT8_RECIPES}
    low = {name: TextEncoder(use_cache=False, **settings) for name, settings in routes.items()}
    encoders = {
        "sentence-transformers": lambda texts: reference.encode(
            texts, batch_size=64, normalize_embeddings=True, convert_to_tensor=True, show_progress_bar=False
        ).cpu(),
        "recutils fp32": lambda texts: ours.encode(texts, progress=False),
    } | {name: partial(_encode_with, encoder) for name, encoder in low.items()}
    rows = []
    for corpus, texts in corpora.items():
        rows += _compare_encoders(corpus, texts, encoders, repeats=2 if quick else 3)
        print(f"  encoded {corpus}", flush=True)
    speed = pd.DataFrame(rows)
    speed["speed_vs_recutils_fp32"] = speed.texts_per_s / speed.corpus.map(
        speed[speed.encoder == "recutils fp32"].set_index("corpus").texts_per_s
    )
    kept = f"ONNX Runtime int8 ({DEFAULT_INT8_RECIPE})"
    assert INT8_ROUTE == "onnx-int8", "the targets below describe the ONNX int8 route"
    held_out = reviews[REVIEWS_TIMED : REVIEWS_TIMED + (100 if quick else REVIEWS_HELD_OUT)]
    held_out_fidelity = fidelity(low[kept].encode(held_out, progress=False), ours.encode(held_out, progress=False))
    quality = _p2_effect(data, precisions=("fp32", "int8"), tower=p2_tower and not quick)
    ours_rows = speed[speed.encoder == "recutils fp32"]
    targets = [
        target_row(
            "recutils fp32 at least as fast as sentence-transformers",
            float(ours_rows.speed_vs_sentence_transformers.min()),
            ">= 1.0",
            1.0,
        ),
        target_row(
            "same vectors as sentence-transformers (max abs difference)",
            float(speed[speed.encoder == "sentence-transformers"].max_abs_diff_vs_recutils_fp32.max()),
            "<= 1e-5",
            1e-5,
            higher_is_better=False,
        ),
        _int8_speed_target(speed, kept),
        target_row(
            f"int8 ({kept}) min cosine to fp32 vectors",
            float(speed[speed.encoder == kept].min_cosine_vs_recutils_fp32.min()),
            ">= 0.99",
            0.99,
        ),
        target_row(
            f"int8 min cosine to fp32 on {len(held_out):,} held-out reviews (not used to choose the recipe)",
            held_out_fidelity.min_cosine,
            ">= 0.99",
            0.99,
        ),
    ]
    tower = quality[quality.model == "two-tower (text only)"]
    if not len(tower):
        targets.append(
            not_measured(
                "int8 two-tower P2 NDCG@10 shift, in fp32 seed sd", "--p2-tower (6 trainings, about a minute each)"
            )
        )
    else:
        fp32, int8 = (tower[tower.precision == p].iloc[0] for p in ("fp32", "int8"))
        targets.append(
            target_row(
                "int8 two-tower P2 NDCG@10 shift, in fp32 seed sd",
                abs(int8["NDCG@10 mean"] - fp32["NDCG@10 mean"]) / fp32["NDCG@10 sd"],
                "<= 1.0",
                1.0,
                higher_is_better=False,
            )
        )
    return {"tables": {"speed": speed, "p2_ndcg": quality}, "targets": targets}


def _int8_speed_target(speed: pd.DataFrame, kept: str) -> dict:
    """int8 ≥ 2× fp32 where the CPU has VNNI (one instruction multiplies and adds int8); without
    it int8 products take several instructions each, so the target is the fastest route that
    keeps a minimum cosine of 0.99 (what ``TextEncoder(precision="auto")`` looks for)."""
    from recutils.benchmark import machine_description

    flags = machine_description()["vector_instructions"].split()
    if {"avx512_vnni", "avx_vnni"} & set(flags):
        rows = speed[speed.encoder == kept]
        return target_row(
            f"int8 ({kept}) throughput vs recutils fp32", float(rows.speed_vs_recutils_fp32.min()), ">= 2.0", 2.0
        )
    routes = ["recutils fp32", "ONNX Runtime fp32", kept]  # what precision="auto" chooses among
    faithful = speed[speed.encoder.isin(routes) & (speed.min_cosine_vs_recutils_fp32 >= 0.99)]
    best = faithful.groupby("corpus").speed_vs_recutils_fp32.max().min()
    return target_row("no VNNI: fastest route at min cosine >= 0.99 vs recutils fp32 (worst corpus)",
                      float(best), ">= 1.0", 1.0)


def _encode_with(encoder, texts: list[str]) -> torch.Tensor:
    return encoder.encode(texts, progress=False)


def _compare_encoders(
    corpus: str, texts: list[str], encoders: dict[str, Callable[[list[str]], torch.Tensor]], repeats: int
) -> list[dict]:
    """Time every encoder on ``texts`` side by side; compare their vectors with recutils fp32."""
    out: dict[str, torch.Tensor] = {}

    def run(name: str) -> Callable[[], None]:
        return lambda: out.__setitem__(name, encoders[name](texts))

    for encode in encoders.values():
        encode(texts[:64])  # loads, first-call allocations; a whole untimed pass would double the time
    table = compare({name: run(name) for name in encoders}, repeats=repeats, warmup=False)
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


def _p2_effect(data, precisions: tuple[str, ...], tower: bool) -> pd.DataFrame:
    """P2 (cold items) NDCG@10 of the book's text models with vectors of each precision.

    The content model is deterministic (one run). With ``tower``, the text-only
    two-tower is trained over the book's seeds (cached on disk), so its shift can be
    read against its seed sd; six trainings, about a minute each on 2 cores (the cached
    ones are read back).
    """
    from recutils.cf import ContentRecommender
    from recutils.embeddings import item_text
    from recutils.selection import evaluate_seeds
    from recutils.split import cold_item_split, validation_split
    from recutils.text import TextEncoder
    from recutils.twotower import TwoTower
    from recutils.variants import SEEDS

    p2 = cold_item_split(data.interactions)
    validation = validation_split(p2)
    rows = []
    for precision in precisions:
        vectors = TextEncoder(precision=precision).encode(item_text(data.items), progress=False)
        content = evaluate_seeds(lambda seed: ContentRecommender(vectors), p2, seeds=(0,))
        rows.append(
            {
                "model": "BERT content (mean of items)",
                "precision": precision,
                "NDCG@10 mean": content.mean,
                "NDCG@10 sd": 0.0,
                "seeds": 1,
            }
        )
        if not tower:
            continue
        # Chapter 4's text-only tower on P2.
        tower = evaluate_seeds(
            lambda seed: TwoTower(
                vectors, validation=validation, epochs=15, patience=3, refit=False, seed=seed
            ),
            p2,
            seeds=SEEDS,
        )
        rows.append(
            {
                "model": "two-tower (text only)",
                "precision": precision,
                "NDCG@10 mean": tower.mean,
                "NDCG@10 sd": tower.sd,
                "seeds": len(SEEDS),
            }
        )
    return pd.DataFrame(rows)

"""The training section: two-tower epoch time and memory as interactions grow, scoring as items grow."""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd
import torch
from retrieval import synthetic_vectors

from recutils.benchmark import compare, loglog_slope, run_in_subprocess


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

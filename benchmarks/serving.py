"""The serving section: the book's service (``recutils.serve``) under load on loopback.

The server runs in a child process with the careful tower loaded from the cache; the load test
(``recutils.loadtest``) measures latency percentiles and throughput at 1, 4, 16 and 64 concurrent
clients for known users (exact scoring and the HNSW index behind the same endpoint), new users
described by text (int8 encoder), and deliberately bad requests (each must get its 4xx). Then the
same app on Ray Serve (``recutils.serve_ray``, two replicas) is measured the same way for known
users and text; none of its processes may outlive it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx
import pandas as pd
from kernel_drift import FORCED
from targets import target_row

from recutils.loadtest import CONCURRENCY, bad_calls, known_user_calls, load_test, text_calls
from recutils.serve import book_server
from recutils.serve_ray import book_ray_server

K = 10
# The service targets, fixed before the first measurement.
KNOWN_P99_MS, TEXT_P50_MS, TARGET_CLIENTS = 50.0, 30.0, 16


def hnsw_agreement(url: str, user_ids: range) -> float:
    """Mean share of the exact top-K that the HNSW index returns, over ``user_ids``."""
    shares = []
    for user in user_ids:
        lists = [
            {f["item_id"] for f in httpx.get(f"{url}/users/{user}/recommendations", params={"k": K, "index": index})
             .raise_for_status().json()["films"]}
            for index in ("exact", "hnsw")
        ]
        shares.append(len(lists[0] & lists[1]) / K)
    return sum(shares) / len(shares)


def bench_serving(quick: bool) -> dict:
    requests = 60 if quick else 400
    concurrency = CONCURRENCY[:2] if quick else CONCURRENCY
    users = range(1, 944)  # MovieLens-100K's user ids
    scenarios = {
        "known user, exact": known_user_calls(users, requests, K),
        "known user, HNSW": known_user_calls(users, requests, K, index="hnsw"),
        "new user, text (int8)": text_calls(requests, K),
        "bad requests (deliberate)": bad_calls(),
    }
    # The server runs on the notebooks' CPU paths, so it loads chapter 4's cached towers
    # (keyed by the kernel level) instead of training its own for half an hour.
    def measure(url: str, names: Sequence[str]) -> pd.DataFrame:
        return pd.concat(
            [load_test(url, scenarios[name], concurrency, requests, time_limit=30.0).assign(scenario=name)
             for name in names],
            ignore_index=True,
        )

    with (tempfile.TemporaryDirectory() as folder,
          book_server(Path(folder) / "server.log", env={**os.environ, **FORCED}) as server):
        table = measure(server.url, scenarios)
        agreement = hnsw_agreement(server.url, range(1, 101 if quick else 944, 1 if quick else 3))
    if server.running() or server.leftovers():
        raise RuntimeError(f"the server's processes outlived its stop: {server.leftovers()}")
    on_ray = ("known user, exact", "new user, text (int8)")
    with (tempfile.TemporaryDirectory() as folder,
          book_ray_server(Path(folder) / "ray.log", replicas=2, env={**os.environ, **FORCED}) as ray_server):
        ray_table = measure(ray_server.url, on_ray)
    if ray_server.leftovers():
        raise RuntimeError(f"Ray's processes outlived the server: {ray_server.leftovers()}")
    table = pd.concat([table.assign(server="uvicorn, one process"), ray_table.assign(server="Ray Serve, 2 replicas")],
                      ignore_index=True)
    table = table[["server", "scenario", *table.columns.drop(["server", "scenario"])]]

    def at(scenario: str, clients: int, column: str, server: str = "uvicorn, one process") -> float:
        rows = table[(table["server"] == server) & (table["scenario"] == scenario) & (table["clients"] == clients)]
        return float(rows[column].iloc[0]) if len(rows) else float("nan")

    clients = TARGET_CLIENTS if TARGET_CLIENTS in concurrency else concurrency[-1]
    targets = [
        target_row(f"known-user p99 at {clients} clients, exact (ms)", at("known user, exact", clients, "p99 ms"),
                   f"<= {KNOWN_P99_MS:g} ms at {TARGET_CLIENTS} clients", KNOWN_P99_MS, higher_is_better=False),
        target_row(f"known-user p99 at {clients} clients, HNSW (ms)", at("known user, HNSW", clients, "p99 ms"),
                   f"<= {KNOWN_P99_MS:g} ms at {TARGET_CLIENTS} clients", KNOWN_P99_MS, higher_is_better=False),
        target_row("new-user text p50 at 1 client, int8 (ms)", at("new user, text (int8)", 1, "p50 ms"),
                   f"<= {TEXT_P50_MS:g} ms", TEXT_P50_MS, higher_is_better=False),
        target_row(f"known-user p99 at {clients} clients, exact, Ray Serve with 2 replicas (ms)",
                   at("known user, exact", clients, "p99 ms", "Ray Serve, 2 replicas"),
                   f"<= {KNOWN_P99_MS:g} ms at {TARGET_CLIENTS} clients", KNOWN_P99_MS, higher_is_better=False),
        target_row("failed requests (bad ones count when not given their 4xx)", float(table["failed"].sum()),
                   "0", 0.0, higher_is_better=False),
    ]
    agreement_table = pd.DataFrame([{"index": "hnsw", "k": K, "share of the exact top-k": agreement}])
    return {"tables": {"latency": table, "hnsw_agreement": agreement_table}, "targets": targets}

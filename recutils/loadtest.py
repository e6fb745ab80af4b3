"""A small load test for the HTTP service: latency percentiles and throughput as concurrent clients grow.

Each level runs ``clients`` asyncio workers, each on its own kept-alive connection; each sends
its next request as soon as the previous one is answered (a closed loop), so latency includes
the time a request waits behind the others. A level stops after ``requests`` requests or
``time_limit`` seconds, whichever comes first. Only loopback addresses are accepted: this is a
test of one machine, never load on someone else's server.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from recutils.checks import check_int, check_number

LOOPBACK = ("127.0.0.1", "localhost", "::1")
CONCURRENCY = (1, 4, 16, 64)
#: New users describing their taste, for the text endpoint.
TEXTS = (
    "space adventure with robots, aliens and a princess",
    "a romantic comedy set in New York",
    "dark horror film with a serial killer",
    "animated films for children, with songs",
    "gritty crime drama about the mafia",
    "a war film based on a true story",
    "witty British period drama",
    "martial arts action in Hong Kong",
)


@dataclass(frozen=True)
class Call:
    """One request of a load test and the status it should get (a 4xx for a deliberate bad one)."""

    method: str
    path: str
    body: dict | None = None
    expect: int = 200


def known_user_calls(user_ids: Sequence[int], n: int, k: int = 10, index: str | None = None,
                     seed: int = 0) -> list[Call]:
    """``n`` recommendation requests for users drawn (seeded) from ``user_ids``."""
    query = f"?k={k}" + (f"&index={index}" if index else "")
    users = np.random.default_rng(seed).choice(np.asarray(user_ids), size=n)
    return [Call("GET", f"/users/{int(u)}/recommendations{query}") for u in users]


def text_calls(n: int, k: int = 10, texts: Sequence[str] = TEXTS) -> list[Call]:
    """``n`` new-user requests from free text, cycling through ``texts``."""
    return [Call("POST", "/recommendations/from-text", {"text": texts[i % len(texts)], "k": k})
            for i in range(n)]


def bad_calls() -> list[Call]:
    """Deliberately bad requests and the 4xx each must get: unknown user, k = 0, an empty text."""
    return [
        Call("GET", "/users/999999/recommendations", expect=404),
        Call("GET", "/users/1/recommendations?k=0", expect=422),
        Call("POST", "/recommendations/from-text", {"text": ""}, expect=422),
    ]


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, call: Call) -> int:
    """One HTTP/1.1 request on a kept-alive connection; returns the status once the body is read."""
    body = b"" if call.body is None else json.dumps(call.body).encode()
    writer.write(f"{call.method} {call.path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    fields = dict(line.split(":", 1) for line in head[1:] if ":" in line)
    lengths = [v for name, v in fields.items() if name.lower() == "content-length"]
    if not lengths:
        raise ConnectionError(f"no Content-Length in the answer to {call.method} {call.path}")
    await reader.readexactly(int(lengths[0]))
    return int(head[0].split()[1])


async def _level(url: str, calls: Sequence[Call], clients: int, requests: int,
                 time_limit: float) -> tuple[list[float], int, float]:
    """(latencies in s of the requests answered as expected, requests not so answered, wall seconds).

    The client is a few lines of asyncio streams rather than httpx: on 2 cores the client shares
    the CPU with the server, and httpx's own cost per request (about 2 ms) capped the measured
    throughput at a third of what the server gives.
    """
    parts = urlsplit(url)
    latencies: list[float] = []
    failed = sent = 0
    started = time.perf_counter()
    deadline = started + time_limit

    async def worker() -> None:
        nonlocal failed, sent
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            while sent < requests and time.perf_counter() < deadline:
                call = calls[sent % len(calls)]
                sent += 1
                begun = time.perf_counter()
                try:
                    ok = await _send(reader, writer, parts.netloc, call) == call.expect
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    # The connection is in an unknown state after a broken answer: open a new one.
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
                if ok:
                    latencies.append(time.perf_counter() - begun)
                else:
                    failed += 1
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, failed, time.perf_counter() - started


Level = tuple[list[float], int, float]


def _run(coroutine: Coroutine[object, object, Level]) -> Level:
    """``asyncio.run`` in a thread of its own: in a notebook this thread already runs an event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def load_test(url: str, calls: Sequence[Call], concurrency: Sequence[int] = CONCURRENCY,
              requests: int = 400, time_limit: float = 20.0, warmup: int = 20) -> pd.DataFrame:
    """Latency and throughput of ``calls`` (cycled) at each number of concurrent clients.

    Args:
        url: the server, on a loopback address (``http://127.0.0.1:8000``).
        requests: at most this many requests per level; time_limit: at most this many seconds.
        warmup: requests sent first at one client and not measured (connections, caches).
    Returns: one row per level: ``clients``, ``requests`` (answered as expected), ``failed``
        (any other answer, or none), ``p50 ms``, ``p95 ms``, ``p99 ms``, ``requests/s``.
    Raises:
        ValueError: a host that is not loopback, no calls, or a bound that is not positive.
    """
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"the load test runs on loopback only ({', '.join(LOOPBACK)}), not {host!r}")
    if not calls:
        raise ValueError("no calls to send")
    for clients in concurrency:
        check_int(clients, "clients", minimum=1)
    check_int(requests, "requests", minimum=1)
    check_number(time_limit, "time_limit", low=0, low_open=True)
    if check_int(warmup, "warmup", minimum=0):
        _run(_level(url, calls, 1, warmup, time_limit))
    rows = []
    for clients in concurrency:
        latencies, failed, wall = _run(_level(url, calls, clients, requests, time_limit))
        ms = np.asarray(latencies) * 1000 if latencies else np.full(1, np.nan)
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        rows.append({"clients": clients, "requests": len(latencies), "failed": failed, "p50 ms": p50,
                     "p95 ms": p95, "p99 ms": p99, "requests/s": (len(latencies) + failed) / wall})
    return pd.DataFrame(rows)

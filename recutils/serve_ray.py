"""The book's service on Ray Serve: the FastAPI app of :mod:`recutils.serve`, built once in each
of several replicas, behind one route. The endpoints, answers and errors are the same.

``python -m recutils.serve_ray --replicas 2`` (or ``make serve-ray``) starts a Ray cluster on this
machine and serves on 127.0.0.1:8000 until it is stopped (SIGTERM or Ctrl-C); it then shuts Serve
and Ray down, so that none of Ray's processes outlives it. Ray's HTTP proxy spreads requests over
the replicas. What changes on a real cluster is listed in chapter 9.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from recutils.checks import check_int
from recutils.index import INDEX_KINDS
from recutils.serve import (
    DEFAULT_INDEXES,
    ServerProcess,
    Service,
    book_service,
    check_indexes,
    create_app,
    free_port,
    start_server,
)

#: Builds the service a replica serves, from the index kinds to serve.
BuildService = Callable[[Sequence[str]], Service]


def application(build_service: BuildService = book_service, replicas: int = 2,
                indexes: Sequence[str] = DEFAULT_INDEXES):  # -> ray.serve.Application (Ray imported lazily)
    """The Ray Serve application: ``replicas`` copies of :func:`~recutils.serve.create_app` over
    ``build_service(indexes)``, each built in its own replica process when the replica starts
    (never inside a request). Each replica asks Ray for one CPU.

    Raises:
        ValueError: ``replicas`` is not a positive integer, or an index kind is unknown.
    """
    from ray import serve

    check_int(replicas, "replicas", minimum=1)
    check_indexes(indexes)
    kinds = list(indexes)

    def build_app():
        torch.set_num_threads(1)  # as in recutils.serve.main: a request's tensors are tiny
        return create_app(build_service(kinds))

    ingress = serve.ingress(build_app)()
    deployment = serve.deployment(ingress, name="recommender", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": 1})
    return deployment.bind()


def serve_until_stopped(build_service: BuildService = book_service, replicas: int = 2,
                        indexes: Sequence[str] = DEFAULT_INDEXES, host: str = "127.0.0.1",
                        port: int = 8000) -> None:
    """Start a local Ray cluster with at least ``replicas`` CPUs, serve :func:`application` on
    ``host``:``port`` until SIGTERM or SIGINT, then shut Serve and Ray down."""
    import ray
    from ray import serve

    stop = threading.Event()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local cluster: no token warning
    ray.init(num_cpus=max(replicas, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    # After ray.init, which installs its own SIGTERM handler: one that aborts the process and
    # leaves Ray's agents running.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(application(build_service, replicas, indexes), name="book", route_prefix="/")
        stop.wait()
    finally:
        serve.shutdown()
        ray.shutdown()


def book_ray_server(log: Path, port: int | None = None, replicas: int = 2,
                    indexes: Sequence[str] = DEFAULT_INDEXES, timeout: float = 600.0,
                    env: Mapping[str, str] | None = None) -> ServerProcess:
    """The book's service on Ray Serve (``python -m recutils.serve_ray``) in a child process on
    127.0.0.1, returned once its ``/health`` answers; the other arguments are
    :func:`~recutils.serve.start_server`'s. ``leftovers()`` on the result lists Ray's processes."""
    port = free_port() if port is None else port
    command = [sys.executable, "-m", "recutils.serve_ray", "--port", str(port), "--replicas", str(replicas),
               "--index", *indexes]
    return start_server(command, port, log, timeout, env)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m recutils.serve_ray``: the book's service in Ray Serve replicas until stopped."""
    parser = argparse.ArgumentParser(description="Serve the book's recommender with Ray Serve.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--index", nargs="+", default=list(DEFAULT_INDEXES), choices=INDEX_KINDS,
                        help="indexes to serve; the first is the default")
    args = parser.parse_args(argv)
    serve_until_stopped(book_service, args.replicas, args.index, args.host, args.port)


if __name__ == "__main__":
    main()

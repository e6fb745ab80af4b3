"""Bit-for-bit repeatable training: the notebooks check trained models' numbers in CI."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def repeatable_training(one_thread: bool = True) -> Iterator[None]:
    """Deterministic kernels, the caller's random state restored afterwards and, with
    ``one_thread``, one CPU thread.

    One thread because some backward passes (layer norm's, a broadcast's) sum over the batch
    in chunks set by the thread count, so the same seed gives other last bits on a machine
    with more cores, and training drifts apart from there. The models trained under it are
    small, so a second thread buys little.
    """
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if one_thread:
        torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)

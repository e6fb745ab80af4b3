"""Encoding a large catalogue with Ray Data: the same ``TextEncoder``, many workers.

Ray Data splits the texts into blocks and streams them through a pool of actors;
each actor loads the encoder once and encodes batch after batch. The same code runs
on a laptop (``ray.init()`` starts a local instance) and on a cluster
(``ray.init(address=...)``); only the data source and the pool size change.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from recutils.text import TextEncoder


class EncodeBatch:
    """A Ray Data map function: one ``TextEncoder`` per actor, reused for every batch.

    Args:
        precision: the encoder's precision ("fp32", "bf16" or "int8").
        threads: torch threads per actor; one per CPU the actor reserves, so actors
            do not fight over cores.
    """

    def __init__(self, precision: str = "fp32", threads: int = 1) -> None:
        torch.set_num_threads(threads)
        # Workers write no cache files: many processes would race on them, and the
        # driver keeps the result.
        self.encoder = TextEncoder(use_cache=False, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Adds a (batch, dim) float32 ``vector`` column for the ``text`` column.

        Raises: TypeError for a missing text (None, NaN), as ``TextEncoder.encode`` does;
        str() would have encoded them as the words "None" and "nan".
        """
        # numpy hands back np.str_ (a str); anything that is not a str stays as it is and is refused.
        texts = [str(text) if isinstance(text, str) else text for text in batch["text"]]
        vectors = self.encoder.encode(texts, progress=False).numpy()
        return {**batch, "vector": vectors}


def encode_with_ray(
    texts: Sequence[str],
    workers: int = 2,
    batch_size: int = 256,
    precision: str = "fp32",
) -> torch.Tensor:
    """Encode ``texts`` with a pool of ``workers`` Ray actors (Ray must be initialised).

    Args:
        texts: the strings to encode.
        workers: actors in the pool, one CPU each.
        batch_size: texts per call of :class:`EncodeBatch`.
    Returns: (len(texts), dim) float32 unit vectors in the order of ``texts``, the
        same as ``TextEncoder(precision=precision).encode(texts)``.
    """
    import ray

    if not ray.is_initialized():
        raise RuntimeError("Ray is not running: call ray.init() (locally) or ray.init(address=...) first")
    if not texts:
        raise ValueError("no texts to encode")
    if workers < 1 or batch_size < 1:
        raise ValueError(f"workers and batch_size must be positive, got {workers} and {batch_size}")
    # One block per batch: enough blocks to keep every actor busy, and no tiny ones.
    dataset = ray.data.from_items(
        [{"id": i, "text": text} for i, text in enumerate(texts)],
        override_num_blocks=max(workers, math.ceil(len(texts) / batch_size)),
    )
    with warnings.catch_warnings():
        # Ray 2.60 routes max_restarts through ray_remote_args, which it calls deprecated.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        encoded = dataset.map_batches(
            EncodeBatch,
            fn_constructor_kwargs={"precision": precision},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            # An actor that fails should fail the job, not restart (which also prints an
            # error line when the pool shuts down).
            max_restarts=0,
        )
    ids, vectors = [], []
    for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
        ids.append(batch["id"])
        vectors.append(batch["vector"])
    # Blocks arrive in whatever order the actors finish them; the ids restore the order.
    order = np.argsort(np.concatenate(ids), kind="stable")
    return torch.from_numpy(np.concatenate(vectors)[order].astype(np.float32))


def start_local_ray(cpus: int = 2) -> None:
    """A quiet local Ray instance for the book: no dashboard, no progress bars, no worker logs."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level="ERROR",
        ignore_reinit_error=True,
    )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    # Ray Data logs each execution's plan and end at INFO; the book shows results only.
    logging.getLogger("ray.data").setLevel(logging.ERROR)

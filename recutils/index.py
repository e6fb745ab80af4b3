"""Nearest-neighbour search over item vectors: exact in torch, or FAISS (flat, HNSW, IVF).

Every index answers the same question: for each query vector, the k items with the
largest inner product (the cosine, for unit vectors). The exact index is the
reference; the approximate ones (HNSW, IVF) trade a little recall for speed on large
catalogues. Choose one by name with :func:`build_index`; recommenders that score by
vectors take the same name as their ``index`` argument.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from recutils.similarity import top_k
from recutils.text import pick_device

IndexKind = Literal["exact", "flat", "hnsw", "ivf"]
INDEX_KINDS: tuple[str, ...] = ("exact", "flat", "hnsw", "ivf")
# Exact search never holds more than this many scores at once (512 MB of float32).
MAX_SCORES_IN_MEMORY = 2**27
ITEMS_PER_CHUNK = 4096
# Up to this many queries score all items in one product (no chunks, no merging).
SMALL_BATCH = 16


class VectorIndex(ABC):
    """Top-k inner-product search over a fixed set of (n, dim) vectors."""

    kind: str

    def __init__(self, vectors: torch.Tensor) -> None:
        if vectors.ndim != 2 or len(vectors) == 0:
            raise ValueError(f"vectors must be a non-empty (n, dim) tensor, got shape {tuple(vectors.shape)}")
        if not torch.isfinite(vectors).all():
            raise ValueError("vectors contain NaN or infinite values")
        self.n, self.dim = vectors.shape

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best items for each query.

        Args:
            queries: (q, dim) finite query vectors; q = 0 gives (0, k) results.
            k: results per query, 1..n.
        Returns: (q, k) float32 inner products, best first, and (q, k) int64 item
            indices; an approximate index may return fewer than k real items, padded
            with index -1 and score -inf.
        """
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (q, {self.dim}), got shape {tuple(queries.shape)}")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= self.n:
            raise ValueError(f"k must be an integer in 1..{self.n} (the indexed items), got {k!r}")
        k = int(k)
        if len(queries) == 0:
            return torch.zeros(0, k), torch.zeros(0, k, dtype=torch.int64)
        if not torch.isfinite(queries).all():
            # A NaN query has no nearest items: its scores would be NaN and its ids arbitrary.
            bad = torch.nonzero(~torch.isfinite(queries).all(dim=1)).flatten()[:5].tolist()
            raise ValueError(f"queries {bad} contain NaN or infinite values")
        return self._search(queries.detach().float().contiguous(), k)

    @abstractmethod
    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    @property
    @abstractmethod
    def memory_bytes(self) -> int:
        """Bytes the index holds (vectors plus any graph or lists)."""


ExactRoute = Literal["auto", "numpy", "onednn", "faiss", "torch"]
#: The routes an :class:`ExactIndex` on the CPU can take, in the order a tie in timing prefers.
CPU_ROUTES: tuple[str, ...] = ("numpy", "onednn", "faiss")
#: Batch sizes the router times apart: (name, largest batch or None, batch it times). FAISS
#: answers fewer than 20 queries with its own loop and more with BLAS products, and one query
#: is a matrix-vector product for numpy, so the fastest route can differ between them; a bulk
#: batch is where one large product per chunk pays (measured on one EPYC: FAISS won 1,000
#: queries over 100,000 items, and over 1,000,000 in one of two runs, where the old probe of 64
#: queries over 16,384 items had chosen numpy).
BATCH_CLASSES: tuple[tuple[str, int | None, int], ...] = (
    ("one", 1, 1),
    ("few", SMALL_BATCH, 8),
    ("many", 256, 64),
    ("bulk", None, 256),
)
#: Bump when the routes or their timing change, so that choices timed by older code are not reused.
ROUTER_VERSION = "exact-router-v2"
#: Candidates a route returns beyond k, rescored exactly so that every route ranks alike.
CANDIDATE_MARGIN = 8


class ExactIndex(VectorIndex):
    """Brute force: every inner product, the k best returned in one fixed order whatever computes them.

    Three routes compute the products on the CPU, and the fastest depends on the CPU family:

    - ``"numpy"``: numpy's BLAS (OpenBLAS). Up to :data:`SMALL_BATCH` queries score every item in
      one product; larger batches go through the items in chunks that keep each block of scores
      in the CPU cache, keeping a running top and sorting only the rows where a chunk beats it.
    - ``"onednn"``: the same chunks multiplied by oneDNN (torch's ``mkldnn``), by a second copy of
      the items in oneDNN's format made on the first large batch (it doubles
      :attr:`memory_bytes`). oneDNN compiles AVX-512 kernels where OpenBLAS runs AVX2 ones, so on
      an AVX-512 CPU it wins large batches; on an AVX2-only CPU it does not. Few queries take
      numpy's single product on this route too.
    - ``"faiss"``: FAISS's ``IndexFlatIP`` over a copy of the items (made on first use).

    With ``route="auto"`` (the default) the index takes, for each class of batch size in
    :data:`BATCH_CLASSES`, the route that a short timing on its own items found fastest on this
    machine (:func:`exact_routes`, on first search; cached per machine, environment and catalogue
    size, to the nearest power of two). On a GPU the products run in torch (``"torch"``).

    The route never changes the answer. Each returns its best k + :data:`CANDIDATE_MARGIN`
    items; these are rescored in float64 and ranked by that score, equal scores by the lower
    item index. A row whose candidates might miss a true top-k item (the route's last
    candidate within float32 rounding of the k-th score: ties and near-ties at the boundary)
    is answered by float64 products over every item instead. So every route returns the same
    ids, and the same float32 scores (the float64 ones rounded).

    Args:
        vectors: (n, dim) item vectors (kept as float32).
        chunk_items: items per matrix product; default :data:`ITEMS_PER_CHUNK`, fewer
            when that many scores for the query batch would exceed :data:`MAX_SCORES_IN_MEMORY`.
        device: where the vectors live and the products run; default CUDA when
            present, else CPU. Results always come back on the CPU.
        small_batch: most queries answered by the single-product path (0: never).
        route: "auto", or one of :data:`CPU_ROUTES` to force it ("torch" on a GPU).
    """

    kind = "exact"

    def __init__(
        self,
        vectors: torch.Tensor,
        chunk_items: int | None = None,
        device: str | torch.device | None = None,
        small_batch: int | None = None,
        route: ExactRoute = "auto",
    ) -> None:
        super().__init__(vectors)
        for name, value, least in (("chunk_items", chunk_items, 1), ("small_batch", small_batch, 0)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least
            ):
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self.device = pick_device(device)
        usable = available_routes(self.device)
        if route != "auto" and route not in usable:
            raise ValueError(
                f"route {route!r} is not available here; choose auto or one of {', '.join(usable)}"
            )
        self.route = route
        self.vectors = vectors.detach().float().to(self.device).contiguous()
        self.chunk_items = chunk_items
        self.small_batch = SMALL_BATCH if small_batch is None else int(small_batch)
        # Largest item norm: bounds the float32 rounding error of any route's scores.
        self._max_norm = float(self.vectors.norm(dim=1).max())
        # oneDNN copies of the item chunks, keyed by chunk size (only the last size used is
        # kept), and the FAISS copy: made on first use.
        self._onednn_chunks: dict[int, list[torch.Tensor]] = {}
        self._faiss: FaissIndex | None = None

    def route_for(self, n_queries: int) -> str:
        """The route a batch of ``n_queries`` takes: the forced one, or the router's choice."""
        if self.route != "auto":
            return self.route
        if self.device.type != "cpu":
            return "torch"
        return exact_routes(self.vectors, self.small_batch)["routes"][batch_class(n_queries)]

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        queries = queries.to(self.device)
        route = self.route_for(len(queries))
        depth = min(self.n, k + CANDIDATE_MARGIN)
        with torch.inference_mode():
            if route == "faiss":
                if self._faiss is None:
                    self._faiss = FaissIndex(self.vectors, "flat")
                found_scores, found_ids = self._faiss.search(queries, depth)
            elif len(queries) <= self.small_batch and len(queries) * self.n <= MAX_SCORES_IN_MEMORY:
                found_scores, found_ids = self._search_all(queries, depth)
            else:
                found_scores, found_ids = self._search_chunked(queries, depth, onednn=route == "onednn")
            scores, ids = self._rescore(queries, found_scores.to(self.device), found_ids.to(self.device), k)
        return scores.float().cpu(), ids.cpu()

    def _rescore(
        self, queries: torch.Tensor, found_scores: torch.Tensor, found_ids: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best of each row's candidates by float64 score (ties: lower index), and every
        row whose candidates may not hold its true top k answered over all items."""
        exact = torch.empty(found_ids.shape, dtype=torch.float64, device=self.device)
        for start in range(0, len(queries), 256):
            block = self.vectors[found_ids[start : start + 256]].double()  # (b, depth, dim)
            rows = queries[start : start + 256].double().unsqueeze(2)
            exact[start : start + 256] = torch.bmm(block, rows).squeeze(2)
        scores, ids = _canonical_top(exact, found_ids, k)
        if found_ids.shape[1] < self.n:
            # An item outside the candidates scored at most the last candidate's route score, so
            # its true score is at most that plus the route's rounding error (a float32 dot
            # product of length dim errs by at most dim · 2^-23 · |q| · |x|): it cannot reach
            # the top k when the k-th score lies above that.
            bound = self.dim * 2.0**-23 * queries.double().norm(dim=1) * self._max_norm
            unsure = torch.nonzero(scores[:, k - 1] <= found_scores[:, -1].double() + bound).flatten()
            if len(unsure):
                scores[unsure], ids[unsure] = self._float64_top(queries[unsure], k)
        return scores, ids

    def _float64_top(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k best items by float64 products over every item (ties: lower index)."""
        best_scores = torch.full((len(queries), k), float("-inf"), dtype=torch.float64, device=self.device)
        best_ids = torch.full((len(queries), k), -1, dtype=torch.int64, device=self.device)
        chunk = max(1, min(ITEMS_PER_CHUNK, MAX_SCORES_IN_MEMORY // (2 * len(queries))))
        queries = queries.double()
        for start in range(0, self.n, chunk):
            scores = queries @ self.vectors[start : start + chunk].double().T
            top_scores, top_ids = _top_with_ties(scores, k, start)
            best_scores, best_ids = _canonical_top(
                torch.cat([best_scores, top_scores], dim=1), torch.cat([best_ids, top_ids], dim=1), k
            )
        return best_scores, best_ids

    def _search_all(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One product over every item, then one partial sort: fastest for a few queries."""
        scores = torch.empty(len(queries), self.n, device=self.device)
        _product(queries, self.vectors, scores)
        return _canonical_top(*_top_with_ties(scores, k, 0), k)

    def _search_chunked(
        self, queries: torch.Tensor, k: int, onednn: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Small chunks keep each block of scores in the CPU cache (4096 items × 1000
        # queries is 16 MB); measured on 1M items, 4096 beats 131,072 by about a third.
        chunk = self.chunk_items or max(1, min(ITEMS_PER_CHUNK, MAX_SCORES_IN_MEMORY // len(queries)))
        # Start from k placeholders that any real item beats (every score is finite).
        best_scores = torch.full((len(queries), k), float("-inf"), device=self.device)
        best_ids = torch.full((len(queries), k), -1, dtype=torch.int64, device=self.device)
        for start, scores in self._chunk_scores(queries, chunk, onednn):
            # Chunks come in increasing item order, so an item that only ties the k-th
            # best has a higher index and loses: a row needs work only if it beats it.
            rows = torch.nonzero(scores.amax(dim=1) > best_scores[:, k - 1]).flatten()
            if len(rows) == 0:
                continue
            if len(rows) < len(queries):
                scores = scores[rows]
            top_scores, top_ids = _top_with_ties(scores, k, start)
            merged = _canonical_top(
                torch.cat([best_scores[rows], top_scores], dim=1),
                torch.cat([best_ids[rows], top_ids], dim=1),
                k,
            )
            best_scores[rows], best_ids[rows] = merged
        return best_scores, best_ids

    def _chunk_scores(
        self, queries: torch.Tensor, chunk: int, onednn: bool
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """(first item, (q, ≤chunk) scores) for each chunk of items, in item order.

        The scores may be overwritten by the next chunk; use them before asking for it.
        """
        if onednn:
            if chunk not in self._onednn_chunks:
                self._onednn_chunks = {
                    chunk: [self.vectors[s : s + chunk].to_mkldnn() for s in range(0, self.n, chunk)]
                }
            onednn_queries = queries.to_mkldnn()
            for number, block in enumerate(self._onednn_chunks[chunk]):
                # The call behind torch.utils.mkldnn.MkldnnLinear: queries @ block.T.
                yield number * chunk, torch._C._nn.mkldnn_linear(onednn_queries, block, None).to_dense()
            return
        buffer = torch.empty(len(queries), chunk, device=self.device)
        for start in range(0, self.n, chunk):
            block = self.vectors[start : start + chunk]
            scores = buffer[:, : len(block)]
            _product(queries, block, scores)
            yield start, scores

    @property
    def memory_bytes(self) -> int:
        held = [self.vectors] + [block for blocks in self._onednn_chunks.values() for block in blocks]
        copies = self._faiss.memory_bytes if self._faiss is not None else 0
        return sum(tensor.numel() * tensor.element_size() for tensor in held) + copies


def available_routes(device: str | torch.device | None = None) -> tuple[str, ...]:
    """The routes an :class:`ExactIndex` on ``device`` can take here (oneDNN and FAISS when installed)."""
    if pick_device(device).type != "cpu":
        return ("torch",)
    return tuple(
        route
        for route in CPU_ROUTES
        if route == "numpy"
        or (route == "onednn" and torch.backends.mkldnn.is_available())
        or (route == "faiss" and importlib.util.find_spec("faiss") is not None)
    )


def batch_class(n_queries: int) -> str:
    """The name of the :data:`BATCH_CLASSES` entry a batch of ``n_queries`` falls in."""
    return next(name for name, largest, _ in BATCH_CLASSES if largest is None or n_queries <= largest)


def exact_routes(items: torch.Tensor, small_batch: int = SMALL_BATCH, refresh: bool = False) -> dict:
    """The router's choice for exact search over ``items`` on this machine: the fastest route per batch class.

    Which route wins depends on the catalogue's size as well as on the CPU (in one run FAISS
    answered 1,000 queries faster over 100,000 items and slower over 1,000,000), so the routes
    are timed on the index's own (n, dim) items: each route of :func:`available_routes` answers a batch of
    random unit queries of each class of :data:`BATCH_CLASSES`, side by side
    (:func:`recutils.benchmark.compare`); the fastest median wins, a tie going to the earlier of
    :data:`CPU_ROUTES`. Timed once per machine, environment, library versions
    (:func:`recutils.benchmark.machine_key`), width and catalogue size to the nearest power of
    two, and cached under ``{cache}/routes``: seconds for a million items, milliseconds for
    MovieLens.

    Args:
        refresh: time again, ignoring the cached choice (this process keeps the new one).
    Returns: ``{"routes": {class: route}, "timings": {class: {route: median seconds}}, ...}``.
    """
    from recutils.benchmark import cached_choice, machine_key

    routes = available_routes("cpu")
    n, dim = items.shape
    key = machine_key("faiss-cpu") | {
        "router": ROUTER_VERSION,
        "dim": int(dim),
        "items_power_of_two": round(math.log2(max(n, 1))),
        "small_batch": int(small_batch),
        "routes": list(routes),
        "classes": [list(c) for c in BATCH_CLASSES],
    }
    return cached_choice(
        "exact-index", key, lambda: _time_routes(items, small_batch, routes), refresh=refresh
    )


def _time_routes(items: torch.Tensor, small_batch: int, routes: tuple[str, ...]) -> dict:
    from recutils.benchmark import compare

    generator = torch.Generator().manual_seed(0)
    largest = max(probe for _, _, probe in BATCH_CLASSES)
    queries = torch.nn.functional.normalize(torch.randn(largest, items.shape[1], generator=generator), dim=1)
    # The items are shared, not copied; a route's own copy (FAISS's, oneDNN's) goes with its index.
    indexes = {
        route: ExactIndex(items, device="cpu", small_batch=small_batch, route=route) for route in routes
    }
    chosen, timings = {}, {}
    for name, _, probe in BATCH_CLASSES:
        batch = queries[:probe]
        # A batch the single-product path answers is numpy's on the oneDNN route too: not a candidate.
        candidates = [r for r in routes if not (r == "onednn" and probe <= small_batch)]
        table = compare({route: _searcher(indexes[route], batch) for route in candidates}, repeats=3)
        timings[name] = {route: float(table.loc[route, "median_s"]) for route in candidates}
        chosen[name] = min(candidates, key=lambda route: (timings[name][route], routes.index(route)))
    return {"routes": chosen, "timings": timings}


def _searcher(index: ExactIndex, queries: torch.Tensor):
    return lambda: index.search(queries, 10)


def _product(queries: torch.Tensor, items: torch.Tensor, out: torch.Tensor) -> None:
    """``out = queries @ items.T``, written in place.

    On the CPU through numpy's BLAS (OpenBLAS): on this book's CPUs it runs these float32
    products about a quarter faster than torch's (MKL), which takes a slower code path
    on AMD processors. One query is a matrix-vector product.
    """
    if out.device.type != "cpu":
        torch.matmul(queries, items.T, out=out)
        return
    target = out.numpy()
    if len(queries) == 1:
        np.matmul(items.numpy(), queries[0].numpy(), out=target[0])
    else:
        np.matmul(queries.numpy(), items.numpy().T, out=target)


def _top_with_ties(scores: torch.Tensor, k: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best columns of each row (:func:`recutils.similarity.top_k`: equal scores by the
    lower column). Returns: (rows, ≤k) scores and column indices + ``offset``."""
    width = scores.shape[1]
    if width <= k:
        ids = torch.arange(offset, offset + width, device=scores.device).expand(len(scores), width)
        return scores.clone(), ids
    values, ids = top_k(scores, k)
    return values, ids + offset


def _canonical_top(scores: torch.Tensor, ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of each row, best first, equal scores in increasing item index."""
    by_id = torch.argsort(ids, dim=1, stable=True)  # ids are unique in a row
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), ids.gather(1, order)


class FaissIndex(VectorIndex):
    """A FAISS inner-product index: ``flat`` (exact), ``hnsw`` (a graph) or ``ivf`` (clusters).

    Args:
        vectors: (n, dim) item vectors.
        kind: "flat", "hnsw" or "ivf".
        hnsw_m: graph degree of HNSW (more: better recall, more memory, slower build).
        ef_construction, ef_search: HNSW's candidate-list sizes when building and searching.
        nlist: IVF's number of clusters (default about 4·√n).
        nprobe: IVF clusters visited per query.
        train_size: vectors used to learn IVF's clusters (a seeded sample); default
            40 per cluster, the fewest FAISS accepts without a warning.
        seed: the sample's seed.
    """

    def __init__(
        self,
        vectors: torch.Tensor,
        kind: Literal["flat", "hnsw", "ivf"] = "flat",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
        nlist: int | None = None,
        nprobe: int = 16,
        train_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(vectors)
        faiss = _import_faiss()
        x = np.ascontiguousarray(vectors.detach().float().cpu().numpy())
        self.kind = kind
        if kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            nlist = nlist or max(1, min(self.n // 39, int(4 * np.sqrt(self.n))))
            if not 1 <= nlist <= self.n:
                raise ValueError(f"nlist must lie in 1..{self.n}, got {nlist}")
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT
            )
            sample = np.random.default_rng(seed).permutation(self.n)[: train_size or 40 * nlist]
            index.train(x[np.sort(sample)])
            index.nprobe = min(nprobe, nlist)
        else:
            raise ValueError(f"unknown FAISS index kind {kind!r}; choose flat, hnsw or ivf")
        index.add(x)
        self.index = index

    def _search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores, ids = self.index.search(queries.cpu().numpy(), k)
        scores = torch.from_numpy(scores)
        ids = torch.from_numpy(ids).long()
        return scores.masked_fill(ids < 0, float("-inf")), ids

    @property
    def memory_bytes(self) -> int:
        return int(_import_faiss().serialize_index(self.index).nbytes)


def build_index(vectors: torch.Tensor, kind: IndexKind = "exact", **params: object) -> VectorIndex:
    """An index of ``kind`` over ``vectors``; ``params`` go to its constructor.

    "exact" is torch brute force (:class:`ExactIndex`); "flat", "hnsw" and "ivf" are
    FAISS indexes (:class:`FaissIndex`, needs ``pip install faiss-cpu``).
    """
    if kind == "exact":
        return ExactIndex(vectors, **params)
    if kind in ("flat", "hnsw", "ivf"):
        return FaissIndex(vectors, kind=kind, **params)
    raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")


def recall_at_k(found: torch.Tensor, truth: torch.Tensor) -> float:
    """Share of the true top-k neighbours an index found, averaged over queries.

    Args:
        found, truth: (q, k) item indices (from an approximate and the exact search).
    """
    if found.shape != truth.shape:
        raise ValueError(f"found {tuple(found.shape)} and truth {tuple(truth.shape)} differ in shape")
    hits = (found.unsqueeze(2) == truth.unsqueeze(1)).any(dim=2)
    return float(hits.float().mean())


def _import_faiss():
    if importlib.util.find_spec("faiss") is None:
        raise ModuleNotFoundError("FAISS indexes need the faiss package: pip install faiss-cpu")
    import faiss

    return faiss

"""Cosine similarity in bounded memory, top-k neighbours, and association matrices.

sim(u, i) = cos(u_emb, i_emb) and sim(i, j) = cos(i_emb, j_emb). For a large
catalogue the full matrix does not fit in memory, so rows are computed in
chunks and, where only neighbours are needed, reduced to their top k at once.
"""

from __future__ import annotations

import numbers

import torch

from recutils.split import Interactions


def _unit_rows(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (rows, dim) tensor, got shape {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError(f"{name} contains NaN")
    # Zero rows stay zero (similarity 0 to everything) instead of dividing by zero.
    return torch.nn.functional.normalize(x.float(), dim=1)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor | None = None, chunk_size: int = 4096) -> torch.Tensor:
    """All pairwise cosines between the rows of ``a`` and of ``b`` (default ``a``).

    Args:
        a: (n_a, dim); b: (n_b, dim).
        chunk_size: rows of ``a`` per matrix product, to bound temporary memory.
    Returns: (n_a, n_b) float32 cosine scores in [-1, 1]; 0 for a zero row.
    """
    a = _unit_rows(a, "a")
    b = a if b is None else _unit_rows(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b have different widths ({a.shape[1]} and {b.shape[1]})")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    out = torch.empty(len(a), len(b))
    for start in range(0, len(a), chunk_size):
        out[start : start + chunk_size] = a[start : start + chunk_size] @ b.T
    return out.clamp_(-1.0, 1.0)


def top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest entries of each row, best first, equal values in increasing column order.

    ``torch.topk`` leaves the order of equal values unspecified, and similarities tie often
    (co-rating cosines of items with the same counts; duplicated titles): which neighbour
    makes the list must not depend on the torch build. A row with a tie among its k + 1
    best entries is sorted stably in full.

    Args:
        scores: (rows, n) values; k: 1..n.
    Returns: (rows, k) values and (rows, k) int64 column indices.
    """
    top = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    values, indices = top.values[:, :k].clone(), top.indices[:, :k].clone()
    tied = torch.nonzero((top.values[:, 1:] == top.values[:, :-1]).any(dim=1)).flatten()
    if len(tied):
        order = torch.sort(scores[tied], dim=1, descending=True, stable=True).indices[:, :k]
        values[tied], indices[tied] = scores[tied].gather(1, order), order
    return values, indices


def top_k_neighbours(
    a: torch.Tensor,
    k: int,
    b: torch.Tensor | None = None,
    exclude_self: bool = True,
    chunk_size: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most cosine-similar rows of ``b`` (default ``a``) for each row of ``a``.

    Never holds more than ``chunk_size`` × n_b similarities at once.

    Args:
        exclude_self: when ``b`` is ``a``, a row is not its own neighbour.
    Returns: (n_a, k) float32 similarities, best first (equal ones by lower index, see
    :func:`top_k`), and (n_a, k) int64 indices into ``b``.
    """
    same = b is None
    a = _unit_rows(a, "a")
    b = a if same else _unit_rows(b, "b")
    available = len(b) - (1 if same and exclude_self else 0)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= available:
        raise ValueError(f"k must lie in 1..{available} (the candidate rows), got {k!r}")
    values = torch.empty(len(a), k)
    indices = torch.empty(len(a), k, dtype=torch.int64)
    for start in range(0, len(a), chunk_size):
        sims = a[start : start + chunk_size] @ b.T
        if same and exclude_self:
            rows = torch.arange(len(sims))
            sims[rows, rows + start] = float("-inf")
        values[start : start + chunk_size], indices[start : start + chunk_size] = top_k(sims, k)
    return values, indices


def association_matrix(
    interactions: Interactions,
    axis: str = "item",
    k: int | None = None,
    shrinkage: float = 0.0,
) -> torch.Tensor:
    """Co-rating similarity between items (or users): the article's association matrix.

    S[i, j] = |U_i ∩ U_j| / (sqrt(|U_i| |U_j|) + shrinkage), the cosine between two
    items' columns of the binary interaction matrix, damped by ``shrinkage`` so
    that pairs with little support count less. The diagonal is 0 (an item is not
    its own neighbour). With ``k``, each row keeps only its k largest entries, a tie at the
    k-th place going to the lower index (:func:`top_k`).

    Args:
        axis: "item" for item–item (n_items × n_items), "user" for user–user.
    Returns: (n, n) float32, non-negative.
    """
    if axis not in ("item", "user"):
        raise ValueError(f"axis must be 'item' or 'user', got {axis!r}")
    if shrinkage < 0:
        raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
    x = interactions.matrix(binary=True)
    if axis == "item":
        x = x.T
    overlap = x @ x.T
    norms = torch.sqrt(torch.diagonal(overlap))
    sims = overlap / (norms.unsqueeze(1) * norms.unsqueeze(0) + shrinkage).clamp(min=1e-12)
    sims.fill_diagonal_(0.0)
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < len(sims):
            raise ValueError(f"k must lie in 1..{len(sims) - 1}, got {k!r}")
        kept, columns = top_k(sims, k)
        sims = torch.zeros_like(sims).scatter_(1, columns, kept)
    return sims

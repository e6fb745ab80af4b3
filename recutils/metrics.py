"""Top-N metrics with stated conventions, and ``evaluate`` for any recommender.

Conventions (binary relevance; a user's relevant set is their test items;
``hits`` is a (n_users, k) bool matrix, True where the item at rank j is relevant):

- Precision@K = hits / K (not hits / number of recommended relevant items).
- Recall@K = hits / |test|.
- NDCG@K = DCG / IDCG with gain 1 and discount 1 / log2(rank + 1), rank from 1;
  IDCG is the DCG of min(|test|, K) hits at the top.
- HitRate@K = 1 if any hit.
- MAP@K: mean over users of AP@K = Σ_j hit_j · Precision@j / min(|test|, K).
- Coverage@K = distinct items in all top-K lists / number of items.
- Sampled metrics (``sampled_evaluate``) rank the held-out item against sampled negatives
  only; they are shown once, never used to choose.
- Beyond accuracy (``beyond_accuracy``): novelty, Gini of exposure, intra-list diversity and
  average popularity, each defined in its function's docstring.

Each per-user metric is averaged over users with at least one test item.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recutils.checks import check_int, check_rows
from recutils.recommender import Recommender, require_fitted_on
from recutils.split import Interactions, Split


def hits_at_k(recommended: torch.Tensor, relevant: Sequence[Sequence[int] | np.ndarray]) -> torch.Tensor:
    """Which recommended items are relevant.

    Args:
        recommended: (n_users, k) int64 item indices, best first.
        relevant: one collection of relevant item indices per row.
    Returns: (n_users, k) bool.
    """
    if recommended.ndim != 2:
        raise ValueError(f"recommended must be (n_users, k), got shape {tuple(recommended.shape)}")
    if len(relevant) != len(recommended):
        raise ValueError(f"{len(recommended)} recommendation lists but {len(relevant)} relevant sets")
    # One (n_users, n_items) relevance matrix and a gather, not one isin per user.
    items = [np.asarray(rel, dtype=np.int64).reshape(-1) for rel in relevant]
    flat = np.concatenate(items) if items else np.zeros(0, dtype=np.int64)
    if (flat < 0).any() or (recommended < 0).any():
        raise ValueError("item indices must be non-negative")
    width = int(max(flat.max(initial=-1), int(recommended.max()) if recommended.numel() else -1)) + 1
    relevance = torch.zeros(len(recommended), width, dtype=torch.bool)
    rows = np.repeat(np.arange(len(items)), [len(rel) for rel in items])
    relevance[torch.from_numpy(rows), torch.from_numpy(flat)] = True
    return relevance.gather(1, recommended.long()) if width else torch.zeros_like(recommended, dtype=torch.bool)


def _check(
    hits: torch.Tensor, n_relevant: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if hits.ndim != 2 or hits.shape[1] == 0:
        raise ValueError(f"hits must be a (n_users, k) matrix with k >= 1, got shape {tuple(hits.shape)}")
    hits = hits.to(torch.float64)
    if n_relevant is None:
        return hits, None
    n_relevant = torch.as_tensor(n_relevant, dtype=torch.float64)
    if n_relevant.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must have shape ({hits.shape[0]},), got {tuple(n_relevant.shape)}")
    if (n_relevant < 1).any():
        raise ValueError("every user needs at least one relevant item; drop users without test items")
    if (hits.sum(dim=1) > n_relevant).any():
        raise ValueError("more hits than relevant items for some user: hits and n_relevant disagree")
    return hits, n_relevant


def precision_at_k(hits: torch.Tensor) -> torch.Tensor:
    """Returns: (n_users,) float64 hits / K."""
    hits, _ = _check(hits)
    return hits.mean(dim=1)


def recall_at_k(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    """Returns: (n_users,) float64 hits / |test|."""
    hits, n_relevant = _check(hits, n_relevant)
    return hits.sum(dim=1) / n_relevant


def hit_rate_at_k(hits: torch.Tensor) -> torch.Tensor:
    """Returns: (n_users,) float64, 1 where the list holds at least one relevant item."""
    hits, _ = _check(hits)
    return (hits.sum(dim=1) > 0).double()


def ndcg_at_k(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    """Returns: (n_users,) float64 NDCG in [0, 1] (binary gains, 1/log2(rank+1) discount)."""
    hits, n_relevant = _check(hits, n_relevant)
    k = hits.shape[1]
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64))
    dcg = (hits * discount).sum(dim=1)
    ideal_hits = torch.arange(k, dtype=torch.float64) < n_relevant.clamp(max=k).unsqueeze(1)
    idcg = (ideal_hits * discount).sum(dim=1)
    return dcg / idcg


def average_precision_at_k(hits: torch.Tensor, n_relevant: torch.Tensor) -> torch.Tensor:
    """Returns: (n_users,) float64 AP@K = Σ_j hit_j · Precision@j / min(|test|, K)."""
    hits, n_relevant = _check(hits, n_relevant)
    k = hits.shape[1]
    precision_at_j = hits.cumsum(dim=1) / torch.arange(1, k + 1, dtype=torch.float64)
    return (hits * precision_at_j).sum(dim=1) / n_relevant.clamp(max=k)


def coverage_at_k(recommended: torch.Tensor, n_items: int) -> float:
    """Share of the catalogue that appears in at least one top-K list."""
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    return len(torch.unique(recommended)) / n_items


def evaluate(
    model: Recommender,
    split: Split,
    k: int = 10,
    per_user: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate a fitted recommender on ``split.test`` under the split's protocol.

    Every user with at least one test item is ranked over the items they have not
    seen in train (P1) or over the cold items (P2).

    Returns: a one-row table (index: the model's name) with Precision@K, Recall@K,
    NDCG@K, HitRate@K, MAP@K and Coverage@K; with ``per_user``, also a table
    of the per-user metrics indexed by user.
    """
    if not hasattr(model, "train_"):
        raise RuntimeError(f"{model.name} is not fitted; call fit(split.train) first")
    if model.train_.fingerprint() != split.train.fingerprint():
        raise ValueError(
            f"{model.name} was fitted on other data than this split's train set; "
            "evaluating it here would leak test interactions or rank the wrong items"
        )
    k = check_int(k, "k", minimum=1)
    relevant_by_user = split.test.items_by_user()
    if not relevant_by_user:
        raise ValueError("the split has no test interactions")
    _check_disjoint(split)
    users = torch.tensor(sorted(relevant_by_user), dtype=torch.int64)
    relevant = [relevant_by_user[int(u)] for u in users]
    recommended = model.recommend(users, k, exclude_seen=True, candidates=split.candidates)
    hits = hits_at_k(recommended, relevant)
    n_relevant = torch.tensor([len(r) for r in relevant])
    table = pd.DataFrame(
        {
            f"Precision@{k}": precision_at_k(hits).numpy(),
            f"Recall@{k}": recall_at_k(hits, n_relevant).numpy(),
            f"NDCG@{k}": ndcg_at_k(hits, n_relevant).numpy(),
            f"HitRate@{k}": hit_rate_at_k(hits).numpy(),
            f"MAP@{k}": average_precision_at_k(hits, n_relevant).numpy(),
        },
        index=pd.Index(users.numpy(), name="user"),
    )
    n_rankable = split.train.n_items if split.candidates is None else int(split.candidates.sum())
    summary = table.mean().to_frame(model.name).T
    summary[f"Coverage@{k}"] = coverage_at_k(recommended, n_rankable)
    summary["users"] = len(users)
    return (summary, table) if per_user else summary


#: (train, test) fingerprints already shown disjoint: tuning evaluates one split hundreds of times.
_DISJOINT: set[tuple[str, str]] = set()


def _check_disjoint(split: Split) -> None:
    """Refuse a split in which a (user, item) pair is both train and test: seen items are never
    recommended, so such a test item could never be hit."""
    pair = (split.train.fingerprint(), split.test.fingerprint())
    if pair in _DISJOINT:
        return
    n_items = split.train.n_items
    train, test = (
        part.frame["user"].to_numpy(np.int64) * n_items + part.frame["item"].to_numpy(np.int64)
        for part in (split.train, split.test)
    )
    both = np.isin(test, train)
    if both.any():
        user, item = divmod(int(test[both][0]), n_items)
        raise ValueError(
            f"split: {int(both.sum())} test (user, item) pairs are also in train "
            f"(e.g. user {user}, item {item}); a seen item is never recommended, so they could "
            "never be hit: build the interactions with one row per pair before splitting"
        )
    _DISJOINT.add(pair)


def edge_parameters(best: Mapping[str, Any], grid: Mapping[str, Sequence[Any]]) -> list[str]:
    """The numeric parameters whose chosen value is the smallest or largest of a grid of 3+ values.

    A choice at the edge of its grid is not a choice: the best value may lie beyond it.
    """
    edges = []
    for name, values in grid.items():
        numeric = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(values) < 3 or len(numeric) != len(values):
            continue
        if best[name] in (min(numeric), max(numeric)):
            edges.append(name)
    return edges


def tune(
    make_model: Callable[..., Recommender],
    grid: Mapping[str, Sequence[Any]],
    validation: Split,
    metric: str = "NDCG@10",
    k: int = 10,
    progress: bool = True,
    allow_edge: bool = False,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Grid search on a validation split (never the test split).

    Args:
        make_model: builds an unfitted model from keyword arguments.
        grid: candidate values per keyword argument.
        validation: from :func:`~recutils.split.validation_split`.
        progress: show a progress bar over the settings.
        allow_edge: accept a best value at the edge of a numeric grid (say why in the text).
    Returns: the best keyword arguments and a table of every setting's metrics.
    Raises:
        ValueError: the best value of a numeric parameter is at the edge of its grid
            (unless ``allow_edge``): widen the grid.
    """
    if not grid or any(len(v) == 0 for v in grid.values()):
        raise ValueError("grid needs at least one value for every parameter")
    settings = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    rows = []
    for params in tqdm(settings, desc="tuning", leave=False, disable=not progress):
        result = evaluate(make_model(**params).fit(validation.train), validation, k=k)
        if metric not in result.columns:
            raise ValueError(f"unknown metric {metric!r}; choose from {list(result.columns)}")
        rows.append({**params, **result.iloc[0].to_dict()})
    table = pd.DataFrame(rows)
    # Equal metrics: argmax keeps the first setting in the grid's order.
    best = settings[int(table[metric].to_numpy().argmax())]
    edges = edge_parameters(best, grid)
    if edges and not allow_edge:
        detail = ", ".join(f"{name}={best[name]!r} (grid {list(grid[name])})" for name in edges)
        raise ValueError(f"validation chose the edge of the grid for {detail}; widen the grid")
    return best, table


@dataclass(frozen=True)
class Bootstrap:
    """A bootstrap estimate of mean(a − b) over users (and seeds), with a percentile interval."""

    difference: float
    low: float
    high: float
    level: float
    n_users: int

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return self.low > 0 or self.high < 0

    def verdict(self, higher: str = "higher", lower: str = "lower", tie: str = "within noise") -> str:
        """``higher`` or ``lower`` when the interval excludes 0 on that side, else ``tie``."""
        return higher if self.low > 0 else lower if self.high < 0 else tie

    def __str__(self) -> str:
        return f"{self.difference:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


def _check_resampling(n_resamples: int, level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be at least 100, got {n_resamples}")


def _percentile_interval(observed: float, draws: np.ndarray, level: float, n_users: int) -> Bootstrap:
    """The central ``level`` share of the (n_resamples,) ``draws`` around the ``observed`` mean."""
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Bootstrap(float(observed), float(low), float(high), level, n_users)


def paired_bootstrap(
    a: pd.Series, b: pd.Series, n_resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Bootstrap:
    """Paired bootstrap over users of the mean per-user difference a − b.

    The users are resampled with replacement ``n_resamples`` times; each resample's
    mean difference is one draw, and the interval is the central ``level`` share of
    the draws (percentile method). Pairing (the same users on both sides) removes the
    variation between users that both models share. For learned models this interval
    holds the seeds fixed; :func:`two_level_bootstrap` resamples them too.

    Args:
        a, b: per-user metric values indexed by user (e.g. ``evaluate(..., per_user=True)[1]["NDCG@10"]``);
            both must hold the same users.
    Returns: the observed mean difference and its interval.
    """
    _check_resampling(n_resamples, level)
    if len(a) == 0 or set(a.index) != set(b.index) or len(a) != len(b):
        raise ValueError("a and b must hold per-user values for the same, non-empty set of users")
    diff = (a - b.reindex(a.index)).to_numpy(np.float64)
    if not np.isfinite(diff).all():
        raise ValueError("per-user values must be finite")
    rng = np.random.default_rng(seed)
    draws = diff[rng.integers(0, len(diff), size=(n_resamples, len(diff)))].mean(axis=1)
    return _percentile_interval(diff.mean(), draws, level, len(diff))


def two_level_bootstrap(
    a: pd.DataFrame,
    b: pd.DataFrame | None = None,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Bootstrap:
    """Bootstrap over users and training seeds of the mean difference a − b.

    Each resample draws the users with replacement, the same users for both models (paired,
    as in :func:`paired_bootstrap`), and, for each model with several seed columns, as many
    seeds with replacement; its draw is the mean of ``a`` over the drawn users and seeds minus
    the same for ``b``. The interval so covers both which users were tested and which training
    runs happened to be kept. A model with one column is deterministic and keeps it. When both
    models have the same seed columns, they draw the same seeds: the runs of one seed may share
    training randomness (a combination of seed s holds the tower of seed s). When the seeds do
    not vary, the user draws are :func:`paired_bootstrap`'s, so the two give the same interval.

    Args:
        a, b: (n_users × n_seeds) per-user metric, indexed by user, one column per seed
            (:attr:`~recutils.selection.SeedResult.per_user`); both must hold the same users.
            ``b`` None bootstraps the mean of ``a`` alone (to read against a fixed threshold).
        n_resamples, level, seed: as for :func:`paired_bootstrap`.
    Returns: the observed mean difference (over users and seeds) and its interval.
    Raises:
        ValueError: no users, different users, non-finite values, or no model with two seeds
            (use :func:`paired_bootstrap`).
    """
    _check_resampling(n_resamples, level)
    b = pd.DataFrame(0.0, index=a.index, columns=[0]) if b is None else b
    values_a, values_b, same_seeds = _user_seed_arrays(a, b)
    if values_a.shape[1] < 2 and values_b.shape[1] < 2:
        raise ValueError("two_level_bootstrap needs at least 2 seeds for one of the models; "
                         "for deterministic models use paired_bootstrap")
    rng = np.random.default_rng(seed)
    user_shares = _resample_shares(rng, n_resamples, len(values_a))
    seeds_a = _resample_shares(rng, n_resamples, values_a.shape[1])
    seeds_b = seeds_a if same_seeds else _resample_shares(rng, n_resamples, values_b.shape[1])
    # (resamples × users) @ (users × seeds): each seed's mean over the drawn users, then over drawn seeds.
    draws = ((user_shares @ values_a) * seeds_a).sum(axis=1) - ((user_shares @ values_b) * seeds_b).sum(axis=1)
    return _percentile_interval(values_a.mean() - values_b.mean(), draws, level, len(values_a))


def _user_seed_arrays(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, bool]:
    """``a`` and ``b`` as float arrays, rows in ``a``'s user order, after checking them; and
    whether they have the same seed columns (then ``b``'s are put in ``a``'s order)."""
    if len(a) == 0 or a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError(f"a and b need users and seed columns, got shapes {a.shape} and {b.shape}")
    if a.index.has_duplicates or set(a.index) != set(b.index) or len(a) != len(b):
        raise ValueError("a and b must hold per-user values for the same users, each once "
                         f"({len(a)} and {len(b)} rows, {len(set(a.index) ^ set(b.index))} users not shared)")
    same_seeds = set(a.columns) == set(b.columns)
    values_a = a.to_numpy(np.float64)
    values_b = b.reindex(index=a.index, columns=a.columns if same_seeds else b.columns).to_numpy(np.float64)
    if not (np.isfinite(values_a).all() and np.isfinite(values_b).all()):
        raise ValueError("per-user values must be finite (a seed missing a user?)")
    return values_a, values_b, same_seeds


def _resample_shares(rng: np.random.Generator, n_resamples: int, n: int) -> np.ndarray:
    """(n_resamples, n) share of each of ``n`` units among ``n`` drawn with replacement.

    Users are drawn as :func:`paired_bootstrap` draws them, so the two share their draws.
    """
    if n == 1:
        return np.ones((n_resamples, 1))
    drawn = rng.integers(0, n, size=(n_resamples, n))
    shares = np.zeros((n_resamples, n))
    np.add.at(shares, (np.arange(n_resamples)[:, None], drawn), 1.0 / n)
    return shares


# --- Sampled metrics: shown once, for what they do; never used to choose anything -----------


def sample_negatives(
    split: Split, n_negatives: int = 100, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Negatives for sampled metrics: for each test user, ``n_negatives`` distinct items drawn
    uniformly from the candidates (``split.candidates``, else every item) that the user has not
    interacted with, in train or in test.

    Returns: (n_test_users,) int64 users in ascending order and (n_test_users, n_negatives)
        int64 negatives; the same for the same split and ``seed``.
    Raises:
        ValueError: a user has fewer than ``n_negatives`` such items.
    """
    n_negatives = check_int(n_negatives, "n_negatives", minimum=1)
    users = torch.tensor(sorted(split.test.items_by_user()), dtype=torch.int64)
    if len(users) == 0:
        raise ValueError("the split has no test interactions")
    n_items = split.train.n_items
    rng = np.random.default_rng(seed)
    seen = (split.train.matrix() > 0) | (split.test.matrix() > 0)
    negatives = []
    for start in range(0, len(users), 1024):  # bounds the (users, n_items) random keys
        chunk = users[start : start + 1024]
        allowed = ~seen[chunk]
        if split.candidates is not None:
            allowed &= split.candidates
        n_allowed = allowed.sum(dim=1)
        if (n_allowed < n_negatives).any():
            worst = int(torch.argmin(n_allowed))
            raise ValueError(
                f"n_negatives={n_negatives} is more than the {int(n_allowed[worst])} items user "
                f"{int(chunk[worst])} has not interacted with among the candidates; sample fewer"
            )
        # Uniform keys with the disallowed items pushed past 1: the n smallest are a uniform
        # sample without replacement of the allowed items.
        keys = rng.random((len(chunk), n_items))
        keys[~allowed.numpy()] = 2.0
        negatives.append(torch.from_numpy(np.argsort(keys, axis=1, kind="stable")[:, :n_negatives]))
    return users, torch.cat(negatives)


def sampled_evaluate(
    model: Recommender,
    split: Split,
    n_negatives: int = 100,
    seed: int = 0,
    k: int = 10,
    negatives: torch.Tensor | None = None,
    per_user: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Sampled metrics: each user's held-out item ranked against ``n_negatives`` sampled items only.

    The convention of many sequential-recommendation papers, and a trap (Krichene & Rendle,
    KDD 2020): ranking against 100 items instead of the catalogue inflates the numbers several
    fold and can reorder models. The book shows it once; no choice may use it.

    The sampled rank is 1 + the number of negatives scored above the held-out item, an equal
    score going to the item first in the model's fixed random tie order (as in ``recommend``).
    With one relevant item, sampled Recall@K = HitRate@K = 1 when rank <= K, and sampled
    NDCG@K = 1 / log2(rank + 1) then, 0 otherwise.

    Args:
        split: a split with exactly one test item per test user (P4).
        negatives: (n_test_users, n) explicit negatives, rows in ascending user order; default
            :func:`sample_negatives` (``n_negatives``, ``seed``).
        k: at most the list length, n + 1.
    Returns: a one-row table (index: the model's name) with ``sampled NDCG@K``, ``sampled
        Recall@K``, ``negatives`` and ``users``; with ``per_user``, also the per-user values and
        sampled ``rank``, indexed by user.
    Raises:
        ValueError: a user with several test items, bad ``negatives`` (wrong shape, an item the
            user interacted with or not a candidate), ``k`` > n + 1, or a model fitted on other data.
    """
    require_fitted_on(model, split.train)
    k = check_int(k, "k", minimum=1)
    relevant_by_user = split.test.items_by_user()
    several = [u for u, items in relevant_by_user.items() if len(items) != 1]
    if several:
        raise ValueError(
            f"sampled metrics rank one held-out item per user, but {len(several)} users have several "
            f"test items (e.g. user {several[0]}); use a leave-last-one-out split (P4)"
        )
    _check_disjoint(split)
    if negatives is None:
        users, negatives = sample_negatives(split, n_negatives, seed)
    else:
        users = torch.tensor(sorted(relevant_by_user), dtype=torch.int64)
        negatives = _check_negatives(negatives, split, users)
    n = negatives.shape[1]
    if k > n + 1:
        raise ValueError(f"k={k} is longer than the sampled list of {n + 1} items (the held-out one and {n})")
    held_out = torch.tensor([int(relevant_by_user[int(u)][0]) for u in users]).unsqueeze(1)
    tie_position = torch.empty_like(model.tie_order_)
    tie_position[model.tie_order_] = torch.arange(len(model.tie_order_))
    ranks = []
    for start in range(0, len(users), 1024):
        rows = slice(start, start + 1024)
        scores = model.score(users[rows])
        positive, against = scores.gather(1, held_out[rows]), scores.gather(1, negatives[rows])
        first = tie_position[negatives[rows]] < tie_position[held_out[rows]]
        ranks.append(1 + ((against > positive) | ((against == positive) & first)).sum(dim=1))
    rank = torch.cat(ranks)
    hits = torch.arange(1, k + 1).unsqueeze(0) == rank.unsqueeze(1)
    ones = torch.ones(len(users))
    table = pd.DataFrame(
        {
            f"sampled NDCG@{k}": ndcg_at_k(hits, ones).numpy(),
            f"sampled Recall@{k}": recall_at_k(hits, ones).numpy(),
            "rank": rank.numpy(),
        },
        index=pd.Index(users.numpy(), name="user"),
    )
    summary = table.drop(columns="rank").mean().to_frame(model.name).T
    summary["negatives"] = n
    summary["users"] = len(users)
    return (summary, table) if per_user else summary


def _check_negatives(negatives: torch.Tensor, split: Split, users: torch.Tensor) -> torch.Tensor:
    """Explicit negatives as int64, after checking their shape and range, that they are candidates
    and that no user has seen them."""
    if not isinstance(negatives, torch.Tensor) or negatives.ndim != 2 or len(negatives) != len(users):
        shape = tuple(negatives.shape) if isinstance(negatives, torch.Tensor) else type(negatives).__name__
        raise ValueError(f"negatives must be a ({len(users)}, n) tensor, one row per test user, got {shape}")
    if negatives.dtype.is_floating_point or negatives.dtype == torch.bool or negatives.shape[1] == 0:
        raise ValueError(
            f"negatives must hold at least one integer item index per row, got {negatives.dtype}"
        )
    negatives = negatives.to(torch.int64)
    n_items = split.train.n_items
    if (negatives < 0).any() or (negatives >= n_items).any():
        raise ValueError(f"negatives must be item indices in 0..{n_items - 1}")
    if split.candidates is not None and not bool(split.candidates[negatives].all()):
        outside = negatives[~split.candidates[negatives]]
        raise ValueError(f"negative item {int(outside[0])} is not among the split's candidates")
    seen = (split.train.matrix() > 0)[users] | (split.test.matrix() > 0)[users]
    clash = seen.gather(1, negatives)
    if clash.any():
        row, column = (int(i) for i in torch.nonzero(clash)[0])
        raise ValueError(
            f"negative item {int(negatives[row, column])} of user {int(users[row])} is one the user "
            "interacted with (train or test); a negative must be unseen"
        )
    return negatives


# --- Beyond accuracy: what the lists hold, whatever their hits ------------------------------


def _check_recommended(recommended: torch.Tensor, n_items: int) -> torch.Tensor:
    """``recommended`` as a (n_users, k) int64 tensor of item indices in 0..n_items-1."""
    if not isinstance(recommended, torch.Tensor) or recommended.ndim != 2 or recommended.numel() == 0:
        is_tensor = isinstance(recommended, torch.Tensor)
        shape = tuple(recommended.shape) if is_tensor else type(recommended).__name__
        raise ValueError(f"recommended must be a non-empty (n_users, k) tensor of item indices, got {shape}")
    if recommended.dtype.is_floating_point or recommended.dtype == torch.bool:
        raise ValueError(f"recommended must hold integer item indices, got dtype {recommended.dtype}")
    if int(recommended.min()) < 0 or int(recommended.max()) >= n_items:
        raise ValueError(f"recommended items must lie in 0..{n_items - 1}, found {int(recommended.min())}.."
                         f"{int(recommended.max())}")
    return recommended.to(torch.int64)


def novelty(recommended: torch.Tensor, train: Interactions) -> float:
    """Mean self-information of the recommended items, in bits.

    p(i) = the share of train users (those with at least one train interaction) who interacted
    with item i; novelty = mean over every slot of every list of −log2 p(i). An item no train
    user has touched counts as touched by one (the rarest that can be observed), so its
    novelty is log2(number of train users), not infinite.

    Args:
        recommended: (n_users, k) int64 item indices.
    Returns: bits, 0 when every list holds only items every train user has seen.
    """
    recommended = _check_recommended(recommended, train.n_items)
    n_users = int((train.user_counts() > 0).sum())
    share = train.item_counts().clamp(min=1).double() / max(n_users, 1)
    return float(-torch.log2(share[recommended]).mean())


def average_popularity(recommended: torch.Tensor, train: Interactions) -> float:
    """Mean number of train users who interacted with each recommended item (ARP), over every slot.

    Args:
        recommended: (n_users, k) int64 item indices.
    """
    recommended = _check_recommended(recommended, train.n_items)
    return float(train.item_counts().double()[recommended].mean())


def gini_exposure(recommended: torch.Tensor, catalogue: torch.Tensor | int) -> float:
    """Gini coefficient of how often each catalogue item appears in the lists.

    With exposures e sorted ascending over the n catalogue items (items never recommended count
    as 0), G = Σ_j (2j − n − 1) e_(j) / (n Σ e), j from 1: 0 when every item is recommended
    equally often, (n − 1) / n when one item takes every slot.

    Args:
        recommended: (n_users, k) int64 item indices, all in the catalogue.
        catalogue: (n_items,) bool, the rankable items (``split.candidates``), or n_items for all.
    """
    if isinstance(catalogue, torch.Tensor):
        if catalogue.dtype != torch.bool or catalogue.ndim != 1 or not catalogue.any():
            raise ValueError("catalogue must be a 1-d bool tensor marking at least one item")
        mask = catalogue
    else:
        mask = torch.ones(check_int(catalogue, "catalogue", minimum=1), dtype=torch.bool)
    recommended = _check_recommended(recommended, len(mask))
    outside = recommended[~mask[recommended]]
    if len(outside):
        raise ValueError(f"recommended item {int(outside[0])} is not in the catalogue")
    exposure = torch.sort(torch.bincount(recommended.flatten(), minlength=len(mask))[mask].double()).values
    n = len(exposure)
    weights = 2 * torch.arange(1, n + 1, dtype=torch.float64) - n - 1
    return float((weights * exposure).sum() / (n * exposure.sum()))


def intra_list_diversity(recommended: torch.Tensor, item_vectors: torch.Tensor) -> float:
    """Mean pairwise cosine distance (1 − cos) within each list, averaged over lists.

    Args:
        recommended: (n_users, k) int64 item indices, k >= 2.
        item_vectors: (n_items, dim) finite item vectors (text vectors, genre indicators). An
            all-zero vector (a film with no genre) has no direction: it counts as orthogonal
            to every other item (distance 1).
    Returns: in [0, 2]; 0 when each list holds items pointing the same way.
    """
    if not isinstance(item_vectors, torch.Tensor):
        raise ValueError(f"item_vectors must be a torch.Tensor, got {type(item_vectors).__name__}")
    item_vectors = check_rows(item_vectors, "item_vectors", len(item_vectors))
    recommended = _check_recommended(recommended, len(item_vectors))
    k = recommended.shape[1]
    if k < 2:
        raise ValueError("intra-list diversity needs lists of at least 2 items")
    unit = torch.nn.functional.normalize(item_vectors.float(), dim=1)[recommended]  # (n_users, k, dim)
    similarity = unit @ unit.transpose(1, 2)
    pair_mean = (similarity.sum(dim=(1, 2)) - similarity.diagonal(dim1=1, dim2=2).sum(dim=1)) / (k * (k - 1))
    return float((1 - pair_mean).mean())


def beyond_accuracy(
    recommended: torch.Tensor,
    train: Interactions,
    item_vectors: torch.Tensor | None = None,
    candidates: torch.Tensor | None = None,
) -> dict[str, float]:
    """Every beyond-accuracy metric of a set of top-K lists, for one row of a table.

    Args:
        recommended: (n_users, k) int64 item indices (``model.recommend(users, k, candidates=...)``).
        train: the interactions the model was fitted on (popularity and novelty come from them).
        item_vectors: (n_items, dim) for intra-list diversity; left out of the result when None.
        candidates: (n_items,) bool, the rankable items (``split.candidates``); None: every item.
    Returns: ``Novelty@K`` (bits, :func:`novelty`), ``Coverage@K`` (share of the candidates,
        :func:`coverage_at_k`), ``Gini@K`` (:func:`gini_exposure`), ``ILD@K``
        (:func:`intra_list_diversity`) and ``AvgPop@K`` (:func:`average_popularity`).
    """
    recommended = _check_recommended(recommended, train.n_items)
    k = recommended.shape[1]
    catalogue = candidates if candidates is not None else train.n_items
    n_rankable = train.n_items if candidates is None else int(candidates.sum())
    result = {
        f"Novelty@{k}": novelty(recommended, train),
        f"Coverage@{k}": coverage_at_k(recommended, n_rankable),
        f"Gini@{k}": gini_exposure(recommended, catalogue),
    }
    if item_vectors is not None:
        check_rows(item_vectors, "item_vectors", train.n_items)
        result[f"ILD@{k}"] = intra_list_diversity(recommended, item_vectors)
    result[f"AvgPop@{k}"] = average_popularity(recommended, train)
    return result

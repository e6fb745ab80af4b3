"""Combining several recommenders into one top-N list: ranks, probabilities, matrix products.

Every combiner takes models already fitted on the same train data and is
itself a recommender, so ``evaluate`` applies unchanged. Weights and
temperatures are chosen on a validation split with :func:`tune_weights`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import pandas as pd
import torch

from recutils.metrics import evaluate
from recutils.recommender import Recommender, UserIndices, require_fitted_on
from recutils.similarity import association_matrix, cosine_similarity
from recutils.split import Interactions, Split

Normalisation = Literal["minmax", "zscore", "rank", "softmax"]


def normalise_scores(
    scores: torch.Tensor,
    method: Normalisation = "minmax",
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Put each row of scores on a common scale, ignoring masked entries.

    Args:
        scores: (n_users, n_items) raw scores.
        method: "minmax" to [0, 1]; "zscore" to mean 0 and standard deviation 1;
            "rank" to (n − rank + 1) / n with rank 1 the best; "softmax" to a
            probability distribution over the unmasked items, softmax(s / temperature).
        mask: (n_users, n_items) bool, True for entries to ignore (e.g. seen items);
            they come out as 0 (probability 0 for softmax).
    Returns: (n_users, n_items) float32.
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_users, n_items), got shape {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if mask is not None and mask.shape != scores.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, scores {tuple(scores.shape)}")
    keep = torch.ones_like(scores, dtype=torch.bool) if mask is None else ~mask
    s = scores.float()
    if method == "softmax":
        logits = (s / temperature).masked_fill(~keep, float("-inf"))
        # Rows with nothing unmasked would be all -inf: return zeros instead of NaN.
        empty = ~keep.any(dim=1, keepdim=True)
        return torch.softmax(logits.masked_fill(empty, 0.0), dim=1).masked_fill(~keep, 0.0)
    count = keep.sum(dim=1, keepdim=True).clamp(min=1)
    if method == "minmax":
        low = s.masked_fill(~keep, float("inf")).min(dim=1, keepdim=True).values
        high = s.masked_fill(~keep, float("-inf")).max(dim=1, keepdim=True).values
        out = (s - low) / (high - low).clamp(min=1e-12)
    elif method == "zscore":
        mean = s.masked_fill(~keep, 0.0).sum(dim=1, keepdim=True) / count
        var = ((s - mean) ** 2).masked_fill(~keep, 0.0).sum(dim=1, keepdim=True) / count
        out = (s - mean) / var.sqrt().clamp(min=1e-12)
    elif method == "rank":
        order = torch.argsort(s.masked_fill(~keep, float("-inf")), dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(1, s.shape[1] + 1).expand_as(order).contiguous())
        out = (count - rank + 1).float() / count
    else:
        raise ValueError(f"method must be 'minmax', 'zscore', 'rank' or 'softmax', got {method!r}")
    return out.masked_fill(~keep, 0.0)


class _Combiner(Recommender):
    """Shared checks: models fitted on the same data, one weight each."""

    needs_history = False

    def __init__(self, models: Sequence[Recommender], weights: Sequence[float] | None, label: str) -> None:
        if not models:
            raise ValueError("give at least one model to combine")
        weights = [1.0] * len(models) if weights is None else list(weights)
        if len(weights) != len(models):
            raise ValueError(f"{len(models)} models but {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) == 0:
            raise ValueError(f"weights must be non-negative and not all zero, got {weights}")
        self.models, self.weights, self.label = list(models), weights, label

    @property
    def name(self) -> str:
        return self.label

    def _fit(self, train: Interactions) -> None:
        for model in self.models:
            require_fitted_on(model, train)

    def _active(self) -> list[tuple[Recommender, float]]:
        return [(m, w) for m, w in zip(self.models, self.weights, strict=True) if w > 0]


class ScoreFusion(_Combiner):
    """Score and probability combination: a weighted sum of normalised scores.

    Args:
        models: fitted recommenders.
        weights: one per model (default equal); a weight of 0 drops the model.
        method: "combsum" (Σ w·norm(s)); "combmnz" (CombSUM × the number of models
            that place the item in their top ``depth``, scores outside it counting 0);
            "mixture" (Σ w·softmax(z / τ), a mixture of probability distributions,
            with z each model's z-scored scores so that one τ means the same for
            models whose raw scores have different scales; returned as the log of
            the mixture, which ranks the same and cannot underflow into ties).
        normalisation: for combsum/combmnz (see :func:`normalise_scores`).
        temperature: one τ for all models, or one per model, for "mixture".
        depth: the list depth that counts as "retrieved" for combmnz.
    """

    def __init__(
        self,
        models: Sequence[Recommender],
        weights: Sequence[float] | None = None,
        method: Literal["combsum", "combmnz", "mixture"] = "combsum",
        normalisation: Normalisation = "minmax",
        temperature: float | Sequence[float] = 1.0,
        depth: int = 100,
        label: str | None = None,
    ) -> None:
        if method not in ("combsum", "combmnz", "mixture"):
            raise ValueError(f"method must be 'combsum', 'combmnz' or 'mixture', got {method!r}")
        super().__init__(models, weights, label or f"{method}({', '.join(m.name for m in models)})")
        temperatures = (
            [temperature] * len(self.models) if isinstance(temperature, int | float) else temperature
        )
        if len(temperatures) != len(self.models):
            raise ValueError(f"{len(self.models)} models but {len(temperatures)} temperatures")
        self.method, self.normalisation, self.temperatures, self.depth = (
            method,
            normalisation,
            temperatures,
            depth,
        )

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        seen = self.seen_[users]
        total = torch.zeros(len(users), self.train_.n_items)
        retrieved = torch.zeros_like(total)
        if self.method == "mixture":
            return self._log_mixture(users, seen)
        for model, weight in self._active():
            scores = model.score(users)
            normalised = normalise_scores(scores, self.normalisation, seen)
            if self.method == "combmnz":
                in_top = model.ranks(users) <= self.depth
                normalised = normalised * in_top
                retrieved += in_top.float()
            total += weight * normalised
        return total * retrieved if self.method == "combmnz" else total

    def _log_mixture(self, users: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        terms = []
        for model, weight, tau in zip(self.models, self.weights, self.temperatures, strict=True):
            if weight > 0:
                z = normalise_scores(model.score(users), "zscore", seen)
                terms.append(
                    torch.log_softmax((z / tau).masked_fill(seen, float("-inf")), dim=1) + math.log(weight)
                )
        log_mixture = torch.logsumexp(torch.stack(terms), dim=0)
        # Seen items get a finite floor so that downstream arithmetic stays finite.
        return torch.nan_to_num(log_mixture, neginf=-1e9).masked_fill(seen, -1e9)


class RankFusion(_Combiner):
    """Ranking combination: only each model's ranks count, never its scores.

    Args:
        models: fitted recommenders.
        weights: one per model (default equal).
        method: "rrf", Reciprocal Rank Fusion, Σ w / (k + rank); or "borda",
            Σ w · (depth − rank + 1) over each model's top ``depth``.
        k: the RRF constant (60 in Cormack et al. 2009).
        depth: how far down each list counts (items below score 0 from that model).
    """

    def __init__(
        self,
        models: Sequence[Recommender],
        weights: Sequence[float] | None = None,
        method: Literal["rrf", "borda"] = "rrf",
        k: int = 60,
        depth: int = 100,
        label: str | None = None,
    ) -> None:
        if method not in ("rrf", "borda"):
            raise ValueError(f"method must be 'rrf' or 'borda', got {method!r}")
        if k < 0 or depth < 1:
            raise ValueError(f"need k >= 0 and depth >= 1, got k={k}, depth={depth}")
        super().__init__(models, weights, label or f"{method}({', '.join(m.name for m in models)})")
        self.method, self.k, self.depth = method, k, depth

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(len(users), self.train_.n_items)
        for model, weight in self._active():
            ranks = model.ranks(users).float()
            inside = ranks <= self.depth
            points = 1.0 / (self.k + ranks) if self.method == "rrf" else self.depth - ranks + 1
            total += weight * points * inside
        return total


class MatrixCombination(Recommender):
    """Matrix-multiplication combination: signals written as matrix products, normalised and summed.

    With R the binary (users × items) train matrix:
    item-CF is R·S_items (S_items the co-rating association matrix), user-CF is
    S_users·R, and content is R·S_text (S_text the cosine of item text vectors).
    Each product is min-max normalised per user, then weighted and summed.

    Args:
        weights: term name ("item_cf", "user_cf", "content") -> weight.
        item_vectors: (n_items, dim) text vectors, needed for "content".
        k: neighbours kept per row of each similarity matrix.
        chunk_size: users per product, so memory stays bounded.
    """

    needs_history = True
    TERMS = ("item_cf", "user_cf", "content")

    def __init__(
        self,
        weights: dict[str, float],
        item_vectors: torch.Tensor | None = None,
        k: int | None = 200,
        chunk_size: int = 1024,
        label: str = "matrix combination",
    ) -> None:
        unknown = set(weights) - set(self.TERMS)
        if unknown or not weights:
            raise ValueError(f"weights must name terms from {self.TERMS}; got {sorted(weights)}")
        if "content" in weights and item_vectors is None:
            raise ValueError("the content term needs item_vectors")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"weights must be non-negative, got {weights}")
        self.weights, self.item_vectors, self.k, self.chunk_size, self.label = (
            weights,
            item_vectors,
            k,
            chunk_size,
            label,
        )

    @property
    def name(self) -> str:
        return self.label

    def _fit(self, train: Interactions) -> None:
        self.r_ = train.matrix(binary=True)
        self.terms_: dict[str, tuple[str, torch.Tensor]] = {}
        if self.weights.get("item_cf", 0) > 0:
            self.terms_["item_cf"] = ("right", association_matrix(train, "item", k=self.k).T)
        if self.weights.get("user_cf", 0) > 0:
            self.terms_["user_cf"] = ("left", association_matrix(train, "user", k=self.k))
        if self.weights.get("content", 0) > 0:
            text = cosine_similarity(self.item_vectors).fill_diagonal_(0.0)
            if self.k is not None:
                top = torch.topk(text, self.k, dim=1)
                text = torch.zeros_like(text).scatter_(1, top.indices, top.values)
            self.terms_["content"] = ("right", text.T)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(users), self.train_.n_items)
        for start in range(0, len(users), self.chunk_size):
            chunk = users[start : start + self.chunk_size]
            seen = self.seen_[chunk]
            for name, (side, matrix) in self.terms_.items():
                product = self.r_[chunk] @ matrix if side == "right" else matrix[chunk] @ self.r_
                out[start : start + len(chunk)] += self.weights[name] * normalise_scores(
                    product, "minmax", seen
                )
        return out


class MMRReranker(Recommender):
    """Maximal marginal relevance: re-rank a model's top ``pool`` for diversity.

    Each step picks the item maximising λ·relevance − (1 − λ)·max similarity to
    the items already picked; relevance is the base model's min-max-normalised
    score, similarity the cosine of item vectors. λ = 1 returns the base ranking.

    Args:
        base: a fitted recommender.
        item_vectors: (n_items, dim) vectors that define similarity (e.g. BERT or genres).
        lambda_: the relevance/diversity trade-off in [0, 1].
        pool: how many of the base model's best items are re-ranked.
    """

    needs_history = False

    def __init__(self, base: Recommender, item_vectors: torch.Tensor, lambda_: float = 0.7, pool: int = 100):
        if not 0 <= lambda_ <= 1:
            raise ValueError(f"lambda_ must lie in [0, 1], got {lambda_}")
        self.base, self.item_vectors, self.lambda_, self.pool = base, item_vectors, lambda_, pool

    @property
    def name(self) -> str:
        return f"MMR(λ={self.lambda_:g}, {self.base.name})"

    def _fit(self, train: Interactions) -> None:
        require_fitted_on(self.base, train)
        self.unit_ = torch.nn.functional.normalize(self.item_vectors.float(), dim=1)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.base.score(users)

    def recommend(
        self,
        users: UserIndices,
        k: int,
        exclude_seen: bool = True,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Top-k items re-ranked by MMR from the base model's top ``pool``.

        Returns: (n_users_given, k) int64 item indices.
        """
        if not isinstance(k, int) or not 1 <= k <= self.pool:
            raise ValueError(f"k must be an integer in 1..{self.pool} (the re-ranking pool), got {k!r}")
        users = self._check_users(users)
        pool = self.base.recommend(users, self.pool, exclude_seen, candidates)  # (b, pool)
        relevance = normalise_scores(torch.gather(self.base.score(users), 1, pool))
        vectors = self.unit_[pool]  # (b, pool, d)
        similarity = vectors @ vectors.transpose(1, 2)  # (b, pool, pool)
        rows = torch.arange(len(users))
        chosen = torch.zeros_like(relevance, dtype=torch.bool)
        closest = torch.full_like(relevance, float("-inf"))  # max similarity to the items picked so far
        picks = []
        for _ in range(k):
            penalty = closest if picks else torch.zeros_like(closest)
            gain = self.lambda_ * relevance - (1 - self.lambda_) * penalty
            pick = gain.masked_fill(chosen, float("-inf")).argmax(dim=1)
            picks.append(pick)
            chosen[rows, pick] = True
            closest = torch.maximum(closest, similarity[rows, pick])
        return torch.gather(pool, 1, torch.stack(picks, dim=1))


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """All weight vectors of length n with entries in multiples of ``step`` summing to 1."""
    if n < 1 or not 0 < step <= 1:
        raise ValueError(f"need n >= 1 and 0 < step <= 1, got n={n}, step={step}")
    units = round(1 / step)
    if abs(units * step - 1) > 1e-9:
        raise ValueError(f"1 must be a multiple of step, got {step}")
    return [
        tuple(c / units for c in combo)
        for combo in itertools.product(range(units + 1), repeat=n)
        if sum(combo) == units
    ]


def tune_weights(
    make: Callable[[Sequence[float]], Recommender],
    n_models: int,
    validation: Split,
    step: float = 0.25,
    metric: str = "NDCG@10",
) -> tuple[tuple[float, ...], pd.DataFrame]:
    """Choose combination weights on a validation split (never on test).

    Args:
        make: builds a combiner from a weight vector, over models fitted on ``validation.train``.
        n_models: length of the weight vector.
        step: grid step on the simplex of weights.
    Returns: the best weights and a table of every weight vector's metrics.
    """
    rows = []
    for weights in simplex_grid(n_models, step):
        result = evaluate(make(weights).fit(validation.train), validation)
        rows.append({"weights": weights, **result.iloc[0].to_dict()})
    table = pd.DataFrame(rows)
    return table.loc[table[metric].idxmax(), "weights"], table


def intra_list_diversity(recommended: torch.Tensor, item_vectors: torch.Tensor) -> float:
    """Mean pairwise cosine distance (1 − cos) between the items of each list, averaged over lists."""
    if recommended.ndim != 2 or recommended.shape[1] < 2:
        raise ValueError("need (n_users, k) lists with k >= 2")
    unit = torch.nn.functional.normalize(item_vectors.float(), dim=1)[recommended]
    sims = unit @ unit.transpose(1, 2)
    k = recommended.shape[1]
    off_diagonal = (sims.sum(dim=(1, 2)) - sims.diagonal(dim1=1, dim2=2).sum(dim=1)) / (k * (k - 1))
    return float((1 - off_diagonal).mean())

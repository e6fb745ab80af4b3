"""Combining several recommenders into one top-N list: ranks, probabilities, matrix products.

Every combiner takes models already fitted on the same train data and is
itself a recommender, so ``evaluate`` applies unchanged. Weights and
temperatures are chosen on a validation split with :func:`tune_weights`. The book's own
members, its tuned combination and chapter 5's table of combinations are in
:mod:`recutils.ensemble`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

import pandas as pd
import torch

from recutils.checks import check_int, check_number, check_rows
from recutils.metrics import evaluate
from recutils.recommender import Recommender, UserIndices, require_fitted_on
from recutils.similarity import association_matrix, cosine_similarity, top_k
from recutils.split import Interactions, Split

Normalisation = Literal["minmax", "zscore", "rank", "softmax"]
T = TypeVar("T")


def normalise_scores(
    scores: torch.Tensor,
    method: Normalisation = "minmax",
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Put each row of scores on a common scale, ignoring masked entries.

    Args:
        scores: (n_users, n_items) raw scores: finite or ±inf (NaN raises).
        method: "minmax" to [0, 1]; "zscore" to mean 0 and standard deviation 1;
            "rank" to (n − rank + 1) / n with rank 1 the best (tied scores share the
            best rank of their group); "softmax" to a
            probability distribution over the unmasked items, softmax(s / temperature).
        mask: (n_users, n_items) bool, True for entries to ignore (e.g. seen items);
            they come out as 0 (probability 0 for softmax).
    Returns: (n_users, n_items) float32. A row's statistics (min, max, mean, standard
        deviation, the n of "rank") are over its finite unmasked entries; ±inf entries
        come out unchanged, so −inf ("never recommend while others are left") stays last.
        With softmax, −inf gets probability 0 and +inf entries share probability 1 (the
        limit as their scores grow); a row with nothing above −inf comes out as zeros.
        A row whose finite entries are all equal comes out as 0 (minmax, zscore), 1 (rank)
        or uniform (softmax).
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_users, n_items), got shape {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        row, item = (int(i) for i in torch.nonzero(torch.isnan(scores))[0])
        raise ValueError(
            f"scores contain {int(torch.isnan(scores).sum())} NaN entries (the first in row {row}, "
            f"column {item}); a NaN has no place on any scale"
        )
    check_number(temperature, "temperature", low=0, low_open=True)
    if mask is not None and mask.shape != scores.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, scores {tuple(scores.shape)}")
    keep = torch.ones_like(scores, dtype=torch.bool) if mask is None else ~mask
    s = scores.float()
    if method == "softmax":
        logits = (s / temperature).masked_fill(~keep, float("-inf"))
        first = torch.isposinf(logits)
        logits = torch.where(first.any(dim=1, keepdim=True), torch.where(first, 0.0, float("-inf")), logits)
        # Rows with nothing above -inf would be NaN: return zeros instead.
        empty = torch.isneginf(logits).all(dim=1, keepdim=True)
        return torch.softmax(logits.masked_fill(empty, 0.0), dim=1).masked_fill(~keep | empty, 0.0)
    # Statistics over the finite entries: an infinite one would make every other entry 0 or NaN.
    finite = keep & torch.isfinite(s)
    count = finite.sum(dim=1, keepdim=True).clamp(min=1)
    if method == "minmax":
        low = s.masked_fill(~finite, float("inf")).min(dim=1, keepdim=True).values
        high = s.masked_fill(~finite, float("-inf")).max(dim=1, keepdim=True).values
        out = (s - low) / (high - low).clamp(min=1e-12)
    elif method == "zscore":
        mean = s.masked_fill(~finite, 0.0).sum(dim=1, keepdim=True) / count
        var = ((s - mean) ** 2).masked_fill(~finite, 0.0).sum(dim=1, keepdim=True) / count
        out = (s - mean) / var.sqrt().clamp(min=1e-12)
    elif method == "rank":
        # Tied scores share the best rank of their group (1 + the number of better items): ranks
        # by position would break ties by item index, which favours low ids.
        negated = -s.masked_fill(~finite, float("-inf"))
        rank = torch.searchsorted(torch.sort(negated, dim=1).values, negated, side="left") + 1
        out = (count - rank + 1).float() / count
    else:
        raise ValueError(f"method must be 'minmax', 'zscore', 'rank' or 'softmax', got {method!r}")
    return torch.where(finite, out, s).masked_fill(~keep, 0.0)


class _Combiner(Recommender):
    """Shared checks: models fitted on the same data, one weight each."""

    needs_history = False

    def __init__(self, models: Sequence[Recommender], weights: Sequence[float] | None, label: str) -> None:
        if not models:
            raise ValueError("give at least one model to combine")
        weights = [1.0] * len(models) if weights is None else list(weights)
        if len(weights) != len(models):
            raise ValueError(f"{len(models)} models but {len(weights)} weights")
        # A NaN weight would fail every comparison and silently drop its model.
        for j, weight in enumerate(weights):
            check_number(weight, f"weights[{j}]", low=0)
        if sum(weights) == 0:
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

    @staticmethod
    def _keep_vetoes(fused: torch.Tensor, vetoed: torch.Tensor) -> torch.Tensor:
        """``fused`` with −inf where a member (of positive weight) scored −inf.

        A member's −inf means "never recommend this item while others are left" (a filter, a
        non-candidate); no other member's enthusiasm overrides it.
        """
        return fused.masked_fill(vetoed, float("-inf"))


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

    An item a member of positive weight scores −inf scores −inf here too, with every method
    and normalisation: it is recommended only once no other item is left (see
    :meth:`_Combiner._keep_vetoes`). Such an item is never "retrieved" for combmnz.
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
        scalar = isinstance(temperature, str | bytes) or not isinstance(temperature, Sequence)
        temperatures = [temperature] * len(self.models) if scalar else list(temperature)
        if len(temperatures) != len(self.models):
            raise ValueError(f"{len(self.models)} models but {len(temperatures)} temperatures")
        # τ = 0 would make every item tie and τ < 0 would invert the ranking.
        for j, tau in enumerate(temperatures):
            check_number(tau, "temperature" if scalar else f"temperature[{j}]", low=0, low_open=True)
        if normalisation not in ("minmax", "zscore", "rank", "softmax"):
            raise ValueError(
                f"normalisation must be 'minmax', 'zscore', 'rank' or 'softmax', got {normalisation!r}"
            )
        depth = check_int(depth, "depth", minimum=1)
        self.method, self.normalisation, self.temperatures, self.depth = (
            method,
            normalisation,
            temperatures,
            depth,
        )

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        seen = self.seen_[users]
        total = torch.zeros(len(users), self.train_.n_items)
        if self.method == "mixture":
            return self._log_mixture(users, seen)
        retrieved = torch.zeros_like(total)
        vetoed = torch.zeros_like(seen)
        for model, weight in self._active():
            scores = model.score(users)
            member_vetoes, normalised = _fusion_terms(model, users, scores, self.normalisation, seen)
            vetoed |= member_vetoes
            if self.method == "combmnz":
                in_top = (model._ranks(users, scores) <= self.depth) & ~torch.isneginf(scores)
                normalised = normalised * in_top
                retrieved += in_top.float()
            total += weight * normalised
        return self._keep_vetoes(total * retrieved if self.method == "combmnz" else total, vetoed)

    def _log_mixture(self, users: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        terms = []
        vetoed = torch.zeros_like(seen)
        for model, weight, tau in zip(self.models, self.weights, self.temperatures, strict=True):
            if weight > 0:
                scores = model.score(users)
                vetoed |= torch.isneginf(scores) & ~seen
                z = _normalised(model, users, scores, "zscore", seen)  # -inf stays -inf: probability 0
                terms.append(
                    torch.log_softmax((z / tau).masked_fill(seen, float("-inf")), dim=1) + math.log(weight)
                )
        log_mixture = torch.logsumexp(torch.stack(terms), dim=0)
        # A row in which a member scores every unseen item -inf is NaN here: the vetoes below cover
        # all its unseen items, and seen items get a finite floor (downstream arithmetic stays finite).
        return self._keep_vetoes(log_mixture, vetoed).masked_fill(seen, -1e9)


class RankFusion(_Combiner):
    """Ranking combination: only each model's ranks count, never its scores.

    Args:
        models: fitted recommenders.
        weights: one per model (default equal).
        method: "rrf", Reciprocal Rank Fusion, Σ w / (k + rank); or "borda",
            Σ w · (depth − rank + 1) over each model's top ``depth``.
        k: the RRF constant (60 in Cormack et al. 2009).
        depth: how far down each list counts (items below score 0 from that model).

    Each model's ranks are those of :meth:`Recommender.ranks` (ties in its fixed random order).
    An item a member of positive weight scores −inf scores −inf here too: it is recommended
    only once no other item is left (see :meth:`_Combiner._keep_vetoes`).
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
        check_number(k, "k", low=0)
        check_int(depth, "depth", minimum=1)
        super().__init__(models, weights, label or f"{method}({', '.join(m.name for m in models)})")
        self.method, self.k, self.depth = method, k, depth

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(len(users), self.train_.n_items)
        vetoed = torch.zeros(len(users), self.train_.n_items, dtype=torch.bool)
        for model, weight in self._active():
            scores = model.score(users)
            vetoed |= torch.isneginf(scores) & ~self.seen_[users]
            ranks = model._ranks(users, scores).float()
            inside = ranks <= self.depth
            points = 1.0 / (self.k + ranks) if self.method == "rrf" else self.depth - ranks + 1
            total += weight * points * inside
        return self._keep_vetoes(total, vetoed)


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
        for term, weight in weights.items():
            check_number(weight, f"weights[{term!r}]", low=0)
        if sum(weights.values()) == 0:
            raise ValueError(f"weights must not all be zero (nothing would be scored), got {weights}")
        if k is not None:
            check_int(k, "k", minimum=1)
        check_int(chunk_size, "chunk_size", minimum=1)
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
            check_rows(self.item_vectors, "item_vectors", train.n_items)
            text = cosine_similarity(self.item_vectors).fill_diagonal_(0.0)
            if self.k is not None:
                values, ids = top_k(text, self.k)  # equal similarities: the lower item index
                text = torch.zeros_like(text).scatter_(1, ids, values)
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
    Equal gains go to the item the base model ranks higher; items the base model
    scores −inf are picked only once no other item is left, with relevance 0.

    Args:
        base: a fitted recommender.
        item_vectors: (n_items, dim) vectors that define similarity (e.g. BERT or genres).
        lambda_: the relevance/diversity trade-off in [0, 1].
        pool: how many of the base model's best items are re-ranked.
    """

    needs_history = False

    def __init__(self, base: Recommender, item_vectors: torch.Tensor, lambda_: float = 0.7, pool: int = 100):
        check_number(lambda_, "lambda_", low=0, high=1)
        check_int(pool, "pool", minimum=1)
        self.base, self.item_vectors, self.lambda_, self.pool = base, item_vectors, lambda_, pool

    @property
    def name(self) -> str:
        return f"MMR(λ={self.lambda_:g}, {self.base.name})"

    def _fit(self, train: Interactions) -> None:
        require_fitted_on(self.base, train)
        check_rows(self.item_vectors, "item_vectors", train.n_items)
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
        k = check_int(k, "k (at most the re-ranking pool)", minimum=1, maximum=self.pool)
        users = self._check_users(users)
        pool = self.base.recommend(users, self.pool, exclude_seen, candidates)  # (b, pool)
        relevance = normalise_scores(torch.gather(self.base.score(users), 1, pool))
        vectors = self.unit_[pool]  # (b, pool, d)
        similarity = vectors @ vectors.transpose(1, 2)  # (b, pool, pool)
        rows = torch.arange(len(users))
        chosen = torch.zeros_like(relevance, dtype=torch.bool)
        closest = torch.full_like(relevance, float("-inf"))  # max similarity to the items picked so far
        picks = []
        last = torch.isneginf(relevance)  # the base model's -inf: after every other item
        relevance = relevance.masked_fill(last, 0.0)  # so that λ = 0 gives no 0 · -inf
        for _ in range(k):
            penalty = closest if picks else torch.zeros_like(closest)
            gain = self.lambda_ * relevance - (1 - self.lambda_) * penalty
            # The best gain among unchosen items of finite relevance (once none is left, among all
            # unchosen ones); argmax returns the first of equal gains: the base model's order.
            open_ = ~chosen & ~last
            open_ = torch.where(open_.any(dim=1, keepdim=True), open_, ~chosen)
            pick = gain.masked_fill(~open_, float("-inf")).argmax(dim=1)
            picks.append(pick)
            chosen[rows, pick] = True
            closest = torch.maximum(closest, similarity[rows, pick])
        return torch.gather(pool, 1, torch.stack(picks, dim=1))


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """All weight vectors of length n with entries in multiples of ``step`` summing to 1."""
    check_int(n, "n", minimum=1)
    if not 0 < step <= 1:
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
    metric: str | None = None,
    k: int = 10,
) -> tuple[tuple[float, ...], pd.DataFrame]:
    """Choose combination weights on a validation split (never on test).

    Args:
        make: builds a combiner from a weight vector, over models fitted on ``validation.train``.
        n_models: length of the weight vector.
        step: grid step on the simplex of weights.
        metric: the column to maximise; default ``NDCG@{k}``.
        k: the list length every weight vector is evaluated at (the one the results report).
    Returns: the best weights and a table of every weight vector's metrics.
    """
    k = check_int(k, "k", minimum=1)
    metric = f"NDCG@{k}" if metric is None else metric
    if not metric.endswith(f"@{k}"):
        raise ValueError(f"metric {metric!r} is not measured at k={k}; pass metric='NDCG@{k}' or k to match")
    rows = []
    for weights in simplex_grid(n_models, step):
        result = evaluate(make(weights).fit(validation.train), validation, k=k)
        if metric not in result.columns:
            raise ValueError(f"unknown metric {metric!r}; choose from {list(result.columns)}")
        rows.append({"weights": weights, **result.iloc[0].to_dict()})
    table = pd.DataFrame(rows)
    # Equal metrics: idxmax keeps the first weight vector in simplex_grid's order.
    return table.loc[table[metric].idxmax(), "weights"], table


# --- Honest combination studies: every choice on validation, learned members over seeds -----


class CachedScores(Recommender):
    """A fitted model whose scores are remembered per batch of users.

    Tuning a combination evaluates dozens of weight vectors over the same members;
    with this wrapper each member scores each batch of users once, not once per vector.
    Its name, history needs, rankings and tie-break are the wrapped model's.
    """

    def __init__(self, model: Recommender) -> None:
        if not hasattr(model, "train_"):
            raise ValueError(f"{model.name} is not fitted; fit it before caching its scores")
        self.model = model
        self.needs_history = model.needs_history

    @property
    def name(self) -> str:
        return self.model.name

    def _fit(self, train: Interactions) -> None:
        require_fitted_on(self.model, train)
        self._memo: dict[tuple[bytes, str], object] = {}

    def score(self, users: UserIndices) -> torch.Tensor:
        # The wrapped model's score has checked its scores already: they are not checked again.
        users = self._check_users(users)
        return self.remember(users, "raw", lambda: self.model.score(users))

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.score(users)

    def normalised(self, users: torch.Tensor, method: Normalisation) -> torch.Tensor:
        """``normalise_scores(score(users), method, mask=seen items)``, remembered like the scores."""
        return self.remember(
            users, method, lambda: normalise_scores(self.score(users), method, self.seen_[users])
        )

    def remember(self, users: torch.Tensor, what: str, compute: Callable[[], T]) -> T:
        """``compute()``, computed once per batch of ``users`` and name ``what``."""
        key = (users.numpy().tobytes(), what)
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


def _normalised(
    model: Recommender, users: torch.Tensor, scores: torch.Tensor, method: Normalisation, seen: torch.Tensor
) -> torch.Tensor:
    """A member's normalised scores inside a fusion (fitted on the member's train data, so
    ``seen`` is the member's too): remembered by a :class:`CachedScores` member."""
    if isinstance(model, CachedScores):
        return model.normalised(users, method)
    return normalise_scores(scores, method, seen)


def _fusion_terms(
    model: Recommender, users: torch.Tensor, scores: torch.Tensor, method: Normalisation, seen: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """A member's part in a score fusion: (b, n_items) bool, its vetoes (−inf on an unseen item),
    and its normalised scores with those entries 0. Remembered by a :class:`CachedScores` member
    (``seen`` is the member's own: a fusion's members are fitted on its train data)."""

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        normalised = _normalised(model, users, scores, method, seen)
        # Vetoed entries end as -inf whatever the sum: 0 in their place keeps the arithmetic finite.
        return torch.isneginf(scores) & ~seen, normalised.masked_fill(torch.isneginf(normalised), 0.0)

    if isinstance(model, CachedScores):
        return model.remember(users, f"fusion terms ({method})", compute)
    return compute()


def cache_scores(models: Sequence[Recommender]) -> list[CachedScores]:
    """Wrap fitted models in :class:`CachedScores` (fitted on the models' own train data)."""
    return [CachedScores(m).fit(m.train_) for m in models]


def member_weights(combination: Recommender) -> dict[str, float]:
    """A combination's weight per member name (per term for a :class:`MatrixCombination`)."""
    if isinstance(combination, MatrixCombination):
        return dict(combination.weights)
    if isinstance(combination, _Combiner):
        total: dict[str, float] = {}
        for model, weight in zip(combination.models, combination.weights, strict=True):
            total[model.name] = total.get(model.name, 0.0) + weight
        return total
    raise TypeError(f"{type(combination).__name__} is not a combination")

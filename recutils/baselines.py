"""Baselines every chapter compares against: random, popularity and EASE^R."""

from __future__ import annotations

from collections import OrderedDict

import torch

from recutils.checks import check_number
from recutils.recommender import Recommender
from recutils.split import Interactions


class RandomRecommender(Recommender):
    """Uniform random scores, fixed per (seed, user, item): the floor any model must beat."""

    needs_history = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, train: Interactions) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        self.scores_ = torch.rand(train.n_users, train.n_items, generator=generator)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.scores_[users]


class Popularity(Recommender):
    """Scores every item by its number of train interactions, the same for every user."""

    needs_history = False

    def _fit(self, train: Interactions) -> None:
        self.counts_ = train.item_counts().float()

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts_.expand(len(users), -1)


# The chapters fit EASE on the same train data with the same λ many times over (a grid, then
# each seed of a combination, then the recency variants that share B), and each fit inverts an
# items × items matrix; the last few solutions are kept, keyed by the data and λ.
_EASE_SOLUTIONS: OrderedDict[tuple[str, float], torch.Tensor] = OrderedDict()
_EASE_SOLUTIONS_KEPT = 8


def _ease_weights(train: Interactions, l2: float) -> torch.Tensor:
    """(n_items, n_items) float32 B = I − P / diag(P), P = (XᵀX + λI)⁻¹, from X = ``train``'s
    binary matrix; shared between fits on equal data and λ, so never modified in place."""
    key = (train.fingerprint(), float(l2))
    if key in _EASE_SOLUTIONS:
        _EASE_SOLUTIONS.move_to_end(key)
        return _EASE_SOLUTIONS[key]
    x = train.matrix(binary=True).double()
    gram = x.T @ x + l2 * torch.eye(train.n_items, dtype=torch.float64)
    p = torch.linalg.inv(gram)
    b = -p / torch.diagonal(p)
    b.fill_diagonal_(0.0)
    _EASE_SOLUTIONS[key] = b.float()
    while len(_EASE_SOLUTIONS) > _EASE_SOLUTIONS_KEPT:
        _EASE_SOLUTIONS.popitem(last=False)
    return _EASE_SOLUTIONS[key]


class EASE(Recommender):
    """EASE^R (Steck 2019): a linear item-item model with a closed-form solution.

    B = argmin ||X - XB||² + λ||B||² subject to diag(B) = 0, which gives
    B = I - P / diag(P) with P = (XᵀX + λI)⁻¹. Scores are X B.

    Args:
        l2: the ridge strength λ; tune it on the validation split.
    """

    def __init__(self, l2: float = 500.0) -> None:
        check_number(l2, "l2", low=0, low_open=True)
        self.l2 = l2

    @property
    def name(self) -> str:
        return f"EASE(λ={self.l2:g})"

    def _fit(self, train: Interactions) -> None:
        self.weights_ = _ease_weights(train, self.l2)
        self.x_ = train.matrix(binary=True)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.x_[users] @ self.weights_


class TextPopularity(Recommender):
    """Popularity predicted from item text: the same list for everyone, but defined for cold items.

    A ridge regression of log(1 + train interactions) on the item vectors, fitted
    on items with at least one train interaction. It measures how much of a text
    model's cold-start accuracy is non-personal "this looks like a popular film" signal.

    Args:
        item_vectors: (n_items, dim) item embeddings.
        l2: ridge strength.
    """

    needs_history = False

    def __init__(self, item_vectors: torch.Tensor, l2: float = 1.0) -> None:
        check_number(l2, "l2", low=0, low_open=True)
        self.l2 = l2
        self.item_vectors = item_vectors.double()

    def _fit(self, train: Interactions) -> None:
        if len(self.item_vectors) != train.n_items:
            raise ValueError(f"item_vectors has {len(self.item_vectors)} rows for {train.n_items} items")
        counts = train.item_counts()
        warm = counts > 0
        x = torch.cat([self.item_vectors, torch.ones(train.n_items, 1, dtype=torch.float64)], dim=1)
        y = torch.log1p(counts.double())
        gram = x[warm].T @ x[warm] + self.l2 * torch.eye(x.shape[1], dtype=torch.float64)
        self.coef_ = torch.linalg.solve(gram, x[warm].T @ y[warm])
        self.predicted_ = (x @ self.coef_).float()

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.predicted_.expand(len(users), -1)

"""Baselines every chapter compares against: random, popularity and EASE^R."""

from __future__ import annotations

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
        x = train.matrix(binary=True).double()
        gram = x.T @ x + self.l2 * torch.eye(train.n_items, dtype=torch.float64)
        p = torch.linalg.inv(gram)
        b = -p / torch.diagonal(p)
        b.fill_diagonal_(0.0)
        self.weights_ = b.float()
        self.x_ = x.float()

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

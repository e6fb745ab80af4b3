"""Neighbourhood collaborative filtering and BERT content similarity, as recommenders."""

from __future__ import annotations

from typing import Literal

import torch

from recutils.checks import check_int, check_number
from recutils.embeddings import aggregate_user_vectors
from recutils.index import IndexKind
from recutils.recommender import Recommender, VectorRecommender
from recutils.similarity import association_matrix, cosine_similarity
from recutils.split import Interactions


class _NeighbourCF(Recommender):
    """Shared by item- and user-based CF: a co-rating association matrix over one axis."""

    axis: str

    def __init__(self, k: int | None = 50, shrinkage: float = 0.0) -> None:
        if k is not None:
            check_int(k, "k", minimum=1)
        check_number(shrinkage, "shrinkage", low=0)
        self.k, self.shrinkage = k, shrinkage

    @property
    def name(self) -> str:
        return f"{type(self).__name__}(k={self.k})"

    def _fit(self, train: Interactions) -> None:
        self.similarity_ = association_matrix(train, self.axis, k=self.k, shrinkage=self.shrinkage)
        self.x_ = train.matrix(binary=True)


class ItemKNN(_NeighbourCF):
    """Item-based CF: r̂(u, i) = Σ_{j ∈ history(u)} S[i, j] over i's k most co-rated neighbours.

    Args:
        k: neighbours kept per item (None keeps all).
        shrinkage: damps similarities of item pairs with few common users.
    """

    axis = "item"

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.x_[users] @ self.similarity_.T


class UserKNN(_NeighbourCF):
    """User-based CF: r̂(u, i) = Σ_v S[u, v] · x[v, i] over u's k most similar users.

    Args:
        k: neighbours kept per user (None keeps all).
        shrinkage: damps similarities of user pairs with few common items.
    """

    axis = "user"

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.similarity_[users] @ self.x_


class ContentRecommender(VectorRecommender):
    """Content-based: r̂(u, i) = cos(u_emb, i_emb) with BERT item vectors.

    Args:
        item_vectors: (n_items, dim) item embeddings, e.g. ``TextEncoder.encode(item_text(items))``.
        user_vectors: optional (n_users, dim) user embeddings, e.g. encoded
            profile texts; by default each user is the weighted mean of their
            train items' vectors.
        weighting: how the default user vectors weight the history
            ("mean", "rating" or "recency"; see :func:`aggregate_user_vectors`).
        half_life_days: the half-life of "recency" weighting.
        index: how ``recommend`` finds the top items: "exact" (score every item) or
            a nearest-neighbour index ("flat", "hnsw", "ivf"; see :mod:`recutils.index`).
    """

    def __init__(
        self,
        item_vectors: torch.Tensor,
        user_vectors: torch.Tensor | None = None,
        weighting: Literal["mean", "rating", "recency"] = "mean",
        label: str = "Content",
        half_life_days: float = 30.0,
        index: IndexKind = "exact",
    ) -> None:
        self.item_vectors, self.user_vectors, self.weighting, self.label = (
            item_vectors,
            user_vectors,
            weighting,
            label,
        )
        if weighting not in ("mean", "rating", "recency"):
            raise ValueError(f"weighting must be 'mean', 'rating' or 'recency', got {weighting!r}")
        check_number(half_life_days, "half_life_days", low=0, low_open=True)
        self.half_life_days = half_life_days
        # Given user vectors (a profile or a query) score users who have no history.
        self.needs_history = user_vectors is None
        self.use_index(index)

    @property
    def name(self) -> str:
        return self.label

    def _fit(self, train: Interactions) -> None:
        if len(self.item_vectors) != train.n_items:
            raise ValueError(f"item_vectors has {len(self.item_vectors)} rows for {train.n_items} items")
        if self.user_vectors is None:
            self.users_ = aggregate_user_vectors(
                train, self.item_vectors, self.weighting, half_life_days=self.half_life_days
            )
        elif self.user_vectors.shape != (train.n_users, self.item_vectors.shape[1]):
            raise ValueError(
                f"user_vectors must be ({train.n_users}, {self.item_vectors.shape[1]}), "
                f"got {tuple(self.user_vectors.shape)}"
            )
        else:
            self.users_ = self.user_vectors

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return cosine_similarity(self.users_[users], self.item_vectors)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.users_[users].float(), dim=1)

    def item_embeddings(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.item_vectors.float(), dim=1)

"""The one interface every model in the book implements.

``fit(train)`` learns from interactions, ``score(users)`` returns a
(users × items) matrix, ``recommend(users, k)`` returns the top-k unseen
items. Evaluation and combination accept any object with this face.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Self

import numpy as np
import torch

from recutils.checks import check_int
from recutils.index import INDEX_KINDS, build_index
from recutils.split import Interactions

UserIndices = int | Sequence[int] | np.ndarray | torch.Tensor

TIE_BREAK_SEED = 12345


class Recommender(ABC):
    """Base class: validation of inputs, seen-item masking and seeded tie-breaking.

    Subclasses implement ``_fit`` and ``_score``. Users and items are the
    contiguous indices of :class:`~recutils.split.Interactions`.
    """

    #: Whether ``score`` needs at least one train interaction per user.
    needs_history: bool = True

    @property
    def name(self) -> str:
        return type(self).__name__

    def fit(self, train: Interactions) -> Self:
        """Learn from ``train``; returns self so calls chain."""
        if len(train) == 0:
            raise ValueError(f"{self.name}: cannot fit on empty interactions")
        self._bind(train)
        self._fit(train)
        return self

    def _bind(self, train: Interactions) -> None:
        """Remember the train data: what is seen, and the tie-break order."""
        self.train_ = train
        self.seen_ = train.seen()  # shared by every model fitted on train: never modified in place
        self.history_sizes_ = train.user_counts()  # one row per (user, item), so the row sums of seen_
        # Ties (many equal scores) are broken by a fixed random order of items, not
        # by item index: in MovieLens a low id means a popular film, so breaking by
        # index would quietly favour popular items.
        self.tie_order_ = torch.randperm(
            train.n_items, generator=torch.Generator().manual_seed(TIE_BREAK_SEED)
        )

    @abstractmethod
    def _fit(self, train: Interactions) -> None: ...

    @abstractmethod
    def _score(self, users: torch.Tensor) -> torch.Tensor: ...

    def score(self, users: UserIndices) -> torch.Tensor:
        """Scores of every item for each user.

        Args:
            users: user indices (an int, a sequence, an array or a tensor).
        Returns: (n_users_given, n_items) float32 scores, higher is better: finite, or −inf
            for an item never to recommend while an item with a finite score is left.
        Raises:
            ValueError: a NaN or +inf score, naming how many and the first user and item.
        """
        users = self._check_users(users)
        scores = self._score(users).float()
        expected = (len(users), self.train_.n_items)
        if tuple(scores.shape) != expected:
            raise RuntimeError(f"{self.name}: scores have shape {tuple(scores.shape)}, expected {expected}")
        if not bool(torch.isfinite(scores).all()):
            self._refuse_nan_and_positive_infinity(scores, users)
        return scores

    def _refuse_nan_and_positive_infinity(self, scores: torch.Tensor, users: torch.Tensor) -> None:
        """Raise on a NaN or +inf score; −inf passes (an item never to recommend while others are left).

        A NaN has no place in a ranking (it is a bug, never silently ranked), and +inf would
        turn into NaN the moment a fusion adds it to another model's −inf.
        """
        for bad, what, why in (
            (torch.isnan(scores), "NaN", "a NaN score is a bug in the model or its inputs"),
            (
                torch.isposinf(scores),
                "+inf",
                "scores must be finite, or -inf for an item never to recommend while others are left "
                "(an overflow? rescale the model's scores)",
            ),
        ):
            if bad.any():
                row, item = (int(i) for i in torch.nonzero(bad)[0])
                raise ValueError(
                    f"{self.name}: {what} scores for {int(bad.sum())} of {bad.numel()} (user, item) pairs, "
                    f"the first user {int(users[row])}, item {item}; {why}"
                )

    def recommend(
        self,
        users: UserIndices,
        k: int,
        exclude_seen: bool = True,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Top-k items for each user.

        Args:
            users: user indices.
            k: list length.
            exclude_seen: drop items the user interacted with in train.
            candidates: (n_items,) bool; only these items may be recommended.
        Returns: (n_users_given, k) int64 item indices, best first. Never an item that
            ``exclude_seen`` or ``candidates`` rules out, whatever its score; items the model
            scores −inf only once no item with a finite score is left.
        Raises:
            ValueError: a NaN or +inf score (see :meth:`score`), or fewer than k items allowed.
        """
        users = self._check_users(users)
        allowed = self._allowed(users, k, exclude_seen, candidates)
        return self._top(self.score(users), allowed, k)

    def _allowed(
        self, users: torch.Tensor, k: int, exclude_seen: bool, candidates: torch.Tensor | None
    ) -> torch.Tensor:
        """(b, n_items) bool: what each user may be recommended; raises if fewer than k."""
        k = check_int(k, "k", minimum=1)
        allowed = torch.ones(len(users), self.train_.n_items, dtype=torch.bool)
        if candidates is not None:
            if candidates.dtype != torch.bool or candidates.shape != (self.train_.n_items,):
                raise ValueError(f"candidates must be a bool tensor of shape ({self.train_.n_items},)")
            allowed &= candidates
        if exclude_seen:
            allowed &= ~self.seen_[users]
        n_allowed = allowed.sum(dim=1, dtype=torch.int32)  # a quarter of the time of an int64 count
        if (n_allowed < k).any():
            worst = int(torch.argmin(n_allowed))
            raise ValueError(
                f"k={k} is larger than the {int(n_allowed[worst])} items user {int(users[worst])} "
                f"can be recommended (catalogue {self.train_.n_items}, after candidates and seen items)"
            )
        return allowed

    def ranks(self, users: UserIndices, exclude_seen: bool = True) -> torch.Tensor:
        """Each item's position in each user's ranking, ties broken as in :meth:`recommend`.

        Returns: (n_users_given, n_items) int64 ranks, 1 = best; items scored −inf rank
        after every item with a finite score, and seen items (when excluded) after every
        unseen item, whatever their score.
        """
        users = self._check_users(users)
        return self._ranks(users, self.score(users), exclude_seen)

    def _ranks(self, users: torch.Tensor, scores: torch.Tensor, exclude_seen: bool = True) -> torch.Tensor:
        """:meth:`ranks` from this model's ``score(users)``, for a caller that needs both (a fusion)."""
        allowed = ~self.seen_[users] if exclude_seen else torch.ones_like(self.seen_[users])
        order = self._order(scores, allowed)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(1, order.shape[1] + 1).expand_as(order).contiguous())
        return ranks

    def _order(self, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(b, n_items) items best first: allowed items by score, then the disallowed ones.

        The key is total: allowed before disallowed; among allowed items a higher score first
        (−inf last); equal scores, and all disallowed items, in the fixed random order.
        """
        # Columns in the fixed random order, so that stable sorts break every tie by it.
        scores, allowed = scores[:, self.tie_order_], allowed[:, self.tie_order_]
        order = torch.sort(
            scores.masked_fill(~allowed, float("-inf")), dim=1, descending=True, stable=True
        ).indices
        # An allowed item scored -inf ties there with the disallowed ones: a second stable sort
        # puts every allowed item first. Without such items the first sort has done so already.
        if bool((torch.isneginf(scores) & allowed).any()):
            disallowed = (~allowed).gather(1, order).to(torch.uint8)
            order = order.gather(1, torch.sort(disallowed, dim=1, stable=True).indices)
        return self.tie_order_[order]

    def _top(self, scores: torch.Tensor, allowed: torch.Tensor, k: int) -> torch.Tensor:
        """The first k columns of :meth:`_order`, sorting only each row's candidates for them.

        The candidates are the items whose masked score reaches the row's k-th largest; one
        stable sort of them, in the fixed random order, gives :meth:`_order`'s first k. When a
        row has fewer than k finite allowed scores, every row takes the full sort.
        """
        masked = scores[:, self.tie_order_].masked_fill(~allowed[:, self.tie_order_], float("-inf"))
        kth = torch.topk(masked, k, dim=1, sorted=False).values.min(dim=1, keepdim=True).values
        if bool(torch.isneginf(kth).any()):
            return self._order(scores, allowed)[:, :k]
        candidate = masked >= kth
        rows, columns = torch.nonzero(candidate, as_tuple=True)  # row-major: columns ascend in a row
        slots = candidate.cumsum(dim=1)[rows, columns] - 1
        width = int(slots.max()) + 1
        packed = torch.full((len(masked), width), float("-inf"), dtype=masked.dtype)
        packed_columns = torch.zeros(len(masked), width, dtype=torch.int64)
        packed[rows, slots], packed_columns[rows, slots] = masked[rows, columns], columns
        best = torch.sort(packed, dim=1, descending=True, stable=True).indices[:, :k]
        return self.tie_order_[packed_columns.gather(1, best)]

    def _check_users(self, users: UserIndices) -> torch.Tensor:
        if not hasattr(self, "train_"):
            raise RuntimeError(f"{self.name} is not fitted; call fit(train) first")
        given = torch.as_tensor(users)
        if given.numel() == 0:
            raise ValueError("no users given")
        if given.dtype.is_floating_point or given.dtype.is_complex or given.dtype == torch.bool:
            # as int64 a float index would be truncated (0.5 becomes user 0).
            raise ValueError(f"users must be integer user indices, got dtype {given.dtype}")
        users = given.to(torch.int64).reshape(-1)
        n = self.train_.n_users
        outside = users[(users < 0) | (users >= n)]
        if len(outside):
            raise ValueError(
                f"user index {int(outside[0])} is not in the training data ({n} users, indices 0..{n - 1})"
            )
        if self.needs_history:
            empty = users[self.history_sizes_[users] == 0]
            if len(empty):
                raise ValueError(
                    f"user {int(empty[0])} has no interactions in the training data and {self.name} "
                    "scores users from their history; use a model that needs none (Popularity) for cold users"
                )
        return users


class VectorRecommender(Recommender):
    """A recommender whose score is the inner product of a user vector and an item vector.

    Such a model can answer ``recommend`` from a nearest-neighbour index over its item
    vectors instead of scoring the whole catalogue: pass ``index="hnsw"`` (or "ivf",
    "flat") to the model, or call :meth:`use_index`. The default, "exact", scores every
    item. An approximate index may miss a few of the true top k (see
    :func:`recutils.index.recall_at_k`); ties are not broken by the fixed random order.
    Either way a NaN or infinite vector raises, and no ruled-out item is ever returned.
    """

    index: str = "exact"

    def use_index(self, kind: str = "exact", **params: object) -> Self:
        """Answer ``recommend`` from an index of ``kind`` (see :func:`recutils.index.build_index`)."""
        if kind not in INDEX_KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
        self.index, self.index_params = kind, params
        self._vector_index = None
        return self

    @abstractmethod
    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """(b, dim) user vectors; ``score`` is their inner product with :meth:`item_embeddings`."""

    @abstractmethod
    def item_embeddings(self) -> torch.Tensor:
        """(n_items, dim) item vectors."""

    def _bind(self, train: Interactions) -> None:
        super()._bind(train)
        self._vector_index = None  # built from the item vectors of this fit (or load)

    def recommend(
        self,
        users: UserIndices,
        k: int,
        exclude_seen: bool = True,
        candidates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.index == "exact":
            return super().recommend(users, k, exclude_seen, candidates)
        users = self._check_users(users)
        allowed = self._allowed(users, k, exclude_seen, candidates)
        if self._vector_index is None:
            items = self.item_embeddings()
            self._refuse_non_finite(items, "item vector", torch.arange(len(items)), "item")
            self._vector_index = build_index(items, self.index, **self.index_params)
        queries = self.user_embeddings(users)
        self._refuse_non_finite(queries, "user vector", users, "user")
        n_items = self.train_.n_items
        # Ask for enough neighbours that k remain after dropping disallowed items; ask for
        # more when an approximate index returned too few allowed ones.
        depth = min(n_items, k + int((~allowed).sum(dim=1).max()))
        while True:
            ids = self._vector_index.search(queries, depth)[1]
            usable = (ids >= 0) & allowed.gather(1, ids.clamp(min=0))
            if bool((usable.sum(dim=1) >= k).all()) or depth == n_items:
                break
            depth = min(n_items, 2 * depth)
        first_usable = torch.argsort((~usable).to(torch.int8), dim=1, stable=True)[:, :k]
        top = ids.gather(1, first_usable)
        short = usable.sum(dim=1) < k
        if short.any():
            # Even the whole index did not reach k allowed items (an IVF probing too few
            # clusters): those users are scored exactly.
            top[short] = self._order(self.score(users[short]), allowed[short])[:, :k]
        return top

    def _refuse_non_finite(self, vectors: torch.Tensor, what: str, owners: torch.Tensor, owner: str) -> None:
        """The index path's check in place of :meth:`score`'s: its inner products would be NaN or ±inf."""
        bad = ~torch.isfinite(vectors)
        if bad.any():
            rows = bad.any(dim=1)
            raise ValueError(
                f"{self.name}: NaN or infinite values in {int(rows.sum())} of {len(vectors)} {what}s, "
                f"the first for {owner} {int(owners[rows][0])}; a model's vectors must be finite"
            )


def require_fitted_on(model: Recommender, train: Interactions) -> None:
    """Raise unless ``model`` was fitted on exactly these interactions (for models built on models)."""
    if not hasattr(model, "train_") or model.train_.fingerprint() != train.fingerprint():
        raise ValueError(f"{model.name} is not fitted on this train data; fit every model on it first")

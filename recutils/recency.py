"""Recency baselines: what was popular lately, what resembles the last few films, EASE read with decay.

Careful re-evaluations of sequence models keep finding that such simple uses of time
beat neural ones, so a sequence model is compared with these first. All three score a
user from their train history (``needs_history``): a user without train interactions
gets the base class's ValueError naming the user.
"""

from __future__ import annotations

import numpy as np
import torch

from recutils.baselines import EASE
from recutils.checks import check_int, check_number
from recutils.recommender import Recommender
from recutils.sequences import ordered_histories
from recutils.similarity import association_matrix
from recutils.split import Interactions

SECONDS_PER_DAY = 86_400

#: Validation grids, one per class: on P1's and on G's validation split (NDCG@10) the best
#: setting lies inside every parameter's grid. RecentPopularity's best window is 64 days on P1
#: (its curve flat from there on, within 0.001) and 8 days on G.
RECENCY_GRIDS: dict[str, dict[str, list]] = {
    "RecentPopularity": {"window_days": [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]},
    "LastItemsKNN": {"n_last": [3, 5, 10, 20], "decay": [0.7, 0.8, 0.9, 1.0]},
    "RecencyEASE": {"l2": [300.0, 1000.0, 3000.0], "decay": [0.7, 0.8, 0.85, 0.9, 0.95]},
}


def recency_weights(train: Interactions, decay: float, n_last: int | None = None) -> torch.Tensor:
    """Each user's history as a vector whose item at position j from the end weighs decay^j.

    Positions follow :func:`~recutils.sequences.ordered_histories` (ties within a second
    keep the frame order, i.e. the split's seeded tie-break). With ``n_last`` only the
    last ``n_last`` items count; a shorter history uses all its items.

    Returns: (n_users, n_items) float32; 0 for items outside the (last) history.
    """
    weights = torch.zeros(train.n_users, train.n_items, dtype=torch.float64)
    for user, items in enumerate(ordered_histories(train)):
        last = items[::-1] if n_last is None else items[::-1][:n_last]
        # float64 powers: for long histories decay^j underflows to 0 gracefully, never to NaN.
        weights[user, torch.from_numpy(last.copy())] = torch.from_numpy(
            decay ** np.arange(len(last), dtype=np.float64)
        )
    return weights.float()


class RecentPopularity(Recommender):
    """Items scored by how often anyone interacted with them in the days before the user's last one.

    score(u, i) = #{train interactions with i at time t ∈ (t_u − window, t_u]}, t_u being
    u's last train timestamp, so nothing later than the user's own last activity is used.
    Ties (frequent with short windows) are broken by overall train popularity, added as
    count_i / (max count + 1) < 1: it orders items with equal window counts but can never
    lift an item over one with a higher window count.

    Args:
        window_days: the window's length in days (> 0; fractions allowed).
    """

    def __init__(self, window_days: float = 30.0) -> None:
        self.window_days = check_number(window_days, "window_days", low=0, low_open=True)

    @property
    def name(self) -> str:
        return f"RecentPopularity(window={self.window_days:g}d)"

    def _fit(self, train: Interactions) -> None:
        frame = train.frame.sort_values("timestamp", kind="stable")
        self.times_ = frame["timestamp"].to_numpy(np.int64)
        self.items_ = frame["item"].to_numpy(np.int64)
        # A user without train rows keeps -1; the base class refuses to score such users.
        self.last_time_ = np.full(train.n_users, -1, dtype=np.int64)
        last = train.frame.groupby("user")["timestamp"].max()
        self.last_time_[last.index.to_numpy(np.int64)] = last.to_numpy(np.int64)
        counts = train.item_counts().double()
        self.tie_break_ = counts / (counts.max() + 1)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        window = self.window_days * SECONDS_PER_DAY
        ends = self.last_time_[users.numpy()]
        # Rows sorted by time: the window is one slice [first after t_u − window, last at t_u].
        starts = np.searchsorted(self.times_, ends - window, side="right")
        stops = np.searchsorted(self.times_, ends, side="right")
        n_items = len(self.tie_break_)
        counts = np.stack([np.bincount(self.items_[a:b], minlength=n_items) for a, b in zip(starts, stops)])
        return torch.from_numpy(counts).double() + self.tie_break_


class LastItemsKNN(Recommender):
    """Item–item cosine neighbours of the user's last few items, nearer positions weighing more.

    score(u, ·) = Σ_{j=0..n_last−1} decay^j · S[h_u(j), ·], h_u(j) being the item at
    position j from the end of u's train history and S the cosine between items' binary
    train columns (diagonal 0). A history shorter than ``n_last`` uses all its items.

    Args:
        n_last: how many of the latest items to read (>= 1).
        decay: weight ratio between consecutive positions, in (0, 1]; 1 weighs them equally.
    """

    def __init__(self, n_last: int = 5, decay: float = 0.8) -> None:
        self.n_last = check_int(n_last, "n_last", minimum=1)
        self.decay = check_number(decay, "decay", low=0, high=1, low_open=True)

    @property
    def name(self) -> str:
        return f"LastItemsKNN(n_last={self.n_last}, decay={self.decay:g})"

    def _fit(self, train: Interactions) -> None:
        self.similarity_ = association_matrix(train, "item")
        self.weights_ = recency_weights(train, self.decay, self.n_last)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.weights_[users] @ self.similarity_


class RecencyEASE(EASE):
    """EASE's item–item weights B, applied to a history vector that decays with position.

    B is EASE's (fitted on the binary train matrix, unchanged); the user's vector puts
    decay^j on the item at position j from the end of the history instead of 1, so
    scores are x_u^decay · B. ``decay=1`` is EASE exactly.

    Args:
        l2: EASE's ridge strength λ (> 0).
        decay: weight ratio between consecutive positions, in (0, 1].
    """

    def __init__(self, l2: float = 300.0, decay: float = 0.9) -> None:
        super().__init__(l2)
        self.decay = check_number(decay, "decay", low=0, high=1, low_open=True)

    @property
    def name(self) -> str:
        return f"RecencyEASE(λ={self.l2:g}, decay={self.decay:g})"

    def _fit(self, train: Interactions) -> None:
        super()._fit(train)
        # EASE scores x_u @ B; only x_u changes.
        self.x_ = recency_weights(train, self.decay)

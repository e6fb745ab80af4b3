"""Popularity bias and group fairness: who gets exposure, who gets accuracy, and one fix."""

from __future__ import annotations

import math

import pandas as pd
import torch

from recutils.combine import normalise_scores
from recutils.metrics import evaluate
from recutils.recommender import Recommender, require_fitted_on
from recutils.split import Interactions, Split


def head_items(train: Interactions, share: float = 0.2) -> torch.Tensor:
    """The most interacted-with ``share`` of the catalogue.

    Returns: (n_items,) bool, True for the ceil(share * n_items) most popular items
    (ties broken by item index).
    """
    if not 0 < share < 1:
        raise ValueError(f"share must lie strictly between 0 and 1, got {share}")
    n_head = math.ceil(share * train.n_items)
    order = torch.argsort(train.item_counts(), descending=True, stable=True)
    head = torch.zeros(train.n_items, dtype=torch.bool)
    head[order[:n_head]] = True
    return head


def exposure_share(recommended: torch.Tensor, items: torch.Tensor) -> float:
    """The share of all recommendation slots that go to the marked items.

    Args:
        recommended: (n_users, k) item indices.
        items: (n_items,) bool mask (e.g. :func:`head_items`).
    """
    return float(items[recommended].float().mean())


def metric_by_group(model: Recommender, split: Split, groups: pd.Series, metric: str = "NDCG@10") -> pd.Series:
    """A per-user metric averaged within user groups.

    Args:
        groups: the group of each user, indexed by user index (e.g. gender or age band).
    Returns: the mean ``metric`` per group, over users with test items.
    """
    _, per_user = evaluate(model, split, per_user=True)
    missing = per_user.index.difference(groups.index)
    if len(missing):
        raise ValueError(f"groups has no entry for user {missing[0]}")
    return per_user[metric].groupby(groups.loc[per_user.index].to_numpy()).mean().rename(model.name)


class PopularityPenalty(Recommender):
    """Re-ranking against popularity bias: min-max(score) − β · min-max(log(1 + count)).

    Args:
        base: a fitted recommender.
        beta: the penalty weight; 0 returns the base ranking.
    """

    def __init__(self, base: Recommender, beta: float) -> None:
        if beta < 0:
            raise ValueError(f"beta must be non-negative, got {beta}")
        self.base, self.beta = base, beta
        self.needs_history = base.needs_history

    @property
    def name(self) -> str:
        return f"{self.base.name} − {self.beta:g}·popularity"

    def _fit(self, train: Interactions) -> None:
        require_fitted_on(self.base, train)
        log_counts = torch.log1p(train.item_counts().float())
        self.penalty_ = (log_counts - log_counts.min()) / (log_counts.max() - log_counts.min()).clamp(min=1e-12)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return normalise_scores(self.base.score(users), "minmax") - self.beta * self.penalty_

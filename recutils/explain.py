"""'Because you watched X' explanations, and a test of whether they are faithful.

An explanation cites one item of the user's history for a recommended item. It is
*faithful* to a model if removing the cited item from the history lowers the
model's score for the recommended item. The models are re-scored with the edited
history (fold-in), without retraining, which is exact for EASE, item-CF and content
cosine and is how the (inductive) two-tower serves a changed history anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from recutils.baselines import EASE
from recutils.cf import ContentRecommender, ItemKNN
from recutils.perturb import ExcludeConsumed, restrict_test, truncate_histories
from recutils.recommender import Recommender
from recutils.selection import SeedResult, evaluate_seeds
from recutils.split import Interactions, Split
from recutils.twotower import TwoTower


def fold_in_scores(model: Recommender, histories: torch.Tensor) -> torch.Tensor:
    """Scores for users described only by their histories.

    Args:
        model: a fitted EASE, ItemKNN, ContentRecommender (mean of history) or history TwoTower.
        histories: (b, n_items) 0/1 rows, one per (possibly edited) history.
    Returns: (b, n_items) float32 scores.
    """
    histories = histories.float()
    if isinstance(model, EASE):
        return histories @ model.weights_
    if isinstance(model, ItemKNN):
        return histories @ model.similarity_.T
    if isinstance(model, ContentRecommender) and model.user_vectors is None and model.weighting == "mean":
        users = torch.nn.functional.normalize(histories @ model.item_vectors.float(), dim=1)
        return users @ torch.nn.functional.normalize(model.item_vectors.float(), dim=1).T
    if isinstance(model, TwoTower):
        return model.score_histories(histories)
    raise TypeError(f"fold-in scoring is not defined for {model.name}")


class FoldIn(Recommender):
    """A fitted model that serves users from the histories of other interactions, without retraining.

    ``FoldIn(model).fit(changed)`` scores each user from their rows of ``changed`` (for
    example, cold users whose histories were cut to one film) with the weights ``model``
    learned on its own train data: how a new user is served by a model trained on everyone
    else. Works for the models :func:`fold_in_scores` knows.

    Args:
        base: a fitted EASE, ItemKNN, ContentRecommender (mean of history) or history TwoTower.
    """

    def __init__(self, base: Recommender) -> None:
        if not hasattr(base, "train_"):
            raise RuntimeError(f"{base.name} is not fitted; fit it before folding users in")
        self.base = base

    @property
    def name(self) -> str:
        return self.base.name

    def _fit(self, train: Interactions) -> None:
        if (train.n_users, train.n_items) != (self.base.train_.n_users, self.base.train_.n_items):
            raise ValueError(
                f"the histories have {train.n_users} users × {train.n_items} items, the model was trained "
                f"on {self.base.train_.n_users} × {self.base.train_.n_items}: fold in the same users and items"
            )
        self.histories_ = train.matrix(binary=True)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return fold_in_scores(self.base, self.histories_[users])


def cite_history_items(histories: torch.Tensor, items: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """For each row, the history item most similar to the recommended item.

    Args:
        histories: (b, n_items) 0/1 rows; every row needs at least one item.
        items: (b,) the recommended item of each row.
        similarity: (n_items, n_items) item-item similarity (BERT cosine, co-rating, ...).
    Returns: (b,) int64 cited item indices.
    """
    if (histories.sum(dim=1) == 0).any():
        raise ValueError("every history needs at least one item to cite")
    scores = similarity[items].float().masked_fill(histories <= 0, float("-inf"))
    return scores.argmax(dim=1)


def faithfulness(model: Recommender, histories: torch.Tensor, items: torch.Tensor, cited: torch.Tensor) -> torch.Tensor:
    """Whether removing each cited item lowers the model's score for the recommended item.

    Returns: (b,) bool.
    """
    rows = torch.arange(len(items))
    if not bool((histories[rows, cited] > 0).all()):
        raise ValueError("a cited item is not in its user's history")
    before = fold_in_scores(model, histories)[rows, items]
    edited = histories.clone()
    edited[rows, cited] = 0
    after = fold_in_scores(model, edited)[rows, items]
    return after < before


def cold_user_results(
    fitted: Mapping[str, Sequence[Recommender]],
    split: Split,
    users: torch.Tensor,
    keeps: Sequence[int | None] = (1, 3, 5, None),
    refitted: Mapping[str, Callable[[], Recommender]] | None = None,
) -> dict[int | str, dict[str, SeedResult]]:
    """Cold users served by fold-in: ``users`` keep only their latest ``keep`` train items.

    Each model of ``fitted`` (one fitted model per seed, trained on ``split.train``) scores
    the cut histories without retraining (:class:`FoldIn`); the models of ``refitted``
    (factories, e.g. Popularity) are refitted on the cut data. Test is measured on
    ``users`` only. The films a cut removed were still watched: every list skips them
    (:class:`~recutils.perturb.ExcludeConsumed` over ``split.train``), or they would be
    recommended back and count as misses.

    Returns: ``{keep (or "all" for None): {model name: SeedResult}}``.
    """
    results: dict[int | str, dict[str, SeedResult]] = {}
    for keep in keeps:
        cut = split if keep is None else truncate_histories(split, users, keep)
        measured = restrict_test(cut, users)

        def served(model: Recommender, cut: Split = cut) -> Recommender:
            return ExcludeConsumed(model, split.train).fit(cut.train)

        row = {
            name: evaluate_seeds(lambda s, make=make: served(make().fit(cut.train)), measured, seeds=(0,))
            for name, make in (refitted or {}).items()
        }
        for name, models in fitted.items():
            row[name] = evaluate_seeds(
                lambda s, ms=models: served(FoldIn(ms[s]).fit(cut.train)), measured, seeds=range(len(models))
            )
        results["all" if keep is None else keep] = row
    return results

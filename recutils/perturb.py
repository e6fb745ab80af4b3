"""Changed training data for stress tests: less data, shorter histories, fake users, noise.

Each function returns a new :class:`~recutils.split.Split` whose test part is the
original one (re-indexed only when users are added), so the same test users are
measured before and after the change.

A change that removes real train interactions (a subsample, noise that replaces
ratings) has a trap: the removed films are no longer "seen", so a model recommends
them (they are films the user really watched, and popular) and they count as
misses. Wrap the model in :class:`ExcludeConsumed` with the original train data so
that what each user consumed is still never recommended.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from recutils.metrics import paired_bootstrap, two_level_bootstrap
from recutils.recommender import Recommender, require_fitted_on
from recutils.selection import evaluate_seeds
from recutils.split import Interactions, Split


def _with_train(split: Split, frame: pd.DataFrame, n_users: int | None = None) -> Split:
    n_users = split.train.n_users if n_users is None else n_users
    n_items = split.train.n_items
    return Split(
        split.protocol,
        Interactions(frame.reset_index(drop=True), n_users, n_items),
        Interactions(split.test.frame, n_users, n_items),
        split.candidates,
    )


def subsample_train(split: Split, fraction: float, seed: int = 0, min_per_user: int = 2) -> Split:
    """Keep a random ``fraction`` of each user's train interactions (at least
    ``min_per_user``, or all a user has if fewer), for learning curves."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    frame = split.train.frame
    keep = np.zeros(len(frame), dtype=bool)
    for rows in frame.groupby("user").indices.values():
        n = max(min_per_user, round(fraction * len(rows)))
        keep[rng.choice(rows, min(n, len(rows)), replace=False)] = True
    return _with_train(split, frame[keep])


def truncate_histories(split: Split, users: torch.Tensor, keep: int) -> Split:
    """Cold users: the given users keep only their latest ``keep`` train interactions."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    frame = split.train.frame.sort_values(["user", "timestamp", "item"], kind="stable")
    chosen = frame["user"].isin(users.tolist()).to_numpy()
    latest = frame.groupby("user").cumcount(ascending=False).to_numpy() < keep
    return _with_train(split, frame[~chosen | latest])


def restrict_test(split: Split, users: torch.Tensor | np.ndarray | Sequence[int]) -> Split:
    """The same split, evaluated on the given users only (train is untouched)."""
    test = split.test.frame
    kept = test[test["user"].isin([int(user) for user in users])].reset_index(drop=True)
    if kept.empty:
        raise ValueError("none of the given users has a test interaction")
    return Split(
        split.protocol, split.train, Interactions(kept, split.test.n_users, split.test.n_items), split.candidates
    )


def inject_fake_users(split: Split, target: int, n_fake: int, filler: torch.Tensor) -> Split:
    """A push attack: ``n_fake`` new users who each rated ``target`` and the ``filler``
    items (e.g. the most popular ones, so the fakes look like ordinary users).

    The fakes get user indices after the real ones and appear in train only.
    """
    if n_fake < 1:
        raise ValueError(f"n_fake must be at least 1, got {n_fake}")
    if len(split.train) == 0:
        raise ValueError("the split's train part is empty: there is no data to add fake users to")
    n_items = split.train.n_items
    for what, item in [("target", target), *(("filler item", int(i)) for i in filler)]:
        if not 0 <= item < n_items:
            raise ValueError(f"{what} {item} is not an item index (0..{n_items - 1})")
    items = [target, *[int(i) for i in filler if int(i) != target]]
    start = split.train.n_users
    last = int(split.train.frame["timestamp"].max())
    fakes = pd.DataFrame(
        [(start + f, item, 5, last + 1 + j) for f in range(n_fake) for j, item in enumerate(items)],
        columns=["user", "item", "rating", "timestamp"],
    )
    return _with_train(split, pd.concat([split.train.frame, fakes]), n_users=start + n_fake)


def add_noise(split: Split, share: float, seed: int = 0) -> Split:
    """Replace a random ``share`` of the train interactions with random items the user
    has not interacted with in train (accidental clicks, shared accounts).

    The draw reads the train part only: a noisy click cannot know what the user will watch
    later, so the noisy train data do not depend on the test set. A replacement may so be one
    of the user's test films; that film is then seen, can never be recommended or hit, and its
    test pair is dropped from the returned test part (train and test must stay disjoint).
    Compare a clean model on the same test rows (:func:`noise_effect` does).
    """
    if not 0 <= share < 1:
        raise ValueError(f"share must lie in [0, 1), got {share}")
    rng = np.random.default_rng(seed)
    frame = split.train.frame.copy()
    seen = split.train.matrix(binary=True).bool()
    for row in rng.choice(len(frame), round(share * len(frame)), replace=False):
        user = int(frame.iat[row, frame.columns.get_loc("user")])
        unseen = np.flatnonzero(~seen[user].numpy())
        item = int(rng.choice(unseen))
        seen[user, item] = True
        frame.iat[row, frame.columns.get_loc("item")] = item
    noisy = _with_train(split, frame)
    test = split.test.frame
    n_items = split.train.n_items
    added = np.isin(test["user"].to_numpy(np.int64) * n_items + test["item"].to_numpy(np.int64),
                    frame["user"].to_numpy(np.int64) * n_items + frame["item"].to_numpy(np.int64))
    if not added.any():
        return noisy
    kept = Interactions(test[~added].reset_index(drop=True), split.test.n_users, split.test.n_items)
    return Split(split.protocol, noisy.train, kept, split.candidates)


class ExcludeConsumed(Recommender):
    """A fitted model whose lists also skip what each user consumed in ``consumed``.

    Use it to evaluate a model fitted on changed train data (a subsample, noise) as a
    real system would serve it: the films a user watched are never recommended, even
    if the changed data lost them. Scores are the base model's.

    Args:
        base: a recommender fitted on the changed train data.
        consumed: the original train interactions (same items; users beyond its
            ``n_users``, such as injected fakes, keep only their own history).
    """

    def __init__(self, base: Recommender, consumed: Interactions) -> None:
        self.base, self.consumed = base, consumed
        self.needs_history = base.needs_history

    @property
    def name(self) -> str:
        return self.base.name

    def _bind(self, train: Interactions) -> None:
        super()._bind(train)
        if self.consumed.n_items != train.n_items:
            raise ValueError(
                f"consumed has {self.consumed.n_items} items, the train data {train.n_items}: "
                "pass the original train interactions of the same catalogue"
            )
        n = min(train.n_users, self.consumed.n_users)
        consumed = torch.zeros_like(self.seen_)
        consumed[:n] = self.consumed.seen()[:n]
        self.seen_ = self.seen_ | consumed  # a new tensor: train.seen() is shared

    def _fit(self, train: Interactions) -> None:
        require_fitted_on(self.base, train)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.base.score(users)


def target_reach(model: Recommender, users: torch.Tensor, target: int, k: int = 10) -> float:
    """The share of ``users`` whose top-``k`` list contains ``target`` (what a push attack wants).

    Returns: a float in [0, 1].
    """
    if not 0 <= target < model.train_.n_items:
        raise ValueError(f"target {target} is not an item index (0..{model.train_.n_items - 1})")
    return float((model.recommend(users, k) == target).any(dim=1).float().mean())


#: Builds the unfitted model ``name`` for changed data, as it was built for the clean split:
#: ``refit(name, changed_split, seed)``.
Refit = Callable[[str, Split, int], Recommender]


def push_attack(
    fitted: Mapping[str, Sequence[Recommender]],
    refit: Refit,
    split: Split,
    target: int,
    filler: torch.Tensor,
    sizes: Sequence[int],
    sizes_for: Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """A push attack at several sizes: each model retrained on the attacked data.

    ``fitted`` holds each model fitted on the clean ``split`` (one per seed); a model
    listed in ``sizes_for`` is attacked only at those sizes (an expensive one). The
    target is measured on the real users who have not rated it.

    Returns: the mean and sd over seeds of the target's median rank and its top-10
    reach, indexed by (model, fake users); 0 fake users is the clean model.
    """
    users = torch.arange(split.train.n_users)
    unrated = users[split.train.matrix(binary=True)[:, target] == 0]
    rows = []
    for n_fake in (0, *sizes):
        attacked = split if n_fake == 0 else inject_fake_users(split, target, n_fake, filler)
        for name, models in fitted.items():
            if n_fake and n_fake not in (sizes_for or {}).get(name, sizes):
                continue
            for seed, clean in enumerate(models):
                model = clean if n_fake == 0 else refit(name, attacked, seed).fit(attacked.train)
                rows.append({
                    "model": name, "fake users": n_fake,
                    "median rank": float(model.ranks(unrated)[:, target].float().median()),
                    "top-10 reach": target_reach(model, unrated, target),
                })
    frame = pd.DataFrame(rows).groupby(["model", "fake users"])[["median rank", "top-10 reach"]]
    return frame.agg(["mean", "std"])


def noise_effect(
    fitted: Mapping[str, Sequence[Recommender]], refit: Refit, split: Split, noisy: Split
) -> pd.DataFrame:
    """Each model retrained on ``noisy`` (one run per fitted seed) against its clean self.

    The noisy models never recommend what a user consumed in the clean train data
    (:class:`ExcludeConsumed`). Both sides are evaluated on ``noisy``'s test rows (those
    :func:`add_noise` left: a test film the noise put in train can be hit by neither).
    Returns one row per model: clean and noisy NDCG@10 (mean, sd), the relative ``noise
    cost``, ``n`` seeds and the ``gap`` (noisy − clean) with its bootstrap interval: over
    users and seeds (:func:`~recutils.metrics.two_level_bootstrap`) for a model with several
    seeds, over users (:func:`~recutils.metrics.paired_bootstrap`) for one run.
    """
    on_noisy_test = Split(split.protocol, split.train, noisy.test, split.candidates)
    rows = {}
    for name, models in fitted.items():
        seeds = range(len(models))
        clean = evaluate_seeds(lambda s, ms=models: ms[s], on_noisy_test, seeds=seeds)
        dirty = evaluate_seeds(
            lambda s, name=name: ExcludeConsumed(refit(name, noisy, s).fit(noisy.train), split.train).fit(
                noisy.train
            ),
            noisy,
            seeds=seeds,
        )
        rows[name] = {
            "NDCG@10 clean": clean.mean, "clean sd": clean.sd,
            "NDCG@10 with noise": dirty.mean, "noisy sd": dirty.sd,
            "noise cost": 1 - dirty.mean / clean.mean, "n": len(models),
            "gap": (two_level_bootstrap(dirty.per_user, clean.per_user) if len(models) > 1
                    else paired_bootstrap(dirty.user_mean, clean.user_mean)),
        }
    return pd.DataFrame(rows).T

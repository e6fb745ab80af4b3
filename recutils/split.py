"""Interaction containers and the book's evaluation protocols.

P1, warm top-N: per user, sort interactions by timestamp, breaking ties within
one second by a fixed seeded random order; the last ceil(n/5) are test, the rest
train. Other users' later interactions stay in train, so P1 is not leak-free.
G, global time cut: one cut-off time for everyone (a quantile of the timestamps);
train is everything before it, test everything at or after it, kept only for
warm users and warm items (both seen in train). P2, cold-start items: 20% of items
(seed 0) are cold; all their interactions are test, the rest train, and only
cold items are ranked. P3, cold-start users: 20% of users (seed 0) are new; all
their interactions are test, and models must score them without a history (from
their own vectors, e.g. a query or a profile). P4, leave-last-one-out (the protocol of
SASRec, BERT4Rec and LlamaRec): after a k-core filter, each user's last interaction is
test, the one before it validation, and every other surviving item is ranked.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch

from recutils.checks import check_int

COLUMNS = ("user", "item", "rating", "timestamp")


@dataclass(frozen=True)
class Interactions:
    """User–item interactions over contiguous indices.

    Attributes:
        frame: one row per interaction, integer columns ``user`` (0..n_users-1),
            ``item`` (0..n_items-1), ``rating`` and ``timestamp`` (Unix seconds), and
            at most one row per (user, item) pair. Float, boolean or missing values and
            repeated pairs are refused (ValueError): the metrics count each pair once.
        n_users: size of the user index space (users without rows included).
        n_items: size of the item index space (items without rows included).
    """

    frame: pd.DataFrame
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise ValueError(f"interactions need columns {COLUMNS}; missing {missing}")
        for name in ("n_users", "n_items"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        for column in COLUMNS:
            values = self.frame[column]
            # A float index would be truncated (0.5 becomes 0) and a NaN would fail much later.
            integer = pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values)
            if len(values) and not integer:
                raise ValueError(
                    f"interactions column {column!r} must hold integers, got dtype {values.dtype}; "
                    f"drop missing values and convert it with .astype('int64') (check no value is fractional)"
                )
            if values.isna().any():
                raise ValueError(f"interactions column {column!r} holds missing values; drop or fill them")
        pairs = self.frame.duplicated(["user", "item"])
        if pairs.any():
            first = self.frame[pairs].iloc[0]
            raise ValueError(
                f"interactions hold {int(pairs.sum())} repeated (user, item) rows, "
                f"e.g. user {first['user']}, item {first['item']}: the metrics count each pair once, "
                "so keep one row per pair "
                "(e.g. frame.sort_values('timestamp', kind='stable').drop_duplicates(['user', 'item']))"
            )
        for column, size in (("user", self.n_users), ("item", self.n_items)):
            values = self.frame[column]
            if len(values) and (values.min() < 0 or values.max() >= size):
                raise ValueError(
                    f"{column} indices must lie in 0..{size - 1}; found {values.min()}..{values.max()}"
                )

    def __len__(self) -> int:
        return len(self.frame)

    def column(self, name: str) -> torch.Tensor:
        """Returns: (n_interactions,) int64 copy of an integer column (``user``, ``item``, ...)."""
        return torch.from_numpy(self.frame[name].to_numpy(np.int64, copy=True))

    def matrix(self, binary: bool = True) -> torch.Tensor:
        """Dense interaction matrix.

        Returns: (n_users, n_items) float32; 1 where the user interacted with the
        item (or the rating when ``binary`` is False), 0 elsewhere.
        """
        m = torch.zeros(self.n_users, self.n_items, dtype=torch.float32)
        values = torch.ones(len(self)) if binary else self.column("rating").float()
        m[self.column("user"), self.column("item")] = values
        return m

    def items_by_user(self) -> dict[int, np.ndarray]:
        """Item indices of each user who has at least one interaction (computed once per
        object, like :meth:`fingerprint`; do not modify the returned arrays)."""
        cached = self.__dict__.get("_items_by_user")
        if cached is None:
            cached = {int(u): g.to_numpy(np.int64) for u, g in self.frame.groupby("user", sort=True)["item"]}
            for items in cached.values():
                items.flags.writeable = False
            object.__setattr__(self, "_items_by_user", cached)
        return dict(cached)

    def seen(self) -> torch.Tensor:
        """(n_users, n_items) bool, True where the user interacted with the item.

        Computed once per object, like :meth:`fingerprint` (every model fitted on these
        interactions shares it): do not modify the returned tensor.
        """
        cached = self.__dict__.get("_seen")
        if cached is None:
            cached = self.matrix(binary=True) > 0
            object.__setattr__(self, "_seen", cached)
        return cached

    def user_counts(self) -> torch.Tensor:
        """Returns: (n_users,) int64 number of interactions per user."""
        return torch.bincount(self.column("user"), minlength=self.n_users)

    def item_counts(self) -> torch.Tensor:
        """Returns: (n_items,) int64 number of interactions per item."""
        return torch.bincount(self.column("item"), minlength=self.n_items)

    def fingerprint(self) -> str:
        """A content hash of the interactions (order-independent): equal only for the same data.

        Computed once per object; ``Interactions`` is frozen and its frame must not be mutated.
        """
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            columns = [self.frame[c].to_numpy(np.float64) for c in COLUMNS]
            order = np.lexsort(columns[::-1])
            digest = hashlib.sha256(f"{self.n_users}|{self.n_items}|{len(self.frame)}".encode())
            for values in columns:
                digest.update(np.ascontiguousarray(values[order]).tobytes())
            cached = digest.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached


@dataclass(frozen=True)
class Split:
    """A train/test split and the items a model may rank.

    Attributes:
        protocol: "P1" (warm top-N), "P2" (cold-start items), "P3" (cold-start users),
            "P4" (leave-last-one-out) or "G" (global time cut).
        train: what models are fitted on.
        test: held-out interactions; each user's test items are the relevant set.
        candidates: (n_items,) bool, the rankable items; None means every item.
    """

    protocol: Literal["P1", "P2", "P3", "P4", "G"]
    train: Interactions
    test: Interactions
    candidates: torch.Tensor | None = None


TieBreak = Literal["random", "item"]


def temporal_split(
    interactions: Interactions, test_share: int = 5, tie_break: TieBreak = "random", seed: int = 0
) -> Split:
    """P1: each user's last ceil(n / test_share) interactions in time are test.

    Every user with n >= 1 interactions gets at least one test interaction; a
    user with a single interaction has an empty train history.

    Args:
        test_share: one interaction in ``test_share`` (rounded up per user) is test; >= 2.
        tie_break: how interactions within the same second are ordered. "random"
            (the default) uses a fixed random order (``seed``) drawn over the rows as
            given, so the split also depends on the row order (the loaders keep the
            files'; no sort is involved, so it is the same on every machine). "item"
            orders them by item index, which in MovieLens favours popular films (low
            ids), so the films that become test depend on the catalogue's numbering.
    """
    if isinstance(test_share, bool) or not isinstance(test_share, (int, np.integer)) or test_share < 2:
        raise ValueError(f"test_share must be an integer >= 2 (one in test_share is test), got {test_share!r}")
    if tie_break not in ("random", "item"):
        raise ValueError(f"tie_break must be 'random' or 'item', got {tie_break!r}")
    if len(interactions) == 0:
        raise ValueError("cannot split an empty set of interactions")
    frame = interactions.frame
    if tie_break == "random":
        # One draw per row, so (user, timestamp, _order) is a total order.
        frame = frame.assign(_order=np.random.default_rng(seed).permutation(len(frame)))
        frame = frame.sort_values(["user", "timestamp", "_order"], kind="stable").drop(columns="_order")
    else:
        frame = frame.sort_values(["user", "timestamp", "item"], kind="stable")
    position = frame.groupby("user").cumcount().to_numpy()
    size = frame.groupby("user")["item"].transform("size").to_numpy()
    n_test = np.ceil(size / test_share).astype(np.int64)
    is_test = position >= size - n_test
    return Split(
        protocol="P1",
        train=Interactions(
            frame[~is_test].reset_index(drop=True), interactions.n_users, interactions.n_items
        ),
        test=Interactions(frame[is_test].reset_index(drop=True), interactions.n_users, interactions.n_items),
    )


def global_time_split(interactions: Interactions, quantile: float = 0.8) -> Split:
    """G: one cut-off time for every user; no train interaction is later than any test one.

    The cut is the ``quantile`` of all timestamps. Train is every interaction strictly
    before it; test is every interaction at or after it whose user and item both have
    at least one train interaction (cold users and cold items are P3's and P2's questions,
    and no warm model could rank them). Every item may be ranked.
    """
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie strictly between 0 and 1, got {quantile}")
    if len(interactions) == 0:
        raise ValueError("cannot split an empty set of interactions")
    frame = interactions.frame
    cut = frame["timestamp"].quantile(quantile, interpolation="lower")
    before = (frame["timestamp"] < cut).to_numpy()
    train = frame[before]
    after = frame[~before]
    warm = after["user"].isin(train["user"].unique()) & after["item"].isin(train["item"].unique())
    test = after[warm.to_numpy()]
    if len(train) == 0 or len(test) == 0:
        raise ValueError(
            f"a global cut at the {quantile} quantile leaves {len(train)} train and {len(test)} "
            "warm test interactions; choose another quantile"
        )
    n_users, n_items = interactions.n_users, interactions.n_items
    return Split(
        protocol="G",
        train=Interactions(train.reset_index(drop=True), n_users, n_items),
        test=Interactions(test.reset_index(drop=True), n_users, n_items),
    )


def leak_share(split: Split) -> float:
    """Share of train interactions later than the median test timestamp: 0 for a leak-free split."""
    median = split.test.frame["timestamp"].median()
    return float((split.train.frame["timestamp"] > median).mean())


def cold_item_split(
    interactions: Interactions,
    cold_fraction: float = 0.2,
    seed: int = 0,
    pool: torch.Tensor | None = None,
) -> Split:
    """P2: a random ``cold_fraction`` of the items is cold; all their interactions are test.

    Args:
        pool: (n_items,) bool, the items the cold set is drawn from (default all);
            used by :func:`validation_split` to draw only among train items.
    """
    if not 0 < cold_fraction < 1:
        raise ValueError(f"cold_fraction must lie strictly between 0 and 1, got {cold_fraction}")
    n_items = interactions.n_items
    pool_idx = torch.arange(n_items) if pool is None else torch.nonzero(pool).squeeze(1)
    generator = torch.Generator().manual_seed(seed)
    n_cold = math.ceil(cold_fraction * len(pool_idx))
    cold_idx = pool_idx[torch.randperm(len(pool_idx), generator=generator)[:n_cold]]
    cold = torch.zeros(n_items, dtype=torch.bool)
    cold[cold_idx] = True
    frame = interactions.frame
    is_test = cold.numpy()[frame["item"].to_numpy(np.int64)]
    return Split(
        protocol="P2",
        train=Interactions(frame[~is_test].reset_index(drop=True), interactions.n_users, n_items),
        test=Interactions(frame[is_test].reset_index(drop=True), interactions.n_users, n_items),
        candidates=cold,
    )


def cold_user_split(interactions: Interactions, cold_fraction: float = 0.2, seed: int = 0) -> Split:
    """P3: a random ``cold_fraction`` of the users (among those with interactions) is new;
    all their interactions are test, and every item may be ranked."""
    if not 0 < cold_fraction < 1:
        raise ValueError(f"cold_fraction must lie strictly between 0 and 1, got {cold_fraction}")
    active = torch.nonzero(interactions.user_counts() > 0).squeeze(1)
    generator = torch.Generator().manual_seed(seed)
    n_cold = math.ceil(cold_fraction * len(active))
    cold = torch.zeros(interactions.n_users, dtype=torch.bool)
    cold[active[torch.randperm(len(active), generator=generator)[:n_cold]]] = True
    frame = interactions.frame
    is_test = cold.numpy()[frame["user"].to_numpy(np.int64)]
    n_users, n_items = interactions.n_users, interactions.n_items
    return Split(
        protocol="P3",
        train=Interactions(frame[~is_test].reset_index(drop=True), n_users, n_items),
        test=Interactions(frame[is_test].reset_index(drop=True), n_users, n_items),
    )


def validation_split(split: Split, seed: int = 1) -> Split:
    """The same protocol applied to ``split.train``: tune on this, never on test.

    For G the cut is the same quantile (0.8) of the train timestamps. For P4 it is
    :func:`leave_last_out_split` of ``split.train`` (validation test = each user's
    second-to-last item) ranking the same ``candidates`` as ``split``."""
    if split.protocol == "P4":
        return replace(leave_last_out_split(split.train), candidates=split.candidates)
    if split.protocol == "P1":
        return temporal_split(split.train)
    if split.protocol == "G":
        return global_time_split(split.train)
    if split.protocol == "P3":
        return cold_user_split(split.train, seed=seed)
    warm = split.train.item_counts() > 0
    return cold_item_split(split.train, seed=seed, pool=warm)


def k_core(interactions: Interactions, k: int = 5) -> Interactions:
    """Keep only users and items with at least ``k`` interactions, repeating until stable.

    Dropping a sparse item can push a user below ``k`` and the other way round, so the
    filter runs until a pass removes nothing: then every user and every item left has at
    least ``k`` interactions.

    The index space is kept (``n_users`` and ``n_items`` as given): users and items that
    are filtered out simply have no rows. Item text vectors and item tables stay aligned
    with the item indices; :func:`leave_last_out_split` ranks only the items that survive.

    Returns: the surviving interactions, rows in their input order.
    Raises:
        ValueError: ``k`` < 1, empty input, or nothing survives the filter.
    """
    k = check_int(k, "k", minimum=1)
    if len(interactions) == 0:
        raise ValueError("cannot filter an empty set of interactions")
    frame = interactions.frame
    while True:
        users = frame["user"].to_numpy(np.int64)
        items = frame["item"].to_numpy(np.int64)
        user_ok = np.bincount(users, minlength=interactions.n_users)[users] >= k
        item_ok = np.bincount(items, minlength=interactions.n_items)[items] >= k
        keep = user_ok & item_ok
        if keep.all():
            break
        frame = frame[keep]
        if len(frame) == 0:
            raise ValueError(
                f"no interactions survive a {k}-core filter of {len(interactions)} interactions; "
                "choose a smaller k"
            )
    return Interactions(frame.reset_index(drop=True), interactions.n_users, interactions.n_items)


def leave_last_out_split(interactions: Interactions) -> Split:
    """P4: each user's last interaction is test, the rest train; every item with a row is ranked.

    Each user's history is ordered by (timestamp, item index): a total order, so the split
    does not depend on the order of the input rows (a same-second tie goes to the lower item
    index, as the LlamaRec code orders ML-100K). The rows of ``train`` and ``test`` come in
    that order, so :func:`recutils.sequences.ordered_histories` reads the same sequence.

    The whole protocol (:func:`p4_splits` does all of it):

    - ``split = leave_last_out_split(k_core(interactions, 5))``: test = the last item,
      ``split.train`` = everything before it, which is train + validation: the history
      a model is refitted on and scored from at test time;
    - ``validation_split(split)`` = this function on ``split.train``: its test is each
      user's second-to-last item, its train everything before that. Tune and early-stop on it.

    ``candidates`` marks the items with at least one row in ``interactions`` (after a k-core
    filter, the survivors): filtered-out items are never ranked, and ``evaluate`` also drops
    each user's train items, so every other surviving item is ranked.

    Raises:
        ValueError: empty input, or a user with a single interaction (no train history);
            filter with :func:`k_core` (k >= 2) first.
    """
    if len(interactions) == 0:
        raise ValueError("cannot split an empty set of interactions")
    counts = interactions.user_counts()
    single = torch.nonzero(counts == 1).squeeze(1)
    if len(single):
        raise ValueError(
            f"{len(single)} users have a single interaction (e.g. user {int(single[0])}), which would leave "
            "them no train history; filter with k_core(interactions, k) first (k >= 2 for a split, k >= 3 "
            "for its validation split too; the papers use 5)"
        )
    frame = interactions.frame.sort_values(["user", "timestamp", "item"], kind="stable")
    frame = frame.reset_index(drop=True)
    users = frame["user"].to_numpy(np.int64)
    is_test = np.append(users[1:] != users[:-1], True)  # the last row of each user's block
    n_users, n_items = interactions.n_users, interactions.n_items
    return Split(
        protocol="P4",
        train=Interactions(frame[~is_test].reset_index(drop=True), n_users, n_items),
        test=Interactions(frame[is_test].reset_index(drop=True), n_users, n_items),
        candidates=interactions.item_counts() > 0,
    )


def p4_splits(interactions: Interactions, k: int = 5) -> tuple[Split, Split]:
    """P4 as the LlamaRec code prepares ML-100K: a ``k``-core filter, then leave-last-one-out.

    Returns: ``(split, validation)``. Tune and early-stop on ``validation`` (train: all but
    each user's last two items; test: the second-to-last), then refit on ``split.train`` (train
    + validation) and evaluate on ``split`` (test: the last item). Both rank the same surviving
    items, each user's own train items excluded.
    Raises:
        ValueError: as :func:`k_core`; or ``k`` < 3, which would leave a user with no
            validation history.
    """
    if check_int(k, "k", minimum=1) < 3:
        raise ValueError(f"P4 needs k >= 3 (a train, a validation and a test item per user), got k={k}")
    split = leave_last_out_split(k_core(interactions, k))
    return split, validation_split(split)

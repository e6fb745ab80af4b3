"""Each user's train history as a sequence in time, for models that read order or recency."""

from __future__ import annotations

import numpy as np

from recutils.split import Interactions, Split


def ordered_histories(train: Interactions) -> list[np.ndarray]:
    """Each user's train items, oldest first.

    Interactions within the same second keep their order in ``train.frame``: for data
    made by :func:`~recutils.split.temporal_split` that is the split's seeded random
    tie-break, so the last item here is the one the split saw as the latest.

    Returns: ``n_users`` int64 arrays (empty for a user without train interactions).
    """
    frame = train.frame.sort_values(["user", "timestamp"], kind="stable")
    users = frame["user"].to_numpy(np.int64)
    items = frame["item"].to_numpy(np.int64)
    bounds = np.searchsorted(users, np.arange(train.n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(train.n_users)]


def test_gaps(split: Split) -> np.ndarray:
    """Seconds from each test interaction's user's last train interaction to it.

    A small gap means the test interaction belongs to the same rating session as the end of
    the user's train history: that is what recency (and order) can exploit.

    Returns: (n,) float64, one entry per test interaction of a user with train interactions.
    """
    last = split.train.frame.groupby("user")["timestamp"].max()
    test = split.test.frame[split.test.frame["user"].isin(last.index)]
    return (test["timestamp"].to_numpy(np.float64) - last.loc[test["user"]].to_numpy(np.float64))

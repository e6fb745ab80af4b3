import math

import pandas as pd
import pytest
import torch

from recutils.baselines import EASE
from recutils.cf import ItemKNN
from recutils.metrics import tune
from recutils.recency import RECENCY_GRIDS, LastItemsKNN, RecencyEASE, RecentPopularity
from recutils.split import Interactions, temporal_split, validation_split

DAY = 86_400


def _interactions(rows, n_users, n_items):
    """rows: (user, item, timestamp); the frame keeps the given row order."""
    frame = pd.DataFrame([(u, i, 1, t) for u, i, t in rows], columns=["user", "item", "rating", "timestamp"])
    return Interactions(frame, n_users, n_items)


def _cosine(histories, i, j):
    """Cosine between items i and j's binary user columns, from the users' item sets."""
    raters_i = {u for u, items in histories.items() if i in items}
    raters_j = {u for u, items in histories.items() if j in items}
    if i == j or not raters_i or not raters_j:
        return 0.0
    return len(raters_i & raters_j) / math.sqrt(len(raters_i) * len(raters_j))


# --- RecentPopularity --------------------------------------------------------------

# User 0's last train time is day 10. Item 1 (day 9.5) lies inside a 1-day window, item 4
# (day 9 exactly) on its open left end, item 2 (day 8.5) outside it but inside 2 days,
# item 3 (day 10.5) after user 0's last time, so never counts for user 0.
WINDOW_ROWS = [
    (0, 0, 10 * DAY),
    (1, 1, int(9.5 * DAY)),
    (1, 2, int(8.5 * DAY)),
    (2, 2, int(8.5 * DAY)),
    (2, 4, 9 * DAY),
    (3, 3, int(10.5 * DAY)),
    (3, 4, 3 * DAY),
]


@pytest.mark.parametrize(
    ("window_days", "window_counts"),
    [(1.0, [1, 1, 0, 0, 0]), (2.0, [1, 1, 2, 0, 1]), (0.25, [1, 0, 0, 0, 0])],
)
def test_recent_popularity_counts_the_window_by_hand(window_days, window_counts):
    train = _interactions(WINDOW_ROWS, n_users=5, n_items=5)
    overall = [1, 1, 2, 1, 2]  # every train interaction of each item; the tie-break is count / (max + 1)
    expected = torch.tensor([c + n / 3 for c, n in zip(window_counts, overall)])
    scores = RecentPopularity(window_days).fit(train).score([0])[0]
    torch.testing.assert_close(scores, expected)


def test_recent_popularity_tie_break_never_beats_a_window_count():
    """Item 2 is the most popular overall but absent from user 0's 1-day window; item 1 is in it."""
    model = RecentPopularity(1.0).fit(_interactions(WINDOW_ROWS, n_users=5, n_items=5))
    assert model.recommend([0], k=4)[0, 0].item() == 1
    # Among items with window count 0, overall popularity orders them (items 2 and 4 before 3).
    assert model.recommend([0], k=4)[0, 3].item() == 3


def test_recent_popularity_window_is_relative_to_each_user():
    """User 3's last time is day 10.5: the 1-day window (9.5, 10.5] holds items 0 and 3, not item 1."""
    scores = RecentPopularity(1.0).fit(_interactions(WINDOW_ROWS, n_users=5, n_items=5)).score([3])[0]
    assert scores.floor().tolist() == [1, 0, 0, 1, 0]


# --- LastItemsKNN -------------------------------------------------------------------

# User 0 watched items 0, 1, 2 in that order (timestamps 1, 2, 3), but the frame lists them
# newest first, so a model that reads frame order instead of time fails.
KNN_HISTORIES = {0: [0, 1, 2], 1: [0, 3], 2: [1, 3, 4], 3: [2, 4], 4: [2, 3], 5: [0, 1, 4]}


def _knn_train():
    rows = [(0, 2, 3), (0, 1, 2), (0, 0, 1)]
    rows += [(u, i, 10 + t) for u, items in KNN_HISTORIES.items() if u != 0 for t, i in enumerate(items)]
    return _interactions(rows, n_users=6, n_items=5)


@pytest.mark.parametrize("n_last", [1, 2, 3])
def test_last_items_knn_decays_by_position_by_hand(n_last):
    decay = 0.5
    newest_first = [2, 1, 0]
    model = LastItemsKNN(n_last=n_last, decay=decay).fit(_knn_train())
    expected = torch.tensor(
        [
            sum(decay**j * _cosine(KNN_HISTORIES, newest_first[j], i) for j in range(n_last))
            for i in range(5)
        ]
    )
    torch.testing.assert_close(model.score([0])[0], expected)


def test_last_items_knn_history_shorter_than_n_last_uses_all_items():
    """User 0 has 3 train items: n_last = 10 reads the same 3 as n_last = 3."""
    train = _knn_train()
    short = LastItemsKNN(n_last=3, decay=0.7).fit(train).score([0, 1, 2])
    long = LastItemsKNN(n_last=10, decay=0.7).fit(train).score([0, 1, 2])
    torch.testing.assert_close(long, short)


def test_last_items_knn_keeps_frame_order_within_one_second():
    """Items 4 and 3 share a second; the frame lists 3 after 4, so 3 is user 1's last item
    (an order by item index would make it 4)."""
    rows = [(1, 4, 5), (1, 3, 5), (0, 3, 1), (0, 0, 1), (2, 4, 1), (2, 1, 1)]
    train = _interactions(rows, n_users=3, n_items=5)
    scores = LastItemsKNN(n_last=1, decay=1.0).fit(train).score([1])[0]
    histories = {0: [3, 0], 1: [4, 3], 2: [4, 1]}
    expected = torch.tensor([_cosine(histories, 3, i) for i in range(5)])
    torch.testing.assert_close(scores, expected)
    assert scores[0] > 0 and scores[1] == 0  # 3's neighbour (0), not 4's (1)


def _planted_recency():
    """User 0 watched item 0 long ago and item 5 last. Item 1 is 0's neighbour (cosine 0.866),
    item 6 is 5's (cosine 0.816): a bag of items ranks 1 first, a recency model must rank 6 first."""
    rows = [(0, 0, 1), (0, 5, 100)]
    rows += [(u, i, 50) for u in (1, 2, 5) for i in (0, 1)]
    rows += [(u, i, 50) for u in (3, 4) for i in (5, 6)]
    return _interactions(rows, n_users=6, n_items=7)


def test_most_recent_items_neighbour_ranks_first():
    train = _planted_recency()
    assert ItemKNN(k=None).fit(train).recommend([0], k=1)[0, 0].item() == 1
    assert LastItemsKNN(n_last=1, decay=1.0).fit(train).recommend([0], k=1)[0, 0].item() == 6
    assert LastItemsKNN(n_last=2, decay=0.5).fit(train).recommend([0], k=1)[0, 0].item() == 6
    # Equal weights give the bag-of-items answer back.
    assert LastItemsKNN(n_last=2, decay=1.0).fit(train).recommend([0], k=1)[0, 0].item() == 1


# --- RecencyEASE --------------------------------------------------------------------


def test_recency_ease_with_decay_one_is_ease(synthetic):
    """decay = 1 weighs every history item 1: the binary matrix EASE scores with."""
    train = temporal_split(synthetic.interactions).train
    users = torch.arange(train.n_users)[train.user_counts() > 0]
    expected = EASE(l2=50.0).fit(train).score(users)
    torch.testing.assert_close(RecencyEASE(l2=50.0, decay=1.0).fit(train).score(users), expected)


def test_recency_ease_scores_decayed_rows_of_eases_weights():
    """score(0) = Σ_j decay^j B[h(j)], with B from EASE itself and user 0's history 2, 1, 0 newest first."""
    train = _knn_train()
    b = EASE(l2=2.0).fit(train).weights_
    expected = b[2] + 0.6 * b[1] + 0.36 * b[0]
    torch.testing.assert_close(RecencyEASE(l2=2.0, decay=0.6).fit(train).score([0])[0], expected)


def test_recency_ease_ranks_the_recent_neighbour_first():
    train = _planted_recency()
    assert EASE(l2=1.0).fit(train).recommend([0], k=1)[0, 0].item() == 1
    assert RecencyEASE(l2=1.0, decay=0.3).fit(train).recommend([0], k=1)[0, 0].item() == 6


# --- the interface, names and bad input ---------------------------------------------


def test_names_show_the_settings():
    assert RecentPopularity(2.5).name == "RecentPopularity(window=2.5d)"
    assert LastItemsKNN(n_last=5, decay=0.8).name == "LastItemsKNN(n_last=5, decay=0.8)"
    assert RecencyEASE(l2=300.0, decay=0.9).name == "RecencyEASE(λ=300, decay=0.9)"


@pytest.mark.parametrize(
    "model", [RecentPopularity(1.0), LastItemsKNN(3, 0.8), RecencyEASE(10.0, 0.9)], ids=lambda m: m.name
)
def test_a_user_without_train_items_is_refused_by_name(model):
    model.fit(_interactions(WINDOW_ROWS, n_users=5, n_items=5))  # user 4 has no rows
    with pytest.raises(ValueError, match="user 4 has no interactions in the training data"):
        model.score([0, 4])


@pytest.mark.parametrize(
    ("make", "argument"),
    [
        (lambda: RecentPopularity(0), "window_days"),
        (lambda: RecentPopularity(-1.0), "window_days"),
        (lambda: RecentPopularity(float("nan")), "window_days"),
        (lambda: RecentPopularity("7"), "window_days"),
        (lambda: LastItemsKNN(n_last=0), "n_last"),
        (lambda: LastItemsKNN(n_last=2.5), "n_last"),
        (lambda: LastItemsKNN(n_last=True), "n_last"),
        (lambda: LastItemsKNN(decay=0.0), "decay"),
        (lambda: LastItemsKNN(decay=1.5), "decay"),
        (lambda: LastItemsKNN(decay=float("inf")), "decay"),
        (lambda: RecencyEASE(l2=0.0), "l2"),
        (lambda: RecencyEASE(l2=-3.0), "l2"),
        (lambda: RecencyEASE(decay=0.0), "decay"),
        (lambda: RecencyEASE(decay=1.01), "decay"),
    ],
)
def test_bad_arguments_name_the_argument(make, argument):
    with pytest.raises(ValueError, match=f"^{argument} must"):
        make()


def test_long_history_with_small_decay_gives_finite_scores():
    """decay^j underflows to 0 for a long history; scores must stay finite (no NaN)."""
    rows = [(0, i, i) for i in range(400)] + [(1, i, i) for i in range(0, 400, 2)]
    train = _interactions(rows, n_users=2, n_items=401)
    for model in (LastItemsKNN(n_last=400, decay=0.01), RecencyEASE(l2=10.0, decay=0.01)):
        assert torch.isfinite(model.fit(train).score([0, 1])).all()


def test_grids_choose_inside_every_parameter_on_p1_validation(movielens):
    """RECENCY_GRIDS' promise: tune (which refuses an edge choice) accepts each grid."""
    validation = validation_split(temporal_split(movielens.interactions))
    for model in (RecentPopularity, LastItemsKNN, RecencyEASE):
        grid = RECENCY_GRIDS[model.__name__]
        assert all(3 <= len(values) <= 7 for values in grid.values())
        tune(model, grid, validation, progress=False)

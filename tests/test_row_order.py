"""Results must not depend on the order of interaction rows, nor on how a sort breaks ties.

Interactions are drawn with few distinct timestamps, so most users rate several items in one
second (as in MovieLens); shuffling the rows must leave every output unchanged. Functions that
read the order of same-second rows on purpose (the histories, which follow the split's seeded
tie-break) are held to that contract instead: only a shuffle that changes the order within a
second may change them. Seeded draws over the rows as given (P1's tie-break, subsampling,
noise, training batches) depend on the row order by design, which the loaders and the splits
fix; they are not tested here.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recutils.baselines import EASE, Popularity
from recutils.cf import ItemKNN, UserKNN
from recutils.data import make_synthetic
from recutils.ecommerce import product_table, product_texts
from recutils.embeddings import aggregate_user_vectors, user_profile_text
from recutils.perturb import inject_fake_users, restrict_test, truncate_histories
from recutils.pipeline import DatasetDescription
from recutils.recency import LastItemsKNN, RecencyEASE, RecentPopularity, recency_weights
from recutils.seqtower import last_windows, training_windows
from recutils.sequences import ordered_histories
from recutils.sequences import test_gaps as gaps_to_test  # a test_ name would be collected
from recutils.social import friend_user_vectors
from recutils.split import (
    COLUMNS,
    Interactions,
    Split,
    cold_item_split,
    cold_user_split,
    global_time_split,
    temporal_split,
    validation_split,
)

N_ITEMS = 8
QUICK = settings(max_examples=40, deadline=None)


@st.composite
def tied_interactions(draw: st.DrawFn, max_users: int = 5) -> Interactions:
    """A few users, each rating distinct items at one of three seconds: ties everywhere."""
    n_users = draw(st.integers(1, max_users))
    rows = []
    for user in range(n_users):
        items = draw(st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=N_ITEMS, unique=True))
        rows += [(user, item, draw(st.integers(1, 5)), draw(st.integers(0, 2))) for item in items]
    return Interactions(pd.DataFrame(rows, columns=list(COLUMNS)).astype(np.int64), n_users, N_ITEMS)


seeds = st.integers(0, 2**32 - 1)


def shuffled(interactions: Interactions, seed: int) -> Interactions:
    """The same interactions with their rows in a random order."""
    frame = interactions.frame.sample(frac=1, random_state=seed).reset_index(drop=True)
    return Interactions(frame, interactions.n_users, interactions.n_items)


def shuffled_keeping_ties(interactions: Interactions, seed: int) -> Interactions:
    """Rows in a random order, except that rows of one user and second keep their relative order."""
    frame = interactions.frame
    perm = np.random.default_rng(seed).permutation(len(frame))
    group = frame.iloc[perm].groupby(["user", "timestamp"]).ngroup().to_numpy()
    order = np.empty_like(perm)
    for g in np.unique(group):
        slots = np.flatnonzero(group == g)
        order[slots] = np.sort(perm[slots])
    return Interactions(frame.iloc[order].reset_index(drop=True), interactions.n_users, interactions.n_items)


def canonical(interactions: Interactions) -> pd.DataFrame:
    """The rows as a set: sorted by (user, item), which is unique."""
    return interactions.frame.sort_values(["user", "item"]).reset_index(drop=True)


def assert_same_split(a: Split, b: Split) -> None:
    for part in ("train", "test"):
        pd.testing.assert_frame_equal(canonical(getattr(a, part)), canonical(getattr(b, part)))
    assert (a.candidates is None) == (b.candidates is None)
    if a.candidates is not None:
        assert torch.equal(a.candidates, b.candidates)


def tables(interactions: Interactions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens-shaped user and item tables for the interactions."""
    users = pd.DataFrame({"age": 30, "gender": "F", "occupation": "writer"},
                         index=range(interactions.n_users))
    items = pd.DataFrame({"title": [f"Film {i}, The ({1990 + i})" for i in range(interactions.n_items)]})
    return users, items


@pytest.fixture(scope="module")
def bursts() -> Interactions:
    """Synthetic data (120 users, 12 ratings each) with each user's ratings in bursts of up to
    four within one second: large enough that pandas and numpy use their real sort kernels."""
    data = make_synthetic()
    frame = data.interactions.frame.assign(timestamp=lambda f: f["timestamp"] // 4)
    return Interactions(frame, data.interactions.n_users, data.interactions.n_items)


# --- full shuffles: nothing may change -----------------------------------------------------


@QUICK
@given(tied_interactions(), seeds)
def test_profile_texts_ignore_row_order(interactions, seed):
    users, items = tables(interactions)
    for max_titles in (1, 2, 20):
        texts = user_profile_text(users, items, interactions, min_rating=1, max_titles=max_titles)
        assert texts == user_profile_text(users, items, shuffled(interactions, seed), min_rating=1,
                                          max_titles=max_titles)


def test_profile_texts_ignore_row_order_on_bursts(bursts):
    users, items = tables(bursts)
    texts = user_profile_text(users, items, bursts, min_rating=1, max_titles=5)
    for seed in range(5):
        assert texts == user_profile_text(users, items, shuffled(bursts, seed), min_rating=1, max_titles=5)


def test_profile_lists_same_second_films_by_item_index():
    frame = pd.DataFrame({"user": 0, "item": [3, 2, 1, 0], "rating": 5, "timestamp": [7, 9, 9, 1]})
    interactions = Interactions(frame, 1, 4)
    users, items = tables(interactions)
    assert user_profile_text(users, items, interactions, demographics=False) == [
        "Liked: The Film 1, The Film 2, The Film 3, The Film 0."
    ]


@QUICK
@given(tied_interactions(), seeds)
def test_splits_ignore_row_order(interactions, seed):
    other = shuffled(interactions, seed)
    pd.testing.assert_frame_equal(  # sorted output: equal row for row
        temporal_split(interactions, tie_break="item").test.frame,
        temporal_split(other, tie_break="item").test.frame,
    )
    for make in (lambda i: cold_item_split(i, seed=3), lambda i: cold_user_split(i, seed=3)):
        split = make(interactions)
        assert_same_split(split, make(other))
        if len(split.train):
            assert_same_split(validation_split(split), validation_split(make(other)))
    try:
        split = global_time_split(interactions, quantile=0.5)
    except ValueError:  # the cut leaves no train or no warm test interaction
        return
    assert_same_split(split, global_time_split(other, quantile=0.5))


def test_splits_and_recent_popularity_ignore_row_order_on_bursts(bursts):
    splits = {
        "P1": lambda i: temporal_split(i, tie_break="item"),
        "G": global_time_split,
        "P2": cold_item_split,
        "P3": cold_user_split,
    }
    users = torch.arange(bursts.n_users)
    scores = RecentPopularity(window_days=0.01).fit(bursts).score(users)
    for seed in range(3):
        other = shuffled(bursts, seed)
        for make in splits.values():
            assert_same_split(make(bursts), make(other))
        assert torch.equal(scores, RecentPopularity(window_days=0.01).fit(other).score(users))


@QUICK
@given(tied_interactions(), seeds)
def test_p1_random_tie_break_moves_only_same_second_rows(interactions, seed):
    """P1's seeded draw is per row, so a shuffle may swap same-second rows across the boundary,
    and nothing else."""
    a, b = (temporal_split(i).test.frame for i in (interactions, shuffled(interactions, seed)))
    key = ["user", "timestamp"]
    pd.testing.assert_frame_equal(
        a[key].sort_values(key).reset_index(drop=True), b[key].sort_values(key).reset_index(drop=True)
    )
    sizes = interactions.frame.groupby(key).size()
    in_test = a.groupby(key).size().reindex(sizes.index, fill_value=0)
    straddling = sizes.index[(in_test > 0) & (in_test < sizes)]

    def elsewhere(test: pd.DataFrame) -> set[tuple[int, int]]:
        rows = test[~test.set_index(key).index.isin(straddling)]
        return set(map(tuple, rows[["user", "item"]].to_numpy().tolist()))

    assert elsewhere(a) == elsewhere(b)


@QUICK
@given(tied_interactions(), seeds)
def test_pipeline_interactions_ignore_row_order(interactions, seed):
    """Ids mapped to indices, and a repeated pair (later in time) dropped, whatever the order."""
    frame = interactions.frame.assign(user=lambda f: f["user"] + 100, item=lambda f: f["item"] + 50)
    repeats = frame.iloc[::2].assign(timestamp=lambda f: f["timestamp"] + 10, rating=1)
    items = pd.DataFrame({"item": np.arange(50, 50 + N_ITEMS)})

    def build(rows: pd.DataFrame) -> Interactions:
        description = DatasetDescription("tied", rows, "user", "item", items, item_text="item",
                                         time="timestamp", rating="rating")
        with pytest.warns(UserWarning, match="repeated"):
            return description.to_interactions()

    rows = pd.concat([frame, repeats])
    other = rows.sample(frac=1, random_state=seed)
    pd.testing.assert_frame_equal(canonical(build(rows)), canonical(build(other)))


@QUICK
@given(tied_interactions(), seeds)
def test_models_and_features_ignore_row_order(interactions, seed):
    other = shuffled(interactions, seed)
    users = torch.arange(interactions.n_users)
    models = [Popularity, EASE, lambda: ItemKNN(k=2), lambda: RecentPopularity(window_days=1e-5)]
    if interactions.n_users > 1:
        models.append(lambda: UserKNN(k=1))
    for make in models:
        a, b = make().fit(interactions), make().fit(other)
        assert torch.equal(a.score(users), b.score(users))
        assert torch.equal(a.ranks(users), b.ranks(users))
    vectors = torch.randn(N_ITEMS, 4, generator=torch.Generator().manual_seed(0))
    for weighting in ("mean", "rating", "recency"):
        torch.testing.assert_close(  # sums in another order: equal to rounding
            aggregate_user_vectors(interactions, vectors, weighting),
            aggregate_user_vectors(other, vectors, weighting),
        )
    friends = [np.array([(u + 1) % interactions.n_users]) for u in range(interactions.n_users)]
    torch.testing.assert_close(friend_user_vectors(interactions, vectors, friends),
                               friend_user_vectors(other, vectors, friends))


@QUICK
@given(tied_interactions(), seeds)
def test_perturbations_and_gaps_ignore_row_order(interactions, seed):
    split = temporal_split(interactions, tie_break="item")
    other = Split("P1", shuffled(split.train, seed), shuffled(split.test, seed))
    assert np.array_equal(np.sort(gaps_to_test(split)), np.sort(gaps_to_test(other)))
    users = torch.tensor([0])
    assert_same_split(truncate_histories(split, users, keep=1), truncate_histories(other, users, keep=1))
    assert_same_split(restrict_test(split, users), restrict_test(other, users))
    if len(split.train):  # fakes are timed after the last train interaction
        filler = torch.tensor([0, 1])
        assert_same_split(inject_fake_users(split, 2, 2, filler), inject_fake_users(other, 2, 2, filler))


def test_product_table_and_texts_ignore_row_order():
    reviews = pd.DataFrame({
        "clothing_id": [10, 10, 10, 10, 20, 20, 30],
        "title": ["Lovely", "Small", "Bright", pd.NA, "Warm", "Cosy", "Long"],
        "positive_feedback_count": [1, 5, 1, 5, 2, 2, 0],
        "department": ["Tops", "Tops", "Tops", "Tops", pd.NA, "Jackets", pd.NA],
        # Reviews disagree: the most common class wins, and a tie goes to the first alphabetically.
        "class_name": ["Knits", "Blouses", "Blouses", "Knits", "Outerwear", "Jackets", pd.NA],
        "item": [0, 0, 0, 0, 1, 1, 2],
    })
    table = product_table(reviews)
    assert table["class_name"].tolist() == ["Blouses", "Jackets", "unknown"]
    assert table["department"].tolist() == ["Tops", "Jackets", "unknown"]
    for seed in range(5):
        pd.testing.assert_frame_equal(table, product_table(reviews.sample(frac=1, random_state=seed)))
    frame = pd.DataFrame({"user": range(7), "item": reviews["item"], "rating": 5, "timestamp": 0})
    train = Interactions(frame, 7, 3)
    texts = product_texts(reviews, table, train)
    assert texts[0] == "Tops, Blouses. Reviews: Small; Lovely; Bright."
    for seed in range(5):
        assert texts == product_texts(reviews, table, shuffled(train, seed))


# --- shuffles that keep each second's order: histories follow the split's tie-break ----------


@QUICK
@given(tied_interactions(), seeds)
def test_histories_follow_row_order_only_within_a_second(interactions, seed):
    other = shuffled_keeping_ties(interactions, seed)
    a, b = ordered_histories(interactions), ordered_histories(other)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    users = torch.arange(interactions.n_users)
    assert torch.equal(last_windows(a, users, 3), last_windows(b, users, 3))
    if any(len(h) > 1 for h in a):
        for x, y in zip(training_windows(a, 3), training_windows(b, 3), strict=True):
            assert torch.equal(x, y)
    assert torch.equal(recency_weights(interactions, 0.5), recency_weights(other, 0.5))
    for make in (lambda: LastItemsKNN(n_last=2), lambda: RecencyEASE(decay=0.5)):
        assert torch.equal(make().fit(interactions).ranks(users), make().fit(other).ranks(users))


def test_histories_follow_row_order_only_within_a_second_on_bursts(bursts):
    reference = ordered_histories(bursts)
    for seed in range(5):
        histories = ordered_histories(shuffled_keeping_ties(bursts, seed))
        assert all(np.array_equal(x, y) for x, y in zip(reference, histories, strict=True))

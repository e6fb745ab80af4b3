import math

import pandas as pd
import pytest
import torch

from recutils.split import (
    Interactions,
    cold_item_split,
    cold_user_split,
    global_time_split,
    leak_share,
    temporal_split,
    validation_split,
)


def _interactions(rows, n_users=3, n_items=10):
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), n_users, n_items)


def test_p1_holds_out_the_latest_fifth_with_item_tie_break():
    # User 0: 6 interactions -> ceil(6/5) = 2 test; items 7 and 3 share the last timestamp.
    rows = [(0, i, 4, t) for i, t in [(1, 10), (2, 20), (5, 30), (6, 40), (7, 50), (3, 50)]]
    # User 1: 5 interactions -> 1 test; user 2: a single interaction -> test only.
    rows += [(1, i, 3, 100 + i) for i in range(5)] + [(2, 9, 5, 7)]
    split = temporal_split(_interactions(rows), tie_break="item")
    test = split.test.frame
    assert sorted(test[test.user == 0].item) == [3, 7]
    assert list(test[test.user == 1].item) == [4]
    assert list(test[test.user == 2].item) == [9]
    assert len(split.train) + len(split.test) == len(rows)
    assert split.protocol == "P1" and split.candidates is None


def test_p1_on_movielens_tests_ceil_n_over_5(movielens):
    split = temporal_split(movielens.interactions)
    n = movielens.interactions.user_counts()
    assert torch.equal(split.test.user_counts(), torch.tensor([math.ceil(c / 5) for c in n.tolist()]))
    merged = pd.concat([split.train.frame, split.test.frame])
    assert len(merged.drop_duplicates(["user", "item"])) == 100_000
    # No train interaction of a user is later than any of their test interactions.
    last_train = split.train.frame.groupby("user").timestamp.max()
    first_test = split.test.frame.groupby("user").timestamp.min()
    assert (last_train <= first_test.loc[last_train.index]).all()


def test_p2_cold_items_have_no_train_interactions(movielens):
    split = cold_item_split(movielens.interactions)
    cold = split.candidates
    assert int(cold.sum()) == math.ceil(0.2 * 1_682)
    assert not cold[split.train.column("item")].any()
    assert cold[split.test.column("item")].all()
    assert len(split.train) + len(split.test) == 100_000
    assert torch.equal(cold, cold_item_split(movielens.interactions).candidates)  # seeded
    assert not torch.equal(cold, cold_item_split(movielens.interactions, seed=1).candidates)


def test_validation_repeats_the_protocol_on_train(movielens):
    p1 = temporal_split(movielens.interactions)
    val = validation_split(p1)
    assert val.protocol == "P1"
    assert len(val.train) + len(val.test) == len(p1.train)
    p2 = cold_item_split(movielens.interactions)
    val2 = validation_split(p2)
    # Validation cold items are drawn among items that still have train interactions.
    assert not (val2.candidates & p2.candidates).any()
    assert len(val2.train) + len(val2.test) == len(p2.train)


def test_bad_inputs():
    with pytest.raises(ValueError, match="missing"):
        Interactions(pd.DataFrame({"user": [0], "item": [0]}), 1, 1)
    with pytest.raises(ValueError, match="item indices must lie in 0..4"):
        _interactions([(0, 5, 1, 0)], n_items=5)
    with pytest.raises(ValueError, match="empty"):
        temporal_split(_interactions([]))
    with pytest.raises(ValueError, match="cold_fraction"):
        cold_item_split(_interactions([(0, 1, 1, 0)]), cold_fraction=1.5)


def test_matrix_and_counts():
    inter = _interactions([(0, 1, 4, 0), (2, 3, 2, 0), (2, 1, 5, 0)], n_users=3, n_items=4)
    assert inter.matrix().tolist() == [[0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]]
    assert inter.matrix(binary=False)[2].tolist() == [0, 5, 0, 2]
    assert inter.user_counts().tolist() == [1, 0, 2] and inter.item_counts().tolist() == [0, 2, 0, 1]
    assert {u: sorted(v) for u, v in inter.items_by_user().items()} == {0: [1], 2: [1, 3]}


def test_cold_user_split_holds_out_whole_users(movielens):
    split = cold_user_split(movielens.interactions)
    train_users = set(split.train.frame["user"])
    test_users = set(split.test.frame["user"])
    assert not train_users & test_users
    assert len(test_users) == math.ceil(0.2 * 943)
    assert len(split.train) + len(split.test) == len(movielens.interactions)
    assert split.candidates is None
    again = cold_user_split(movielens.interactions)
    assert test_users == set(again.test.frame["user"])
    inner = validation_split(split)
    assert inner.protocol == "P3" and not set(inner.test.frame["user"]) & test_users
    assert len(inner.train) + len(inner.test) == len(split.train)
    with pytest.raises(ValueError, match="cold_fraction"):
        cold_user_split(movielens.interactions, cold_fraction=1.0)


def test_p1_random_tie_break_does_not_follow_item_index():
    # One user rates 40 films in the same second; 8 become test. Ordered by item index the
    # test set is always the 8 highest ids; a random order picks others, fixed by the seed.
    rows = [(0, i, 4, 100) for i in range(40)]
    by_item = temporal_split(_interactions(rows, n_users=1, n_items=40), tie_break="item")
    assert sorted(by_item.test.frame.item) == list(range(32, 40))
    draws = [
        sorted(temporal_split(_interactions(rows, n_users=1, n_items=40), seed=seed).test.frame.item)
        for seed in (0, 0, 1)
    ]
    assert draws[0] == draws[1] and draws[0] != draws[2]
    assert draws[0] != list(range(32, 40)) and len(draws[0]) == 8


def test_p1_tie_break_only_reorders_within_a_second():
    rows = [(0, 9, 4, 10), (0, 8, 4, 20), (0, 1, 4, 30), (0, 2, 4, 30), (0, 3, 4, 40)]
    for seed in range(5):
        split = temporal_split(_interactions(rows, n_users=1), seed=seed)
        assert list(split.test.frame.item) == [3]  # the single latest rating is always test


def test_global_split_has_no_train_interaction_after_any_test_one(movielens):
    split = global_time_split(movielens.interactions, quantile=0.8)
    assert split.protocol == "G"
    assert split.train.frame.timestamp.max() < split.test.frame.timestamp.min()
    # Only warm users and items are tested.
    assert split.test.frame.user.isin(split.train.frame.user).all()
    assert split.test.frame.item.isin(split.train.frame.item).all()
    assert leak_share(split) == 0.0
    validation = validation_split(split)
    assert validation.protocol == "G"
    assert validation.train.frame.timestamp.max() < validation.test.frame.timestamp.min()
    assert validation.test.frame.timestamp.max() < split.test.frame.timestamp.min()


def test_global_split_by_hand():
    # Timestamps 1..10; the 0.8 quantile (lower) is 8: train is t < 8, test t >= 8 for warm users/items.
    rows = [(0, 0, 4, 1), (0, 1, 4, 2), (1, 0, 4, 3), (1, 2, 4, 4), (0, 3, 4, 5), (1, 1, 4, 6), (0, 2, 4, 7)]
    rows += [(0, 4, 4, 8), (1, 3, 4, 9), (2, 0, 4, 10)]  # item 4 is cold; user 2 is new
    split = global_time_split(_interactions(rows, n_users=3, n_items=5))
    assert len(split.train) == 7
    assert list(zip(split.test.frame.user, split.test.frame.item)) == [(1, 3)]


def test_p1_leaks_other_users_future(movielens):
    # The per-user split keeps other users' later ratings in train (the reason for G).
    assert leak_share(temporal_split(movielens.interactions)) > 0.2


def test_split_arguments_are_checked():
    interactions = _interactions([(0, 1, 4, 1), (0, 2, 4, 2)])
    for bad in (0, 1, -5, 2.5, True):
        with pytest.raises(ValueError, match="test_share"):
            temporal_split(interactions, test_share=bad)
    with pytest.raises(ValueError, match="tie_break"):
        temporal_split(interactions, tie_break="lowest")
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="quantile"):
            global_time_split(interactions, quantile=bad)


def test_fingerprint_is_a_content_hash():
    a = _interactions([(0, 1, 4, 1), (1, 2, 4, 2)])
    swapped = _interactions([(0, 2, 4, 1), (1, 1, 4, 2)])  # same sizes and index sums
    reordered = _interactions([(1, 2, 4, 2), (0, 1, 4, 1)])
    assert a.fingerprint() != swapped.fingerprint()
    assert a.fingerprint() == reordered.fingerprint()

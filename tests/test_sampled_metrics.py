import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

from recutils.metrics import sample_negatives, sampled_evaluate
from recutils.recommender import Recommender
from recutils.split import Interactions, leave_last_out_split, temporal_split

N_ITEMS = 12


class _Fixed(Recommender):
    """Scores every user with the same given (n_items,) scores."""

    def __init__(self, scores):
        self.fixed = torch.as_tensor(scores, dtype=torch.float32)

    def _fit(self, train):
        pass

    def _score(self, users):
        return self.fixed.expand(len(users), -1).clone()


class _Oracle(Recommender):
    """Scores each user's held-out item 1, everything else 0."""

    def __init__(self, split):
        self.test = split.test.matrix()

    def _fit(self, train):
        pass

    def _score(self, users):
        return self.test[users]


@pytest.fixture
def split():
    # Users 0..2 rate items in time order; the last is test: user 0 -> 5, user 1 -> 9, user 2 -> 2.
    rows = [(0, 0, 4, 1), (0, 1, 4, 2), (0, 5, 4, 3), (1, 3, 4, 1), (1, 9, 4, 2), (2, 7, 4, 1), (2, 2, 4, 2)]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    # Every item is a candidate, so the hand counts below need not track which items have rows.
    return dataclasses.replace(leave_last_out_split(Interactions(frame, 3, N_ITEMS)), candidates=None)


def test_a_model_that_scores_the_held_out_item_first_scores_one(split):
    result = sampled_evaluate(_Oracle(split).fit(split.train), split, n_negatives=5, seed=3, k=1)
    assert result["sampled NDCG@1"].iloc[0] == 1.0 and result["sampled Recall@1"].iloc[0] == 1.0
    assert (result["negatives"].iloc[0], result["users"].iloc[0]) == (5, 3)


def test_explicit_negatives_give_the_hand_computed_ranks(split):
    # Lower item index scores higher. Held-out items: 5, 9, 2.
    model = _Fixed(-torch.arange(N_ITEMS)).fit(split.train)
    negatives = torch.tensor([[3, 4, 6, 7], [0, 1, 2, 4], [10, 11, 8, 6]])
    summary, table = sampled_evaluate(model, split, k=2, negatives=negatives, per_user=True)
    # User 0: 3 and 4 beat 5 -> rank 3; user 1: all four beat 9 -> rank 5; user 2: none beat 2 -> 1.
    assert table["rank"].tolist() == [3, 5, 1]
    assert table["sampled Recall@2"].tolist() == [0.0, 0.0, 1.0]
    assert table["sampled NDCG@2"].tolist() == [0.0, 0.0, 1.0]
    rank3 = sampled_evaluate(model, split, k=3, negatives=negatives)
    assert rank3["sampled NDCG@3"].iloc[0] == pytest.approx((1 / math.log2(4) + 0 + 1) / 3)
    assert summary["sampled Recall@2"].iloc[0] == pytest.approx(1 / 3)


def test_ties_are_broken_as_recommend_breaks_them(split):
    # Equal scores everywhere: only the fixed random tie order decides.
    model = _Fixed(torch.zeros(N_ITEMS)).fit(split.train)
    users, negatives = sample_negatives(split, n_negatives=4, seed=0)
    _, table = sampled_evaluate(model, split, k=5, negatives=negatives, per_user=True)
    held_out = split.test.frame.sort_values("user")["item"].to_numpy()
    for row, user in enumerate(users.tolist()):
        allowed = torch.zeros(N_ITEMS, dtype=torch.bool)
        allowed[negatives[row]] = True
        allowed[held_out[row]] = True
        ranking = model.recommend(user, 5, candidates=allowed)[0].tolist()
        assert ranking.index(held_out[row]) + 1 == table["rank"].iloc[row]


def test_sampled_rank_averages_to_its_expectation():
    # One user, 20 items, 1 train item; the model ranks the held-out item 7th of the 18 unseen
    # others + itself. With n of the N - 1 = 18 other unseen items drawn uniformly, the expected
    # sampled rank is 1 + n (r - 1) / (N - 1) = 1 + 6 * 6 / 18 = 3.
    frame = pd.DataFrame([(0, 19, 1, 0), (0, 6, 1, 1)], columns=["user", "item", "rating", "timestamp"])
    one = dataclasses.replace(leave_last_out_split(Interactions(frame, 1, 20)), candidates=None)
    model = _Fixed(-torch.arange(20)).fit(one.train)
    ranks = [
        sampled_evaluate(model, one, n_negatives=6, seed=s, k=7, per_user=True)[1]["rank"].iloc[0]
        for s in range(300)
    ]
    # Hypergeometric: sd of one draw is sqrt(6 * 6/18 * 12/18 * 12/17) ~ 1.09; of the mean ~ 0.063.
    assert np.mean(ranks) == pytest.approx(3.0, abs=0.25)


def test_negatives_are_unseen_distinct_candidates_and_seeded(split):
    candidates = torch.ones(N_ITEMS, dtype=torch.bool)
    candidates[[10, 11]] = False
    restricted = dataclasses.replace(split, candidates=candidates)
    users, negatives = sample_negatives(restricted, n_negatives=6, seed=1)
    seen = {0: {0, 1, 5}, 1: {3, 9}, 2: {7, 2}}
    for user, row in zip(users.tolist(), negatives.tolist(), strict=True):
        assert len(set(row)) == 6
        assert not set(row) & (seen[user] | {10, 11})
    assert torch.equal(negatives, sample_negatives(restricted, n_negatives=6, seed=1)[1])
    assert not torch.equal(negatives, sample_negatives(restricted, n_negatives=6, seed=2)[1])


def test_bad_inputs(split):
    model = _Fixed(torch.zeros(N_ITEMS)).fit(split.train)
    # User 0 has 3 seen items of 12: 9 are left.
    with pytest.raises(ValueError, match="n_negatives=10 is more than the 9 items user 0"):
        sampled_evaluate(model, split, n_negatives=10)
    with pytest.raises(ValueError, match="positive integer"):
        sample_negatives(split, n_negatives=0)
    with pytest.raises(ValueError, match="longer than the sampled list of 4"):
        sampled_evaluate(model, split, n_negatives=3, k=5)
    with pytest.raises(ValueError, match="negative item 0 of user 0 is one the user interacted with"):
        sampled_evaluate(model, split, negatives=torch.tensor([[0, 4], [0, 1], [0, 1]]))
    restricted = dataclasses.replace(split, candidates=torch.arange(N_ITEMS) < 11)
    with pytest.raises(ValueError, match="negative item 11 is not among the split's candidates"):
        sampled_evaluate(model, restricted, negatives=torch.tensor([[3, 4], [0, 1], [0, 11]]))
    with pytest.raises(ValueError, match=r"\(3, n\) tensor"):
        sampled_evaluate(model, split, negatives=torch.tensor([[3, 4]]))
    with pytest.raises(ValueError, match="not fitted on this train data"):
        sampled_evaluate(_Fixed(torch.zeros(N_ITEMS)), split)
    frame = pd.DataFrame([(0, i, 1, i) for i in range(10)], columns=["user", "item", "rating", "timestamp"])
    p1 = temporal_split(Interactions(frame, 1, N_ITEMS))  # 2 test items
    with pytest.raises(ValueError, match="several test items.*P4"):
        sampled_evaluate(_Fixed(torch.zeros(N_ITEMS)).fit(p1.train), p1, n_negatives=1)

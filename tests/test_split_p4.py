import pandas as pd
import pytest
import torch

from recutils.baselines import Popularity
from recutils.metrics import evaluate
from recutils.recommender import Recommender
from recutils.split import Interactions, k_core, leave_last_out_split, p4_splits, validation_split
from recutils.training import check_validation


def _interactions(rows, n_users=4, n_items=8):
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), n_users, n_items)


def _pairs(part):
    return set(zip(part.frame["user"], part.frame["item"]))


def test_k_core_repeats_until_stable_and_keeps_the_index_space():
    rows = [(0, 0, 4, 1), (0, 1, 4, 2), (1, 0, 3, 1), (1, 1, 3, 1), (2, 0, 5, 5), (2, 4, 5, 6), (3, 2, 1, 3)]
    # Pass 1 (k=2) drops item 4 (one row), item 2 and user 3 (one row each); user 2 then holds
    # only item 0, so pass 2 drops user 2 as well. Items 0 and 1 keep two rows each.
    core = k_core(_interactions(rows), k=2)
    assert _pairs(core) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert (core.n_users, core.n_items) == (4, 8)
    assert core.user_counts().tolist() == [2, 2, 0, 0]
    # One pass over users, then items, would have kept user 2's lone row.
    assert core.user_counts()[core.user_counts() > 0].min() >= 2
    assert core.item_counts()[core.item_counts() > 0].min() >= 2
    assert len(k_core(_interactions(rows), k=1)) == len(rows)


def test_same_second_ties_go_to_the_lower_item_and_row_order_does_not_matter():
    rows = [(0, 5, 4, 100), (0, 2, 4, 100), (0, 7, 4, 50), (1, 3, 2, 10), (1, 6, 2, 20), (1, 1, 2, 30)]
    split = leave_last_out_split(_interactions(rows, n_users=2))
    assert split.protocol == "P4"
    # User 0: item 7 (t=50), then items 2 and 5 at t=100 in item order: 5 is last.
    assert dict(zip(split.test.frame["user"], split.test.frame["item"])) == {0: 5, 1: 1}
    validation = validation_split(split)
    assert dict(zip(validation.test.frame["user"], validation.test.frame["item"])) == {0: 2, 1: 6}
    assert _pairs(validation.train) == {(0, 7), (1, 3)}
    for seed in range(5):
        shuffled = _interactions(pd.DataFrame(rows).sample(frac=1, random_state=seed).to_numpy(), n_users=2)
        again = leave_last_out_split(shuffled)
        assert again.train.frame.equals(split.train.frame) and again.test.frame.equals(split.test.frame)


def test_validation_and_test_are_disjoint_with_one_item_per_user():
    rows = [(u, (u + j) % 6, 3, 10 * j) for u in range(4) for j in range(5)]  # every item 3+ times
    split, validation = p4_splits(_interactions(rows), k=3)
    for part in (split.test, validation.test):
        assert part.user_counts().tolist() == [1, 1, 1, 1]
    assert not _pairs(split.test) & _pairs(validation.test)
    assert not _pairs(split.test) & _pairs(split.train)
    # At test time the history is train + validation: split.train is validation's two parts.
    assert _pairs(split.train) == _pairs(validation.train) | _pairs(validation.test)
    assert len(split.train) + len(split.test) == len(rows)
    assert torch.equal(validation.candidates, split.candidates)
    check_validation(validation, split.train)  # what the learned models' early stopping requires


class _LowestIndexFirst(Recommender):
    """Scores an item higher the lower its index: it would pick the filtered-out item 0 first."""

    def _fit(self, train):
        pass

    def _score(self, users):
        return -torch.arange(self.train_.n_items, dtype=torch.float32).expand(len(users), -1)


def test_filtered_items_are_never_ranked_and_history_is_excluded():
    # Item 0 has a single row, so a 2-core drops it; users 0..3 keep four items each.
    rows = [(u, i, 3, 10 * i) for u in range(4) for i in range(1, 5)] + [(0, 0, 1, 100)]
    split = leave_last_out_split(k_core(_interactions(rows, n_items=6), k=2))
    assert split.candidates.tolist() == [False, True, True, True, True, False]
    model = _LowestIndexFirst().fit(split.train)
    recommended = model.recommend(torch.arange(4), 1, candidates=split.candidates)
    # Everything but the last item (4) is history, so item 4 is the only rankable one.
    assert recommended.flatten().tolist() == [4, 4, 4, 4]
    assert float(evaluate(model, split, k=1)["Recall@1"].iloc[0]) == 1.0


def test_bad_inputs():
    empty = _interactions([])
    with pytest.raises(ValueError, match="positive integer"):
        k_core(_interactions([(0, 0, 1, 0)]), k=0)
    with pytest.raises(ValueError, match="empty"):
        k_core(empty)
    with pytest.raises(ValueError, match="empty"):
        leave_last_out_split(empty)
    with pytest.raises(ValueError, match="no interactions survive a 3-core"):
        k_core(_interactions([(0, 0, 1, 0), (0, 1, 1, 1)]), k=3)
    with pytest.raises(ValueError, match="1 users have a single interaction.*user 1.*k_core"):
        leave_last_out_split(_interactions([(0, 0, 1, 0), (0, 1, 1, 1), (1, 2, 1, 0)]))
    # Two interactions make a test split but leave no validation history.
    two = leave_last_out_split(_interactions([(0, 0, 1, 0), (0, 1, 1, 1)]))
    with pytest.raises(ValueError, match="k >= 3 for its validation"):
        validation_split(two)
    with pytest.raises(ValueError, match="P4 needs k >= 3"):
        p4_splits(_interactions([(0, 0, 1, 0)]), k=2)


def test_p4_on_movielens_matches_the_published_preparation(movielens):
    split, validation = p4_splits(movielens.interactions)
    # All ratings of ML-100K, 5-core: every user already has >= 20 ratings; 333 films drop out.
    assert int((split.train.user_counts() > 0).sum()) == 943
    assert int(split.candidates.sum()) == 1349
    assert len(split.train) + len(split.test) == 99_287
    assert (len(split.test), len(validation.test)) == (943, 943)
    assert len(validation.train) == 99_287 - 2 * 943
    assert float(evaluate(Popularity().fit(split.train), split)["NDCG@10"].iloc[0]) > 0

import pandas as pd
import pytest
import torch

from recutils.baselines import EASE, Popularity, RandomRecommender
from recutils.metrics import evaluate, tune
from recutils.perturb import ExcludeConsumed
from recutils.recommender import Recommender
from recutils.split import Interactions, temporal_split, validation_split


class Constant(Recommender):
    """Every item scores the same: only the tie-break decides the order."""

    needs_history = False

    def _fit(self, train):
        pass

    def _score(self, users):
        return torch.zeros(len(users), self.train_.n_items)


class Broken(Constant):
    def _score(self, users):
        return torch.full((len(users), self.train_.n_items), float("nan"))


def _tiny():
    rows = [(0, 0, 5, 1), (0, 1, 4, 2), (1, 2, 3, 3), (2, 0, 1, 4), (2, 3, 2, 5)]
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), 4, 6)


def test_recommend_excludes_seen_items_and_respects_candidates():
    model = Popularity().fit(_tiny())
    top = model.recommend([0, 2], k=3)
    assert not set(top[0].tolist()) & {0, 1} and not set(top[1].tolist()) & {0, 3}
    with_seen = model.recommend([0], k=2, exclude_seen=False)
    assert with_seen[0, 0] == 0 and int(with_seen[0, 1]) in {1, 2, 3}
    candidates = torch.tensor([False, False, False, False, True, True])
    assert set(model.recommend([1], k=2, candidates=candidates)[0].tolist()) == {4, 5}


def test_ties_are_broken_by_a_fixed_random_order_not_by_index():
    model = Constant().fit(_tiny())
    first = model.recommend([3], k=6)[0].tolist()
    assert sorted(first) == list(range(6)) and first != list(range(6))
    assert Constant().fit(_tiny()).recommend([3], k=6)[0].tolist() == first


def test_clear_errors():
    model = Popularity().fit(_tiny())
    with pytest.raises(
        ValueError, match=r"user index 7 is not in the training data \(4 users, indices 0..3\)"
    ):
        model.score([7])
    with pytest.raises(ValueError, match="no users"):
        model.recommend([], k=1)
    with pytest.raises(ValueError, match="k=5 is larger than the 4 items user 0 can be recommended"):
        model.recommend([0, 1], k=5)
    with pytest.raises(ValueError, match="positive integer"):
        model.recommend([0], k=0)
    with pytest.raises(ValueError, match="bool tensor"):
        model.recommend([0], k=1, candidates=torch.ones(3, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="not fitted"):
        Popularity().score([0])
    with pytest.raises(ValueError, match="NaN scores"):
        Broken().fit(_tiny()).recommend([0], k=1)
    with pytest.raises(ValueError, match="user 3 has no interactions in the training data"):
        EASE(l2=1.0).fit(_tiny()).score([3])
    with pytest.raises(ValueError, match="empty"):
        Popularity().fit(Interactions(_tiny().frame.iloc[:0], 4, 6))
    with pytest.raises(ValueError, match="l2 must be positive"):
        EASE(l2=0)


def test_popularity_and_random():
    model = Popularity().fit(_tiny())
    assert model.score([1])[0].tolist() == [2, 1, 1, 1, 0, 0]
    a, b = RandomRecommender(seed=1).fit(_tiny()), RandomRecommender(seed=1).fit(_tiny())
    assert torch.equal(a.score([0, 1]), b.score([0, 1]))
    assert not torch.equal(a.score([0]), RandomRecommender(seed=2).fit(_tiny()).score([0]))


def test_ease_matches_per_column_ridge_regression():
    # Independent derivation: with diag(B) = 0, column j of B is the ridge regression
    # of item j's column on the other items' columns.
    torch.manual_seed(0)
    x = (torch.rand(30, 8) < 0.4).float()
    rows = [(u, i, 1, 0) for u, i in torch.nonzero(x).tolist()]
    train = Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), 30, 8)
    l2 = 3.0
    weights = EASE(l2=l2).fit(train).weights_.double()
    xd = x.double()
    for j in range(8):
        others = [i for i in range(8) if i != j]
        a = xd[:, others]
        expected = torch.linalg.solve(a.T @ a + l2 * torch.eye(7, dtype=torch.float64), a.T @ xd[:, j])
        assert torch.allclose(weights[others, j], expected, atol=1e-5)
        assert weights[j, j] == 0


def test_ease_solutions_are_shared_only_between_equal_data_and_l2():
    train = _tiny()
    first, again = EASE(l2=3.0).fit(train), EASE(l2=3.0).fit(_tiny())  # equal data, another object
    assert again.weights_ is first.weights_
    assert EASE(l2=30.0).fit(train).weights_ is not first.weights_
    other = Interactions(train.frame.assign(item=train.frame["item"].replace({3: 4})), 4, 6)
    assert not torch.equal(EASE(l2=3.0).fit(other).weights_, first.weights_)


def test_excluding_consumed_items_leaves_the_shared_seen_matrix_alone():
    train = _tiny()
    seen = train.seen().clone()
    consumed = Interactions(pd.DataFrame([(1, 5, 1, 9)], columns=["user", "item", "rating", "timestamp"]), 4, 6)
    wrapped = ExcludeConsumed(Popularity().fit(train), consumed).fit(train)
    assert wrapped.seen_[1, 5] and not train.seen()[1, 5]
    assert torch.equal(train.seen(), seen)
    assert set(wrapped.recommend([1], k=4)[0].tolist()) == {0, 1, 3, 4}  # user 1 saw item 2, consumed item 5


def test_ease_recovers_planted_clusters(synthetic):
    split = temporal_split(synthetic.interactions)
    ease = evaluate(EASE(l2=10.0).fit(split.train), split)
    rand = evaluate(RandomRecommender().fit(split.train), split)
    assert ease["NDCG@10"].iloc[0] > 2 * rand["NDCG@10"].iloc[0]
    top = EASE(l2=10.0).fit(split.train).recommend(torch.arange(30), k=5)
    clusters = torch.tensor(synthetic.items["cluster"].to_numpy())[top]
    own = torch.tensor(synthetic.users["cluster"].to_numpy()[:30]).unsqueeze(1)
    assert (clusters == own).float().mean() > 0.9


def test_evaluate_refuses_a_model_fitted_elsewhere(synthetic):
    split = temporal_split(synthetic.interactions)
    with pytest.raises(ValueError, match="fitted on other data"):
        evaluate(Popularity().fit(synthetic.interactions), split)
    with pytest.raises(RuntimeError, match="not fitted"):
        evaluate(Popularity(), split)


def test_evaluate_table_and_per_user(synthetic):
    split = temporal_split(synthetic.interactions)
    summary, per_user = evaluate(Popularity().fit(split.train), split, k=5, per_user=True)
    assert list(summary.columns) == [
        "Precision@5",
        "Recall@5",
        "NDCG@5",
        "HitRate@5",
        "MAP@5",
        "Coverage@5",
        "users",
    ]
    assert summary.index[0] == "Popularity"
    assert summary["users"].iloc[0] == len(per_user) == 120
    assert summary["NDCG@5"].iloc[0] == pytest.approx(per_user["NDCG@5"].mean())


def test_tune_picks_the_best_validation_setting(synthetic):
    split = temporal_split(synthetic.interactions)
    val = validation_split(split)
    best, table = tune(EASE, {"l2": [1.0, 10.0, 1e6]}, val, allow_edge=True)
    assert len(table) == 3 and best["l2"] == table.loc[table["NDCG@10"].idxmax(), "l2"]
    assert isinstance(best["l2"], float)
    with pytest.raises(ValueError, match="unknown metric"):
        tune(EASE, {"l2": [1.0]}, val, metric="AUC")
    with pytest.raises(ValueError, match="at least one value"):
        tune(EASE, {"l2": []}, val)


def test_text_popularity_predicts_cold_items_from_their_vectors():
    from recutils.baselines import TextPopularity
    from recutils.split import cold_item_split

    # Item i has i % 5 + 1 interactions, and its vector says so.
    rows, user = [], 0
    for item in range(40):
        for _ in range(item % 5 + 1):
            rows.append((user % 30, item, 5, user))
            user += 1
    inter = Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), 30, 40)
    vectors = torch.stack([torch.tensor([float(i % 5), 1.0]) for i in range(40)])
    split = cold_item_split(inter, cold_fraction=0.25)
    model = TextPopularity(vectors, l2=1e-3).fit(split.train)
    cold = torch.nonzero(split.candidates).squeeze(1)
    predicted = model.score([0])[0, cold]
    order = torch.argsort(predicted)
    assert torch.all(torch.diff(torch.tensor([i % 5 for i in cold[order].tolist()])) >= 0)
    with pytest.raises(ValueError, match="item_vectors has 3 rows"):
        TextPopularity(vectors[:3]).fit(split.train)


def test_ranks_agree_with_recommend():
    model = Popularity().fit(_tiny())
    ranks = model.ranks([0, 2])
    top = model.recommend([0, 2], k=4)
    for row in range(2):
        assert ranks[row, top[row]].tolist() == [1, 2, 3, 4]
    assert sorted(ranks[0].tolist()) == list(range(1, 7))
    assert ranks[0, 0] > 4 and ranks[0, 1] > 4  # seen items come last



class Given(Recommender):
    """Scores given up front, one row per user (issue 28: non-finite scores)."""

    needs_history = False

    def __init__(self, scores):
        self.scores = scores

    def _fit(self, train):
        pass

    def _score(self, users):
        return self.scores[users]


def test_nan_and_plus_inf_scores_raise_naming_the_model_the_count_and_the_first_entry():
    scores = torch.zeros(4, 6)
    scores[2, 4] = scores[3, 1] = float("nan")
    model = Given(scores).fit(_tiny())
    message = r"Given: NaN scores for 2 of 18 \(user, item\) pairs, the first user 2, item 4; a NaN score is"
    for call in (lambda: model.score([0, 2, 3]), lambda: model.recommend([0, 2, 3], k=1)):
        with pytest.raises(ValueError, match=message):
            call()
    with pytest.raises(ValueError, match=r"NaN scores for 1 of 6 \(user, item\) pairs, the first user 3,"):
        model.ranks([3])
    assert torch.equal(model.score([0, 1]), torch.zeros(2, 6))  # the other users are fine
    plus = torch.zeros(4, 6)
    plus[1, 5] = plus[1, 2] = float("inf")
    plus_message = r"Given: \+inf scores for 2 of 12 \(user, item\) pairs, the first user 1, item 2; scores"
    with pytest.raises(ValueError, match=plus_message):
        Given(plus).fit(_tiny()).recommend([0, 1], k=2)
    minus = torch.zeros(4, 6)
    minus[1, 5] = float("-inf")
    assert Given(minus).fit(_tiny()).score([1])[0, 5] == float("-inf")  # -inf is a score


def test_an_unseen_item_scored_minus_inf_ranks_after_finite_ones_and_before_every_seen_item():
    # User 0 has seen items 0 and 1; the fixed tie order of 6 items is 0, 2, 3, 1, 4, 5, so
    # masking seen items with -inf alone would put seen item 0 before the unseen items 2 and 4.
    scores = torch.zeros(4, 6)
    scores[0] = torch.tensor([float("-inf"), 9.0, float("-inf"), 1.0, float("-inf"), 2.0])
    model = Given(scores).fit(_tiny())
    assert model.tie_order_.tolist() == [0, 2, 3, 1, 4, 5]
    assert model.recommend([0], k=4)[0].tolist() == [5, 3, 2, 4]
    assert model.ranks([0])[0].tolist() == [5, 6, 3, 2, 4, 1]
    # Without excluding seen items, -inf items are last and item 1 (score 9) first.
    assert model.recommend([0], k=6, exclude_seen=False)[0].tolist() == [1, 5, 3, 0, 2, 4]
    candidates = torch.tensor([True, True, True, False, True, False])
    assert model.recommend([0], k=2, candidates=candidates)[0].tolist() == [2, 4]


def test_the_index_path_refuses_non_finite_vectors_naming_the_model():
    from recutils.recommender import VectorRecommender

    class Tower(VectorRecommender):
        needs_history = False

        def __init__(self, users, items):
            self.users, self.items = users, items

        def _fit(self, train):
            pass

        def user_embeddings(self, users):
            return self.users[users]

        def item_embeddings(self):
            return self.items

        def _score(self, users):
            return self.user_embeddings(users) @ self.item_embeddings().T

    generator = torch.Generator().manual_seed(0)
    users, items = torch.randn(4, 3, generator=generator), torch.randn(6, 3, generator=generator)
    bad_items = items.clone()
    bad_items[4, 1] = float("nan")
    bad_vectors = r"Tower: NaN or infinite values in 1 of {} {} vectors, the first for {}"
    with pytest.raises(ValueError, match=bad_vectors.format(6, "item", "item 4")):
        Tower(users, bad_items).use_index("flat").fit(_tiny()).recommend([0], k=2)
    # The exact path: score's own check.
    with pytest.raises(ValueError, match=r"Tower: NaN scores for 2 of 12 \(user, item\) pairs"):
        Tower(users, bad_items).fit(_tiny()).recommend([0, 1], k=2)
    bad_users = users.clone()
    bad_users[2, 0] = float("inf")
    with pytest.raises(ValueError, match=bad_vectors.format(2, "user", "user 2")):
        Tower(bad_users, items).use_index("flat").fit(_tiny()).recommend([0, 2], k=2)
    top = Tower(users, items).use_index("flat").fit(_tiny()).recommend([0, 2], k=3)
    assert torch.equal(top, Tower(users, items).fit(_tiny()).recommend([0, 2], k=3))

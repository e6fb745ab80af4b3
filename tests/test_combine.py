import math

import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recutils.baselines import EASE, Popularity
from recutils.cf import ItemKNN, UserKNN
from recutils.combine import (
    CachedScores,
    MatrixCombination,
    MMRReranker,
    RankFusion,
    ScoreFusion,
    cache_scores,
    normalise_scores,
    simplex_grid,
    tune_weights,
)
from recutils.metrics import intra_list_diversity
from recutils.recommender import Recommender
from recutils.split import Interactions, temporal_split, validation_split


class Fixed(Recommender):
    """Scores given up front (one row per user), optionally passed through a function."""

    needs_history = False

    def __init__(self, scores, transform=lambda s: s, label="fixed"):
        self.scores, self.transform, self.label = scores, transform, label

    @property
    def name(self):
        return self.label

    def _fit(self, train):
        pass

    def _score(self, users):
        return self.transform(self.scores[users])


def _train(n_users=2, n_items=3):
    frame = pd.DataFrame({"user": [0], "item": [0], "rating": [5], "timestamp": [0]})
    return Interactions(frame, n_users, n_items)


def test_normalisations():
    scores = torch.tensor([[1.0, 3.0, 2.0, 10.0], [5.0, 5.0, 5.0, 5.0]])
    mask = torch.tensor([[False, False, False, True], [False] * 4])
    minmax = normalise_scores(scores, "minmax", mask)
    assert minmax[0].tolist() == [0.0, 1.0, 0.5, 0.0]
    assert minmax[1].tolist() == [0.0] * 4  # a constant row has no spread
    z = normalise_scores(scores, "zscore", mask)[0, :3]
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6) and z.std(unbiased=False).item() == pytest.approx(
        1.0
    )
    assert normalise_scores(scores, "rank", mask)[0].tolist() == [
        pytest.approx(1 / 3),
        1.0,
        pytest.approx(2 / 3),
        0.0,
    ]
    soft = normalise_scores(scores, "softmax", mask)
    assert soft[0, 3] == 0 and soft[0].sum().item() == pytest.approx(1.0)
    expected = torch.softmax(torch.tensor([1.0, 3.0, 2.0]), 0)
    assert torch.allclose(soft[0, :3], expected)
    assert normalise_scores(scores, "softmax", torch.ones_like(mask)).sum() == 0  # all masked: zeros, not NaN


@given(st.lists(st.floats(-1e4, 1e4), min_size=2, max_size=20), st.floats(0.01, 10))
def test_softmax_rows_sum_to_one_even_for_large_scores(values, temperature):
    probabilities = normalise_scores(torch.tensor([values]), "softmax", temperature=temperature)
    assert not torch.isnan(probabilities).any()
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_normalise_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        normalise_scores(torch.tensor([[float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="method"):
        normalise_scores(torch.ones(1, 2), "sigmoid")
    with pytest.raises(ValueError, match="temperature"):
        normalise_scores(torch.ones(1, 2), "softmax", temperature=0)
    with pytest.raises(ValueError, match=r"\(n_users, n_items\)"):
        normalise_scores(torch.ones(3))


def _model(scores, **kwargs):
    return Fixed(torch.tensor(scores), **kwargs).fit(_train(len(scores), len(scores[0])))


SCORES_A = [[0.0, 0.9, 0.5, 0.1, 0.7], [0.0, 0.2, 0.8, 0.6, 0.4]]
SCORES_B = [[0.0, 0.1, 0.3, 0.9, 0.2], [0.0, 0.9, 0.1, 0.3, 0.2]]


@pytest.mark.parametrize(
    "make",
    [
        lambda ms, w=None: ScoreFusion(ms, w),
        lambda ms, w=None: ScoreFusion(ms, w, method="combmnz", depth=4),
        lambda ms, w=None: ScoreFusion(ms, w, method="mixture", temperature=0.1),
        lambda ms, w=None: ScoreFusion(ms, w, normalisation="zscore"),
        lambda ms, w=None: RankFusion(ms, w),
        lambda ms, w=None: RankFusion(ms, w, method="borda", depth=4),
    ],
    ids=["combsum", "combmnz", "mixture", "zscore", "rrf", "borda"],
)
def test_one_model_or_zero_weights_give_back_that_models_ranking(make):
    a, b = _model(SCORES_A), _model(SCORES_B)
    train = a.train_
    expected = a.recommend([0, 1], k=4)
    assert torch.equal(make([a]).fit(train).recommend([0, 1], k=4), expected)
    assert torch.equal(make([a, b], [1.0, 0.0]).fit(train).recommend([0, 1], k=4), expected)


def test_rank_fusion_ignores_monotone_transforms():
    a, b = _model(SCORES_A), _model(SCORES_B)
    a_exp = _model(SCORES_A, transform=lambda s: torch.exp(20 * s))
    fused = RankFusion([a, b]).fit(a.train_).score([0, 1])
    assert torch.equal(fused, RankFusion([a_exp, b]).fit(a.train_).score([0, 1]))
    # Score fusion, by contrast, may change when scores are reshaped.
    combsum = ScoreFusion([a, b]).fit(a.train_).score([0, 1])
    assert not torch.allclose(combsum, ScoreFusion([a_exp, b]).fit(a.train_).score([0, 1]))


def test_rrf_by_hand():
    # User 0 has seen item 0. Ranks among unseen items 1..4:
    # A: 1→1, 4→2, 2→3, 3→4;  B: 3→1, 2→2, 4→3, 1→4.
    a, b = _model(SCORES_A), _model(SCORES_B)
    fused = RankFusion([a, b], k=60).fit(a.train_).score([0])[0]
    expected = {1: 1 / 61 + 1 / 64, 2: 1 / 63 + 1 / 62, 3: 1 / 64 + 1 / 61, 4: 1 / 62 + 1 / 63}
    for item, value in expected.items():
        assert fused[item].item() == pytest.approx(value)


def test_combiner_errors(synthetic):
    a = _model(SCORES_A)
    other = Popularity().fit(synthetic.interactions)
    with pytest.raises(ValueError, match="not fitted on this train data"):
        ScoreFusion([a, other]).fit(a.train_)
    with pytest.raises(ValueError, match="2 models but 1 weights"):
        RankFusion([a, a], [1.0])
    with pytest.raises(ValueError, match="non-negative"):
        ScoreFusion([a], [-1.0])
    with pytest.raises(ValueError, match="at least one model"):
        RankFusion([])
    with pytest.raises(ValueError, match="method"):
        ScoreFusion([a], method="vote")
    with pytest.raises(ValueError, match="temperatures"):
        ScoreFusion([a, a], method="mixture", temperature=[1.0])


def test_matrix_combination_item_cf_term_ranks_like_item_knn(synthetic):
    split = temporal_split(synthetic.interactions)
    knn = ItemKNN(k=10).fit(split.train)
    matrix = MatrixCombination({"item_cf": 1.0}, k=10, chunk_size=7).fit(split.train)
    assert torch.equal(matrix.recommend(torch.arange(40), k=5), knn.recommend(torch.arange(40), k=5))
    # Two terms: each product min-max normalised over the user's unseen items (seen ones 0), then
    # weighted and summed; item-CF's product is ItemKNN's score and user-CF's is UserKNN's.
    both = MatrixCombination({"item_cf": 0.25, "user_cf": 0.75}, k=10).fit(split.train)
    users = torch.arange(6)
    unseen = ~(split.train.matrix() > 0)[users]

    def minmax(scores):
        low = torch.where(unseen, scores, torch.inf).min(dim=1, keepdim=True).values
        high = torch.where(unseen, scores, -torch.inf).max(dim=1, keepdim=True).values
        return torch.where(unseen, (scores - low) / (high - low), 0.0)

    expected = 0.25 * minmax(knn.score(users)) + 0.75 * minmax(UserKNN(k=10).fit(split.train).score(users))
    assert torch.allclose(both.score(users), expected, atol=1e-6)
    with pytest.raises(ValueError, match="item_vectors"):
        MatrixCombination({"content": 1.0})
    with pytest.raises(ValueError, match="terms"):
        MatrixCombination({"svd": 1.0})


def test_mmr_trades_relevance_for_diversity(synthetic):
    split = temporal_split(synthetic.interactions)
    base = EASE(l2=10.0).fit(split.train)
    clusters = torch.nn.functional.one_hot(torch.tensor(synthetic.items["cluster"].to_numpy()), 3).float()
    users = torch.arange(50)
    plain = MMRReranker(base, clusters, lambda_=1.0, pool=20).fit(split.train)
    assert torch.equal(plain.recommend(users, k=5), base.recommend(users, k=5))
    diverse = MMRReranker(base, clusters, lambda_=0.3, pool=20).fit(split.train).recommend(users, k=5)
    assert intra_list_diversity(diverse, clusters) > intra_list_diversity(
        base.recommend(users, k=5), clusters
    )
    with pytest.raises(ValueError, match="re-ranking pool"):
        plain.recommend(users, k=30)
    with pytest.raises(ValueError, match="lambda_"):
        MMRReranker(base, clusters, lambda_=1.5)


def test_simplex_grid_and_tuning(synthetic):
    grid = simplex_grid(3, 0.5)
    assert len(grid) == 6 and all(math.isclose(sum(w), 1.0) for w in grid)
    with pytest.raises(ValueError):
        simplex_grid(2, 0.3)
    split = temporal_split(synthetic.interactions)
    val = validation_split(split)
    good, bad = EASE(l2=10.0).fit(val.train), Popularity().fit(val.train)
    weights, table = tune_weights(lambda w: ScoreFusion([good, bad], w), 2, val, step=0.5)
    assert len(table) == 3 and weights == table.loc[table["NDCG@10"].idxmax(), "weights"]
    assert weights[0] >= 0.5  # the planted-structure model carries the weight


def test_intra_list_diversity():
    vectors = torch.eye(3)
    assert intra_list_diversity(torch.tensor([[0, 1, 2]]), vectors) == pytest.approx(1.0)
    assert intra_list_diversity(torch.tensor([[0, 0]]), vectors) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        intra_list_diversity(torch.tensor([[0]]), vectors)


def test_mixture_is_the_log_of_a_weighted_probability_mixture():
    a, b = _model(SCORES_A), _model(SCORES_B)
    fused = ScoreFusion([a, b], [0.25, 0.75], method="mixture", temperature=[0.5, 2.0]).fit(a.train_)
    seen = a.seen_[[0, 1]]
    expected = 0.25 * normalise_scores(
        normalise_scores(a.score([0, 1]), "zscore", seen) / 0.5, "softmax", seen
    )
    expected += 0.75 * normalise_scores(
        normalise_scores(b.score([0, 1]), "zscore", seen) / 2.0, "softmax", seen
    )
    got = fused.score([0, 1])
    assert torch.allclose(torch.exp(got)[~seen], expected[~seen], atol=1e-6)
    assert (got[seen] == -1e9).all()
    # Scores far apart in scale still give a ranking without ties from underflow.
    huge = _model([[0.0, 900.0, 500.0, 100.0, 700.0], [0.0, 200.0, 800.0, 600.0, 400.0]])
    ranked = ScoreFusion([huge], method="mixture", temperature=0.01).fit(a.train_).score([0])
    assert len(torch.unique(ranked[0, 1:])) == 4


class Counting(Fixed):
    """Fixed scores that count how often they are asked for."""

    def __init__(self, scores):
        super().__init__(scores)
        self.calls = 0

    def _score(self, users):
        self.calls += 1
        return super()._score(users)


def test_cached_scores_score_once_and_rank_like_the_model():
    model = Counting(torch.tensor(SCORES_A)).fit(_train(2, 5))
    cached = cache_scores([model])[0]
    assert cached.name == model.name and cached.train_ is model.train_
    first = cached.score([0, 1])
    assert torch.equal(first, model.score([0, 1]))
    calls = model.calls
    for _ in range(3):
        assert torch.equal(cached.recommend([0, 1], k=3), model.recommend([0, 1], k=3))
    assert model.calls == calls + 3  # only the direct model.recommend calls scored again
    with pytest.raises(ValueError, match="not fitted"):
        CachedScores(Fixed(torch.tensor(SCORES_A)))


INF = float("inf")


def test_normalisations_with_infinite_entries_by_hand():
    scores = torch.tensor([[-INF, 1.0, 3.0, INF, 2.0], [-INF, 5.0, 5.0, -INF, 5.0], [-INF] * 5])
    minmax = normalise_scores(scores, "minmax")
    assert minmax[0].tolist() == [-INF, 0.0, 1.0, INF, 0.5]
    assert minmax[1].tolist() == [-INF, 0.0, 0.0, -INF, 0.0]  # a constant row keeps its 0
    assert minmax[2].tolist() == [-INF] * 5
    z = normalise_scores(scores, "zscore")
    assert z[0, [1, 2, 4]].tolist() == pytest.approx([-1.2247449, 1.2247449, 0.0])
    assert z[0, [0, 3]].tolist() == [-INF, INF] and z[1, [1, 2, 4]].tolist() == [0.0] * 3
    rank = normalise_scores(scores, "rank")  # n = 3 finite entries
    assert rank[0].tolist() == [-INF, pytest.approx(1 / 3), 1.0, INF, pytest.approx(2 / 3)]
    assert rank[1].tolist() == [-INF, 1.0, 1.0, -INF, 1.0]
    soft = normalise_scores(scores, "softmax")
    assert soft[0].tolist() == [0.0, 0.0, 0.0, 1.0, 0.0]  # +inf takes all the probability
    assert soft[1].tolist() == [0.0, pytest.approx(1 / 3), pytest.approx(1 / 3), 0.0, pytest.approx(1 / 3)]
    assert soft[2].tolist() == [0.0] * 5  # nothing above -inf: no distribution
    mask = torch.tensor([[False, False, True, False, False]] + [[False] * 5] * 2)
    assert normalise_scores(scores, "minmax", mask)[0].tolist() == [-INF, 0.0, 0.0, INF, 1.0]
    with pytest.raises(ValueError, match=r"2 NaN entries \(the first in row 1, column 0\)"):
        normalise_scores(torch.tensor([[1.0, 2.0], [float("nan"), float("nan")]]))


def test_a_members_minus_inf_is_kept_by_every_fusion():
    # User 0 has seen item 0; A rules item 3 out, B likes item 3 best of all.
    a = _model([[0.0, 0.9, 0.5, -INF, 0.7], [0.0, 0.2, 0.8, 0.6, 0.4]])
    b = _model(SCORES_B)
    combinations = [
        ScoreFusion([a, b]),
        ScoreFusion([a, b], method="combmnz", depth=4),
        ScoreFusion([a, b], method="mixture", temperature=0.1),
        RankFusion([a, b]),
        RankFusion([a, b], method="borda", depth=4),
    ]
    for fused in combinations:
        fused.fit(a.train_)
        scores = fused.score([0, 1])
        assert scores[0, 3] == -INF and torch.isfinite(scores[0, 1:3]).all() and scores[0, 4] > -INF
        assert torch.isfinite(scores[1, 1:]).all()  # user 1: no veto
        assert fused.recommend([0], k=4)[0, 3] == 3  # item 3 only once nothing else is left
        assert 3 not in fused.recommend([0], k=3)[0].tolist()
    # Without A's veto, B's favourite would make the combined top 3.
    assert 3 in ScoreFusion([_model(SCORES_A), b]).fit(a.train_).recommend([0], k=3)[0].tolist()
    # The mixture of the others is unchanged: A gives item 3 probability 0, B its own.
    mixture = ScoreFusion([a, b], [0.25, 0.75], method="mixture", temperature=0.5).fit(a.train_).score([0])
    seen = a.seen_[[0]]
    expected = 0.25 * normalise_scores(normalise_scores(a.score([0]), "zscore", seen) / 0.5, "softmax", seen)
    expected += 0.75 * normalise_scores(normalise_scores(b.score([0]), "zscore", seen) / 0.5, "softmax", seen)
    assert torch.allclose(torch.exp(mixture[0, [1, 2, 4]]), expected[0, [1, 2, 4]], atol=1e-6)


def test_mmr_picks_items_the_base_scores_minus_inf_last_and_never_twice(synthetic):
    split = temporal_split(synthetic.interactions)
    base_scores = EASE(l2=10.0).fit(split.train).score(torch.arange(split.train.n_users))
    ruled_out = torch.zeros_like(base_scores, dtype=torch.bool)
    ruled_out[:, ::3] = True  # every third item is not a candidate
    base = Fixed(base_scores.masked_fill(ruled_out, -INF)).fit(split.train)
    clusters = torch.nn.functional.one_hot(torch.tensor(synthetic.items["cluster"].to_numpy()), 3).float()
    users = torch.arange(10)
    n_unseen = int((~base.seen_[users]).sum(dim=1).min())
    n_open = int((~base.seen_[users] & ~ruled_out[users]).sum(dim=1).max())
    for lambda_ in (0.0, 0.5, 1.0):
        mmr = MMRReranker(base, clusters, lambda_=lambda_, pool=n_unseen).fit(split.train)
        top = mmr.recommend(users, k=n_unseen)
        for user, row in enumerate(top.tolist()):
            assert len(set(row)) == n_unseen
            open_items = int((~base.seen_[user] & ~ruled_out[user]).sum())
            assert not ruled_out[user, row[:open_items]].any() and ruled_out[user, row[open_items:]].all()
    assert n_open < n_unseen


def test_the_content_term_keeps_the_lower_index_among_tied_neighbours():
    # Item 0's similarity to items 1..4 is the same; with k = 2 it keeps items 1 and 2
    # (torch.topk alone keeps items 1 and 4 here).
    vectors = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.2, 1.0]])
    matrix = MatrixCombination({"content": 1.0}, item_vectors=vectors, k=2).fit(_train(2, 6))
    kept = matrix.terms_["content"][1].T[0]
    assert torch.nonzero(kept).flatten().tolist() == [1, 2]

import math

import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recutils.baselines import EASE, Popularity
from recutils.cf import ItemKNN
from recutils.combine import (
    MatrixCombination,
    MMRReranker,
    RankFusion,
    ScoreFusion,
    intra_list_diversity,
    normalise_scores,
    simplex_grid,
    tune_weights,
)
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
    both = MatrixCombination({"item_cf": 1.0, "user_cf": 1.0}, k=10).fit(split.train)
    assert both.score([0]).max() <= 2.0 + 1e-6
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

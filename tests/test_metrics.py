import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import ndcg_score

from recutils.metrics import (
    average_precision_at_k,
    coverage_at_k,
    edge_parameters,
    hit_rate_at_k,
    hits_at_k,
    ndcg_at_k,
    paired_bootstrap,
    precision_at_k,
    recall_at_k,
    tune,
    two_level_bootstrap,
)

# One user, k = 5, relevant {2, 9, 4}; recommended [2, 7, 4, 1, 8] -> hits at ranks 1 and 3.
REC = torch.tensor([[2, 7, 4, 1, 8]])
REL = [[2, 9, 4]]


def test_hand_computed_case():
    hits = hits_at_k(REC, REL)
    assert hits.tolist() == [[True, False, True, False, False]]
    n = torch.tensor([3])
    assert precision_at_k(hits).item() == pytest.approx(2 / 5)
    assert recall_at_k(hits, n).item() == pytest.approx(2 / 3)
    assert hit_rate_at_k(hits).item() == 1.0
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(hits, n).item() == pytest.approx(dcg / idcg)
    assert average_precision_at_k(hits, n).item() == pytest.approx((1 / 1 + 2 / 3) / 3)


def test_the_articles_precision_is_not_precision_at_k():
    # The article divides hits by the number of recommended items that are relevant,
    # which is 1 whenever there is a hit. Precision@K divides by K.
    hits = hits_at_k(REC, REL)
    assert precision_at_k(hits).item() == pytest.approx(0.4)


def test_idcg_uses_min_of_relevant_and_k():
    hits = torch.ones(1, 3, dtype=torch.bool)
    assert ndcg_at_k(hits, torch.tensor([10])).item() == pytest.approx(1.0)
    assert average_precision_at_k(hits, torch.tensor([10])).item() == pytest.approx(1.0)


def _random_case(seed, n_items=30, k=10):
    rng = np.random.default_rng(seed)
    relevance = (rng.random(n_items) < 0.2).astype(float)
    relevance[rng.integers(n_items)] = 1.0
    scores = rng.permutation(n_items).astype(float)  # no ties
    return relevance, scores, k


@pytest.mark.parametrize("seed", range(20))
def test_ndcg_agrees_with_scikit_learn(seed):
    relevance, scores, k = _random_case(seed)
    top = torch.as_tensor(np.argsort(-scores)[:k].copy()).unsqueeze(0)
    hits = hits_at_k(top, [np.flatnonzero(relevance)])
    ours = ndcg_at_k(hits, torch.tensor([relevance.sum()])).item()
    assert ours == pytest.approx(ndcg_score(relevance[None], scores[None], k=k))


@given(
    st.integers(1, 12).flatmap(
        lambda k: st.tuples(st.just(k), st.lists(st.booleans(), min_size=k, max_size=k), st.integers(0, 20))
    )
)
def test_metrics_lie_in_unit_interval(case):
    k, row, extra = case
    hits = torch.tensor([row])
    n = torch.tensor([max(1, sum(row) + extra)])
    for value in (
        precision_at_k(hits),
        recall_at_k(hits, n),
        ndcg_at_k(hits, n),
        average_precision_at_k(hits, n),
    ):
        assert 0.0 <= value.item() <= 1.0 + 1e-12


@given(st.integers(1, 15), st.integers(1, 15))
def test_perfect_ranking_scores_one(n_relevant, k):
    hits = torch.arange(k).unsqueeze(0) < n_relevant  # every relevant item ranked first
    n = torch.tensor([n_relevant])
    assert ndcg_at_k(hits, n).item() == pytest.approx(1.0)
    assert average_precision_at_k(hits, n).item() == pytest.approx(1.0)
    assert recall_at_k(hits, n).item() == pytest.approx(min(n_relevant, k) / n_relevant)


def test_coverage():
    assert coverage_at_k(torch.tensor([[0, 1], [1, 2]]), 10) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        coverage_at_k(torch.tensor([[0]]), 0)


def test_bad_inputs():
    hits = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least one relevant"):
        recall_at_k(hits, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="more hits than relevant"):
        ndcg_at_k(hits, torch.tensor([3, 2]))
    with pytest.raises(ValueError, match="shape"):
        ndcg_at_k(hits, torch.tensor([3]))
    with pytest.raises(ValueError, match="k >= 1"):
        precision_at_k(torch.ones(2, 0, dtype=torch.bool))
    with pytest.raises(ValueError, match="relevant sets"):
        hits_at_k(REC, [[1], [2]])
    with pytest.raises(ValueError, match="n_users, k"):
        hits_at_k(torch.tensor([1, 2]), [[1]])


def test_paired_bootstrap_by_hand():
    # Two users with differences 0.1 and 0.3. A resample of two users has mean 0.1 (both
    # draws the first user, probability 1/4), 0.2 (1/2) or 0.3 (1/4), so the central
    # 95 % of many resamples runs from 0.1 to 0.3, and the point estimate is 0.2.
    a = pd.Series([0.5, 0.6], index=[3, 7])
    b = pd.Series([0.3, 0.4], index=[7, 3])  # aligned by user, not by position
    result = paired_bootstrap(a, b, n_resamples=4000, seed=1)
    assert result.difference == pytest.approx(0.2)
    assert result.low == pytest.approx(0.1) and result.high == pytest.approx(0.3)
    assert result.excludes_zero and result.n_users == 2
    assert result.verdict() == "higher" and str(result) == "+0.2000 [+0.1000, +0.3000]"
    assert paired_bootstrap(b, a.reindex(b.index)).verdict() == "lower"


@given(st.lists(st.floats(0, 1), min_size=1, max_size=30), st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_a_model_against_itself_has_a_zero_interval(values, seed):
    a = pd.Series(values)
    result = paired_bootstrap(a, a.copy(), n_resamples=200, seed=seed)
    assert (result.difference, result.low, result.high) == (0.0, 0.0, 0.0)
    assert not result.excludes_zero and result.verdict() == "within noise"


def test_paired_bootstrap_interval_contains_the_estimate_and_narrows_with_users():
    rng = np.random.default_rng(0)
    small = pd.Series(rng.normal(0.05, 0.2, 50))
    large = pd.Series(rng.normal(0.05, 0.2, 5000))
    zero_s, zero_l = pd.Series(np.zeros(50)), pd.Series(np.zeros(5000))
    r_small, r_large = paired_bootstrap(small, zero_s), paired_bootstrap(large, zero_l)
    assert r_small.low <= r_small.difference <= r_small.high
    assert r_large.high - r_large.low < (r_small.high - r_small.low) / 5


def test_paired_bootstrap_errors():
    a = pd.Series([0.1, 0.2], index=[0, 1])
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap(a, pd.Series([0.1, 0.2], index=[0, 2]))
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(a, pd.Series([0.1, np.nan], index=[0, 1]))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap(a, a, level=1.0)


def _frame(columns, users=None):
    """A (users × seeds) per-user metric table, one column per seed, as SeedResult.per_user."""
    frame = pd.DataFrame(columns)
    return frame if users is None else frame.set_axis(users)


def test_two_level_bootstrap_without_seed_noise_is_the_one_level_interval():
    # Every seed gives each user the same score: the seed draws change nothing, and the user
    # draws are paired_bootstrap's, so the two intervals agree.
    rng = np.random.default_rng(3)
    per_user = rng.uniform(0, 1, 60)
    a = _frame({0: per_user, 1: per_user, 2: per_user}, users=range(100, 160))
    b = _frame({0: rng.uniform(0, 1, 60)}, users=range(100, 160))
    two = two_level_bootstrap(a, b, seed=5)
    one = paired_bootstrap(a.mean(axis=1), b[0], seed=5)
    assert (two.difference, two.low, two.high) == pytest.approx((one.difference, one.low, one.high), rel=1e-12)
    assert two.n_users == 60


def test_two_level_bootstrap_widens_by_the_seed_noise_derived_by_hand():
    # Users do not vary; seeds give 0, 0 and 3. The mean of three seeds drawn with replacement
    # is 0 (probability 8/27), 1 (12/27), 2 (6/27) or 3 (1/27): 0 and 3 both hold more than 2.5 %
    # of the draws, so the 95 % interval is [0, 3], where the one-level interval over
    # seed-averaged scores (all 1) is [1, 1].
    a = _frame({0: np.zeros(20), 1: np.zeros(20), 2: np.full(20, 3.0)})
    result = two_level_bootstrap(a, n_resamples=4000)
    assert (result.difference, result.low, result.high) == pytest.approx((1.0, 0.0, 3.0))
    one = paired_bootstrap(a.mean(axis=1), pd.Series(np.zeros(20)))
    assert (one.low, one.high) == pytest.approx((1.0, 1.0))


def test_two_level_bootstrap_adds_user_and_seed_variance():
    # a[u, s] = x_u + y_s: a draw is the mean of n drawn x plus the mean of k drawn y, so its
    # variance is var(x) / n + var(y) / k (population variances). Here both terms are equal,
    # and the interval is √2 times as wide as the one over users alone: 2 · 1.96 · sd.
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, 400), rng.normal(0, 1, 40)
    x, y = (x - x.mean()) / x.std() * 2.0, (y - y.mean()) / y.std() * np.sqrt(0.4)  # 4 / 400 = 0.4 / 40
    n, k = len(x), len(y)
    expected_sd = np.sqrt(x.var() / n + y.var() / k)
    a = _frame({s: x + y[s] for s in range(k)})
    result = two_level_bootstrap(a, n_resamples=10000)
    assert result.high - result.low == pytest.approx(2 * 1.96 * expected_sd, rel=0.05)
    users_only = two_level_bootstrap(_frame({s: x for s in range(k)}), n_resamples=10000)
    assert users_only.high - users_only.low == pytest.approx(2 * 1.96 * np.sqrt(x.var() / n), rel=0.05)


def test_two_level_bootstrap_pairs_models_with_the_same_seeds():
    # b is a minus 0.1 run by run: drawing the same seeds for both leaves a difference of 0.1
    # in every resample; independent seed draws would spread it.
    rng = np.random.default_rng(1)
    a = _frame({s: rng.uniform(0, 1, 30) for s in (0, 1, 2)})
    b = (a - 0.1)[[2, 0, 1]]  # the same seeds in another column order
    result = two_level_bootstrap(a, b)
    assert (result.difference, result.low, result.high) == pytest.approx((0.1, 0.1, 0.1))
    unpaired = two_level_bootstrap(a, b.set_axis([5, 6, 7], axis=1))
    assert unpaired.high - unpaired.low > 0.01


def test_two_level_bootstrap_is_repeatable_with_a_seed():
    rng = np.random.default_rng(2)
    a = _frame({s: rng.uniform(0, 1, 30) for s in (0, 1, 2)})
    assert two_level_bootstrap(a, seed=4) == two_level_bootstrap(a, seed=4)
    assert two_level_bootstrap(a, seed=4) != two_level_bootstrap(a, seed=5)


def test_two_level_bootstrap_errors():
    a = _frame({0: [0.1, 0.2], 1: [0.3, 0.4]})
    with pytest.raises(ValueError, match="same users"):
        two_level_bootstrap(a, _frame({0: [0.1, 0.2]}, users=[0, 2]))
    with pytest.raises(ValueError, match="same users"):
        two_level_bootstrap(_frame({0: [0.1, 0.2], 1: [0.3, 0.4]}, users=[0, 0]))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        two_level_bootstrap(a[[0]], _frame({0: [0.1, 0.2]}))
    with pytest.raises(ValueError, match="finite"):
        two_level_bootstrap(a, _frame({0: [0.1, np.nan]}))
    with pytest.raises(ValueError, match="seed columns"):
        two_level_bootstrap(a.iloc[:0])
    with pytest.raises(ValueError, match="n_resamples"):
        two_level_bootstrap(a, n_resamples=10)


def test_tune_refuses_a_choice_at_the_edge_of_its_grid(synthetic):
    from recutils.baselines import EASE
    from recutils.split import temporal_split, validation_split

    validation = validation_split(temporal_split(synthetic.interactions))
    # Over a grid of three very different λ the best lies at one end on this data.
    with pytest.raises(ValueError, match="edge of the grid for l2"):
        tune(EASE, {"l2": [1e5, 1e6, 1e7]}, validation, progress=False)
    best, table = tune(EASE, {"l2": [1e5, 1e6, 1e7]}, validation, progress=False, allow_edge=True)
    assert best["l2"] in (1e5, 1e7) and len(table) == 3
    assert edge_parameters({"l2": 10.0}, {"l2": [1.0, 10.0, 100.0]}) == []
    assert edge_parameters({"l2": 1.0}, {"l2": [1.0, 10.0]}) == []  # two values have no interior

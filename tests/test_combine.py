import dataclasses
import math

import pandas as pd
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from recutils.baselines import EASE, Popularity
from recutils.cf import ItemKNN, UserKNN
from recutils.combine import (
    COMBINATIONS,
    EASE_GRID,
    IALS_GRID,
    ITEMKNN_GRID,
    CachedScores,
    MatrixCombination,
    Member,
    MMRReranker,
    RankFusion,
    ScoreFusion,
    build_combinations,
    cache_scores,
    evaluate_over_seeds,
    intra_list_diversity,
    member_weights,
    normalise_scores,
    simplex_grid,
    tune_combinations,
    tune_matrix,
    TunedCombination,
    book_members,
    classic_members,
    combination_settings,
    combination_systems,
    tune_weights,
    tuned_combination,
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


def test_tune_and_build_combinations(synthetic):
    split = temporal_split(synthetic.interactions)
    val = validation_split(split)
    vectors = torch.randn(split.train.n_items, 8, generator=torch.Generator().manual_seed(0))
    members = cache_scores([EASE(l2=10.0).fit(val.train), Popularity().fit(val.train)])
    settings = tune_combinations(
        members, val, matrix=(1.0, 0.0, 0.0), temperatures=(0.5, 2.0), step=0.5
    )
    assert len(settings.combsum) == 2 and math.isclose(sum(settings.mixture), 1.0)
    assert list(settings.temperature.table.index) == [0.5, 2.0]
    built = build_combinations(members, settings, vectors)
    assert list(built) == list(COMBINATIONS)
    assert all(c.name == name for name, c in built.items())
    assert member_weights(built["CombSUM (min-max), equal weights"]) == {m.name: 1.0 for m in members}
    matrix_weights = member_weights(built["matrix combination, tuned"])
    assert matrix_weights == {"item_cf": 1.0, "user_cf": 0.0, "content": 0.0}
    with pytest.raises(TypeError, match="not a combination"):
        member_weights(members[0])


def test_evaluate_over_seeds_runs_a_shared_model_once(synthetic):
    split = temporal_split(synthetic.interactions)
    ease = EASE(l2=10.0).fit(split.train)
    per_seed = {s: EASE(l2=10.0 * (s + 1)).fit(split.train) for s in (0, 1, 2)}
    results = evaluate_over_seeds(
        lambda s: {"fixed": ease, "varies": per_seed[s], "fusion": ScoreFusion([ease, per_seed[s]])}, split
    )
    assert list(results) == ["fixed", "varies", "fusion"]
    assert len(results["fixed"].summary) == 1 and results["fixed"].sd == 0.0
    assert len(results["varies"].summary) == 3 and results["varies"].per_user.shape[1] == 3
    assert results["fusion"].user_mean.index.equals(results["fixed"].user_mean.index)
    with pytest.raises(ValueError, match="missing"):
        evaluate_over_seeds(lambda s: {"x": ease} if s == 0 else {}, split)
    with pytest.raises(ValueError, match="distinct"):
        evaluate_over_seeds(lambda s: {"x": ease}, split, seeds=(0, 0))


def test_tune_matrix_matches_tuning_the_matrix_combination(synthetic):
    split = temporal_split(synthetic.interactions)
    val = validation_split(split)
    vectors = torch.randn(split.train.n_items, 8, generator=torch.Generator().manual_seed(0))
    direct, _ = tune_weights(
        lambda w: MatrixCombination(dict(zip(MatrixCombination.TERMS, w)), item_vectors=vectors, k=10), 3, val
    )
    assert tune_matrix(val, vectors, k=10) == direct


# --- tuned_combination: the protocol chapters 5 and 7 share ---------------------------------


class Planted(Recommender):
    """EASE's scores when ``target == 2``, seeded noise otherwise: a grid with an interior best."""

    needs_history = False

    def __init__(self, target=2, seed=0):
        self.target, self.seed = target, seed

    @property
    def name(self):
        return f"planted({self.target})"

    def _fit(self, train):
        self.ease_ = EASE(l2=10.0).fit(train)
        noise = torch.rand(train.n_users, train.n_items, generator=torch.Generator().manual_seed(self.seed))
        self.noise_ = noise

    def _score(self, users):
        return self.ease_.score(users) if self.target == 2 else self.noise_[users]


class Noise(Recommender):
    """Seeded random scores: a member that should get weight 0."""

    needs_history = False

    def __init__(self, seed=0, label="noise"):
        self.seed, self.label = seed, label

    @property
    def name(self):
        return f"{self.label} {self.seed}"

    def _fit(self, train):
        self.noise_ = torch.rand(
            train.n_users, train.n_items, generator=torch.Generator().manual_seed(100 + self.seed)
        )

    def _score(self, users):
        return self.noise_[users]


def _members(fits=None, edge_reason=None, grid=(1, 2, 3)):
    def planted(split, seed, **s):
        if fits is not None:
            fits.append(("planted", seed))
        return Planted(**s)

    def popularity(split, seed):
        return Popularity().fit(split.train)  # already fitted: must not be fitted again

    return [
        Member("planted", planted, {"target": list(grid)}, edge_reason=edge_reason),
        Member("popularity", popularity),
        Member("learned", lambda split, seed: Noise(seed, "learned"), seeded=True),
        Member("bert noise", lambda split, seed: Noise(seed + 10, "bert"), seeded=True, bert=True),
    ]


@pytest.fixture(scope="module")
def tuned(synthetic):
    split = temporal_split(synthetic.interactions)
    val = validation_split(split)
    fits = []
    return split, val, fits, tuned_combination(_members(fits), split, val, seeds=(0, 1, 2), step=0.5)


def test_tuned_combination_tunes_members_on_validation(tuned):
    split, val, fits, result = tuned
    assert result.settings == {"planted": {"target": 2}, "popularity": {}, "learned": {}, "bert noise": {}}
    assert result.choices == {"planted": "validation chose target = 2 (inside the grid)"}
    assert result.names == ("planted", "popularity", "learned", "bert noise")
    assert result.bert == (False, False, False, True)
    # Three tuning fits (seed 0), then one build per split for the deterministic member.
    assert fits == [("planted", 0)] * 5


def test_tuned_combination_shares_deterministic_members_and_seeds_learned_ones(tuned):
    split, val, _, result = tuned
    for where, part in ((result.on_validation, val.train), (result.on_split, split.train)):
        assert all(m.train_.fingerprint() == part.fingerprint() for row in where.values() for m in row)
        assert where[0][0] is where[1][0] is where[2][0]
        assert where[0][2] is not where[1][2]
        assert [m.name for m in where[1]] == ["planted(2)", "Popularity", "learned 1", "bert 11"]
    assert result.on_split[0][0] is not result.on_validation[0][0]


def test_tuned_combination_weights_come_from_validation(tuned):
    split, val, _, result = tuned
    for seed in result.seeds:
        weights = result.weights[seed]
        assert math.isclose(sum(weights), 1.0) and len(weights) == 4
        assert weights[3] == 0.0  # pure noise gets no weight
        expected, _ = tune_weights(
            lambda w, s=seed: ScoreFusion(result.on_validation[s], w), 4, val, step=0.5
        )
        assert weights == tuple(expected)
        plain, _ = tune_weights(
            lambda w, s=seed: ScoreFusion(result.on_validation[s][:3], w), 3, val, step=0.5
        )
        assert result.weights_without_bert[seed] == tuple(plain)
    table = result.weight_table()
    assert list(table.columns) == list(result.names)
    assert table.loc["seed 1", "planted"] == result.weights[1][0]
    assert pd.isna(table.loc["seed 1, without BERT", "bert noise"])


def test_tuned_combination_systems_evaluate_over_seeds(tuned):
    split, _, _, result = tuned
    systems = result.systems(0)
    assert list(systems)[-2:] == [TunedCombination.LABEL, TunedCombination.LABEL_WITHOUT_BERT]
    combination = systems[TunedCombination.LABEL].fit(split.train)
    assert member_weights(combination) == dict(
        zip([m.name for m in result.on_split[0]], result.weights[0], strict=True)
    )
    assert len(result.without_bert(0).models) == 3
    results = evaluate_over_seeds(result.systems, split)
    assert len(results["Popularity"].summary) == 1
    assert len(results[TunedCombination.LABEL].summary) == 3
    # The BERT member has weight 0, so dropping it changes nothing where the weights agree.
    same = [s for s in result.seeds if result.weights[s][:3] == result.weights_without_bert[s]]
    for seed in same:
        a = result.combination(seed).fit(split.train).recommend(torch.arange(5), 5)
        b = result.without_bert(seed).fit(split.train).recommend(torch.arange(5), 5)
        assert torch.equal(a, b)


def test_tuned_combination_bad_input(synthetic):
    split = temporal_split(synthetic.interactions)
    val = validation_split(split)
    with pytest.raises(ValueError, match="at least one member"):
        tuned_combination([], split, val)
    with pytest.raises(ValueError, match="distinct"):
        tuned_combination(_members()[:1] * 2, split, val)
    with pytest.raises(ValueError, match="distinct"):
        tuned_combination(_members()[1:2], split, val, seeds=(0, 0))
    with pytest.raises(ValueError, match="edge"):
        tuned_combination(_members(grid=(0, 1, 2))[:1], split, val, seeds=(0,))
    members = _members(edge_reason="a limit", grid=(0, 1, 2))[:2]
    edge = tuned_combination(members, split, val, seeds=(0,), step=0.5)
    assert edge.choices["planted"].endswith("(at the edge of the grid for target); a limit")
    picky = _members(edge_reason=lambda best: "low" if best["target"] == 0 else None, grid=(0, 1, 2))[:2]
    with pytest.raises(ValueError, match="planted: validation chose target = 2 .* widen the grid"):
        tuned_combination(picky, split, val, seeds=(0,))
    picky = _members(edge_reason=lambda best: "top" if best["target"] == 2 else None, grid=(0, 1, 2))[:2]
    assert tuned_combination(picky, split, val, seeds=(0,), step=0.5).choices["planted"].endswith("; top")
    only_bert = tuned_combination(_members()[3:], split, val, seeds=(0,), step=0.5)
    with pytest.raises(ValueError, match="every member is BERT-based"):
        only_bert.without_bert(0)


def test_classic_and_book_members(synthetic):
    classic = classic_members()
    assert [m.name for m in classic] == ["EASE", "ItemKNN", "iALS"]
    assert [m.seeded for m in classic] == [False, False, True]
    assert classic[0].grid == EASE_GRID and classic[1].grid == ITEMKNN_GRID and classic[2].grid == IALS_GRID
    assert classic[2].make(None, 2, factors=8, regularization=1.0).seed == 2
    assert "every other film" in classic[1].edge_reason({"k": max(ITEMKNN_GRID["k"])})
    assert classic[1].edge_reason({"k": min(ITEMKNN_GRID["k"])}) is None
    vectors = torch.randn(synthetic.interactions.n_items, 8, generator=torch.Generator().manual_seed(0))
    book = book_members(vectors, lambda train: torch.ones(train.n_users, 8), "logq")
    assert [m.name for m in book] == ["EASE", "ItemKNN", "iALS", "BERT content", "two-tower"]
    assert [m.bert for m in book] == [False, False, False, True, True]
    split = temporal_split(synthetic.interactions)
    content = book[3].make(split, 0).fit(split.train)
    assert content.name == "BERT content (profile)"


def test_tune_combinations_accepts_chosen_combsum_weights(synthetic):
    split = temporal_split(synthetic.interactions)
    val = validation_split(split)
    members = cache_scores([EASE(l2=10.0).fit(val.train), Popularity().fit(val.train)])
    settings = tune_combinations(
        members, val, (1.0, 0.0, 0.0), temperatures=(0.5, 2.0), step=0.5, combsum=(0.5, 0.5)
    )
    assert settings.combsum == (0.5, 0.5)
    with pytest.raises(ValueError, match="3 weights for 2 members"):
        tune_combinations(members, val, (1.0, 0.0, 0.0), combsum=(0.5, 0.25, 0.25))


def test_combination_settings_and_systems_per_seed(tuned, synthetic):
    split, val, _, result = tuned
    vectors = torch.randn(split.train.n_items, 8, generator=torch.Generator().manual_seed(0))
    settings = combination_settings(result, val, (1.0, 0.0, 0.0), temperatures=(0.5, 2.0), step=0.5)
    assert sorted(settings) == [0, 1, 2]
    assert all(settings[s].combsum == result.weights[s] for s in result.seeds)
    systems = combination_systems(result, settings, vectors)
    on_split, on_validation = systems(1), systems(1, "validation")
    assert list(on_split)[:4] == ["planted(2)", "Popularity", "learned 0", "bert 10"]
    assert on_split["learned 0"] is result.on_split[1][2]
    assert on_validation["learned 0"] is result.on_validation[1][2]
    assert list(on_split)[4:] == list(COMBINATIONS)
    assert systems(0)[COMBINATIONS[-1]] is systems(2)[COMBINATIONS[-1]]
    assert systems(0)[COMBINATIONS[-1]] is not on_validation[COMBINATIONS[-1]]
    tuned_sum = on_split["CombSUM (min-max), tuned weights"].fit(split.train)
    direct = result.combination(1).fit(split.train)
    assert tuned_sum.recommend(torch.arange(4), 5).equal(direct.recommend(torch.arange(4), 5))
    # (the matrix combination's k = 200 neighbours do not fit 60 synthetic films: left out here)
    results = evaluate_over_seeds(
        lambda s: {k: v for k, v in systems(s).items() if k != COMBINATIONS[-1]}, split
    )
    assert len(results["Popularity"].summary) == 1 and len(results["learned 0"].summary) == 3
    assert len(results["CombSUM (min-max), equal weights"].summary) == 3
    settings[2] = dataclasses.replace(settings[2], matrix=(0.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="differ between seeds"):
        combination_systems(result, settings, vectors)


def test_restricted_equals_a_fresh_combination_over_those_members(tuned):
    split, val, fits, result = tuned
    names = ["planted", "learned", "bert noise"]
    fresh = tuned_combination([m for m in _members([]) if m.name in names], split, val, seeds=(0, 1, 2), step=0.5)
    fitted_before = len(fits)
    subset = result.restricted(names, val, step=0.5)
    assert len(fits) == fitted_before  # nothing refitted
    assert subset.names == tuple(names) and subset.bert == (False, False, True)
    assert subset.weights == fresh.weights and subset.weights_without_bert == fresh.weights_without_bert
    assert subset.on_split[1][1] is result.on_split[1][2]  # the same fitted models
    with pytest.raises(ValueError, match="choose member names"):
        result.restricted(["nobody"], val)


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

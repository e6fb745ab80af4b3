"""The book's combination (recutils.ensemble): chapter 5's table of combinations, the members,
and the tuned combination's protocol, every choice on validation."""

import dataclasses
import math

import pandas as pd
import pytest
import torch

from recutils.baselines import EASE, Popularity
from recutils.combine import MatrixCombination, ScoreFusion, cache_scores, member_weights, tune_weights
from recutils.ensemble import (
    COMBINATIONS,
    EASE_GRID,
    IALS_GRID,
    ITEMKNN_GRID,
    Member,
    TunedCombination,
    book_members,
    build_combinations,
    classic_members,
    combination_settings,
    combination_systems,
    tune_combinations,
    tune_matrix,
    tuned_combination,
)
from recutils.recommender import Recommender
from recutils.selection import evaluate_over_seeds
from recutils.split import temporal_split, validation_split


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

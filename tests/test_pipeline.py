from dataclasses import replace

import pandas as pd
import pytest

from recutils.baselines import RandomRecommender
from recutils.cf import ItemKNN
from recutils.metrics import evaluate
from recutils.pipeline import (
    COMBINED,
    DatasetDescription,
    Pipeline,
    Seeded,
    content,
    item_knn,
    popularity,
    seeded,
    two_tower,
)
from recutils.twotower import TwoTower


def _toy(**changes):
    interactions = pd.DataFrame(
        {"who": ["bob", "amy", "bob", "cat"], "what": ["z", "x", "x", "y"], "when": [3, 1, 2, 5]}
    )
    items = pd.DataFrame({"what": ["x", "y", "z"], "name": ["Ex", "Why", "Zed"]})
    fields = dict(
        name="toy",
        interactions=interactions,
        user="who",
        item="what",
        items=items,
        item_text="name",
        time="when",
    )
    return DatasetDescription(**{**fields, **changes})


def test_ids_map_to_indices_in_item_table_order_and_sorted_user_order():
    interactions = _toy().to_interactions()
    assert (interactions.n_users, interactions.n_items) == (3, 3)
    frame = interactions.frame
    assert frame["user"].tolist() == [1, 0, 1, 2]  # amy, bob, cat
    assert frame["item"].tolist() == [2, 0, 0, 1]  # x, y, z in the items table's order
    assert frame["timestamp"].tolist() == [3, 1, 2, 5] and frame["rating"].tolist() == [1, 1, 1, 1]
    assert _toy().texts_for_items(interactions) == ["Ex", "Why", "Zed"]


def test_bad_descriptions_are_named():
    with pytest.raises(ValueError, match="no column 'stars'"):
        _toy(rating="stars").to_interactions()
    unknown = pd.DataFrame({"who": ["a"], "what": ["q"], "when": [1]})
    with pytest.raises(ValueError, match="item 'q', which is not in items"):
        _toy(interactions=unknown).to_interactions()
    twice = pd.DataFrame({"what": ["x", "x"], "name": ["a", "b"]})
    with pytest.raises(ValueError, match="not unique"):
        _toy(items=twice).to_interactions()
    short = _toy(item_text=lambda train: ["only one"])
    with pytest.raises(ValueError, match="1 texts for 3 items"):
        short.texts_for_items(short.to_interactions())


@pytest.fixture(scope="module")
def synthetic_run(synthetic_description):
    _, description = synthetic_description
    models = {"Popularity": popularity(), "content": content(), "ItemKNN": item_knn(k=20)}
    return Pipeline(models, protocol="P1").run(description)


def test_pipeline_fits_on_train_tunes_on_validation_and_reports_test(synthetic_run):
    run = synthetic_run
    assert list(run.table.index) == ["Popularity", "content", "ItemKNN", "combined (CombSUM, tuned)"]
    assert sum(run.weights.values()) == pytest.approx(1.0)
    # The pipeline's number for a model equals fitting that model by hand on the same split.
    by_hand = evaluate(ItemKNN(k=20).fit(run.split.train), run.split)["NDCG@10"].iloc[0]
    assert run.table.loc["ItemKNN", "NDCG@10"] == pytest.approx(by_hand)
    # The planted clusters: co-rating and text both beat popularity.
    assert run.table.loc["ItemKNN", "NDCG@10"] > run.table.loc["Popularity", "NDCG@10"]
    assert run.table.loc["content", "NDCG@10"] > run.table.loc["Popularity", "NDCG@10"]
    assert run.stage.item_vectors.shape == (45, 384)
    assert len(run.validation.train) + len(run.validation.test) == len(run.split.train)


def test_pipeline_errors(synthetic_run):
    description = _toy()
    with pytest.raises(ValueError, match="at least one model"):
        Pipeline({}).run(description)
    with pytest.raises(ValueError, match="protocol"):
        Pipeline({"p": popularity()}, protocol="P9").run(description)
    stage = synthetic_run.stage
    with pytest.raises(ValueError, match="needs a dataset with user_text"):
        content(user="text")(stage)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        Pipeline({"p": popularity()}, k=0).run(description)


def _random():
    return seeded(lambda stage: RandomRecommender(seed=stage.seed))


@pytest.fixture(scope="module")
def seeded_run(synthetic_description):
    _, description = synthetic_description
    models = {"ItemKNN": item_knn(k=20), "Random": _random()}
    return Pipeline(models, protocol="P1", seeds=(0, 1, 2), progress=False).run(description)


def test_seeded_builders_run_once_per_seed_and_report_the_mean(seeded_run):
    run = seeded_run
    assert run.seeds == (0, 1, 2) and sorted(run.runs) == [0, 1, 2]
    by_hand = [
        evaluate(RandomRecommender(seed=s).fit(run.split.train), run.split)["NDCG@10"].iloc[0]
        for s in (0, 1, 2)
    ]
    assert len(set(by_hand)) == 3  # the seeds really differ
    assert run.results["Random"].summary["NDCG@10"].tolist() == pytest.approx(by_hand)
    assert run.table.loc["Random", "NDCG@10"] == pytest.approx(sum(by_hand) / 3)
    assert [m.seed for m in (run.runs[s][0]["Random"] for s in (0, 1, 2))] == [0, 1, 2]
    # The deterministic model is fitted and measured once, and shared by every seed.
    assert len(run.results["ItemKNN"].summary) == 1
    assert run.runs[0][0]["ItemKNN"] is run.runs[2][0]["ItemKNN"]
    # The combination has a seeded member: tuned and measured per seed.
    assert len(run.results[COMBINED].summary) == 3
    assert all(sum(run.runs[s][2].values()) == pytest.approx(1.0) for s in (0, 1, 2))
    assert run.results[COMBINED].per_user.shape[1] == 3
    table = run.seed_table()
    assert table.loc["Random", "n"] == 3 and table.loc["ItemKNN", "n"] == 1
    assert table.loc["Random", "NDCG@10 sd"] == pytest.approx(pd.Series(by_hand).std())
    assert run.table["users"].dtype.kind == "i"


def test_without_seeded_builders_one_run_is_made(synthetic_description):
    _, description = synthetic_description
    run = Pipeline({"ItemKNN": item_knn(k=20)}, seeds=(3, 4), progress=False).run(description)
    assert list(run.runs) == [3] and len(run.results["ItemKNN"].summary) == 1


def test_progress_false_prints_nothing(synthetic_description, capsys):
    _, description = synthetic_description
    models = {"Popularity": popularity(), "Random": _random()}
    Pipeline(models, seeds=(0, 1), progress=False).run(description)
    assert capsys.readouterr().err == ""
    Pipeline(models, seeds=(0, 1), progress=True).run(description)
    assert "fitting (seed 1)" in capsys.readouterr().err


def test_two_tower_builder_is_seeded_unless_a_seed_is_given(seeded_run):
    stage = replace(seeded_run.stage, seed=2)
    free, fixed = two_tower(epochs=1), two_tower(epochs=1, seed=5)
    assert isinstance(free, Seeded) and not isinstance(fixed, Seeded)
    assert isinstance(free(stage), TwoTower) and free(stage).config.seed == 2
    assert fixed(stage).config.seed == 5


def test_bad_seeds_are_named(synthetic_description):
    _, description = synthetic_description
    for seeds in [(), (1, 1)]:
        with pytest.raises(ValueError, match="seeds must be distinct and non-empty"):
            Pipeline({"Random": _random()}, seeds=seeds).run(description)
    with pytest.raises(TypeError, match="needs a builder"):
        seeded(3)

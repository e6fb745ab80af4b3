import pandas as pd
import pytest

from recutils.cf import ItemKNN
from recutils.metrics import evaluate
from recutils.pipeline import DatasetDescription, Pipeline, content, item_knn, popularity


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

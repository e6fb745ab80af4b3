"""evaluate and Pipeline under the cold-start protocols (P2: cold items, P3: cold users) and k != 10."""

from dataclasses import replace

import pytest
import torch

from recutils.baselines import Popularity
from recutils.cf import ContentRecommender, ItemKNN
from recutils.metrics import coverage_at_k, evaluate, hits_at_k, ndcg_at_k
from recutils.pipeline import Pipeline, content, item_knn, popularity
from recutils.recommender import Recommender
from recutils.split import cold_item_split, cold_user_split


class Oracle(Recommender):
    """Scores each user's test items 1 and everything else 0: a perfect ranking."""

    needs_history = False

    def __init__(self, test):
        self.test = test

    def _fit(self, train):
        self.truth_ = self.test.matrix(binary=True)

    def _score(self, users):
        return self.truth_[users]


@pytest.fixture(scope="module")
def planted_vectors(synthetic):
    clusters = torch.tensor(synthetic.items["cluster"].to_numpy())
    noise = 0.3 * torch.randn(len(clusters), 3, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.one_hot(clusters, 3).float() + noise


def test_p2_ranks_only_cold_items_and_coverage_counts_only_them(synthetic, planted_vectors):
    split = cold_item_split(synthetic.interactions)
    model = ContentRecommender(planted_vectors).fit(split.train)
    summary, per_user = evaluate(model, split, k=5, per_user=True)
    users = torch.tensor(sorted(split.test.items_by_user()))
    lists = model.recommend(users, 5, candidates=split.candidates)
    assert split.candidates[lists].all()  # every recommended item is cold
    n_cold = int(split.candidates.sum())
    assert n_cold < split.train.n_items
    assert summary["Coverage@5"].iloc[0] == pytest.approx(len(torch.unique(lists)) / n_cold)
    assert summary["Coverage@5"].iloc[0] == pytest.approx(coverage_at_k(lists, n_cold))
    relevant = [split.test.items_by_user()[int(u)] for u in users]
    by_hand = ndcg_at_k(hits_at_k(lists, relevant), torch.tensor([len(r) for r in relevant]))
    assert per_user["NDCG@5"].to_numpy() == pytest.approx(by_hand.numpy())
    # The planted clusters are found among cold items too, and a perfect ranking scores 1.
    assert summary["NDCG@5"].iloc[0] > evaluate(Popularity().fit(split.train), split, k=5)["NDCG@5"].iloc[0]
    assert evaluate(Oracle(split.test).fit(split.train), split, k=5)["NDCG@5"].iloc[0] == pytest.approx(1.0)


def test_p3_ranks_every_item_for_users_without_history(synthetic):
    split = cold_user_split(synthetic.interactions)
    cold_users = sorted(split.test.items_by_user())
    assert all(split.train.user_counts()[u] == 0 for u in cold_users)
    summary = evaluate(Popularity().fit(split.train), split, k=7)
    assert summary["users"].iloc[0] == len(cold_users)
    assert summary["Coverage@7"].iloc[0] == pytest.approx(7 / split.train.n_items)  # one list for all
    assert evaluate(Oracle(split.test).fit(split.train), split, k=7)["HitRate@7"].iloc[0] == 1.0
    with pytest.raises(ValueError, match="has no interactions in the training data"):
        evaluate(ItemKNN(k=10).fit(split.train), split)


@pytest.fixture(scope="module")
def description(synthetic_description):
    data, base = synthetic_description
    topics = data.items["genres"].str[0].to_numpy()
    cluster = data.users["cluster"].to_numpy()
    return replace(base, user_text=lambda train: [f"I like {sorted(set(topics))[c]} films" for c in cluster])


@pytest.mark.parametrize(
    ("protocol", "models"),
    [
        ("P1", {"Popularity": popularity(), "ItemKNN": item_knn(k=20), "content": content()}),
        ("P2", {"Popularity": popularity(), "content": content()}),
        ("P3", {"Popularity": popularity(), "content (text)": content(user="text")}),
    ],
)
def test_pipeline_tunes_and_reports_at_the_same_k(description, protocol, models):
    run = Pipeline(models, protocol=protocol, k=5).run(description)
    assert run.split.protocol == run.validation.protocol == protocol
    assert [c for c in run.table.columns if c.startswith("NDCG")] == ["NDCG@5"]
    assert list(run.table.index) == [*models, "combined (CombSUM, tuned)"]
    assert sum(run.weights.values()) == pytest.approx(1.0)
    for name, model in run.models.items():
        by_hand = evaluate(model, run.split, k=5)["NDCG@5"].iloc[0]
        assert run.table.loc[name, "NDCG@5"] == pytest.approx(by_hand)
    if protocol == "P2":
        lists = run.models["content"].recommend(
            sorted(run.split.test.items_by_user()), 5, candidates=run.split.candidates
        )
        assert run.table.loc["content", "Coverage@5"] == pytest.approx(
            len(torch.unique(lists)) / int(run.split.candidates.sum())
        )
    if protocol == "P3":
        cold = sorted(run.split.test.items_by_user())
        assert (run.table["users"] == len(cold)).all()
        assert int(run.split.train.user_counts()[cold].sum()) == 0  # scored from their text alone


def test_pipeline_weights_are_tuned_at_the_reporting_k(description, monkeypatch):
    import recutils.pipeline as pipeline

    seen = []
    real = pipeline.tune_weights

    def spy(*args, **kwargs):
        seen.append((kwargs.get("k"), kwargs.get("metric")))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "tune_weights", spy)
    Pipeline({"Popularity": popularity(), "ItemKNN": item_knn(k=20)}, k=3).run(description)
    assert seen == [(3, "NDCG@3")]

import math

import pandas as pd
import pytest
import torch

from recutils.baselines import RandomRecommender
from recutils.cf import ContentRecommender, ItemKNN, UserKNN
from recutils.metrics import evaluate
from recutils.split import Interactions, cold_item_split, temporal_split


def _cluster_agreement(model, synthetic, n=30):
    top = model.recommend(torch.arange(n), k=5)
    item_cluster = torch.tensor(synthetic.items["cluster"].to_numpy())
    own = torch.tensor(synthetic.users["cluster"].to_numpy()[:n]).unsqueeze(1)
    return (item_cluster[top] == own).float().mean().item()


@pytest.mark.parametrize("model", [ItemKNN(k=10), UserKNN(k=10)], ids=["item", "user"])
def test_cf_recovers_planted_clusters(model, synthetic):
    split = temporal_split(synthetic.interactions)
    model.fit(split.train)
    assert _cluster_agreement(model, synthetic) > 0.9
    random = evaluate(RandomRecommender().fit(split.train), split)["NDCG@10"].iloc[0]
    assert evaluate(model, split)["NDCG@10"].iloc[0] > 2 * random


def test_item_knn_equals_a_naive_sum():
    """r̂(u, i) = Σ_{j ∈ history(u)} S[i, j] over i's k nearest items, with S computed here from the
    users' item sets. With k = 1 the neighbour relation is not symmetric (item 0's nearest is 3,
    but 3's nearest is 4), so a transposed similarity matrix would fail this test."""
    histories = {0: {1, 2, 3}, 1: {0, 3, 4}, 2: {3, 4}, 3: {1, 2, 4}, 4: {0}, 5: {4}}
    rows = [(u, i, 1, 0) for u, items in histories.items() for i in sorted(items)]
    train = Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), 6, 5)
    raters = {i: {u for u, items in histories.items() if i in items} for i in range(5)}

    def cosine(i, j):
        return len(raters[i] & raters[j]) / math.sqrt(len(raters[i]) * len(raters[j])) if i != j else 0.0

    nearest = {i: max((j for j in range(5) if j != i), key=lambda j: cosine(i, j)) for i in range(5)}
    assert nearest[0] == 3 and nearest[3] == 4  # not symmetric
    model = ItemKNN(k=1).fit(train)
    for u, items in histories.items():
        for i in range(5):
            expected = cosine(i, nearest[i]) if nearest[i] in items else 0.0
            assert model.score([u])[0, i].item() == pytest.approx(expected)


def test_content_recommender_recovers_clusters_and_scores_cold_items(synthetic):
    # Planted item vectors: one direction per cluster plus noise.
    torch.manual_seed(0)
    clusters = torch.tensor(synthetic.items["cluster"].to_numpy())
    vectors = torch.nn.functional.one_hot(clusters, 3).float() + 0.1 * torch.randn(len(clusters), 3)
    split = temporal_split(synthetic.interactions)
    model = ContentRecommender(vectors).fit(split.train)
    assert _cluster_agreement(model, synthetic) > 0.9
    cold = cold_item_split(synthetic.interactions)
    scores = ContentRecommender(vectors).fit(cold.train).score([0])
    assert scores[0, cold.candidates].std() > 0  # cold items are told apart
    assert scores.abs().max() <= 1.0


def test_content_recommender_bad_input(synthetic):
    split = temporal_split(synthetic.interactions)
    with pytest.raises(ValueError, match="item_vectors has 5 rows"):
        ContentRecommender(torch.ones(5, 3)).fit(split.train)
    with pytest.raises(ValueError, match="user_vectors must be"):
        ContentRecommender(torch.ones(60, 3), user_vectors=torch.ones(2, 3)).fit(split.train)
    given = torch.randn(120, 3)
    model = ContentRecommender(torch.randn(60, 3), user_vectors=given, label="Profile").fit(split.train)
    assert model.name == "Profile" and torch.equal(model.users_, given)

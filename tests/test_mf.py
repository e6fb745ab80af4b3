import pytest
import torch

from recutils.baselines import RandomRecommender
from recutils.metrics import evaluate
from recutils.mf import ImplicitALS
from recutils.split import temporal_split


def test_ials_recovers_planted_clusters(synthetic):
    split = temporal_split(synthetic.interactions)
    model = ImplicitALS(factors=8, regularization=1.0, seed=0).fit(split.train)
    scores = model.score(torch.arange(30))
    assert scores.shape == (30, synthetic.interactions.n_items)
    # Each user's ten best unseen items come mostly from the user's own planted cluster
    # (90 % of each user's ratings are planted there; chance is 1/3).
    top = model.recommend(torch.arange(30), 10)
    item_cluster = torch.tensor(synthetic.items["cluster"].to_numpy())
    own = torch.tensor(synthetic.users["cluster"].to_numpy()[:30]).unsqueeze(1)
    assert (item_cluster[top] == own).float().mean() > 0.8
    random = evaluate(RandomRecommender().fit(split.train), split)["NDCG@10"].iloc[0]
    assert evaluate(model, split)["NDCG@10"].iloc[0] > 2 * random


def test_ials_scores_are_the_product_of_its_factors_and_follow_the_seed(synthetic):
    split = temporal_split(synthetic.interactions)
    a, b = (ImplicitALS(factors=4, seed=0, use_cache=False).fit(split.train) for _ in range(2))
    c = ImplicitALS(factors=4, seed=1, use_cache=False).fit(split.train)
    users = torch.tensor([0, 5])
    assert torch.allclose(a.score(users), a.user_factors_[users] @ a.item_factors_.T)
    assert torch.equal(a.score(users), b.score(users))
    assert not torch.equal(a.score(users), c.score(users))
    seen = split.train.matrix()[users] > 0
    assert not seen.gather(1, a.recommend(users, 5)).any()  # never recommends a seen item


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"factors": 0}, "factors"),
        ({"factors": 2.5}, "factors"),
        ({"iterations": True}, "iterations"),
        ({"regularization": -1.0}, "regularization"),
        ({"alpha": float("nan")}, "alpha"),
    ],
)
def test_ials_bad_settings(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ImplicitALS(**kwargs)


def test_ials_reuses_cached_factors_and_rebuilds_a_damaged_entry(synthetic, empty_cache):
    split = temporal_split(synthetic.interactions)
    fresh = ImplicitALS(factors=4, seed=3).fit(split.train)
    entries = list((empty_cache / "ials").iterdir())
    assert len(entries) == 1
    (entries[0] / "factors.safetensors").write_bytes(b"not a tensor file")
    with pytest.warns(RuntimeWarning, match="ials"):
        rebuilt = ImplicitALS(factors=4, seed=3).fit(split.train)
    assert torch.equal(rebuilt.item_factors_, fresh.item_factors_)
    loaded = ImplicitALS(factors=4, seed=3).fit(split.train)  # from the rebuilt entry
    assert torch.equal(loaded.user_factors_, fresh.user_factors_)
    ImplicitALS(factors=4, seed=4).fit(split.train)  # another seed is another entry
    ImplicitALS(factors=4, seed=3).fit(split.test)  # other interactions too
    assert len(list((empty_cache / "ials").iterdir())) == 3

import pytest
import torch

from recutils.attribution import TextPopularityMLP, popularity_strata, within_items
from recutils.metrics import evaluate
from recutils.split import cold_item_split


@pytest.fixture(scope="module")
def p2(synthetic):
    return cold_item_split(synthetic.interactions, seed=0)


def test_mlp_learns_popularity_from_the_item_vectors(synthetic, p2):
    counts = p2.train.item_counts().float()
    # Vectors that carry log popularity in one coordinate, plus noise.
    generator = torch.Generator().manual_seed(0)
    vectors = torch.randn(p2.train.n_items, 8, generator=generator)
    vectors[:, 0] = torch.log1p(counts)
    model = TextPopularityMLP(vectors, seed=0, hidden=16, max_epochs=3000, lr=1e-2).fit(p2.train)
    warm = counts > 0
    rho = torch.corrcoef(torch.stack([model.predicted_[warm], torch.log1p(counts[warm])]))[0, 1]
    assert rho > 0.9
    # The same list for everyone, and reproducible for a seed.
    scores = model.score(torch.tensor([0, 1]))
    assert torch.equal(scores[0], scores[1])
    again = TextPopularityMLP(vectors, seed=0, hidden=16, max_epochs=3000, lr=1e-2).fit(p2.train)
    assert torch.equal(again.predicted_, model.predicted_)
    assert model.parameter_count() == 8 * 16 + 16 + 16 + 1


def test_mlp_refuses_bad_settings(synthetic, p2):
    with pytest.raises(ValueError, match="lr"):
        TextPopularityMLP(torch.zeros(p2.train.n_items, 4), lr=0.0)
    with pytest.raises(ValueError, match="item_vectors"):
        TextPopularityMLP(torch.zeros(3, 4)).fit(p2.train)


def test_strata_split_the_tested_cold_items_by_test_popularity(p2):
    strata = popularity_strata(p2, 3)
    counts = p2.test.item_counts()
    union = torch.stack(strata).sum(dim=0)
    assert int(union.max()) == 1
    assert torch.equal(union.bool(), p2.candidates & (counts > 0))
    assert counts[strata[0]].max() <= counts[strata[2]].min()
    sizes = [int(m.sum()) for m in strata]
    assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError, match="candidate"):
        popularity_strata(type(p2)(p2.protocol, p2.train, p2.test, None))


def test_within_items_ranks_and_tests_only_those_items(synthetic, p2):
    stratum = popularity_strata(p2, 2)[1]
    part = within_items(p2, stratum)
    assert set(part.test.frame["item"]) <= set(torch.nonzero(stratum).squeeze(1).tolist())
    assert torch.equal(part.candidates, stratum)
    vectors = torch.randn(p2.train.n_items, 4, generator=torch.Generator().manual_seed(1))
    model = TextPopularityMLP(vectors, max_epochs=20).fit(p2.train)
    top = model.recommend(torch.arange(3), 3, candidates=part.candidates)
    assert stratum[top].all()
    assert 0 <= evaluate(model, part, k=3)["NDCG@3"].iloc[0] <= 1

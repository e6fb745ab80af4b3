"""Cold users served by fold-in keep their removed films out of their lists."""

import pytest
import torch

from recutils.baselines import EASE, Popularity
from recutils.cf import ItemKNN
from recutils.explain import FoldIn, cold_user_results
from recutils.perturb import truncate_histories
from recutils.split import temporal_split


@pytest.fixture(scope="module")
def split(synthetic):
    return temporal_split(synthetic.interactions)


def test_plain_fold_in_recommends_the_films_a_cut_removed(split):
    """The artefact the experiment must avoid (so the next test can fail)."""
    users = torch.arange(10)
    cut = truncate_histories(split, users, keep=1)
    lists = FoldIn(EASE(l2=10.0).fit(split.train)).fit(cut.train).recommend(users, 10)
    original = split.train.matrix(binary=True) > 0
    assert original[users.unsqueeze(1), lists].any()


def test_cold_user_results_never_recommend_what_the_users_watched(split, monkeypatch):
    users = torch.arange(10)
    fitted = {"EASE": [EASE(l2=10.0).fit(split.train)], "ItemKNN": [ItemKNN(k=20).fit(split.train)]}
    original = split.train.matrix(binary=True) > 0
    served = []
    import recutils.explain as explain

    real = explain.evaluate_seeds

    def spy(make, measured, seeds=(0,)):
        for s in seeds:
            served.append(make(s))
        return real(make, measured, seeds=seeds)

    monkeypatch.setattr(explain, "evaluate_seeds", spy)
    results = cold_user_results(fitted, split, users, keeps=(1, None), refitted={"Popularity": Popularity})
    assert set(results) == {1, "all"} and set(results[1]) == {"Popularity", "EASE", "ItemKNN"}
    assert len(served) == 2 * 3
    for model in served:
        lists = model.recommend(users, 10)
        assert not original[users.unsqueeze(1), lists].any()
    # Users outside the cut keep nothing but their own test rows: only ``users`` are measured.
    assert results[1]["EASE"].user_mean.index.isin(users.tolist()).all()

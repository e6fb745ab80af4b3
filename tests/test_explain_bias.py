import pandas as pd
import pytest
import torch

from recutils.baselines import EASE, Popularity
from recutils.bias import PopularityPenalty, exposure_share, head_items, metric_by_group
from recutils.cf import ContentRecommender, ItemKNN
from recutils.explain import FoldIn, cite_history_items, faithfulness, fold_in_scores
from recutils.metrics import evaluate
from recutils.perturb import truncate_histories
from recutils.split import Interactions, temporal_split


@pytest.fixture(scope="module")
def split(synthetic):
    return temporal_split(synthetic.interactions)


def test_fold_in_with_the_train_history_reproduces_the_scores(split, synthetic):
    vectors = torch.randn(split.train.n_items, 8, generator=torch.Generator().manual_seed(0))
    users = torch.arange(10)
    history = split.train.matrix()[users]
    for model in (EASE(10.0), ItemKNN(k=10), ContentRecommender(vectors)):
        model.fit(split.train)
        assert torch.allclose(fold_in_scores(model, history), model.score(users), atol=1e-5)
    with pytest.raises(TypeError, match="fold-in"):
        fold_in_scores(Popularity().fit(split.train), history)


def test_citation_and_faithfulness_on_a_hand_case():
    # Item 2 is recommended; the history holds items 0 and 1; item 1 is the more similar.
    similarity = torch.tensor([[1.0, 0.0, 0.2], [0.0, 1.0, 0.9], [0.2, 0.9, 1.0]])
    history = torch.tensor([[1.0, 1.0, 0.0]])
    cited = cite_history_items(history, torch.tensor([2]), similarity)
    assert cited.tolist() == [1]

    class Linear(ItemKNN):  # scores = history @ S.T, so removing item 1 lowers item 2 by 0.9
        pass

    model = Linear(k=None)
    model.similarity_ = similarity
    assert faithfulness(model, history, torch.tensor([2]), cited).tolist() == [True]
    with pytest.raises(ValueError, match="not in its user's history"):
        faithfulness(model, history, torch.tensor([2]), torch.tensor([2]))
    with pytest.raises(ValueError, match="at least one item"):
        cite_history_items(torch.zeros(1, 3), torch.tensor([2]), similarity)


def test_head_items_and_exposure():
    train = Interactions(
        pd.DataFrame({"user": [0, 0, 1, 1, 2], "item": [3, 1, 3, 1, 3], "rating": 5, "timestamp": 0}), 3, 5
    )
    head = head_items(train, share=0.4)  # ceil(0.4 * 5) = 2 items: 3 (three times) and 1 (twice)
    assert head.tolist() == [False, True, False, True, False]
    assert exposure_share(torch.tensor([[3, 0], [1, 4]]), head) == 0.5


def test_popularity_penalty_moves_exposure_to_the_tail(split, synthetic):
    base = EASE(10.0).fit(split.train)
    users = torch.arange(split.train.n_users)
    head = head_items(split.train)
    before = exposure_share(base.recommend(users, 5), head)
    after = exposure_share(PopularityPenalty(base, beta=2.0).fit(split.train).recommend(users, 5), head)
    assert after < before
    same = PopularityPenalty(base, beta=0.0).fit(split.train).recommend(users, 5)
    assert torch.equal(same, base.recommend(users, 5))
    with pytest.raises(ValueError, match="not fitted on this train"):
        PopularityPenalty(EASE(10.0), 1.0).fit(split.train)


def test_metric_by_group_averages_within_groups(split, synthetic):
    model = EASE(10.0).fit(split.train)
    groups = pd.Series(synthetic.users["gender"].to_numpy(), index=range(split.train.n_users))
    by_group = metric_by_group(model, split, groups)
    overall = evaluate(model, split)["NDCG@10"].iloc[0]
    test_users = sorted(split.test.items_by_user())
    sizes = groups.loc[test_users].value_counts()
    # The group means, weighted by group sizes, give back the overall mean.
    assert (by_group * sizes).sum() / sizes.sum() == pytest.approx(overall)
    assert set(by_group.index) == {"F", "M"}
    with pytest.raises(ValueError, match="no entry"):
        metric_by_group(model, split, groups.iloc[:5])


def test_fold_in_serves_changed_histories_with_the_trained_weights(split):
    model = EASE(10.0).fit(split.train)
    # Folding in the train data itself gives the model's own scores and lists.
    same = FoldIn(model).fit(split.train)
    users = torch.arange(10)
    assert torch.allclose(same.score(users), model.score(users), atol=1e-5)
    assert torch.equal(same.recommend(users, 5), model.recommend(users, 5))
    # Cut histories: the weights stay, the scores follow the shorter history, and only it is excluded.
    cut = truncate_histories(split, torch.tensor([0, 1]), keep=1)
    folded = FoldIn(model).fit(cut.train)
    history = cut.train.matrix()[torch.tensor([0, 1])]
    assert torch.allclose(folded.score([0, 1]), history @ model.weights_, atol=1e-5)
    assert torch.equal(folded.seen_[0], cut.train.matrix(binary=True)[0] > 0)
    assert evaluate(folded, cut)["NDCG@10"].iloc[0] >= 0


def test_fold_in_refuses_unfitted_models_and_other_shapes(split, synthetic):
    with pytest.raises(RuntimeError, match="not fitted"):
        FoldIn(EASE(10.0))
    small = Interactions(split.train.frame, split.train.n_users + 1, split.train.n_items)
    with pytest.raises(ValueError, match="same users and items"):
        FoldIn(EASE(10.0).fit(split.train)).fit(small)

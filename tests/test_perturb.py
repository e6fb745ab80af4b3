import numpy as np
import pandas as pd
import pytest
import torch

from recutils.baselines import EASE, Popularity
from recutils.metrics import evaluate, two_level_bootstrap
from recutils.perturb import (
    ExcludeConsumed,
    add_noise,
    inject_fake_users,
    noise_effect,
    push_attack,
    restrict_test,
    subsample_train,
    target_reach,
    truncate_histories,
)
from recutils.selection import evaluate_seeds
from recutils.split import Interactions, Split, temporal_split


@pytest.fixture(scope="module")
def split(synthetic):
    return temporal_split(synthetic.interactions)


def test_subsample_keeps_a_share_per_user_and_the_test_set(split):
    half = subsample_train(split, 0.5)
    before, after = split.train.user_counts(), half.train.user_counts()
    assert torch.equal(after, torch.clamp((before.float() * 0.5).round().long(), min=2).minimum(before))
    assert set(map(tuple, half.train.frame[["user", "item"]].to_numpy())) <= set(
        map(tuple, split.train.frame[["user", "item"]].to_numpy())
    )
    pd.testing.assert_frame_equal(half.test.frame, split.test.frame)
    assert len(subsample_train(split, 1.0).train) == len(split.train)
    with pytest.raises(ValueError, match="fraction"):
        subsample_train(split, 0.0)


def test_truncation_keeps_only_the_latest_items_of_chosen_users(split):
    cut = truncate_histories(split, torch.tensor([0, 1]), keep=2)
    counts = cut.train.user_counts()
    assert counts[0] == 2 and counts[1] == 2 and counts[2] == split.train.user_counts()[2]
    latest = split.train.frame[split.train.frame["user"] == 0].sort_values("timestamp").tail(2)["item"]
    assert set(cut.train.frame[cut.train.frame["user"] == 0]["item"]) == set(latest)
    only = restrict_test(cut, torch.tensor([0, 1]))
    assert set(only.test.frame["user"]) == {0, 1}
    with pytest.raises(ValueError, match="keep"):
        truncate_histories(split, torch.tensor([0]), keep=0)


@pytest.mark.parametrize("as_type", [torch.tensor, np.array, list])
def test_restrict_test_keeps_only_these_users_test_rows(split, as_type):
    only = restrict_test(split, as_type([0, 2]))
    assert set(only.test.frame["user"]) == {0, 2}
    assert len(only.test) == int(split.test.frame["user"].isin([0, 2]).sum())
    assert only.train is split.train and only.candidates is split.candidates
    absent = int(split.test.n_users)  # a user index with no test rows
    with pytest.raises(ValueError, match="none of the given users"):
        restrict_test(split, as_type([absent]))


def test_fake_users_rate_the_target_and_filler_in_train_only(split):
    attacked = inject_fake_users(split, target=5, n_fake=3, filler=torch.tensor([1, 2, 5]))
    n = split.train.n_users
    assert attacked.train.n_users == attacked.test.n_users == n + 3
    fakes = attacked.train.frame[attacked.train.frame["user"] >= n]
    assert len(fakes) == 3 * 3 and set(fakes["item"]) == {5, 1, 2}
    assert len(attacked.test) == len(split.test)
    with pytest.raises(ValueError, match="target"):
        inject_fake_users(split, target=10_000, n_fake=1, filler=torch.tensor([1]))
    with pytest.raises(ValueError, match="filler item -1"):
        inject_fake_users(split, target=5, n_fake=1, filler=torch.tensor([1, -1]))
    no_rows = Interactions(split.train.frame.iloc[:0], split.train.n_users, split.train.n_items)
    empty = Split(split.protocol, no_rows, split.test)
    with pytest.raises(ValueError, match="train part is empty"):
        inject_fake_users(empty, target=5, n_fake=1, filler=torch.tensor([1]))


def test_noise_replaces_a_share_with_unseen_items(split):
    noisy = add_noise(split, 0.25, seed=0)
    assert len(noisy.train) == len(split.train)
    changed = (noisy.train.frame["item"] != split.train.frame["item"]).sum()
    assert changed == round(0.25 * len(split.train))
    # No duplicate (user, item) pairs: a replacement is a film the user had not rated in train.
    assert not noisy.train.frame.duplicated(["user", "item"]).any()
    # A test film the noise put in train leaves the test part (it could never be hit); nothing else does.
    pairs = lambda frame: set(map(tuple, frame[["user", "item"]].to_numpy()))  # noqa: E731
    train, test, noisy_test = pairs(noisy.train.frame), pairs(split.test.frame), pairs(noisy.test.frame)
    assert not train & noisy_test
    assert test - noisy_test == test & train


def test_noise_draws_do_not_read_the_test_set(split):
    # The same train data with another test set (two users' test rows only) gives the same noise.
    noisy = add_noise(split, 0.25, seed=0)
    other_test = add_noise(restrict_test(split, [0, 1]), 0.25, seed=0)
    pd.testing.assert_frame_equal(noisy.train.frame, other_test.train.frame)
    # Noise may land on a user's test film: with a share this large it does on the toy data.
    assert len(noisy.test) < len(split.test)


def test_exclude_consumed_never_recommends_removed_train_items(split):
    half = subsample_train(split, 0.5, seed=0)
    plain = Popularity().fit(half.train)
    users = torch.tensor(sorted(half.test.items_by_user()))
    original = split.train.matrix(binary=True) > 0
    # The artefact: removed train items come back in the lists of the plain model.
    removed_back = original[users.unsqueeze(1), plain.recommend(users, 10)]
    assert removed_back.any()
    wrapped = ExcludeConsumed(plain, split.train).fit(half.train)
    assert not original[users.unsqueeze(1), wrapped.recommend(users, 10)].any()
    # Same scores, evaluated on the changed split, and never worse than the artefact.
    assert torch.equal(wrapped.score(users), plain.score(users))
    assert evaluate(wrapped, half)["NDCG@10"].iloc[0] >= evaluate(plain, half)["NDCG@10"].iloc[0]
    # On unchanged data the wrapper changes nothing.
    full = EASE(l2=10.0).fit(split.train)
    assert torch.equal(
        ExcludeConsumed(full, split.train).fit(split.train).recommend(users, 10), full.recommend(users, 10)
    )


def test_exclude_consumed_needs_the_base_fitted_on_the_changed_data(split):
    half = subsample_train(split, 0.5, seed=0)
    with pytest.raises(ValueError, match="not fitted on this train data"):
        ExcludeConsumed(Popularity().fit(split.train), split.train).fit(half.train)


def test_exclude_consumed_leaves_injected_users_alone(split):
    attacked = inject_fake_users(split, target=5, n_fake=2, filler=torch.tensor([1, 2]))
    wrapped = ExcludeConsumed(Popularity().fit(attacked.train), split.train).fit(attacked.train)
    fake = split.train.n_users
    assert set(wrapped.seen_[fake].nonzero().squeeze(1).tolist()) == {1, 2, 5}


def test_target_reach_is_the_share_of_lists_holding_the_target(split):
    model = Popularity().fit(split.train)
    users = torch.arange(split.train.n_users)
    top = model.recommend(users, 10)
    item = int(top[0, 0])
    assert target_reach(model, users, item) == pytest.approx(float((top == item).any(dim=1).float().mean()))
    assert 0.0 <= target_reach(model, users, item, k=1) <= target_reach(model, users, item, k=10) <= 1.0
    with pytest.raises(ValueError, match="target"):
        target_reach(model, users, split.train.n_items)


def _refit(name, changed, seed):
    return {"Popularity": Popularity, "EASE": lambda: EASE(l2=10.0)}[name]()


def test_push_attack_moves_popularity_and_respects_sizes_per_model(split):
    fitted = {"Popularity": [Popularity().fit(split.train)], "EASE": [EASE(l2=10.0).fit(split.train)]}
    counts = split.train.item_counts()
    target = int(torch.argmin(counts))
    filler = torch.argsort(counts, descending=True)[:3]
    table = push_attack(fitted, _refit, split, target, filler, sizes=(5, 200), sizes_for={"EASE": (5,)})
    assert set(table.index) == {
        ("Popularity", 0), ("Popularity", 5), ("Popularity", 200), ("EASE", 0), ("EASE", 5)
    }
    ranks = table["median rank"]["mean"]
    # 200 fakes make the target more rated than any film but the 3 fillers, which the fakes also rate.
    assert ranks[("Popularity", 200)] <= 4.0 < ranks[("Popularity", 0)]
    assert table["top-10 reach"]["mean"][("Popularity", 200)] == 1.0


def test_noise_effect_excludes_consumed_films_and_compares_paired(split):
    fitted = {"Popularity": [Popularity().fit(split.train)]}
    noisy = add_noise(split, 0.3, seed=0)
    row = noise_effect(fitted, _refit, split, noisy).loc["Popularity"]
    wrapped = ExcludeConsumed(Popularity().fit(noisy.train), split.train).fit(noisy.train)
    assert row["NDCG@10 with noise"] == pytest.approx(evaluate(wrapped, noisy)["NDCG@10"].iloc[0])
    assert row["n"] == 1
    assert row["noise cost"] == pytest.approx(1 - row["NDCG@10 with noise"] / row["NDCG@10 clean"])
    assert row["gap"].low <= row["gap"].difference <= row["gap"].high


def test_noise_effect_compares_on_the_rows_noise_left_and_over_seeds(split):
    noisy = add_noise(split, 0.3, seed=0)
    fitted = {"EASE": [EASE(l2=10.0).fit(split.train), EASE(l2=30.0).fit(split.train)]}
    builders = {0: 10.0, 1: 30.0}
    row = noise_effect(fitted, lambda name, changed, seed: EASE(l2=builders[seed]), split, noisy).loc["EASE"]
    same_rows = Split(split.protocol, split.train, noisy.test, split.candidates)
    clean = evaluate_seeds(lambda s: fitted["EASE"][s], same_rows, seeds=(0, 1))
    assert row["NDCG@10 clean"] == pytest.approx(clean.mean)
    dirty = evaluate_seeds(
        lambda s: ExcludeConsumed(EASE(l2=builders[s]).fit(noisy.train), split.train).fit(noisy.train),
        noisy, seeds=(0, 1),
    )
    expected = two_level_bootstrap(dirty.per_user, clean.per_user)
    assert (row["gap"].low, row["gap"].high) == pytest.approx((expected.low, expected.high))

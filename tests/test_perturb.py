import pandas as pd
import pytest
import torch

from recutils.perturb import add_noise, inject_fake_users, restrict_test, subsample_train, truncate_histories
from recutils.split import temporal_split


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


def test_fake_users_rate_the_target_and_filler_in_train_only(split):
    attacked = inject_fake_users(split, target=5, n_fake=3, filler=torch.tensor([1, 2, 5]))
    n = split.train.n_users
    assert attacked.train.n_users == attacked.test.n_users == n + 3
    fakes = attacked.train.frame[attacked.train.frame["user"] >= n]
    assert len(fakes) == 3 * 3 and set(fakes["item"]) == {5, 1, 2}
    assert len(attacked.test) == len(split.test)
    with pytest.raises(ValueError, match="target"):
        inject_fake_users(split, target=10_000, n_fake=1, filler=torch.tensor([1]))


def test_noise_replaces_a_share_with_unseen_items(split):
    noisy = add_noise(split, 0.25, seed=0)
    assert len(noisy.train) == len(split.train)
    changed = (noisy.train.frame["item"] != split.train.frame["item"]).sum()
    assert changed == round(0.25 * len(split.train))
    # No duplicate (user, item) pairs and no test item leaks into train.
    assert not noisy.train.frame.duplicated(["user", "item"]).any()
    pairs = set(map(tuple, noisy.train.frame[["user", "item"]].to_numpy()))
    assert not pairs & set(map(tuple, split.test.frame[["user", "item"]].to_numpy()))

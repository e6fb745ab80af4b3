import numpy as np
import pandas as pd
import pytest
import torch

from recutils.social import friend_user_vectors, gain_by_history_length, make_social, run_social
from recutils.split import Interactions


def _same_taste_share(social):
    taste = social.ratings.users["cluster"].to_numpy()
    pairs = [(u, f) for u, mates in enumerate(social.friends) for f in mates]
    return np.mean([taste[u] == taste[f] for u, f in pairs])


def test_homophily_sets_how_often_friends_share_a_taste():
    assert _same_taste_share(make_social(homophily=1.0)) == 1.0
    # At random, friends share one of six tastes about a sixth of the time.
    assert _same_taste_share(make_social(homophily=0.0)) == pytest.approx(1 / 6, abs=0.03)
    assert 0.7 < _same_taste_share(make_social(homophily=0.8)) < 0.9


def test_graph_is_symmetric_without_self_loops_and_histories_do_not_depend_on_homophily():
    low, high = make_social(homophily=0.0), make_social(homophily=1.0)
    for user, mates in enumerate(high.friends):
        assert user not in mates
        assert all(user in high.friends[f] for f in mates)
    pd.testing.assert_frame_equal(low.ratings.interactions.frame, high.ratings.interactions.frame)


def test_histories_follow_taste_and_length_bounds():
    social = make_social(in_topic=0.8, history=(3, 20))
    frame = social.ratings.interactions.frame
    taste = social.ratings.users["cluster"].to_numpy()[frame["user"]]
    topic = social.ratings.items["cluster"].to_numpy()[frame["item"]]
    assert np.mean(taste == topic) == pytest.approx(0.8, abs=0.03)  # off-topic items are never own-topic
    counts = frame.groupby("user").size()
    assert counts.min() >= 3 and counts.max() <= 20
    assert frame.groupby("user")["item"].nunique().equals(counts)


def test_bad_arguments():
    with pytest.raises(ValueError, match="homophily"):
        make_social(homophily=1.5)
    with pytest.raises(ValueError, match="n_topics"):
        make_social(n_topics=1)
    with pytest.raises(ValueError, match="history"):
        make_social(history=(0, 5))


def test_friend_vectors_average_friends_histories():
    # User 0 read item 0, user 1 read items 1 and 2, user 2 read nothing; 0 and 1 are friends of 2.
    train = Interactions(
        pd.DataFrame({"user": [0, 1, 1], "item": [0, 1, 2], "rating": [5, 5, 5], "timestamp": [0, 1, 2]}),
        3,
        3,
    )
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    friends = [np.array([2]), np.array([2]), np.array([0, 1])]
    vectors = friend_user_vectors(train, items, friends)
    expected = torch.nn.functional.normalize(torch.tensor([1.0, 1.0]), dim=0)
    assert torch.allclose(vectors[2], expected)
    assert torch.allclose(vectors[0], torch.zeros(2))  # user 0's only friend has no history
    with pytest.raises(ValueError, match="friends lists for 2 users"):
        friend_user_vectors(train, items, friends[:2])


def test_run_social_tunes_on_validation_and_reports_every_model(capsys):
    run = run_social(homophily=1.0, seed=1, n_users=60, n_items=60, history=(3, 8), progress=False)
    assert capsys.readouterr().err == ""  # no progress bars when asked for none
    row = run.row()
    assert row["homophily"] == 1.0
    assert set(run.result.weights) == {"own history", "friends", "ItemKNN"}
    assert sum(run.result.weights.values()) == pytest.approx(1.0)
    assert all(0 <= row[name] <= 1 for name in row)
    gains = gain_by_history_length(run)
    assert list(gains.columns) == ["train items", "own history", "own + friends"]
    assert len(gains) == int(run.result.table.loc["own history", "users"])
    assert gains["own history"].mean() == pytest.approx(row["own history"])
    assert gains["own + friends"].mean() == pytest.approx(row["own + friends, equal weights"])
    assert set(gains["train items"].dropna().unique()) <= {"2-3", "4-8", "9+"}

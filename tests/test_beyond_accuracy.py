import math

import numpy as np
import pandas as pd
import pytest
import torch

from recutils.metrics import (
    average_popularity,
    beyond_accuracy,
    gini_exposure,
    intra_list_diversity,
    novelty,
)
from recutils.split import Interactions


@pytest.fixture
def train():
    # 4 train users (user 4 has none); item 0: all 4 users, item 1: 2 users, item 2: 1 user,
    # item 3: nobody.
    rows = [(u, 0, 1, 0) for u in range(4)] + [(0, 1, 1, 1), (1, 1, 1, 1), (2, 2, 1, 1)]
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), 5, 4)


def test_novelty_is_mean_self_information_over_train_users(train):
    recommended = torch.tensor([[0, 1], [2, 3]])
    # p = 4/4, 2/4, 1/4, and item 3 counts as one user: 1/4. Bits 0, 1, 2, 2.
    assert novelty(recommended, train) == pytest.approx((0 + 1 + 2 + 2) / 4)
    assert novelty(torch.tensor([[0]]), train) == 0.0


def test_average_popularity_counts_train_users(train):
    assert average_popularity(torch.tensor([[0, 1], [2, 3]]), train) == pytest.approx((4 + 2 + 1 + 0) / 4)


def _gini_by_mean_difference(exposure):
    """Gini as half the relative mean absolute difference: Σ_i Σ_j |e_i − e_j| / (2 n² mean)."""
    e = np.asarray(exposure, dtype=float)
    return np.abs(e[:, None] - e[None, :]).sum() / (2 * len(e) ** 2 * e.mean())


def test_gini_of_exposure():
    assert gini_exposure(torch.tensor([[0, 1], [2, 3]]), 4) == pytest.approx(0.0)
    assert gini_exposure(torch.tensor([[3], [3], [3], [3]]), 4) == pytest.approx(3 / 4)
    # Exposures 0, 1, 1, 2 (item 0 never recommended).
    lists = torch.tensor([[1, 3], [2, 3]])
    assert gini_exposure(lists, 4) == pytest.approx(_gini_by_mean_difference([0, 1, 1, 2]))
    assert gini_exposure(lists, 4) == pytest.approx(0.375)
    # Over a catalogue without item 0 exposure is 1, 1, 2; an item outside it is an error.
    catalogue = torch.tensor([False, True, True, True])
    assert gini_exposure(lists, catalogue) == pytest.approx(_gini_by_mean_difference([1, 1, 2]))
    with pytest.raises(ValueError, match="item 0 is not in the catalogue"):
        gini_exposure(torch.tensor([[0, 1]]), catalogue)


def test_intra_list_diversity_is_mean_pairwise_cosine_distance():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])
    assert intra_list_diversity(torch.tensor([[0, 1]]), vectors) == pytest.approx(1.0)
    assert intra_list_diversity(torch.tensor([[0, 3]]), vectors) == pytest.approx(2.0)
    # A film with no genre (a zero vector) is orthogonal to every other item.
    assert intra_list_diversity(torch.tensor([[0, 1]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(1.0)
    three = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    assert intra_list_diversity(torch.tensor([[0, 1, 2], [0, 2, 0]]), vectors) == pytest.approx(
        (three + (2 * (1 - 1 / math.sqrt(2)) + 0) / 3) / 2
    )


def test_beyond_accuracy_collects_every_metric(train):
    lists = torch.tensor([[0, 1], [0, 2]])
    vectors = torch.eye(4)
    candidates = torch.tensor([True, True, True, False])
    result = beyond_accuracy(lists, train, vectors, candidates)
    assert list(result) == ["Novelty@2", "Coverage@2", "Gini@2", "ILD@2", "AvgPop@2"]
    assert result["Coverage@2"] == pytest.approx(3 / 3)
    assert result["Novelty@2"] == pytest.approx((0 + 1 + 0 + 2) / 4)
    assert result["Gini@2"] == pytest.approx(_gini_by_mean_difference([2, 1, 1]))
    assert result["ILD@2"] == pytest.approx(1.0)
    assert result["AvgPop@2"] == pytest.approx((4 + 2 + 4 + 1) / 4)
    assert "ILD@2" not in beyond_accuracy(lists, train)
    assert beyond_accuracy(lists, train)["Coverage@2"] == pytest.approx(3 / 4)


def test_bad_inputs(train):
    with pytest.raises(ValueError, match="must lie in 0..3"):
        novelty(torch.tensor([[4]]), train)
    with pytest.raises(ValueError, match="integer item indices"):
        average_popularity(torch.tensor([[0.5]]), train)
    with pytest.raises(ValueError, match="non-empty"):
        gini_exposure(torch.tensor([0, 1]), 4)
    with pytest.raises(ValueError, match="at least 2 items"):
        intra_list_diversity(torch.tensor([[0]]), torch.eye(4))
    with pytest.raises(ValueError, match="NaN"):
        intra_list_diversity(torch.tensor([[0, 1]]), torch.tensor([[1.0, 0.0], [float("nan"), 0.0]]))
    with pytest.raises(ValueError, match=r"item_vectors must be \(4, dim\)"):
        beyond_accuracy(torch.tensor([[0, 1]]), train, torch.eye(3))
    with pytest.raises(ValueError, match="bool tensor"):
        gini_exposure(torch.tensor([[0, 1]]), torch.ones(4))

import math

import pandas as pd
import pytest
import torch

from recutils.similarity import association_matrix, cosine_similarity, top_k, top_k_neighbours
from recutils.split import Interactions


def _naive_cosine(a, b):
    out = torch.zeros(len(a), len(b))
    for i in range(len(a)):
        for j in range(len(b)):
            na, nb = a[i].norm(), b[j].norm()
            out[i, j] = 0.0 if na == 0 or nb == 0 else (a[i] @ b[j]) / (na * nb)
    return out


def test_cosine_agrees_with_a_naive_loop_and_chunking():
    torch.manual_seed(0)
    a, b = torch.randn(7, 5), torch.randn(4, 5)
    a[3] = 0.0
    full = cosine_similarity(a, b)
    assert torch.allclose(full, _naive_cosine(a, b), atol=1e-6)
    assert torch.allclose(cosine_similarity(a, b, chunk_size=2), full)


def test_item_item_cosine_is_symmetric_with_unit_diagonal():
    x = torch.randn(9, 6)
    sims = cosine_similarity(x)
    assert torch.allclose(sims, sims.T, atol=1e-6)
    assert torch.allclose(torch.diagonal(sims), torch.ones(9), atol=1e-6)
    assert sims.abs().max() <= 1.0


def test_top_k_neighbours_match_the_full_matrix():
    torch.manual_seed(1)
    x = torch.randn(20, 8)
    values, indices = top_k_neighbours(x, k=3, chunk_size=6)
    full = cosine_similarity(x).fill_diagonal_(float("-inf"))
    expected = torch.topk(full, 3, dim=1)
    assert torch.equal(indices, expected.indices) and torch.allclose(values, expected.values)
    assert not (indices == torch.arange(20).unsqueeze(1)).any()
    _, with_self = top_k_neighbours(x, k=1, exclude_self=False)
    assert torch.equal(with_self.squeeze(1), torch.arange(20))
    with pytest.raises(ValueError, match="k must lie in 1..19"):
        top_k_neighbours(x, k=20)


def test_bad_shapes():
    with pytest.raises(ValueError, match="different widths"):
        cosine_similarity(torch.ones(2, 3), torch.ones(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        cosine_similarity(torch.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        cosine_similarity(torch.tensor([[float("nan"), 1.0]]))


def _interactions():
    # Users 0 and 1 share items 0 and 1; user 2 has items 1 and 2.
    rows = [(0, 0, 5, 0), (0, 1, 5, 0), (1, 0, 4, 0), (1, 1, 4, 0), (2, 1, 3, 0), (2, 2, 3, 0)]
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), 3, 3)


def test_association_matrix_by_hand():
    sims = association_matrix(_interactions(), "item")
    # Item 0: users {0,1}; item 1: {0,1,2}; item 2: {2}.
    assert sims[0, 1].item() == pytest.approx(2 / math.sqrt(2 * 3))
    assert sims[1, 2].item() == pytest.approx(1 / math.sqrt(3))
    assert sims[0, 2].item() == 0.0 and torch.all(torch.diagonal(sims) == 0)
    assert torch.allclose(sims, sims.T)
    shrunk = association_matrix(_interactions(), "item", shrinkage=10.0)
    assert shrunk[0, 1].item() == pytest.approx(2 / (math.sqrt(6) + 10))
    users = association_matrix(_interactions(), "user", k=1)
    assert users[0].tolist() == [0.0, pytest.approx(1.0), 0.0]
    with pytest.raises(ValueError, match="axis"):
        association_matrix(_interactions(), "film")
    with pytest.raises(ValueError, match="k must lie"):
        association_matrix(_interactions(), k=3)


def test_top_k_breaks_ties_by_lower_column():
    generator = torch.Generator().manual_seed(0)
    scores = torch.tensor([0.0, 0.5, 1.0])[torch.randint(0, 3, (30, 200), generator=generator)]
    for k in (1, 5, 60, 200):
        values, indices = top_k(scores, k)
        expected = torch.sort(scores, dim=1, descending=True, stable=True)
        assert torch.equal(indices, expected.indices[:, :k]) and torch.equal(values, expected.values[:, :k])
    untied = torch.randn(4, 50, generator=generator)
    assert torch.equal(top_k(untied, 7)[1], torch.topk(untied, 7).indices)


def test_neighbour_lists_keep_the_lower_index_among_equals():
    # Items 0..38 are rated by user 0 alone, so items 1..38 are equally similar to item 0.
    rows = [(0, i, 5, 0) for i in range(40)] + [(1, 39, 5, 0)]
    interactions = Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), 2, 40)
    kept = association_matrix(interactions, "item", k=3)[0]
    assert torch.nonzero(kept).flatten().tolist() == [1, 2, 3]
    # Thirty copies of one vector (as duplicated titles give), each as close to row 0 as row 31 is.
    vectors = torch.tensor([[1.0, 1.0]] + [[1.0, 0.0]] * 30 + [[0.0, 1.0]])
    _, neighbours = top_k_neighbours(vectors, k=4)
    assert neighbours[0].tolist() == [1, 2, 3, 4] and neighbours[5].tolist() == [1, 2, 3, 4]

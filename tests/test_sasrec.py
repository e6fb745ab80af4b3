import numpy as np
import pandas as pd
import pytest
import torch

from recutils.metrics import evaluate
from recutils.sasrec import SASRec, SASRecConfig, SASRecNet, sample_unseen, trim_padding
from recutils.split import Interactions, leave_last_out_split, validation_split

N_ITEMS = 25
SMALL = dict(max_len=12, hidden=32, heads=2, blocks=2, dropout=0.1, batch_size=32, lr=5e-3, epochs=30)


def _interactions(rows, n_users, n_items=4):
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), n_users, n_items)


@pytest.fixture(scope="module")
def ring():
    """Every user walks forward around a ring of 25 items from a random start, 12 steps: the
    next item is always the one after the last, which only a model of order can tell."""
    rng = np.random.default_rng(0)
    rows = []
    for user in range(160):
        start = rng.integers(N_ITEMS)
        rows += [(user, (start + step) % N_ITEMS, 1, 1_000 * user + step) for step in range(12)]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    return leave_last_out_split(Interactions(frame, 160, N_ITEMS))


def test_sasrec_learns_the_next_item_of_a_planted_order(ring, empty_cache):
    model = SASRec(progress=False, **SMALL).fit(ring.train)
    assert model.log_.loss[-1] < 0.5 * model.log_.loss[0]
    # Trained, the next item must come first for most users; chance is 1 in 14 unseen items.
    assert float(evaluate(model, ring, k=1)["Precision@1"].iloc[0]) > 0.9
    users = torch.arange(5)
    by_vectors = model.user_embeddings(users) @ model.item_embeddings().T
    assert torch.allclose(model.score(users), by_vectors, atol=1e-5)


def test_early_stopping_on_validation_and_the_cache(ring, empty_cache):
    settings = {**SMALL, "epochs": 6, "patience": 2}
    first = SASRec(validation=validation_split(ring), progress=False, **settings).fit(ring.train)
    assert 1 <= first.log_.best_epoch <= 6
    assert first.validation_score_ == max(first.validation_log_.validation_ndcg)
    assert len(list((empty_cache / "sasrec").iterdir())) == 1
    again = SASRec(validation=validation_split(ring), progress=False, **settings).fit(ring.train)
    assert torch.equal(first.score(torch.arange(160)), again.score(torch.arange(160)))
    assert again.log_ == first.log_
    # Another seed is another model, and another cache entry.
    SASRec(validation=validation_split(ring), progress=False, **{**settings, "seed": 1}).fit(ring.train)
    assert len(list((empty_cache / "sasrec").iterdir())) == 2


def test_outputs_are_causal_and_independent_of_left_padding():
    torch.manual_seed(0)
    net = SASRecNet(10, SASRecConfig(max_len=6, hidden=8, heads=2, dropout=0.0)).eval()
    sequence = torch.tensor([[-1, -1, 3, 5, 7, 2]])
    out = net.encode(sequence)
    later = sequence.clone()
    later[0, -1] = 9
    assert torch.allclose(net.encode(later)[0, :-1], out[0, :-1], atol=1e-6)
    (trimmed,) = trim_padding(sequence)
    assert trimmed.tolist() == [[3, 5, 7, 2]]
    assert torch.allclose(net.encode(trimmed)[0], out[0, 2:], atol=1e-6)


def test_scores_do_not_depend_on_which_users_are_scored_together():
    # Histories of 2, 5, 3 and 4 items: scoring groups users by length and trims the padding.
    rows = [(u, (u + j) % 9, 1, j) for u, n in enumerate([2, 5, 3, 4]) for j in range(n)]
    model = SASRec(progress=False, use_cache=False, **{**SMALL, "epochs": 2}).fit(_interactions(rows, 4, 9))
    together = model.score(torch.tensor([3, 0, 2, 1]))
    for row, user in enumerate([3, 0, 2, 1]):
        assert torch.allclose(together[row], model.score([user])[0], atol=1e-6)


def test_negatives_are_never_seen_items():
    seen = torch.zeros(2, 6, dtype=torch.bool)
    seen[0, :5] = True  # user 0 has seen all but item 5
    seen[1, [0, 1]] = True
    negatives = sample_unseen(seen, (2, 50), torch.Generator().manual_seed(0))
    assert (negatives[0] == 5).all()
    assert set(negatives[1].tolist()) == {2, 3, 4, 5}
    with pytest.raises(ValueError, match="no unseen item"):
        sample_unseen(torch.ones(1, 3, dtype=torch.bool), (1, 2), torch.Generator())


def test_bad_inputs(ring, empty_cache):
    with pytest.raises(ValueError, match="multiple of heads"):
        SASRecConfig(hidden=10, heads=3)
    with pytest.raises(ValueError, match="dropout must lie in"):
        SASRec(dropout=1.0)
    with pytest.raises(ValueError, match="max_len must be a positive integer"):
        SASRec(max_len=0)
    with pytest.raises(TypeError):
        SASRec(window=5)
    with pytest.raises(RuntimeError, match="not fitted"):
        SASRec().score([0])
    single = _interactions([(0, 1, 1, 0), (1, 2, 1, 0)], 3)
    with pytest.raises(ValueError, match="no user has two train items"):
        SASRec(progress=False, use_cache=False, **SMALL).fit(single)
    short = _interactions([(0, i, 1, i) for i in range(3)] + [(1, 3, 1, 0)], 3)
    model = SASRec(progress=False, use_cache=False, **{**SMALL, "epochs": 1}).fit(short)
    with pytest.raises(ValueError, match="user 2 has no interactions in the training data"):
        model.score([2])
    with pytest.raises(ValueError, match="validation must be validation_split"):
        SASRec(validation=validation_split(ring), progress=False, use_cache=False, **SMALL).fit(ring.test)
    everything = _interactions([(0, i, 1, i) for i in range(4)], 1)
    with pytest.raises(ValueError, match=r"user 0 has interacted with every item in train \(4\)"):
        SASRec(progress=False, use_cache=False, **SMALL).fit(everything)
    # Item 3 has no train row, so it is never a negative: user 0 has none left to draw.
    every_item_in_train = _interactions([(0, i, 1, i) for i in range(3)] + [(1, 0, 1, 0), (1, 1, 1, 1)], 2)
    with pytest.raises(ValueError, match=r"user 0 has interacted with every item in train \(3\)"):
        SASRec(progress=False, use_cache=False, **SMALL).fit(every_item_in_train)

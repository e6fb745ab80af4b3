import math

import pytest

from recutils.ledger import (
    CONTRADICTED,
    NOT_SHOWN,
    NOT_TESTED,
    SUPPORTED,
    ledger_row,
    ledger_table,
    untested_row,
    verdict,
)
from recutils.metrics import Bootstrap

QUOTE = ("high accuracy", "大模型具有强大的表达能力，可以学习复杂的用户-商品关系，提升推荐精度。",
         "large models can learn complex user–item relations and improve accuracy")


def gap(low, high):
    return Bootstrap(difference=(low + high) / 2, low=low, high=high, level=0.95, n_users=10)


def test_verdict_reads_the_interval_against_the_threshold_on_the_claims_side():
    assert verdict(gap(0.01, 0.02)) == SUPPORTED == "supported"
    assert verdict(gap(-0.02, -0.01)) == CONTRADICTED == "contradicted"
    # An interval that straddles the threshold shows nothing either way, whatever its centre.
    assert verdict(gap(-0.0072, 0.0050)) == NOT_SHOWN == "not shown"
    assert verdict(gap(0.0, 0.02)) == NOT_SHOWN  # touching the threshold is containing it
    assert verdict(gap(-0.3, -0.2), threshold=-0.1, side="below") == SUPPORTED
    assert verdict(gap(-0.05, 0.0), threshold=-0.1, side="below") == CONTRADICTED
    assert verdict(gap(-0.15, 0.0), threshold=-0.1, side="below") == NOT_SHOWN


def test_verdict_of_an_exact_number_is_its_own_interval():
    assert verdict(23_067_264 - 2_829_124) == SUPPORTED
    assert verdict(0.95, threshold=0.9, side="below") == CONTRADICTED
    assert verdict(0.9, threshold=0.9) == NOT_SHOWN
    with pytest.raises(ValueError, match="side"):
        verdict(gap(0.1, 0.2), side="higher")


def test_ledger_row_carries_quote_interval_and_verdict():
    row = ledger_row(*QUOTE, "careful tower", "P1 NDCG@10: tower − EASE", gap(-0.0097, 0.0025))
    assert row["verdict"] == NOT_SHOWN and row["interval"] == str(gap(-0.0097, 0.0025))
    assert (row["low"], row["high"], row["threshold"], row["side"]) == (-0.0097, 0.0025, 0.0, "above")
    count = ledger_row(*QUOTE, "careful tower", "parameters: tower − EASE", 20_238_140)
    assert count["interval"] == "+20,238,140" and count["low"] == count["high"] == 20_238_140
    with pytest.raises(ValueError, match="Chinese"):
        ledger_row("high accuracy", "large models improve accuracy", "same", "tower", "x", gap(0, 1))
    with pytest.raises(ValueError, match="translation"):
        ledger_row(QUOTE[0], QUOTE[1], " ", "tower", "x", gap(0, 1))


def test_untested_row_says_where_and_has_no_interval():
    row = untested_row("privacy", "用户行为数据和商品属性信息涉及隐私保护", "user data raise privacy questions",
                       "not tested: no attack model on this data")
    assert row["verdict"] == NOT_TESTED and row["model"] == "—" and math.isnan(row["low"])


def test_ledger_table_checks_rows():
    rows = [ledger_row(*QUOTE, "careful tower", "tower − EASE", gap(0.1, 0.2)),
            untested_row(*QUOTE, "chapter 6")]
    table = ledger_table(rows)
    assert list(table["verdict"]) == [SUPPORTED, NOT_TESTED]
    assert list(table.columns[:7]) == ["claim", "article", "translation", "model", "comparison", "interval", "verdict"]
    with pytest.raises(ValueError, match="verdict"):
        ledger_table([{**rows[0], "verdict": "held"}])
    with pytest.raises(ValueError, match="lacks"):
        ledger_table([{"claim": "accuracy", "verdict": SUPPORTED}])
    with pytest.raises(ValueError, match="at least one"):
        ledger_table([])

import pytest

from recutils.ledger import above_zero, any_above_zero, below, ledger_table, lower_than
from recutils.metrics import Bootstrap


def gap(low, high):
    return Bootstrap(difference=(low + high) / 2, low=low, high=high, level=0.95, n_users=10)


def test_above_zero_and_partly():
    assert above_zero(gap(0.01, 0.02)) == "held"
    assert above_zero(gap(-0.01, 0.02)) == "not held"
    assert above_zero(gap(-0.01, 0.02), partly=[gap(0.01, 0.03), gap(0.001, 0.01)]) == "partly"
    assert above_zero(gap(-0.01, 0.02), partly=[gap(0.01, 0.03), gap(-0.001, 0.01)]) == "not held"


def test_any_above_zero():
    assert any_above_zero([gap(-0.1, 0.1), gap(0.01, 0.02)]) == "held"
    assert any_above_zero([gap(-0.1, -0.01), gap(-0.3, -0.2)]) == "not held"
    assert any_above_zero([gap(-0.1, 0.01), gap(-0.3, -0.2)]) == "undecided"


def test_lower_than_and_below():
    assert lower_than(gap(-0.3, -0.2), gap(-0.1, 0.0)) == "held"
    assert lower_than(gap(0.1, 0.2), gap(-0.1, 0.0)) == "not held"
    assert lower_than(gap(-0.15, -0.05), gap(-0.1, 0.0)) == "undecided"
    assert below(gap(-0.3, -0.2), -0.1) == "held"
    assert below(gap(-0.05, 0.0), -0.1) == "not held"
    assert below(gap(-0.15, 0.0), -0.1) == "undecided"


def test_ledger_table_checks_rows():
    table = ledger_table([("claim", "experiment", gap(0.1, 0.2), "held")])
    assert list(table.columns) == ["experiment", "number", "verdict"]
    assert table.loc["claim", "number"] == str(gap(0.1, 0.2))
    with pytest.raises(ValueError, match="verdict"):
        ledger_table([("claim", "experiment", 1, "maybe")])
    with pytest.raises(ValueError, match="row"):
        ledger_table([("claim", "experiment", 1)])

"""A claims ledger: each claim judged by where one interval lies against a threshold fixed in advance.

One vocabulary for every verdict:

- *supported*: the interval lies on the claim's side of its threshold;
- *contradicted*: it lies on the other side;
- *not shown*: it contains the threshold.

A claim the book runs no experiment for is listed as *not tested*, with where its numbers are, if
anywhere. The intervals are :class:`~recutils.metrics.Bootstrap` results; an exact number (a count
of parameters) is its own interval.
"""

from __future__ import annotations

import math
from typing import Literal

import pandas as pd

from recutils.metrics import Bootstrap

SUPPORTED, CONTRADICTED, NOT_SHOWN = "supported", "contradicted", "not shown"
NOT_TESTED = "not tested"
VERDICTS = (SUPPORTED, CONTRADICTED, NOT_SHOWN)
COLUMNS = ["claim", "article", "translation", "model", "comparison", "interval", "verdict",
           "estimate", "low", "high", "threshold", "side"]

Side = Literal["above", "below"]


def verdict(interval: Bootstrap | float, threshold: float = 0.0, side: Side = "above") -> str:
    """The claim's verdict from where ``interval`` lies against ``threshold``.

    Args:
        interval: a bootstrap interval, or an exact number (a count), whose interval is itself.
        threshold: the value the claim's quantity must pass.
        side: "above" if the claim says the quantity exceeds ``threshold``, "below" if it falls short.
    Returns: "supported", "contradicted" or "not shown" (an interval that touches the threshold
        contains it).
    """
    if side not in ("above", "below"):
        raise ValueError(f"side must be 'above' or 'below', got {side!r}")
    low, high = _bounds(interval)
    if low > threshold:
        return SUPPORTED if side == "above" else CONTRADICTED
    if high < threshold:
        return CONTRADICTED if side == "above" else SUPPORTED
    return NOT_SHOWN


def _bounds(interval: Bootstrap | float) -> tuple[float, float]:
    if isinstance(interval, Bootstrap):
        return interval.low, interval.high
    return float(interval), float(interval)


def ledger_row(
    claim: str,
    article: str,
    translation: str,
    model: str,
    comparison: str,
    interval: Bootstrap | float,
    threshold: float = 0.0,
    side: Side = "above",
) -> dict[str, object]:
    """One tested claim: the article's sentence, what was measured on which model, and its verdict.

    Args:
        claim: a short English name ("high accuracy").
        article: the article's Chinese sentence that makes the claim, quoted.
        translation: its English translation.
        model: the model the experiment tested ("careful tower", "quick tower"...).
        comparison: what the interval measures, with its units ("P1 NDCG@10: tower − EASE").
        interval, threshold, side: as for :func:`verdict`.
    Returns: one row of :data:`COLUMNS`; ``interval`` as text, ``low``/``high`` as numbers.
    """
    _check_quote(claim, article, translation)
    low, high = _bounds(interval)
    estimate = interval.difference if isinstance(interval, Bootstrap) else float(interval)
    text = str(interval) if isinstance(interval, Bootstrap) else _exact(float(interval))
    return {"claim": claim, "article": article, "translation": translation, "model": model,
            "comparison": comparison, "interval": text, "verdict": verdict(interval, threshold, side),
            "estimate": estimate, "low": low, "high": high, "threshold": threshold, "side": side}


def _exact(number: float) -> str:
    """An exact number as the ledger prints it: "+20,238,140" for a count, "+0.0123" otherwise."""
    return f"{number:+,.0f}" if number.is_integer() else f"{number:+.4f}"


def untested_row(claim: str, article: str, translation: str, where: str) -> dict[str, object]:
    """A claim the book gives no verdict: ``where`` says where its numbers are, or why it is not tested."""
    _check_quote(claim, article, translation)
    nan = math.nan
    return {"claim": claim, "article": article, "translation": translation, "model": "—",
            "comparison": where, "interval": "", "verdict": NOT_TESTED,
            "estimate": nan, "low": nan, "high": nan, "threshold": nan, "side": ""}


def _check_quote(claim: str, article: str, translation: str) -> None:
    # The ledger quotes the article in its own language: a row without Chinese text quotes nothing.
    if not any("\u4e00" <= ch <= "\u9fff" for ch in article):
        raise ValueError(f"claim {claim!r}: quote the article's Chinese sentence, got {article!r}")
    if not translation.strip():
        raise ValueError(f"claim {claim!r}: give an English translation of {article!r}")


def ledger_table(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows of :func:`ledger_row` and :func:`untested_row` as one table, in :data:`COLUMNS` order.

    Raises:
        ValueError: no rows, or a row that is not from those functions (missing columns or an
            unknown verdict).
    """
    if not rows:
        raise ValueError("a ledger needs at least one row")
    for row in rows:
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ValueError(f"a ledger row lacks {missing}; build it with ledger_row or untested_row")
        if row["verdict"] not in (*VERDICTS, NOT_TESTED):
            raise ValueError(f"unknown verdict {row['verdict']!r} for {row['claim']!r}")
    return pd.DataFrame(rows, columns=COLUMNS)

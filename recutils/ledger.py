"""Verdict rules for a claims ledger, each reading an interval (or two) fixed in advance.

Every rule returns "held", "not held", "undecided" or "partly"; the intervals are
:class:`~recutils.metrics.Bootstrap` results (``low``, ``high``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from recutils.metrics import Bootstrap


def above_zero(gap: Bootstrap, partly: Sequence[Bootstrap] = ()) -> str:
    """held if ``gap`` lies above zero; partly if every interval of ``partly`` (a weaker
    test, at least one) does; not held otherwise."""
    if gap.low > 0:
        return "held"
    return "partly" if partly and all(g.low > 0 for g in partly) else "not held"


def any_above_zero(gaps: Sequence[Bootstrap]) -> str:
    """held if any interval lies above zero; not held if all lie below; undecided otherwise."""
    if any(g.low > 0 for g in gaps):
        return "held"
    return "not held" if all(g.high < 0 for g in gaps) else "undecided"


def lower_than(small: Bootstrap, full: Bootstrap) -> str:
    """held if ``small`` lies entirely below ``full``; not held if entirely above;
    undecided if they overlap."""
    if small.high < full.low:
        return "held"
    return "not held" if small.low > full.high else "undecided"


def below(gap: Bootstrap, threshold: float) -> str:
    """held if ``gap`` lies entirely below ``threshold``; not held if entirely above; undecided otherwise."""
    if gap.high < threshold:
        return "held"
    return "not held" if gap.low > threshold else "undecided"


def ledger_table(rows: Sequence[tuple[str, str, object, str]]) -> pd.DataFrame:
    """(claim, experiment, number, verdict) rows as a table indexed by claim."""
    for row in rows:
        if len(row) != 4:
            raise ValueError(f"a ledger row is (claim, experiment, number, verdict), got {row!r}")
        if row[3] not in ("held", "not held", "undecided", "partly"):
            raise ValueError(f"unknown verdict {row[3]!r} for {row[0]!r}")
    frame = pd.DataFrame(
        [(c, e, str(n), v) for c, e, n, v in rows], columns=["claim", "experiment", "number", "verdict"]
    )
    return frame.set_index("claim")

"""Check a notebook's stored outputs against fresh ones with the tolerance another CPU needs.

A pytest plugin for nbval (``pytest --nbval-lax -p recutils.outputcheck``). nbval compares
outputs as exact text; on a CPU of another family (AVX2 instead of AVX-512) floats drift in
their later digits and every checked cell fails, though no verdict changed. Here each output
is split into numbers and the text between them. The text (verdict words, chosen settings'
names, table headings) must match exactly, after whitespace is collapsed: runs of spaces and
line breaks count as one space, and none at all next to a number, so a column realigned
for a wider number still matches while two words never merge. The numbers compare under the
cell's tolerance class, chosen by a cell tag:

- ``tolerance-exact``: each number as printed (counts, data facts).
- ``tolerance-deterministic``, the default: within ``atol + rtol·|stored|``, rtol 1e-4.
- ``tolerance-learned``: a looser bound for trained models' metrics.

Integers (no decimal point, exponent or percent sign) are counts, ids or chosen settings
(``n = 3``, ``k = 1600``) and must match exactly in every class. Numbers printed rounded
also get half a unit in the last printed digit of each side: two values within tolerance
can straddle a rounding boundary, so ``0.1235`` against ``0.1236`` passes under rtol 1e-4
while ``0.1235`` against ``0.1237`` does not. Percentages compare as fractions (38% is
0.38), so one atol serves both; nan equals nan, inf compares by sign, and U+2212 (−) is a
minus sign. A number glued to a letter (``P1``, ``l2``, ``5c``, ``1.5x``) is text.

Every textual MIME type that nbval compares goes through the same rule: stream text, plain
text, myst-nb's glue records (``application/papermill.record/text/plain``), and the HTML of
a table, whose tags are text that must match exactly. Images stay as nbval has them: not
compared, or compared exactly under ``--nbdime``. nbval's ``--nbval-sanitize-with`` still applies first; the book no longer needs
the regex that cut floats to 5 decimals, which would only make ``tolerance-exact`` blind to
the digits it cut.

nbval 0.11 builds its cell items itself and has no comparison hook; its one override point
is ``IPyNbCell.compare_outputs(test, ref) -> bool``, which ``runtest`` calls and whose
explanation it reads from ``comparison_traceback``. After collection each nbval cell is
given :class:`ToleranceCell`, which overrides only that method.
"""

from __future__ import annotations

import decimal
import re
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple

import pytest
from nbval.plugin import IPyNbCell, transform_streams_for_comparison


@dataclass(frozen=True)
class Tolerance:
    """How far a fresh number may be from the stored one: ``|new − stored| ≤ atol + rtol·|stored|``,
    plus, when ``rounding``, half a unit in the last printed digit of each."""

    rtol: Decimal
    atol: Decimal
    rounding: bool

    def __str__(self) -> str:
        if not self.rounding:
            return "numbers must match as printed"
        return f"rtol {float(self.rtol) * 100:g}%, atol {float(self.atol):g}, ½ unit in each last digit"


# The learned bound is a first guess, to be replaced by measured cross-CPU drift (and stated in
# the chapters' method notes); the deterministic one allows float32 noise of the order 1e-6.
TOLERANCES: dict[str, Tolerance] = {
    "exact": Tolerance(rtol=Decimal(0), atol=Decimal(0), rounding=False),
    "deterministic": Tolerance(rtol=Decimal("1e-4"), atol=Decimal("1e-6"), rounding=True),
    "learned": Tolerance(rtol=Decimal("0.05"), atol=Decimal("0.005"), rounding=True),
}
DEFAULT_CLASS = "deterministic"
TAG_PREFIX = "tolerance-"
_TAGS = {f"{TAG_PREFIX}{name}": name for name in TOLERANCES}

_MINUS = "\u2212"
_NUMBER = re.compile(
    rf"""
    (?<![\w.])                                    # not the tail of a word, id or version (P1, 2.13.0)
    (?P<sign>[-+{_MINUS}])?
    (?:
        (?P<digits>\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?|\d+(?:\.\d+)?)
        (?P<exp>[eE][-+{_MINUS}]?\d+)?
        (?P<percent>%)?
      | (?P<special>(?i:nan|inf(?:inity)?))
    )
    (?!\w)(?!\.\d)                                # nor the head of one (5c, 10k, 2.13.0)
    """,
    re.VERBOSE,
)
# Room for any exponent a printed number can carry, and digits enough that sums are exact.
_ARITHMETIC = decimal.Context(prec=60, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)


class Number(NamedTuple):
    """One number in an output: as printed, its value, and its kind
    ("integer", "decimal", "percent" or "special" for nan and inf)."""

    text: str
    value: Decimal
    kind: str


def tokenize(text: str) -> list[str | Number]:
    """Split ``text`` into text, number, text, ..., text (always odd length; text may be empty),
    each text run's whitespace collapsed to single spaces and stripped at its ends."""
    tokens: list[str | Number] = []
    start = 0
    for match in _NUMBER.finditer(text):
        tokens += [" ".join(text[start : match.start()].split()), _number(match)]
        start = match.end()
    return tokens + [" ".join(text[start:].split())]


def _number(match: re.Match[str]) -> Number:
    sign = "-" if match["sign"] in ("-", _MINUS) else ""
    if match["special"]:
        return Number(match[0], Decimal(sign + match["special"]), "special")
    exponent = (match["exp"] or "").replace(_MINUS, "-")
    value = Decimal(sign + match["digits"].replace(",", "") + exponent)
    if match["percent"]:
        return Number(match[0], value.scaleb(-2), "percent")
    kind = "decimal" if "." in match["digits"] or exponent else "integer"
    return Number(match[0], value, kind)


def compare_numbers(stored: Number, new: Number, tolerance: str) -> str | None:
    """None when ``new`` is within the ``tolerance`` class of ``stored``, else a sentence why not."""
    tol = TOLERANCES[tolerance]
    change = f"number {stored.text} → {new.text}"
    if not tol.rounding:
        return None if stored.text == new.text else f"{change} ({tolerance}: {tol})"
    if stored.kind != new.kind:
        return f"{change} printed as {stored.kind} → {new.kind} (the kind of number must not change)"
    a, b = stored.value, new.value
    if stored.kind == "integer":
        return None if a == b else f"{change} (integers are counts, ids or settings: they must match exactly)"
    if stored.kind == "special":
        same = (a.is_nan() and b.is_nan()) or (not a.is_nan() and a == b)
        return None if same else f"{change} (nan and inf must match exactly)"
    with decimal.localcontext(_ARITHMETIC):
        difference = abs(b - a)
        allowed = tol.atol + tol.rtol * abs(a) + (_unit(a) + _unit(b)) / 2
        if difference <= allowed:
            return None
        relative = f" ({float(difference / abs(a)):.1%})" if a else ""
    return (
        f"{change} differs by {float(difference):.3g}{relative}; "
        f"{tolerance} allows {float(allowed):.3g} ({tol})"
    )


def _unit(value: Decimal) -> Decimal:
    """One unit in the last printed digit: 1e-4 for 0.1783, 1e-6 for 1.6e-05, 0.01 for 38%."""
    return Decimal(1).scaleb(value.as_tuple().exponent)


def compare_text(stored: str, new: str, tolerance: str) -> list[str]:
    """What differs between two outputs under the ``tolerance`` class; empty when they agree.
    Stops at the first text difference, after which numbers no longer pair up."""
    old_tokens, new_tokens = tokenize(stored), tokenize(new)
    problems = []
    for old, fresh in zip(old_tokens, new_tokens):
        if isinstance(old, Number):
            if problem := compare_numbers(old, fresh, tolerance):
                problems.append(problem)
        elif old != fresh:
            return problems + [f"text {_excerpt(old, fresh)} (text must match exactly)"]
    if len(old_tokens) != len(new_tokens):
        counts = f"{len(old_tokens) // 2} numbers stored, {len(new_tokens) // 2} new"
        problems.append(f"{counts}: {_excerpt(stored, new)}")
    return problems


def _excerpt(old: str, new: str, width: int = 60) -> str:
    """'old' → 'new' from a little before their first difference, so that long text stays readable."""
    first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    start = max(0, first - 20)

    def clip(text: str) -> str:
        end = start + width
        return ("…" if start else "") + text[start:end] + ("…" if len(text) > end else "")

    return f"{clip(old)!r} → {clip(new)!r}"


def tolerance_class(tags: list[str]) -> str:
    """The tolerance class a cell's tags choose; ValueError on an unknown or a second one."""
    chosen = [tag for tag in tags if tag.startswith(TAG_PREFIX)]
    unknown = [tag for tag in chosen if tag not in _TAGS]
    if unknown or len(chosen) > 1:
        raise ValueError(
            f"cell tags {chosen} do not choose one tolerance class: use at most one of "
            f"{sorted(_TAGS)} (no tag means {DEFAULT_CLASS})"
        )
    return _TAGS[chosen[0]] if chosen else DEFAULT_CLASS


class ToleranceCell(IPyNbCell):
    """nbval's notebook cell, comparing outputs under its tolerance class instead of exactly."""

    def compare_outputs(
        self, test: list[Any], ref: list[Any], skip_compare: tuple[str, ...] | None = None
    ) -> bool:
        """nbval's contract: True when the fresh outputs ``test`` match the stored ``ref``, else
        False with the reasons in ``self.comparison_traceback``. Like nbval, outputs are grouped
        by MIME type (streams by name), so outputs of different types may come in any order."""
        skip = skip_compare or self.parent.skip_compare
        stored, new = self._by_type(ref, skip), self._by_type(test, skip)
        tolerance = tolerance_class(self.cell.metadata.get("tags", []))
        problems = []
        if stored.keys() != new.keys():
            problems.append(f"output types differ: stored {sorted(stored)}, new {sorted(new)}")
        for key in [key for key in stored if key in new]:
            if len(stored[key]) != len(new[key]):
                problems.append(f"{key}: {len(stored[key])} outputs stored, {len(new[key])} new")
                continue
            for i, (old, fresh) in enumerate(zip(stored[key], new[key]), 1):
                # Images (compared only with nbval's --nbdime) are base64, not numbers and words.
                if isinstance(old, str) and isinstance(fresh, str) and not key.startswith("image/"):
                    problems += [f"{key} #{i}: {p}" for p in compare_text(old, fresh, tolerance)]
                elif old != fresh:
                    problems.append(f"{key} #{i}: {old!r} → {fresh!r}")
        self.comparison_traceback = [
            f"{self.path.name} {self.name}, {tolerance} tolerance ({TOLERANCES[tolerance]}):",
            *(f"  {p}" for p in problems),
        ]
        return not problems

    def _by_type(self, outputs: list[Any], skip: tuple[str, ...]) -> dict[str, list[Any]]:
        """Output values by MIME type or stream name, sanitised, as nbval groups them."""
        grouped: dict[str, list[Any]] = defaultdict(list)
        for output in transform_streams_for_comparison(outputs):
            for key, value in output.items():
                if key in skip:
                    continue
                for name, item in value.items() if key == "data" else [(key, value)]:
                    if name not in skip:
                        grouped[name].append(self.sanitize(item))
        return grouped


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give nbval's cells the tolerant comparison; a bad tolerance tag stops the run before
    any notebook starts."""
    for item in items:
        if type(item) is IPyNbCell:
            try:
                tolerance_class(item.cell.metadata.get("tags", []))
            except ValueError as error:
                raise pytest.UsageError(f"{item.nodeid}: {error}") from None
            item.__class__ = ToleranceCell

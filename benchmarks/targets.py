"""The targets each benchmark section checks its results against (met or not, in the result file)."""

from __future__ import annotations


def not_measured(name: str, needs: str) -> dict:
    """A target that this run could not measure, saying what it needs."""
    return {"target": name, "value": float("nan"), "goal": f"not measured: needs {needs}", "met": False}


def target_row(name: str, value: float, goal: str, threshold: float, higher_is_better: bool = True) -> dict:
    """A measured value against the goal written before it was first measured."""
    met = value >= threshold if higher_is_better else value <= threshold
    return {"target": name, "value": value, "goal": goal, "met": bool(met)}

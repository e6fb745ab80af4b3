"""Argument checks shared by the public functions: one clear error, naming the argument.

A reader's wrong argument should fail at once with a message that names it and says
what it must be, not deep inside torch or numpy, and never silently (``k=True`` is
not a list length; a NaN weight is not a weight).
"""

from __future__ import annotations

import math
import numbers

import torch


def check_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int; an integer type (numpy's too), not a bool, within the bounds.

    Raises:
        ValueError: naming ``name``, when ``value`` is not such an integer.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "" if minimum is None else f"{minimum}"
        high = "" if maximum is None else f"{maximum}"
        if minimum == 1 and maximum is None:
            raise ValueError(f"{name} must be a positive integer, got {value}")
        bounds = f">= {low}" if maximum is None else f"<= {high}" if minimum is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be an integer {bounds}, got {value}")
    return value


def check_number(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> float:
    """``value`` as a finite float (a real number, not a bool or a str) in [low, high].

    Args:
        low_open: exclude ``low`` itself (e.g. a temperature must be > 0).
    Raises:
        ValueError: naming ``name``, when ``value`` is not such a number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low == 0 and (value < 0 or (low_open and value == 0)):
        raise ValueError(f"{name} must be {'positive' if low_open else 'non-negative'}, got {value:g}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value:g}")
    return value


def check_rows(vectors: object, name: str, n_rows: int, what: str = "items") -> torch.Tensor:
    """``vectors`` as a (n_rows, dim) finite tensor, one row per user or item.

    Raises:
        ValueError: naming ``name``, for another type, shape or NaN/infinite entries.
    """
    if not isinstance(vectors, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(vectors).__name__}")
    if vectors.ndim != 2 or len(vectors) != n_rows:
        raise ValueError(
            f"{name} must be ({n_rows}, dim), one row per {what[:-1]} of the train data "
            f"({n_rows} {what}), got shape {tuple(vectors.shape)}"
        )
    if not torch.isfinite(vectors).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return vectors

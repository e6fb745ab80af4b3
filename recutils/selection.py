"""Honest estimates: choose on validation, report learned models over seeds.

Every choice in the book (a variant, a weight, a k, a β, a temperature) goes
through :func:`choose`, which sees only validation numbers and says what it
chose; test is then evaluated once, for that choice. Stochastic models are
evaluated with :func:`evaluate_seeds`, which reports the mean and standard
deviation over seeds and the per-user metric per seed, the input of
:func:`~recutils.metrics.two_level_bootstrap` (users and seeds resampled together);
:func:`evaluate_over_seeds` does that for several systems at once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recutils.metrics import Bootstrap, edge_parameters, evaluate
from recutils.recommender import Recommender
from recutils.split import Split


@dataclass(frozen=True)
class Choice:
    """What validation chose, and the validation table it chose from.

    Attributes:
        best: the chosen candidate (a name, a value or a tuple of weights).
        table: one row per candidate: ``mean``, ``sd`` and ``n`` of the validation metric.
        metric: the validation metric, e.g. "NDCG@10".
        edge_reason: why a choice at the edge of an ordered grid is still a choice (or None).
        top: the candidate with the best mean, when the choice kept a preferred one within
            one standard error of it (see :func:`choose`'s ``prefer``); else None.
    """

    best: Hashable
    table: pd.DataFrame
    metric: str
    edge_reason: str | None = None
    top: Hashable | None = None

    def __str__(self) -> str:
        row = self.table.loc[[self.best]].iloc[0]
        spread = f" ± {row['sd']:.4f} (n = {int(row['n'])} seeds)" if row["n"] > 1 else ""
        text = f"validation chose {self.best} (validation {self.metric} {row['mean']:.4f}{spread})"
        if self.top is not None:
            text += f", within one standard error of the best mean ({self.top})"
        return text + (f"; at the edge of its grid: {self.edge_reason}" if self.edge_reason else "")


def choose(
    scores: Mapping[Hashable, float | Sequence[float]],
    metric: str = "NDCG@10",
    ordered: bool = False,
    edge_reason: str | None = None,
    prefer: Hashable | None = None,
) -> Choice:
    """Pick the candidate with the best mean validation score.

    Args:
        scores: validation metric per candidate, a number or one number per seed.
        ordered: the candidates are the ordered values of one parameter (a grid); then a
            choice at either end is refused unless ``edge_reason`` says why it stands.
        edge_reason: the reason an edge choice stands (e.g. "a weight cannot be below 0").
        prefer: a candidate stated before validation is read (the design under test, say),
            kept unless the best mean beats it by more than one standard error of that best
            mean (sd / √n over seeds): the one-standard-error rule (Hastie et al. 2009, §7.10).
            A choice between candidates within seed noise would otherwise follow the noise,
            and flip with the last bits of the arithmetic.
    Raises:
        ValueError: no candidates, a non-finite score, an unexplained edge choice, or a
            preferred candidate that is not among them or has a single score.
    """
    if not scores:
        raise ValueError("choose needs at least one candidate")
    rows = {}
    for candidate, value in scores.items():
        values = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError(f"candidate {candidate!r} has no finite validation score: {value!r}")
        sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
        rows[candidate] = {"mean": float(values.mean()), "sd": sd, "n": values.size}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "candidate"
    best, top = table["mean"].idxmax(), None
    if prefer is not None:
        if prefer not in table.index:
            raise ValueError(f"the preferred candidate {prefer!r} is not among {list(table.index)}")
        if (table["n"] < 2).any():
            raise ValueError("prefer needs several scores (seeds) per candidate for a standard error")
        standard_error = table.loc[best, "sd"] / np.sqrt(table.loc[best, "n"])
        if prefer != best and table.loc[prefer, "mean"] >= table.loc[best, "mean"] - standard_error:
            best, top = prefer, best
    at_edge = ordered and len(table) >= 3 and best in (table.index[0], table.index[-1])
    if at_edge and edge_reason is None:
        raise ValueError(
            f"validation chose {best!r}, the edge of the grid {list(table.index)}; widen the grid "
            "or pass edge_reason saying why the edge stands"
        )
    return Choice(best, table, metric, edge_reason if at_edge else None, top)


def choose_setting(best: Mapping[str, object], grid: Mapping[str, Sequence[object]]) -> str:
    """One sentence naming what :func:`~recutils.metrics.tune` chose, and whether it is interior."""
    edges = edge_parameters(best, grid)
    chosen = ", ".join(f"{name} = {value:g}" if isinstance(value, float) else f"{name} = {value}"
                       for name, value in best.items())
    where = f"at the edge of the grid for {', '.join(edges)}" if edges else "inside the grid"
    return f"validation chose {chosen} ({where})"


@dataclass(frozen=True)
class SeedResult:
    """One model evaluated over several seeds.

    Attributes:
        summary: one row per seed (index ``seed``) with every metric of :func:`evaluate`.
        per_user: (users × seeds) table of the per-user metric, one column per seed: pair it with
            another model's in :func:`~recutils.metrics.two_level_bootstrap`.
        metric: the per-user metric kept.
    """

    summary: pd.DataFrame
    per_user: pd.DataFrame
    metric: str

    @property
    def mean(self) -> float:
        return float(self.summary[self.metric].mean())

    @property
    def sd(self) -> float:
        """Standard deviation over seeds (n − 1 in the denominator); 0 for one seed."""
        return float(self.summary[self.metric].std(ddof=1)) if len(self.summary) > 1 else 0.0

    @property
    def user_mean(self) -> pd.Series:
        """The per-user metric averaged over seeds; a bootstrap over it holds the seeds fixed."""
        return self.per_user.mean(axis=1)

    def __str__(self) -> str:
        return mean_sd(self.mean, self.sd, len(self.summary))


def mean_sd(mean: float, sd: float, n: int, digits: int = 3) -> str:
    """``"0.178 ± 0.008 (n = 3)"``; just the mean for one run."""
    if n <= 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f} (n = {n})"


def mean_se(values: Sequence[float] | np.ndarray | pd.Series, digits: int = 3) -> str:
    """``"0.245 ± 0.021 (SE, n = 40)"``: the mean and its standard error over the values (e.g. users)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError(f"a standard error needs at least two values, got {values.size}")
    se = values.std(ddof=1) / np.sqrt(values.size)
    return f"{values.mean():.{digits}f} ± {se:.{digits}f} (SE, n = {values.size})"


def evaluate_seeds(
    make: Callable[[int], Recommender],
    split: Split,
    seeds: Sequence[int] = (0, 1, 2),
    k: int = 10,
    metric: str | None = None,
) -> SeedResult:
    """Fit ``make(seed)`` on ``split.train`` for every seed and evaluate it on ``split``.

    Args:
        make: builds an unfitted (or already fitted on ``split.train``) model for a seed.
        seeds: at least one seed; use three or more for a learned model.
        metric: the per-user metric to keep (default NDCG@k).
    """
    if len(seeds) == 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    metric = metric or f"NDCG@{k}"
    summaries, per_user = [], {}
    for seed in seeds:
        model = make(seed)
        if not hasattr(model, "train_") or model.train_.fingerprint() != split.train.fingerprint():
            model.fit(split.train)
        summary, users = evaluate(model, split, k=k, per_user=True)
        if metric not in users.columns:
            raise ValueError(f"unknown metric {metric!r}; choose from {list(users.columns)}")
        summaries.append(summary.assign(seed=seed).set_index("seed"))
        per_user[seed] = users[metric]
    return SeedResult(pd.concat(summaries), pd.DataFrame(per_user), metric)


def evaluate_over_seeds(
    systems: Callable[[int], Mapping[str, Recommender]],
    split: Split,
    seeds: Sequence[int] = (0, 1, 2),
    k: int = 10,
) -> dict[str, SeedResult]:
    """Evaluate every system of ``systems(seed)`` on ``split`` for every seed.

    A system that is the very same object for every seed (a deterministic model) is
    evaluated once and reported with n = 1; the others once per seed.

    Args:
        systems: seed -> name -> recommender (fitted on ``split.train``, or a combination
            of such models, which is fitted here).
    Returns: name -> :class:`SeedResult`, in the order of the first seed's systems.
    """
    if len(seeds) == 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    by_seed = {seed: dict(systems(seed)) for seed in seeds}
    results = {}
    for name in by_seed[seeds[0]]:
        models = [by_seed[seed].get(name) for seed in seeds]
        if any(m is None for m in models):
            raise ValueError(f"system {name!r} is missing for some seeds")
        same = all(m is models[0] for m in models)
        results[name] = evaluate_seeds(
            lambda seed, name=name: by_seed[seed][name], split, seeds[:1] if same else seeds, k=k
        )
    return results


def seed_table(results: Mapping[str, SeedResult], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """A results table over seeds: ``<metric>`` (mean), ``<metric> sd`` and ``n`` per model."""
    rows = {}
    for name, result in results.items():
        columns = metrics or [c for c in result.summary.columns if c != "users"]
        row = {}
        for column in columns:
            row[column] = float(result.summary[column].mean())
            if len(result.summary) > 1:
                row[f"{column} sd"] = float(result.summary[column].std(ddof=1))
        row["n"] = len(result.summary)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    ordered = [c for m in (metrics or []) for c in (m, f"{m} sd") if c in table.columns]
    return table[ordered + [c for c in table.columns if c not in ordered]] if metrics else table


def glue_intervals(
    intervals: Mapping[str, Bootstrap],
    words: tuple[str, str, str] = ("above", "below", "within noise of"),
) -> pd.DataFrame:
    """Glue each paired-bootstrap interval for the prose, and return them as a table.

    For every key, ``ci_<key>`` is the interval as text ("+0.0085 [+0.0020, +0.0150]") and
    ``verdict_<key>`` is ``Bootstrap.verdict(*words)`` (the first word when the interval lies above
    zero, the second when below, the third when it holds zero).

    Returns: one row per key: difference, 95% low, 95% high, verdict.
    """
    from myst_nb import glue  # only notebooks glue; the rest of recutils does not need myst-nb

    rows = {}
    for key, result in intervals.items():
        glue(f"ci_{key}", str(result), display=False)
        glue(f"verdict_{key}", result.verdict(*words), display=False)
        rows[key] = {"difference": result.difference, "95% low": result.low, "95% high": result.high,
                     "verdict": result.verdict(*words)}
    return pd.DataFrame.from_dict(rows, orient="index")


def glue_all(**values: object) -> None:
    """Glue each value under its name for the prose (``{glue:text}`name```), showing nothing.

    Numbers are glued as plain Python numbers, so a format such as ``:.1f`` works in the prose.
    """
    from myst_nb import glue  # only notebooks glue; the rest of recutils does not need myst-nb

    for name, value in values.items():
        if isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.floating):
            value = float(value)
        glue(name, value, display=False)

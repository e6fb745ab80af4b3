"""Figures the chapters share, so notebooks stay a call and a sentence."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from recutils.data import RatingsData


def plot_data_overview(data: RatingsData) -> Figure:
    """Three panels: the rating distribution, the item popularity long tail, interactions per user."""
    frame = data.interactions.frame
    fig, (ratings, tail, users) = plt.subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    counts = frame["rating"].value_counts().sort_index()
    ratings.bar(counts.index, counts.to_numpy(), color="tab:blue")
    ratings.set(title="Ratings", xlabel="stars", ylabel="number of ratings")

    popularity = np.sort(data.interactions.item_counts().numpy())[::-1]
    share = np.cumsum(popularity) / popularity.sum()
    tail.plot(np.arange(1, len(popularity) + 1), popularity, color="tab:orange")
    tail.set(
        title="Item popularity (long tail)", xlabel="item rank by popularity", ylabel="ratings", yscale="log"
    )
    top = int(np.searchsorted(share, 0.5)) + 1
    tail.axvline(top, color="grey", linestyle="--")
    tail.annotate(
        f"{top} items hold\nhalf the ratings",
        (top, popularity[0]),
        xytext=(8, -28),
        textcoords="offset points",
    )

    per_user = data.interactions.user_counts().numpy()
    users.hist(per_user, bins=40, color="tab:green")
    users.set(title="Ratings per user", xlabel="ratings", ylabel="users", yscale="log")
    return fig


def plot_metric_bars(table: pd.DataFrame, metrics: list[str]) -> Figure:
    """Grouped bars: one group per metric, one bar per model (the table's index)."""
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    width = 0.8 / len(table)
    x = np.arange(len(metrics))
    for offset, (name, row) in enumerate(table[metrics].iterrows()):
        ax.bar(x + offset * width, row.to_numpy(), width, label=str(name))
    ax.set_xticks(x + width * (len(table) - 1) / 2, metrics)
    ax.legend(frameon=False)
    ax.set_ylabel("mean over test users")
    return fig


def plot_tuning_curve(table: pd.DataFrame, parameter: str, metric: str, log: bool = True) -> Figure:
    """A validation metric against one hyper-parameter, best setting marked."""
    fig, ax = plt.subplots(figsize=(5, 3), layout="constrained")
    ax.plot(table[parameter], table[metric], marker="o")
    best = table.loc[table[metric].idxmax()]
    ax.scatter(
        [best[parameter]],
        [best[metric]],
        color="tab:red",
        zorder=3,
        label=f"best {parameter}={best[parameter]:g}",
    )
    ax.set(xlabel=parameter, ylabel=f"validation {metric}", xscale="log" if log else "linear")
    ax.legend(frameon=False)
    return fig


def plot_embedding_map(
    vectors: torch.Tensor, genres: Sequence[Sequence[str]], shown: Sequence[str]
) -> Figure:
    """Items projected on their first two principal components, coloured by genre.

    Each item is coloured by the first genre of ``shown`` that it has; items with
    none of them are drawn in light grey behind.
    """
    if len(vectors) != len(genres):
        raise ValueError(f"{len(vectors)} vectors for {len(genres)} genre lists")
    centred = vectors.float() - vectors.float().mean(dim=0)
    _, _, components = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ components[:2].T).numpy()
    label = np.array([next((g for g in shown if g in gs), "") for gs in genres], dtype=object)
    fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
    ax.scatter(*xy[label == ""].T, s=6, color="0.85", label="other")
    for genre in shown:
        ax.scatter(*xy[label == genre].T, s=8, label=genre)
    ax.set(xlabel="PC 1", ylabel="PC 2", xticks=[], yticks=[])
    ax.legend(frameon=False, markerscale=2, fontsize="small", loc="best")
    return fig


def plot_popularity_maps(panels: dict[str, torch.Tensor], counts: torch.Tensor) -> Figure:
    """Item vectors on their first two principal components, one panel per space, coloured by
    log(1 + number of train interactions).

    Args:
        panels: name -> (n_items, dim) vectors of the same items.
        counts: (n_items,) train interactions per item.
    """
    if any(len(v) != len(counts) for v in panels.values()):
        raise ValueError(f"every panel needs one vector per item ({len(counts)})")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), layout="constrained", squeeze=False)
    colour = np.log1p(counts.float().numpy())
    for ax, (name, vectors) in zip(axes[0], panels.items(), strict=True):
        centred = vectors.float() - vectors.float().mean(dim=0)
        _, _, components = torch.linalg.svd(centred, full_matrices=False)
        xy = (centred @ components[:2].T).numpy()
        # Popular films drawn last, on top; films with equal counts in item order on every CPU.
        order = np.argsort(colour, kind="stable")
        points = ax.scatter(*xy[order].T, c=colour[order], s=7, cmap="viridis")
        ax.set(title=name, xlabel="PC 1", ylabel="PC 2", xticks=[], yticks=[])
    fig.colorbar(points, ax=axes[0].tolist(), label="log(1 + train ratings)")
    return fig


def plot_similarity_heatmaps(matrices: dict[str, torch.Tensor], labels: Sequence[str]) -> Figure:
    """Side-by-side heatmaps of square similarity matrices over the same labelled items."""
    for name, matrix in matrices.items():
        if matrix.shape != (len(labels), len(labels)):
            raise ValueError(f"{name!r} is {tuple(matrix.shape)}, expected ({len(labels)}, {len(labels)})")
    fig, axes = plt.subplots(
        1, len(matrices), figsize=(5.2 * len(matrices), 4.6), layout="constrained", squeeze=False
    )
    for ax, (name, matrix) in zip(axes[0], matrices.items(), strict=True):
        image = ax.imshow(matrix.numpy(), cmap="viridis", vmin=0)
        ax.set_title(name)
        ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize="small")
        ax.set_yticks(range(len(labels)), labels, fontsize="small")
        fig.colorbar(image, ax=ax, shrink=0.7)
    return fig


def plot_training_curves(logs: dict[str, object], reference: dict[str, float] | None = None) -> Figure:
    """Training loss and validation NDCG@10 per epoch, one line per run.

    Args:
        logs: name -> a :class:`~recutils.training.TrainingLog`
            (``loss``, ``validation_ndcg``, ``best_epoch``).
        reference: name -> a validation NDCG@10 drawn as a horizontal line (e.g. EASE).
    """
    fig, (loss_ax, ndcg_ax) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    for name, log in logs.items():
        epochs = np.arange(1, len(log.loss) + 1)
        loss_ax.plot(epochs, np.asarray(log.loss) / log.loss[0], marker=".", label=name)
        line = ndcg_ax.plot(
            np.arange(1, len(log.validation_ndcg) + 1), log.validation_ndcg, marker=".", label=name
        )
        if log.best_epoch:
            ndcg_ax.scatter(
                [log.best_epoch],
                [log.validation_ndcg[log.best_epoch - 1]],
                color=line[0].get_color(),
                s=60,
                zorder=3,
            )
    for name, value in (reference or {}).items():
        ndcg_ax.axhline(value, color="grey", linestyle="--", linewidth=1)
        ndcg_ax.annotate(
            name, (1, value), xytext=(2, -11), textcoords="offset points", color="grey", fontsize="small"
        )
    loss_ax.set(title="training loss (relative to epoch 1)", xlabel="epoch")
    ndcg_ax.set(title="validation NDCG@10 (dot: early-stopping choice)", xlabel="epoch")
    ndcg_ax.legend(frameon=False, fontsize="small")
    return fig


def plot_seed_curves(curves: dict[str, Sequence[Sequence[float]]], ylabel: str = "validation NDCG@10",
                     x: Sequence[float] | None = None, xlabel: str = "epoch") -> Figure:
    """One line per run family: the mean over seeds per epoch, with a band from the lowest to
    the highest seed. Runs that stopped early simply end; an epoch's mean is over the seeds
    that reached it.

    Args:
        curves: name -> one sequence of per-epoch values per seed.
        x: where each value was measured (e.g. training steps); default 1, 2, … (epochs).
    """
    if not curves or any(len(runs) == 0 for runs in curves.values()):
        raise ValueError("every curve family needs at least one run")
    fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
    for name, runs in curves.items():
        length = max(len(r) for r in runs)
        values = np.full((len(runs), length), np.nan)
        for row, run in enumerate(runs):
            values[row, : len(run)] = run
        epochs = np.arange(1, length + 1) if x is None else np.asarray(x, dtype=np.float64)[:length]
        line = ax.plot(epochs, np.nanmean(values, axis=0), marker=".", label=f"{name} (n = {len(runs)})")
        ax.fill_between(epochs, np.nanmin(values, axis=0), np.nanmax(values, axis=0), alpha=0.2,
                        color=line[0].get_color())
    ax.set(xlabel=xlabel, ylabel=ylabel, title="mean over seeds; band: lowest to highest seed")
    ax.legend(frameon=False, fontsize="small")
    return fig


def plot_mixing_curve(curves: pd.DataFrame, x: str, metric: str = "NDCG@10", log_x: bool = False) -> Figure:
    """A metric against a setting (a mixing weight, a half-life), one line per column
    (e.g. validation and test), each line's best point circled.

    Args:
        curves: one row per setting, with column ``x`` and one column per line to draw.
        log_x: a logarithmic x axis.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for column in curves.columns.drop(x):
        ax.plot(curves[x], curves[column], marker="o", label=column)
        best = curves.loc[curves[column].idxmax()]
        ax.scatter([best[x]], [best[column]], s=80, facecolors="none", edgecolors="black", zorder=3)
    ax.set(xlabel=x, ylabel=metric, xscale="log" if log_x else "linear")
    ax.legend(frameon=False)
    return fig


def plot_tradeoff(table: pd.DataFrame, x: str, y: str, label: str) -> Figure:
    """A trade-off curve (e.g. diversity against accuracy), each point labelled."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6), layout="constrained")
    ax.plot(table[x], table[y], marker="o")
    for _, row in table.iterrows():
        ax.annotate(
            str(row[label]), (row[x], row[y]), xytext=(4, 4), textcoords="offset points", fontsize="small"
        )
    ax.set(xlabel=x, ylabel=y)
    return fig


def plot_cost_growth(panels: Sequence[tuple[pd.DataFrame, str, str, str]]) -> Figure:
    """Log–log panels of a cost against a size, each with its fitted slope.

    Args:
        panels: (table, x column, y column, title) per panel.
    """
    from recutils.benchmark import loglog_slope

    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels), 3.4), layout="constrained", squeeze=False
    )
    for ax, (table, x, y, title) in zip(axes[0], panels, strict=True):
        slope, intercept = loglog_slope(table[x], table[y])
        xs = np.geomspace(table[x].min(), table[x].max(), 50)
        ax.plot(table[x], table[y], "o", color="tab:blue", label="measured")
        ax.plot(xs, np.exp(intercept) * xs**slope, "--", color="tab:orange", label=f"fit: slope {slope:.2f}")
        ax.set(xscale="log", yscale="log", xlabel=x, ylabel=y, title=title)
        ax.legend()
    return fig


def plot_recall_speed(table: pd.DataFrame, recall_target: float = 0.95, speed_target: float = 10.0) -> Figure:
    """Approximate indexes: recall@10 against speed-up over exact search, one line per index.

    Args:
        table: rows with ``distribution``, ``items``, ``index``, ``recall@10`` and
            ``speed_vs_exact`` (the benchmark's "approximate" table).
    """
    distributions = list(dict.fromkeys(table["distribution"]))
    fig, axes = plt.subplots(
        1,
        len(distributions),
        figsize=(5 * len(distributions), 3.6),
        layout="constrained",
        sharey=True,
        squeeze=False,
    )
    for ax, distribution in zip(axes[0], distributions, strict=True):
        rows = table[table["distribution"] == distribution]
        for (index, items), line in rows.groupby(["index", "items"], sort=False):
            ax.plot(line["speed_vs_exact"], line["recall@10"], "o-", label=f"{index}, {items:,} items")
        ax.axhline(recall_target, color="grey", linestyle=":")
        ax.axvline(speed_target, color="grey", linestyle=":")
        ax.set(xscale="log", xlabel="speed-up over exact search", title=f"{distribution} vectors")
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel("recall@10")
    return fig


def plot_against(
    table: pd.DataFrame,
    x: str,
    panels: dict[str, Sequence[str]],
    mark: float | None = None,
    mark_label: str = "chosen on validation",
) -> Figure:
    """Columns of ``table`` against ``x``, one panel per group (e.g. accuracy | exposure).

    A trade-off read off one shared x axis needs no point labels, so none can overlap.

    Args:
        panels: panel title -> the columns drawn in it (one line each, in its legend).
        mark: an x value to mark with a dashed vertical line in every panel (e.g. the
            setting validation chose), labelled ``mark_label``.
    """
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), 3.9), layout="constrained", squeeze=False
    )
    for ax, (title, columns) in zip(axes[0], panels.items(), strict=True):
        for column in columns:
            ax.plot(table[x], table[column], marker="o", label=column)
        if mark is not None:
            ax.axvline(mark, color="grey", linestyle="--", label=f"{x} = {mark:g}, {mark_label}")
        ax.set(title=title, xlabel=x)
        # Below the panel, where no line can run under it.
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return fig


def plot_recall_curves(table: pd.DataFrame) -> Figure:
    """Approximate search: recall@10 against each index's search setting, and against time.

    Args:
        table: rows with ``index`` (e.g. "IVF"), ``setting`` (the parameter's name, e.g.
            "nprobe"), ``value`` (its value), ``recall@10`` and ``ms per query``.
    """
    fig, (by_setting, by_time) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for (index, setting), rows in table.groupby(["index", "setting"], sort=False):
        by_setting.plot(rows["value"], rows["recall@10"], marker="o", label=f"{index} ({setting})")
        by_time.plot(rows["ms per query"], rows["recall@10"], marker="o", label=index)
    by_setting.set(xscale="log", xlabel="search setting (log scale)", ylabel="recall@10",
                   title="Recall as the search widens")
    by_time.set(xlabel="milliseconds per query", ylabel="recall@10", title="Recall against time")
    by_setting.legend(fontsize="small")
    by_time.legend(fontsize="small")
    return fig


def plot_gap_cdf(gaps: dict[str, np.ndarray]) -> Figure:
    """Share of test interactions whose gap to the user's last train interaction is at most t.

    Args:
        gaps: protocol name -> (n,) gaps in seconds (``recutils.sequences.test_gaps``).
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    for name, values in gaps.items():
        hours = np.sort(np.maximum(np.asarray(values, dtype=np.float64), 1.0)) / 3600
        ax.step(hours, np.arange(1, len(hours) + 1) / len(hours), where="post", label=f"{name} ({len(hours):,} test interactions)")
    for hours, text in ((1 / 60, "1 minute"), (1, "1 hour"), (24, "1 day"), (24 * 30, "30 days")):
        ax.axvline(hours, color="grey", linestyle=":", linewidth=1)
        ax.annotate(text, (hours, 0.02), xytext=(3, 0), textcoords="offset points", color="grey", fontsize="small")
    ax.set(xscale="log", xlabel="hours from the user's last train interaction", ylim=(0, 1),
           ylabel="share of test interactions", title="How soon after the history does the test come?")
    ax.legend(frameon=False, fontsize="small", loc="center right")
    return fig


def plot_position_bias(probe: pd.DataFrame) -> Figure:
    """Where a multiple-choice prompt puts its probability, by letter and by the test item's place.

    Args:
        probe: :func:`recutils.lmrerank.position_probe` rows (``position``, ``p_relevant``, ``p_A``, …).
    """
    letters = [c.removeprefix("p_") for c in probe.columns if c.startswith("p_") and c != "p_relevant"]
    chance = 1 / len(letters)
    fig, (by_letter, by_place) = plt.subplots(1, 2, figsize=(9, 3.3), layout="constrained", sharey=True)
    by_letter.bar(letters, [probe[f"p_{x}"].mean() for x in letters], color="tab:grey")
    by_letter.set(title="Mean probability of each letter", xlabel="answer letter", ylabel="probability")
    place = probe.groupby("position")["p_relevant"].mean()
    by_place.bar([letters[i] for i in place.index], place.to_numpy(), color="tab:blue")
    by_place.set(title="Probability of the test film, by its letter", xlabel="letter the test film was listed at")
    for ax in (by_letter, by_place):
        ax.axhline(chance, color="black", linestyle=":", linewidth=1)
        ax.annotate("chance", (len(letters) - 0.5, chance), xytext=(0, 3), textcoords="offset points",
                    ha="right", fontsize="small")
    return fig


def plot_table_curves(table: pd.DataFrame, x: str, y: str = "validation NDCG@10", log_y: bool = False) -> Figure:
    """A table whose rows are settings of one parameter, drawn as curves: one panel per first
    column level (e.g. protocol, or metric), one line per second level (e.g. model).

    Args:
        table: indexed by the parameter's values, with two-level columns; a missing value is
            a setting that line was not measured at.
        x: the x-axis label. The axis is logarithmic past the smallest positive value and
            linear below it, so a setting of 0 still shows.
        y: the y-axis label of every panel.
        log_y: a logarithmic y axis (for times that span orders of magnitude).
    """
    panels = list(dict.fromkeys(table.columns.get_level_values(0)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), layout="constrained",
                             squeeze=False)
    positive = table.index[table.index > 0]
    for ax, panel in zip(axes[0], panels, strict=True):
        for name, column in table[panel].items():
            curve = column.dropna()
            ax.plot(curve.index, curve.to_numpy(), marker="o", label=name)
        if len(positive) and (table.index <= 0).any():
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        elif len(positive) == len(table.index):
            ax.set_xscale("log")
        ax.set(title=panel, xlabel=x, ylabel=y, yscale="log" if log_y else "linear")
        # Below the panel, where no line can run under it.
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncols=2)
    return fig


def plot_forest(table: pd.DataFrame, label: str = "claim") -> Figure:
    """A forest plot: one row per verdict, its interval and estimate against its threshold.

    Every row gets its own x scale (NDCG gaps, shares and counts do not share units); the
    threshold is a dashed line and the verdict is written at the right, coloured by kind.

    Args:
        table: one row per verdict with columns ``label``, ``estimate``, ``low``, ``high``,
            ``threshold`` and ``verdict`` (e.g. :func:`recutils.ledger.ledger_table`); rows
            without an interval (``low`` missing: claims not tested) are left out.
        label: the column that names each row on the left.
    Raises:
        ValueError: a column is missing or no row has an interval.
    """
    needed = [label, "estimate", "low", "high", "threshold", "verdict"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"plot_forest needs the columns {missing}; pass a ledger_table")
    rows = table[table["low"].notna()]
    if rows.empty:
        raise ValueError("no row has an interval to plot")
    colours = {"supported": "tab:green", "contradicted": "tab:red"}
    fig, axes = plt.subplots(len(rows), 1, figsize=(9, 0.55 * len(rows) + 0.4), layout="constrained",
                             squeeze=False)
    for ax, (_, row) in zip(axes[:, 0], rows.iterrows(), strict=True):
        colour = colours.get(row["verdict"], "tab:gray")
        ax.hlines(0, row["low"], row["high"], color=colour, linewidth=3)
        ax.plot([row["estimate"]], [0], marker="o", color=colour)
        ax.axvline(row["threshold"], color="black", linestyle="--", linewidth=1)
        # Room either side, so that a point interval (an exact count) and the threshold both show.
        span = max(row["high"], row["threshold"]) - min(row["low"], row["threshold"])
        pad = 0.15 * span if span > 0 else 1.0
        ax.set_xlim(min(row["low"], row["threshold"]) - pad, max(row["high"], row["threshold"]) + pad)
        ax.set_yticks([0], [row[label]])
        ax.tick_params(axis="x", labelsize="small")
        ax.text(1.01, 0.5, row["verdict"], transform=ax.transAxes, va="center", color=colour)
        ax.spines[["top", "right", "left"]].set_visible(False)
    return fig


def plot_latency_by_concurrency(table: pd.DataFrame, target_ms: float | None = None) -> Figure:
    """A load test's latency percentiles and throughput against the number of concurrent clients.

    Args:
        table: :func:`recutils.loadtest.load_test` rows (``clients``, ``p50 ms``, ``p99 ms``,
            ``requests/s``) with a ``scenario`` column: one colour per scenario, p50 solid, p99 dashed.
        target_ms: a latency target, drawn as a dotted line.
    """
    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    for n, (scenario, rows) in enumerate(table.groupby("scenario", sort=False)):
        colour = f"C{n}"
        latency.plot(rows["clients"], rows["p50 ms"], marker="o", color=colour, label=f"{scenario} p50")
        latency.plot(rows["clients"], rows["p99 ms"], marker="o", color=colour, linestyle="--", label=f"{scenario} p99")
        throughput.plot(rows["clients"], rows["requests/s"], marker="o", color=colour, label=scenario)
    if target_ms is not None:
        latency.axhline(target_ms, color="black", linestyle=":", linewidth=1, label=f"target {target_ms:g} ms")
    latency.set(title="Latency", xlabel="concurrent clients", ylabel="ms", xscale="log", yscale="log")
    throughput.set(title="Throughput", xlabel="concurrent clients", ylabel="requests / s", xscale="log")
    clients = sorted(table["clients"].unique())
    for ax, corner in ((latency, "upper left"), (throughput, "best")):  # latency rises to the right
        ax.set_xticks(clients, [str(c) for c in clients])
        ax.legend(fontsize="small", loc=corner)
    return fig

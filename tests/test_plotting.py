import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from recutils.plotting import (  # noqa: E402
    plot_cost_growth,
    plot_data_overview,
    plot_forest,
    plot_metric_bars,
    plot_position_bias,
    plot_table_curves,
    plot_recall_speed,
    plot_tuning_curve,
)


def test_data_overview_has_three_labelled_panels(synthetic):
    fig = plot_data_overview(synthetic)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Ratings", "Item popularity (long tail)", "Ratings per user"]
    # The rating bars are the counts of each star value.
    heights = sorted(p.get_height() for p in fig.axes[0].patches)
    assert heights == sorted(synthetic.interactions.frame["rating"].value_counts().tolist())


def test_metric_bars_one_bar_per_model_and_metric():
    table = pd.DataFrame({"A": [0.1, 0.2], "B": [0.3, 0.4]}, index=["m1", "m2"])
    fig = plot_metric_bars(table, ["A", "B"])
    assert len(fig.axes[0].patches) == 4
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["m1", "m2"]


def test_tuning_curve_marks_the_best():
    table = pd.DataFrame({"l2": [1.0, 10.0, 100.0], "NDCG@10": [0.1, 0.3, 0.2]})
    fig = plot_tuning_curve(table, "l2", "NDCG@10")
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "best l2=10"


def test_embedding_map_colours_by_the_first_shown_genre():
    import torch

    from recutils.plotting import plot_embedding_map

    vectors = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    fig = plot_embedding_map(vectors, [["Drama"], ["Comedy", "Drama"], [], ["War"]], ["Comedy", "Drama"])
    sizes = [len(c.get_offsets()) for c in fig.axes[0].collections]
    assert sizes == [2, 1, 1]  # other (no genre, War), Comedy, Drama


def test_similarity_heatmaps_one_panel_per_matrix():
    import pytest
    import torch

    from recutils.plotting import plot_similarity_heatmaps

    fig = plot_similarity_heatmaps({"text": torch.eye(3), "co-rating": torch.ones(3, 3)}, ["a", "b", "c"])
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["text", "co-rating"]
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="expected"):
        plot_similarity_heatmaps({"bad": torch.eye(2)}, ["a", "b", "c"])


def test_training_curves_mark_the_best_epoch():
    from recutils.plotting import plot_training_curves
    from recutils.training import TrainingLog

    log = TrainingLog(loss=[2.0, 1.0, 0.5], validation_ndcg=[0.1, 0.3, 0.2], best_epoch=2)
    fig = plot_training_curves({"run": log}, reference={"EASE": 0.25})
    loss_ax, ndcg_ax = fig.axes
    assert list(loss_ax.lines[0].get_ydata()) == [1.0, 0.5, 0.25]
    assert list(ndcg_ax.collections[0].get_offsets()[0]) == [2, 0.3]
    assert ndcg_ax.lines[-1].get_ydata()[0] == 0.25


def test_mixing_curve_and_tradeoff():
    from recutils.plotting import plot_mixing_curve, plot_tradeoff

    curves = pd.DataFrame({"w": [0.0, 0.5, 1.0], "validation": [0.1, 0.3, 0.2], "test": [0.1, 0.2, 0.25]})
    fig = plot_mixing_curve(curves, "w")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["validation", "test"]
    assert [list(c.get_offsets()[0]) for c in ax.collections] == [[0.5, 0.3], [1.0, 0.25]]
    table = pd.DataFrame({"ndcg": [0.2, 0.18], "diversity": [0.5, 0.6], "λ": [1.0, 0.5]})
    fig = plot_tradeoff(table, "diversity", "ndcg", "λ")
    assert [t.get_text() for t in fig.axes[0].texts] == ["1.0", "0.5"]


def test_cost_growth_fits_the_slope_of_a_power_law():
    table = pd.DataFrame({"n": [10, 100, 1000], "seconds": [0.5, 5.0, 50.0]})
    fig = plot_cost_growth([(table, "n", "seconds", "linear")])
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["measured", "fit: slope 1.00"]


def test_recall_speed_one_panel_per_distribution_one_line_per_index():
    table = pd.DataFrame(
        {
            "distribution": ["clustered"] * 4 + ["uniform"] * 2,
            "items": [100] * 6,
            "index": ["hnsw", "hnsw", "ivf", "ivf", "ivf", "ivf"],
            "recall@10": [0.9, 0.99, 0.8, 0.97, 0.3, 0.6],
            "speed_vs_exact": [20, 5, 30, 8, 30, 8],
        }
    )
    fig = plot_recall_speed(table)
    assert [ax.get_title() for ax in fig.axes] == ["clustered vectors", "uniform vectors"]
    assert len(fig.axes[0].get_legend().get_texts()) == 2
    assert len(fig.axes[1].get_legend().get_texts()) == 1


def test_popularity_maps_one_panel_per_space_coloured_by_popularity():
    import torch

    from recutils.plotting import plot_popularity_maps

    counts = torch.tensor([0, 1, 5, 50, 500])
    panels = {"raw": torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), "tower": torch.eye(5)}
    fig = plot_popularity_maps(panels, counts)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["raw", "tower"]
    colours = sorted(axes[0].collections[0].get_array().tolist())
    assert colours == pytest.approx(sorted(torch.log1p(counts.float()).tolist()))
    with pytest.raises(ValueError, match="one vector per item"):
        plot_popularity_maps({"raw": torch.zeros(4, 2)}, counts)


def test_seed_curves_plot_the_mean_and_the_range_over_seeds():
    import numpy as np

    from recutils.plotting import plot_seed_curves

    fig = plot_seed_curves({"adam": [[0.1, 0.2, 0.3], [0.3, 0.4]], "sgd": [[0.05]]})
    ax = fig.axes[0]
    adam = ax.lines[0]
    # Epochs 1-2 average both seeds; epoch 3 has only the seed that got there.
    assert np.allclose(adam.get_ydata(), [0.2, 0.3, 0.3])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["adam (n = 2)", "sgd (n = 1)"]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(0.1) and band.max() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="at least one run"):
        plot_seed_curves({"adam": []})
    stepped = plot_seed_curves({"tuned": [[0.1, 0.2], [0.3]]}, x=[0, 25, 50], xlabel="step").axes[0]
    assert list(stepped.lines[0].get_xdata()) == [0, 25] and stepped.get_xlabel() == "step"


def test_plot_against_draws_one_line_per_column_and_the_mark():
    from recutils.plotting import plot_against

    table = pd.DataFrame({"β": [0.0, 0.5, 1.0], "a": [1, 2, 3], "b": [3, 2, 1], "c": [0, 1, 0]})
    fig = plot_against(table, "β", {"accuracy": ["a", "b"], "exposure": ["c"]}, mark=0.5)
    assert [ax.get_title() for ax in fig.axes] == ["accuracy", "exposure"]
    assert len(fig.axes[0].lines) == 3 and len(fig.axes[1].lines) == 2  # the columns and the mark
    assert fig.axes[0].lines[-1].get_xdata()[0] == 0.5
    assert "β = 0.5, chosen on validation" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


def test_plot_recall_curves_one_line_per_index():
    from recutils.plotting import plot_recall_curves

    table = pd.DataFrame(
        {
            "index": ["IVF", "IVF", "HNSW", "HNSW"],
            "setting": ["nprobe", "nprobe", "efSearch", "efSearch"],
            "value": [1, 4, 16, 64],
            "recall@10": [0.6, 0.9, 0.95, 0.99],
            "ms per query": [0.01, 0.03, 0.02, 0.05],
        }
    )
    fig = plot_recall_curves(table)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["IVF (nprobe)", "HNSW (efSearch)"]
    assert list(fig.axes[1].lines[1].get_ydata()) == [0.95, 0.99]


def test_position_bias_bars_average_each_letter_and_each_place():
    probe = pd.DataFrame({"user": [0, 0, 1, 1], "position": [0, 1, 0, 1], "p_relevant": [0.9, 0.3, 0.7, 0.1],
                          "p_A": [0.9, 0.7, 0.7, 0.9], "p_B": [0.1, 0.3, 0.3, 0.1]})
    letters, places = plot_position_bias(probe).axes
    assert [p.get_height() for p in letters.patches] == pytest.approx([0.8, 0.2])
    assert [p.get_height() for p in places.patches] == pytest.approx([0.8, 0.2])


def test_table_curves_draw_one_line_per_model_per_protocol_skipping_untried_settings():
    columns = pd.MultiIndex.from_tuples([("P1", "ItemKNN"), ("P1", "UserKNN"), ("G", "ItemKNN")])
    table = pd.DataFrame([[0.1, 0.2, 0.3], [0.15, None, 0.25], [0.2, 0.1, None]], index=[0.0, 2.0, 20.0],
                         columns=columns)
    p1, g = plot_table_curves(table, "shrinkage").axes
    assert [ax.get_title() for ax in (p1, g)] == ["P1", "G"]
    assert [len(line.get_xdata()) for line in p1.get_lines()] == [3, 2]
    assert list(g.get_lines()[0].get_xdata()) == [0.0, 2.0]
    assert p1.get_xscale() == "symlog"  # 0 is a setting, so the axis is linear near it
    timed = plot_table_curves(table.set_axis([1.0, 4.0, 16.0]), "queries", "ms", log_y=True).axes[0]
    assert timed.get_xscale() == "log" and timed.get_yscale() == "log"


def test_forest_plot_one_panel_per_verdict_with_its_interval_and_threshold():
    table = pd.DataFrame({
        "claim": ["accuracy", "privacy", "explainability"],
        "estimate": [-0.003, float("nan"), 0.86], "low": [-0.009, float("nan"), 0.84],
        "high": [0.002, float("nan"), 0.88], "threshold": [0.0, float("nan"), 0.9],
        "verdict": ["not shown", "not tested", "supported"],
    })
    accuracy, explainability = plot_forest(table).axes  # the untested claim has no panel
    assert [t.get_text() for t in accuracy.get_yticklabels()] == ["accuracy"]
    (interval,) = explainability.collections
    assert interval.get_segments()[0][:, 0] == pytest.approx([0.84, 0.88])
    threshold = explainability.get_lines()[-1]
    assert list(threshold.get_xdata()) == [0.9, 0.9]
    low, high = explainability.get_xlim()
    assert low < 0.84 and high > 0.9  # the threshold is in view, beyond the interval
    assert [t.get_text() for t in explainability.texts] == ["supported"]
    with pytest.raises(ValueError, match="threshold"):
        plot_forest(table.drop(columns="threshold"))
    with pytest.raises(ValueError, match="no row"):
        plot_forest(table.iloc[[1]])


def test_latency_by_concurrency_draws_p50_and_p99_per_scenario_and_the_target():
    from recutils.plotting import plot_latency_by_concurrency

    table = pd.DataFrame({"scenario": ["exact"] * 2 + ["text"] * 2, "clients": [1, 16, 1, 16],
                          "p50 ms": [2.0, 30.0, 10.0, 90.0], "p99 ms": [5.0, 60.0, 20.0, 150.0],
                          "requests/s": [400.0, 500.0, 90.0, 100.0]})
    latency, throughput = plot_latency_by_concurrency(table, target_ms=50).axes
    labels = [t.get_text() for t in latency.get_legend().get_texts()]
    assert labels == ["exact p50", "exact p99", "text p50", "text p99", "target 50 ms"]
    assert list(latency.get_lines()[3].get_ydata()) == [20.0, 150.0]
    assert list(throughput.get_lines()[1].get_ydata()) == [90.0, 100.0]
    assert latency.get_yscale() == "log" and [t.get_text() for t in latency.get_xticklabels()] == ["1", "16"]

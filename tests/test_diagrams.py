import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from recutils.diagrams import (
    ARTICLE_CONCEPTS,
    ARTICLE_EDGES,
    ARTICLE_STEPS,
    Box,
    article_flow_diagram,
    draw_flow,
    two_tower_diagram,
)


def _texts(fig):
    return [t.get_text() for t in fig.axes[0].texts]


def test_draw_flow_draws_every_box_and_arrow():
    fig = draw_flow({"a": Box("A", 1, 1), "b": Box("B", 4, 1, "trained")}, [("a", "b")])
    patches = fig.axes[0].patches
    assert sum(isinstance(p, FancyBboxPatch) for p in patches) == 2
    assert sum(isinstance(p, FancyArrowPatch) for p in patches) == 1
    assert _texts(fig) == ["A", "B"]
    # The arrow starts at box a's right edge and ends at box b's left edge, not at the centres.
    arrow = next(p for p in patches if isinstance(p, FancyArrowPatch))
    (x0, _), (x1, _) = arrow._posA_posB
    assert x0 == pytest.approx(1 + 1.1 + 0.05) and x1 == pytest.approx(4 - 1.1 - 0.05)
    plt.close(fig)


def test_two_tower_diagram_names_the_parts():
    for user_input, user_label in (("text", "u_emb = mean of i_emb"), ("history", "item MLP on each film")):
        fig = two_tower_diagram(user_input, temperature=0.1)
        text = "\n".join(_texts(fig))
        for part in ("user MLP", "item MLP\ni_h", "τ = 0.1", "softmax over the batch", user_label):
            assert part in text
        plt.close(fig)


def test_draw_flow_errors():
    with pytest.raises(ValueError, match="do not exist"):
        draw_flow({"a": Box("A", 1, 1)}, [("a", "missing")])
    with pytest.raises(ValueError, match="kinds"):
        draw_flow({"a": Box("A", 1, 1, "magic")}, [])
    with pytest.raises(ValueError, match="user_input"):
        two_tower_diagram("query")


def _arrows(fig):
    return sum(isinstance(p, FancyArrowPatch) for p in fig.axes[0].patches)


def test_article_flow_diagram_redraws_section_2_2_node_for_node():
    fig = article_flow_diagram("2.2")
    # The article's Mermaid graph: 14 nodes, 13 arrows, every arrow between two of its nodes.
    assert sorted(_texts(fig)) == sorted(label for label, _ in ARTICLE_CONCEPTS.values())
    assert _arrows(fig) == len(ARTICLE_EDGES) == 13
    assert {n for edge in ARTICLE_EDGES for n in edge} == set(ARTICLE_CONCEPTS)
    assert ("E", "N") in ARTICLE_EDGES and ARTICLE_CONCEPTS["N"][1] == "最终推荐结果"
    assert not fig.axes[0].get_legend()
    plt.close(fig)


def test_article_flow_diagram_shows_the_six_steps_in_order():
    fig = article_flow_diagram("6.2")
    texts = _texts(fig)
    steps = [t for t in texts if t[0].isdigit()]
    names = ["behaviour data", "item attributes", "BERT embeddings", "similarity", "two-tower", "combination"]
    assert steps == [f"{i}. {name}" for i, name in enumerate(names, 1)]
    assert len(texts) == 2 * len(ARTICLE_STEPS) and _arrows(fig) == 5 + 6
    plt.close(fig)
    with pytest.raises(ValueError, match="section must be"):
        article_flow_diagram("3.2")

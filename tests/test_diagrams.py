import matplotlib.pyplot as plt
import pytest
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from recutils.diagrams import Box, draw_flow, two_tower_diagram


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

import pytest
import torch

from recutils.widgets import neighbour_explorer

TITLES = ["A <b>", "B", "C", "D"]
# A and B point the same way, C and D another.
VECTORS = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])


def test_explorer_shows_neighbours_and_follows_the_picker():
    box = neighbour_explorer(TITLES, {"text": VECTORS, "reversed": -VECTORS.flip(0)}, k=1)
    picker, panels = box.children[0], box.children[1].children
    assert "<li>B</li>" in panels[0].value and "&lt;b&gt;" not in panels[0].value
    picker.value = 2
    assert "<li>D</li>" in panels[0].value
    picker.value = 1
    assert "<li>A &lt;b&gt;</li>" in panels[0].value  # titles are escaped


def test_explorer_bad_input():
    with pytest.raises(ValueError, match="has 4 rows for 3 titles"):
        neighbour_explorer(TITLES[:3], {"text": VECTORS})
    with pytest.raises(ValueError, match="initial"):
        neighbour_explorer(TITLES, {"text": VECTORS}, initial=9)


def test_fusion_explorer_re_ranks_and_measures(synthetic):
    from recutils.baselines import EASE, RandomRecommender
    from recutils.split import temporal_split
    from recutils.widgets import fusion_explorer

    split = temporal_split(synthetic.interactions)
    models = [EASE(l2=10.0).fit(split.train), RandomRecommender().fit(split.train)]
    titles = list(synthetic.items["title"])
    box = fusion_explorer(models, split, titles, k=5)
    user, method, temperature, ease, random, panel = box.children
    assert "NDCG@5" in panel.value and panel.value.count("<li>") == 5
    random.value = 0.0
    only_ease = panel.value
    ease.value, random.value = 0.0, 1.0
    assert panel.value != only_ease  # the list follows the sliders
    ease.value = random.value = 0.0
    assert "All weights are zero" in panel.value
    with pytest.raises(ValueError, match="not fitted on this train data"):
        fusion_explorer([EASE(l2=10.0).fit(synthetic.interactions)], split, titles)

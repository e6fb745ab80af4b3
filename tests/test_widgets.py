"""The explorers' embedded data. The browser side (recutils/explorer.js) is checked against
recutils in tests/browser; here, that the data it reads are what recutils computes."""

import json

import numpy as np
import pytest
import torch

from recutils.widgets import SCRIPT, TEMPERATURES, _skyband, fusion_explorer, neighbour_explorer

TITLES = ["A </script>", "B", "C", "D"]
# A and B point the same way, C and D another.
VECTORS = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])


def embedded(explorer) -> dict:
    page = explorer._repr_html_()
    start = page.index('class="rx-data">') + len('class="rx-data">')
    return json.loads(page[start : page.index("</script>", start)].replace("<\\/", "</"))


def test_neighbour_explorer_embeds_each_space_and_escapes_titles():
    explorer = neighbour_explorer(TITLES, {"text": VECTORS, "reversed": -VECTORS.flip(0)}, k=1, initial=2)
    page = explorer._repr_html_()
    assert page.count("</script>") == 2  # the title cannot close the data element
    assert SCRIPT.read_text() in page and "recutilsExplorer(" in page
    data = embedded(explorer)
    assert data["titles"] == TITLES and data["initial"] == 2
    assert data["spaces"][0] == {"name": "text", "neighbours": [[1], [0], [3], [2]]}
    assert repr(explorer) == "neighbour explorer: 4 items, 2 spaces"  # no memory address in outputs


def test_neighbour_explorer_bad_input():
    with pytest.raises(ValueError, match="has 4 rows for 3 titles"):
        neighbour_explorer(TITLES[:3], {"text": VECTORS})
    with pytest.raises(ValueError, match="initial"):
        neighbour_explorer(TITLES, {"text": VECTORS}, initial=9)


def combsum_from_page(user: dict, weights: list[float], k: int) -> list[int]:
    """What explorer.js computes for CombSUM, in float32, from the page's data alone."""
    total = np.zeros(len(user["items"]), dtype=np.float32)
    for w, row in zip(weights, user["minmax"], strict=True):
        if w > 0:
            total = total + np.float32(w) * np.asarray(row, dtype=np.float32)
    order = sorted(range(len(total)), key=lambda i: (-total[i], user["tie"][i]))
    return [user["items"][i] for i in order[:k]]


def test_fusion_explorer_data_reproduce_score_fusion(synthetic):
    from recutils.baselines import EASE, Popularity
    from recutils.combine import ScoreFusion, normalise_scores
    from recutils.split import temporal_split

    split = temporal_split(synthetic.interactions)
    models = [EASE(l2=10.0).fit(split.train), Popularity().fit(split.train)]
    titles = list(synthetic.items["title"])
    explorer = fusion_explorer(models, split, titles, k=5, n_users=4)
    data = embedded(explorer)
    assert data["models"] == [m.name for m in models] and data["k"] == 5
    assert data["taus"] == list(TEMPERATURES) and data["taus"][data["tau_index"]] == 1.0
    assert len(data["users"]) == 4
    for user in data["users"]:
        assert set(user["relevant"]) == set(split.test.items_by_user()[user["id"]].tolist())
        for weights in ([1.0, 1.0], [0.3, 0.85], [0.0, 1.0]):
            expected = ScoreFusion(models, weights).fit(split.train).recommend([user["id"]], 5)[0]
            assert combsum_from_page(user, weights, 5) == expected.tolist()
        assert len(user["lse"][0]) == len(TEMPERATURES)
        z = normalise_scores(models[0].score([user["id"]]), "zscore", models[0].seen_[[user["id"]]])[0]
        a, b = user["z_line"][0]
        line = a + b * np.asarray(user["minmax"][0])
        assert np.allclose(line, z[user["items"]].numpy(), atol=1e-5)  # what the mixture reads


def test_fusion_explorer_bad_input(synthetic):
    from recutils.baselines import EASE
    from recutils.split import temporal_split

    split = temporal_split(synthetic.interactions)
    titles = list(synthetic.items["title"])
    with pytest.raises(ValueError, match="not fitted on this train data"):
        fusion_explorer([EASE(l2=10.0).fit(synthetic.interactions)], split, titles)
    with pytest.raises(ValueError, match="titles for"):
        fusion_explorer([EASE(l2=10.0).fit(split.train)], split, titles[:3])
    with pytest.raises(ValueError, match="1 models but 2 weights"):
        fusion_explorer([EASE(l2=10.0).fit(split.train)], split, titles, weights=[1, 1])


def test_skyband_holds_every_weighting_s_top_k():
    generator = torch.Generator().manual_seed(0)
    scores = [torch.rand(300, generator=generator) for _ in range(3)]
    scores.append(scores[0].round(decimals=1))  # many ties
    tie_position = torch.randperm(300, generator=generator)
    kept = _skyband(scores, tie_position, k=10)
    assert 10 <= int(kept.sum()) < 300
    for _ in range(200):
        weights = torch.rand(4, generator=generator) * (torch.rand(4, generator=generator) > 0.3)
        if weights.sum() == 0:
            continue
        total = sum(w * s for w, s in zip(weights.tolist(), scores, strict=True))
        # best first, ties by the tie-break order, as Recommender.recommend ranks
        order = sorted(range(300), key=lambda i: (-float(total[i]), int(tie_position[i])))
        assert kept[order[:10]].all()

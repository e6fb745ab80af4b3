"""Small interactive explorers for the notebooks.

They are live when a notebook runs locally; the HTML book shows their stored state.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import torch

from recutils.combine import ScoreFusion
from recutils.metrics import hits_at_k, ndcg_at_k
from recutils.recommender import Recommender, require_fitted_on
from recutils.similarity import top_k_neighbours
from recutils.split import Split


def neighbour_explorer(
    titles: Sequence[str],
    spaces: Mapping[str, torch.Tensor],
    k: int = 8,
    initial: int = 0,
) -> widgets.VBox:
    """Pick an item; see its k nearest neighbours in each vector space side by side.

    Args:
        titles: one display title per item.
        spaces: name -> (n_items, dim) vectors (e.g. "similar by text": BERT item
            vectors; "similar by who watched it": columns of the interaction matrix).
        k: neighbours shown per space.
        initial: the item shown first.
    """
    for name, vectors in spaces.items():
        if len(vectors) != len(titles):
            raise ValueError(f"space {name!r} has {len(vectors)} rows for {len(titles)} titles")
    if not 0 <= initial < len(titles):
        raise ValueError(f"initial must be an item index in 0..{len(titles) - 1}, got {initial}")
    neighbours = {name: top_k_neighbours(vectors, k)[1] for name, vectors in spaces.items()}
    picker = widgets.Dropdown(
        options=[(t, i) for i, t in enumerate(titles)], value=initial, description="Item"
    )
    panels = {
        name: widgets.HTML(layout=widgets.Layout(width=f"{100 // max(1, len(spaces))}%")) for name in spaces
    }

    def show(_change: object = None) -> None:
        for name, panel in panels.items():
            rows = "".join(
                f"<li>{html.escape(titles[j])}</li>" for j in neighbours[name][picker.value].tolist()
            )
            panel.value = f"<b>{html.escape(name)}</b><ol>{rows}</ol>"

    picker.observe(show, names="value")
    show()
    return widgets.VBox([picker, widgets.HBox(list(panels.values()))])


def fusion_explorer(
    models: Sequence[Recommender],
    split: Split,
    titles: Sequence[str],
    k: int = 10,
) -> widgets.VBox:
    """Sliders for each model's weight and the softmax temperature; one user's fused top-k and its NDCG@k.

    The list is re-ranked live by :class:`~recutils.combine.ScoreFusion` (CombSUM or the
    softmax mixture); test items are marked, and the user's NDCG@k is shown beside the
    value with equal weights, so the effect of each slider is measured, not guessed.

    Args:
        models: recommenders fitted on ``split.train``.
        split: supplies the train data (seen items) and each user's test items.
        titles: one display title per item.
    """
    relevant = split.test.items_by_user()
    if not relevant:
        raise ValueError("the split has no test users to explore")
    for model in models:
        require_fitted_on(model, split.train)
    weights = [
        widgets.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, description=model.name[:18])
        for model in models
    ]
    method = widgets.ToggleButtons(options=["combsum", "mixture"], description="method")
    temperature = widgets.FloatLogSlider(
        value=1.0, base=10, min=-1, max=1, step=0.1, description="τ (mixture)"
    )
    user = widgets.Dropdown(options=sorted(relevant), description="user")
    panel = widgets.HTML()

    def ndcg(values: list[float], who: int) -> tuple[torch.Tensor, float]:
        fusion = ScoreFusion(models, values, method=method.value, temperature=temperature.value).fit(
            split.train
        )
        top = fusion.recommend([who], k)
        hits = hits_at_k(top, [relevant[who]])
        return top[0], float(ndcg_at_k(hits, torch.tensor([len(relevant[who])]))[0])

    def show(_change: object = None) -> None:
        values = [w.value for w in weights]
        if sum(values) == 0:
            panel.value = "<i>All weights are zero: give at least one model some weight.</i>"
            return
        top, score = ndcg(values, user.value)
        _, equal = ndcg([1.0] * len(models), user.value)
        items = "".join(
            f"<li>{'✔ ' if i in set(relevant[user.value].tolist()) else ''}{html.escape(titles[i])}</li>"
            for i in top.tolist()
        )
        panel.value = f"<b>NDCG@{k} {score:.3f}</b> (equal weights: {equal:.3f})<ol>{items}</ol>"

    for control in (*weights, method, temperature, user):
        control.observe(show, names="value")
    show()
    return widgets.VBox([user, method, temperature, *weights, panel])

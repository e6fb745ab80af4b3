"""Small interactive explorers for the notebooks.

They are live when a notebook runs locally; the HTML book shows their stored state.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import torch

from recutils.similarity import top_k_neighbours


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

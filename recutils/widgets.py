"""Explorers that work on the web page with no kernel: data embedded, computed in the browser.

Each explorer is an HTML output holding its data as JSON and the book's one browser-side
implementation, ``explorer.js`` (next to this module). The HTML book runs it with no kernel and
no network; a live notebook shows the same output and runs the same script.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from recutils.combine import ScoreFusion, normalise_scores
from recutils.recommender import Recommender, require_fitted_on
from recutils.similarity import top_k_neighbours
from recutils.split import Split

SCRIPT = Path(__file__).with_name("explorer.js")
# The mixture's temperatures on the slider: 10^-1 .. 10^1 in steps of 10^0.1.
TEMPERATURES = tuple(float(f"{10 ** (e / 10):.4g}") for e in range(-10, 11))

_STYLE = """
.rx-explorer{border:1px solid #ccc;border-radius:4px;padding:.6em;margin:.5em 0;font-size:.9em}
.rx-controls{display:flex;flex-wrap:wrap;gap:.3em 1.2em;margin-bottom:.5em}
.rx-control{display:flex;align-items:center;gap:.4em}
.rx-control span{max-width:16em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.rx-panels{display:flex;gap:1em}.rx-panel{flex:1}
"""


class Explorer:
    """An explorer for one notebook output: its data, and the HTML that shows it.

    Attributes:
        data: the JSON-ready dict the browser reads (``kind`` "fusion" or "neighbours").
    """

    def __init__(self, data: dict, label: str) -> None:
        self.data, self.label = data, label

    def __repr__(self) -> str:
        return self.label

    def _repr_html_(self) -> str:
        payload = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
        payload = payload.replace("</", "<\\/")  # cannot close the script element early
        key = "rx-" + hashlib.sha256(payload.encode()).hexdigest()[:12]
        return (
            f'<style>{_STYLE}</style><div class="rx-explorer" id="{key}" data-kind="{self.data["kind"]}">'
            f'<script type="application/json" class="rx-data">{payload}</script>'
            f"<noscript>{html.escape(self.label)}: this explorer needs JavaScript.</noscript></div>"
            f'<script>{SCRIPT.read_text()}\nrecutilsExplorer(document.getElementById("{key}"));</script>'
        )


def _float32_list(values: torch.Tensor) -> list:
    """Shortest decimals that read back as the same float32 (the browser rounds them with fround)."""
    array = values.detach().to(torch.float32).numpy()
    return np.vectorize(lambda v: float(str(v)), otypes=[float])(array).tolist()


def neighbour_explorer(
    titles: Sequence[str],
    spaces: Mapping[str, torch.Tensor],
    k: int = 8,
    initial: int = 0,
) -> Explorer:
    """Pick an item; see its k nearest neighbours (cosine) in each vector space side by side.

    Args:
        titles: one display title per item.
        spaces: name -> (n_items, dim) vectors (e.g. "similar by text": BERT item
            vectors; "similar by who watched it": columns of the interaction matrix).
        k: neighbours shown per space (all of them are stored in the page).
        initial: the item shown first.
    """
    if not spaces:
        raise ValueError("give at least one space")
    for name, vectors in spaces.items():
        if len(vectors) != len(titles):
            raise ValueError(f"space {name!r} has {len(vectors)} rows for {len(titles)} titles")
    if not 0 <= initial < len(titles):
        raise ValueError(f"initial must be an item index in 0..{len(titles) - 1}, got {initial}")
    data = {
        "kind": "neighbours",
        "titles": [str(t) for t in titles],
        "initial": int(initial),
        "spaces": [
            {"name": name, "neighbours": top_k_neighbours(vectors, k)[1].tolist()}
            for name, vectors in spaces.items()
        ],
    }
    return Explorer(data, f"neighbour explorer: {len(titles)} items, {len(spaces)} spaces")


def _z_line(minmax: torch.Tensor, z: torch.Tensor, seen: torch.Tensor) -> list[float]:
    """(a, b) with z = a + b · minmax over the unseen items (both are affine in the raw score)."""
    unseen = (~seen).nonzero().squeeze(1)
    low, high = unseen[minmax[unseen].argmin()], unseen[minmax[unseen].argmax()]
    a = float(z[low])
    return [a, float(z[high]) - a]


def _skyband(scores: Sequence[torch.Tensor], tie_position: torch.Tensor, k: int) -> torch.Tensor:
    """Which items some non-negative weighting can place in the top k: those that fewer than k
    items beat whatever the weights (an item beats another when it scores at least as high in
    every list and either higher in all of them or earlier in the tie-break order).

    Args:
        scores: one (n,) score vector per list, higher is better.
        tie_position: (n,) each item's place in the tie-break order.
    Returns: (n,) bool.
    """
    at_least = torch.ones(len(tie_position), len(tie_position), dtype=torch.bool)
    above = at_least.clone()
    for s in scores:
        at_least &= s[:, None] >= s[None, :]  # [a, b]: a scores at least b's score
        above &= s[:, None] > s[None, :]
    beats = at_least & (above | (tie_position[:, None] < tie_position[None, :]))
    return beats.sum(dim=0) < k


def fusion_explorer(
    models: Sequence[Recommender],
    split: Split,
    titles: Sequence[str],
    k: int = 10,
    n_users: int = 20,
    seed: int = 0,
    weights: Sequence[float] | None = None,
) -> Explorer:
    """A slider per model's weight, CombSUM or the softmax mixture, and one user's fused top-k.

    The page holds, for a seeded sample of ``n_users`` test users, each model's min-max and
    z-scored scores (as :class:`~recutils.combine.ScoreFusion` normalises them) over the user's
    candidates: every unseen item that some non-negative weighting can rank in the top ``k``
    (fewer than ``k`` items beat it in every model), so the list shown is exact for any weights and
    temperature. The browser ranks exactly as ``ScoreFusion(models, weights, method, temperature)``
    does, marks test items, and shows the user's NDCG@k beside its value with equal weights.

    Args:
        models: recommenders fitted on ``split.train``.
        split: supplies the train data (seen items) and each user's test items.
        titles: one display title per item.
        weights: the sliders' starting weights (default all 1).
    """
    relevant = split.test.items_by_user()
    if not relevant:
        raise ValueError("the split has no test users to explore")
    if not models:
        raise ValueError("give at least one model")
    for model in models:
        require_fitted_on(model, split.train)
    if len(titles) != split.train.n_items:
        raise ValueError(f"{len(titles)} titles for {split.train.n_items} items")
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    if len(weights) != len(models):
        raise ValueError(f"{len(models)} models but {len(weights)} weights")
    pool = sorted(relevant)
    pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n_users]
    users = torch.tensor(sorted(pool[i] for i in pick.tolist()))
    fusion = ScoreFusion(models, weights if sum(weights) > 0 else None).fit(split.train)
    tie_position = torch.empty_like(fusion.tie_order_)
    tie_position[fusion.tie_order_] = torch.arange(len(fusion.tie_order_))
    seen = fusion.seen_[users]
    scores = [model.score(users) for model in models]
    minmax = [normalise_scores(s, "minmax", seen) for s in scores]
    zscore = [normalise_scores(s, "zscore", seen) for s in scores]
    rows, shown = [], set()
    for row, user in enumerate(users.tolist()):
        unseen = (~seen[row]).nonzero().squeeze(1)
        items = unseen[_skyband([m[row, unseen] for m in minmax + zscore], tie_position[unseen], k)]
        shown.update(items.tolist())
        shown.update(relevant[user].tolist())
        rows.append(
            {
                "id": user,
                "relevant": sorted(relevant[user].tolist()),
                "items": items.tolist(),
                "tie": tie_position[items].tolist(),
                "minmax": [_float32_list(m[row, items]) for m in minmax],
                # z-scores are an affine function of the min-max scores: z = a + b · minmax.
                "z_line": [_z_line(m[row], z[row], seen[row]) for m, z in zip(minmax, zscore, strict=True)],
                "lse": [
                    _float32_list(
                        torch.stack(
                            [
                                torch.logsumexp((z[row] / tau).masked_fill(seen[row], float("-inf")), dim=0)
                                for tau in TEMPERATURES
                            ]
                        )
                    )
                    for z in zscore
                ],
            }
        )
    data = {
        "kind": "fusion",
        "k": int(k),
        "models": [model.name for model in models],
        "weights": weights,
        "taus": list(TEMPERATURES),
        "tau_index": TEMPERATURES.index(1.0),
        "titles": {str(i): str(titles[i]) for i in sorted(shown)},
        "users": rows,
    }
    return Explorer(data, f"fusion explorer: {len(rows)} test users, {len(models)} models")

"""How much of a text model's cold-item accuracy is popularity read from the text.

A cold item has no interactions, but its text may still say "this looks like a
popular film" (a famous title, a star, a big genre). :class:`TextPopularityMLP`
learns exactly that and nothing else: a non-linear map from an item's text vector
to its log popularity, the same list for every user. A text model that is not
clearly better than it on cold items has learned little beyond popularity.

:func:`popularity_strata` and :func:`within_items` give the second check: the
same models ranked only among cold items of similar popularity, where predicting
popularity helps less.
"""

from __future__ import annotations

import torch
from torch import nn

from recutils.checks import check_int, check_number, check_rows
from recutils.recommender import Recommender
from recutils.split import Interactions, Split
from recutils.twotower import TwoTowerConfig, mlp


class TextPopularityMLP(Recommender):
    """Popularity predicted from item text by an MLP; the same list for every user.

    The MLP has the shape of the two-tower's item tower (``hidden`` units, ``depth``
    layers, from :class:`~recutils.twotower.TwoTowerConfig`) with one output, and is
    trained with mean squared error on log(1 + train interactions) of the items that
    have any. A random tenth of those items is held out to stop training when their
    error stops falling (``patience`` epochs); the best weights are kept.

    Args:
        item_vectors: (n_items, dim) item text vectors.
        seed: the weights' initialisation and the held-out items.
        hidden, depth, dropout: the MLP's shape (the item tower's by default).
        lr, weight_decay: Adam settings; ``max_epochs`` full-batch epochs at most.
    """

    needs_history = False

    def __init__(
        self,
        item_vectors: torch.Tensor,
        seed: int = 0,
        hidden: int = TwoTowerConfig.hidden,
        depth: int = TwoTowerConfig.depth,
        dropout: float = TwoTowerConfig.dropout,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        max_epochs: int = 2000,
        patience: int = 50,
    ) -> None:
        self.seed = check_int(seed, "seed")
        self.hidden, self.depth = check_int(hidden, "hidden", minimum=1), check_int(depth, "depth", minimum=1)
        self.dropout = check_number(dropout, "dropout", low=0, high=0.99)
        self.lr = check_number(lr, "lr", low=0, low_open=True)
        self.weight_decay = check_number(weight_decay, "weight_decay", low=0)
        self.max_epochs = check_int(max_epochs, "max_epochs", minimum=1)
        self.patience = check_int(patience, "patience", minimum=1)
        self.item_vectors = item_vectors

    @property
    def name(self) -> str:
        return "text → popularity MLP"

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.net_.parameters())

    def _fit(self, train: Interactions) -> None:
        x = check_rows(self.item_vectors, "item_vectors", train.n_items).float()
        counts = train.item_counts()
        warm = torch.nonzero(counts > 0).squeeze(1)
        if len(warm) < 10:
            raise ValueError(f"need at least 10 items with train interactions, got {len(warm)}")
        y = torch.log1p(counts.float())
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            order = warm[torch.randperm(len(warm))]
            held, fit = order[: max(1, len(order) // 10)], order[max(1, len(order) // 10) :]
            self.net_ = mlp(x.shape[1], self.hidden, 1, self.depth, self.dropout)
            optimiser = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            best, best_state, waited = float("inf"), None, 0
            self.epochs_ = 0
            for _ in range(self.max_epochs):
                self.net_.train()
                optimiser.zero_grad()
                loss = nn.functional.mse_loss(self.net_(x[fit]).squeeze(1), y[fit])
                loss.backward()
                optimiser.step()
                self.epochs_ += 1
                self.net_.eval()
                with torch.no_grad():
                    held_loss = float(nn.functional.mse_loss(self.net_(x[held]).squeeze(1), y[held]))
                if held_loss < best:
                    best, waited = held_loss, 0
                    best_state = {k: v.clone() for k, v in self.net_.state_dict().items()}
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
        self.net_.load_state_dict(best_state)
        self.net_.eval()
        self.held_out_error_ = best
        with torch.no_grad():
            self.predicted_ = self.net_(x).squeeze(1)

    def _score(self, users: torch.Tensor) -> torch.Tensor:
        return self.predicted_.expand(len(users), -1)


def popularity_strata(split: Split, n_strata: int = 3) -> list[torch.Tensor]:
    """The split's candidate (cold) items cut into ``n_strata`` groups of about equal size
    by how often they occur in test (least popular first), as (n_items,) bool masks.

    The popularity is read from test on purpose: it is what the strata control for,
    not something a model may use. Candidates with no test interaction are left out.
    """
    check_int(n_strata, "n_strata", minimum=1)
    if split.candidates is None:
        raise ValueError("popularity strata need a split with candidate items (P2)")
    counts = split.test.item_counts()
    items = torch.nonzero(split.candidates & (counts > 0)).squeeze(1)
    if len(items) < n_strata:
        raise ValueError(f"{len(items)} tested candidate items cannot fill {n_strata} strata")
    ranked = items[torch.argsort(counts[items], stable=True)]
    masks = []
    for chunk in torch.tensor_split(ranked, n_strata):
        mask = torch.zeros(split.train.n_items, dtype=torch.bool)
        mask[chunk] = True
        masks.append(mask)
    return masks


def within_items(split: Split, items: torch.Tensor) -> Split:
    """The same split ranked only among ``items`` ((n_items,) bool) and tested on their interactions."""
    test = split.test.frame
    kept = test[items.numpy()[test["item"].to_numpy()]].reset_index(drop=True)
    if kept.empty:
        raise ValueError("no test interaction falls on the given items")
    return Split(
        split.protocol,
        split.train,
        Interactions(kept, split.test.n_users, split.test.n_items),
        items if split.candidates is None else split.candidates & items,
    )

"""The book's two-tower variants over seeds: quick settings and the careful recipe, each trained once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from recutils.selection import Choice, choose
from recutils.split import Interactions, Split
from recutils.twotower import TwoTower

#: How the book trains a two-tower quickly: early stopping on validation, the early-stopped model kept.
BOOK_SETTINGS: dict[str, object] = {"epochs": 15, "patience": 3, "refit": False}
SEEDS = (0, 1, 2)
#: The two-tower trained with care (chapter 4): learned item id vectors beside the text, a 64-d
#: output, history dropout, a decaying learning rate, larger batches, more patience within more
#: epochs, then a refit on all train for the epoch count validation chose. The temperature is the
#: one chapter 4's validation grid chose (the chapter asserts that it still does).
CAREFUL_SETTINGS: dict[str, object] = {
    "id_dim": 64, "user_ids": False, "out_dim": 64, "temperature": 0.05, "batch_size": 1024,
    "lr_decay": 0.93, "history_dropout": 0.3, "epochs": 40, "patience": 5, "refit": True,
}
#: Chapter 4's two-tower variants on P1 (a table label and the settings that differ from
#: the default; BOOK_SETTINGS apply unless a variant sets them), shared by chapters 4-7 so that
#: all of them use the variant that validation chose, trained once and cached. The first four are
#: the article's design choices trained quickly; "careful" is the design chapter 4's validation
#: keeps among those (:func:`choose_design`: the article's, "article_user") trained with CAREFUL_SETTINGS.
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "bce": ("BCE, sampled negatives", {"objective": "bce"}),
    "softmax": ("softmax", {"logq": False}),
    "logq": ("softmax + logQ", {}),
    "article_user": ("softmax + logQ, article's u_emb", {"user_input": "text"}),
    "careful": ("article's u_emb, trained with care", {"user_input": "text", **CAREFUL_SETTINGS}),
}
#: The variants trained the quick way, among which chapter 4 chooses the design.
QUICK_VARIANTS = ("bce", "softmax", "logq", "article_user")
#: The article's own design among them: the user tower reads the mean of the history's BERT
#: vectors (its u_emb). The book tests that design, so validation keeps it unless another one
#: beats it by more than one standard error (see :func:`choose_design`).
ARTICLE_DESIGN = "article_user"


def careful_variant(design: str) -> str:
    """The key of :data:`VARIANTS` that trains the design ``design`` (a quick variant chosen on
    validation) with :data:`CAREFUL_SETTINGS`: the tower the book uses from chapter 4 on.

    Raises:
        ValueError: ``design`` is unknown, or no variant trains it with care (add one to VARIANTS).
    """
    if design not in VARIANTS:
        raise ValueError(f"unknown two-tower variant {design!r}; choose from {list(VARIANTS)}")
    wanted = {**VARIANTS[design][1], **CAREFUL_SETTINGS}
    for key, (_, options) in VARIANTS.items():
        if options == wanted:
            return key
    raise ValueError(f"no variant in VARIANTS trains {design!r} with CAREFUL_SETTINGS; add one")


def train_variants(
    item_vectors: torch.Tensor,
    train: Interactions,
    validation: Split,
    variants: Sequence[str] = tuple(VARIANTS),
    seeds: Sequence[int] = SEEDS,
    progress: bool = True,
) -> dict[str, list[TwoTower]]:
    """Fit each of :data:`VARIANTS` once per seed (cached), early-stopped on ``validation``;
    ``progress`` shows a bar over each training's epochs.

    Returns: for each variant key, one fitted model per seed, labelled "two-tower: <label>".
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown two-tower variants {unknown}; choose from {list(VARIANTS)}")
    towers = {}
    for key in variants:
        label, options = VARIANTS[key]
        towers[key] = [
            TwoTower(
                item_vectors, validation=validation, label=f"two-tower: {label}", seed=seed, progress=progress,
                **{**BOOK_SETTINGS, **options},
            ).fit(train)
            for seed in seeds
        ]
    return towers


def choose_design(towers: Mapping[str, Sequence[TwoTower]]) -> Choice:
    """The two-tower design chapters 4-7 use, chosen on validation from :data:`QUICK_VARIANTS`
    trained over seeds (:func:`train_variants`): the best mean validation NDCG@10, except that
    the article's design stands while it is within one standard error of that best mean. Designs
    that close are within seed noise, and a choice among them would flip with the last bits of
    the arithmetic (a CPU with other kernels; see the performance appendix).
    """
    return choose({key: [m.validation_score_ for m in towers[key]] for key in QUICK_VARIANTS},
                  prefer=ARTICLE_DESIGN)

"""The article's six steps as one pipeline, configured per dataset.

1. behaviour data → interactions and a split (P1, P2 or P3);
2. item attributes → one text per item (and optionally one per user);
3. a BERT encoder → item (and user) vectors;
4.–5. similarity models and two-tower models, each built from those vectors;
6. combination: CombSUM with weights tuned on a validation split.

A case study is then a :class:`DatasetDescription` and a :class:`Pipeline`; the
models are given as builders (functions of a :class:`Stage`), because every model is
fitted twice: once on the validation split's train part to tune the combination, and
once on the full train part for the test numbers. A builder wrapped in :func:`seeded`
(the two-tower's is) reads ``stage.seed`` and is fitted once per seed of the pipeline's
``seeds``; the deterministic models are fitted once and shared by every seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from recutils.baselines import EASE, Popularity
from recutils.checks import check_int, check_number
from recutils.cf import ContentRecommender, ItemKNN
from recutils.combine import ScoreFusion, tune_weights
from recutils.recommender import Recommender
from recutils.selection import SeedResult, evaluate_over_seeds, seed_table
from recutils.split import (
    Interactions,
    Split,
    cold_item_split,
    cold_user_split,
    temporal_split,
    validation_split,
)
from recutils.text import TextEncoder
from recutils.twotower import TwoTower

TextSource = str | Callable[[Interactions], list[str]]
#: The row name of the tuned combination in a :class:`PipelineResult`'s tables.
COMBINED = "combined (CombSUM, tuned)"
SPLITS: dict[str, Callable[[Interactions], Split]] = {
    "P1": temporal_split,
    "P2": cold_item_split,
    "P3": cold_user_split,
}


@dataclass(frozen=True)
class DatasetDescription:
    """Which columns of which tables are users, items, interactions and texts.

    Attributes:
        name: shown in result tables.
        interactions: one row per interaction.
        user, item: the id columns in ``interactions`` (``item`` also in ``items``).
        items: one row per item; its row order fixes the item index.
        item_text: a column of ``items``, or a function of the train interactions
            returning one text per item index (for texts built from train data only,
            such as a product's reviews, so that nothing from test leaks in).
        time, rating: optional columns (default: row order, and rating 1).
        user_text: optional function of the train interactions returning one text per
            user index (a profile or a query); users are indexed in sorted id order.
    """

    name: str
    interactions: pd.DataFrame
    user: str
    item: str
    items: pd.DataFrame
    item_text: TextSource
    time: str | None = None
    rating: str | None = None
    user_text: Callable[[Interactions], list[str]] | None = None

    def to_interactions(self) -> Interactions:
        """Step 1: the interactions over contiguous user and item indices.

        Repeated (user, item) rows are dropped with a warning, keeping each pair's earliest
        row (the first listed when two share a time); missing ids, times or ratings and
        fractional ratings raise a ValueError that names the column.
        """
        for column in [self.user, self.item, self.time, self.rating]:
            if column is not None and column not in self.interactions.columns:
                raise ValueError(f"{self.name}: interactions have no column {column!r}")
        if self.item not in self.items.columns:
            raise ValueError(f"{self.name}: items have no column {self.item!r}")
        item_ids = pd.Index(self.items[self.item])
        if not item_ids.is_unique:
            raise ValueError(f"{self.name}: item ids in items[{self.item!r}] are not unique")
        frame = self.interactions
        if frame.empty:
            raise ValueError(f"{self.name}: interactions is empty")
        for column in [self.user, self.item, self.time, self.rating]:
            if column is not None and frame[column].isna().any():
                raise ValueError(
                    f"{self.name}: interactions column {column!r} has {int(frame[column].isna().sum())} "
                    "missing values; drop or fill those rows first"
                )
        if self.rating is not None:
            ratings = frame[self.rating]
            if not pd.api.types.is_numeric_dtype(ratings) or (ratings != np.floor(ratings)).any():
                raise ValueError(
                    f"{self.name}: rating column {self.rating!r} must hold whole numbers (ratings are stored "
                    "as integers; 4.5 would become 4); scale them first, e.g. stars * 2"
                )
        item_index = item_ids.get_indexer(frame[self.item])
        if (item_index < 0).any():
            unknown = frame[self.item][item_index < 0].iloc[0]
            raise ValueError(f"{self.name}: interaction with item {unknown!r}, which is not in items")
        user_index, _ = pd.factorize(frame[self.user], sort=True)
        n = len(frame)
        table = pd.DataFrame(
            {
                "user": user_index.astype(np.int64),
                "item": item_index.astype(np.int64),
                "rating": frame[self.rating].to_numpy(np.int64) if self.rating else np.ones(n, np.int64),
                "timestamp": frame[self.time].to_numpy(np.int64) if self.time else np.arange(n),
            }
        )
        # Repeated (user, item) rows would be counted twice by the metrics, and a pair with a
        # row in train and one in test could never be recommended: keep each pair's first row.
        repeated = table.sort_values("timestamp", kind="stable").duplicated(["user", "item"])
        if repeated.any():
            warnings.warn(
                f"{self.name}: dropped {int(repeated.sum())} repeated (user, item) interactions, "
                "keeping the earliest of each pair",
                UserWarning,
                stacklevel=2,
            )
            table = table.drop(index=repeated[repeated].index).reset_index(drop=True)
        return Interactions(table, int(user_index.max()) + 1, len(item_ids))

    def texts_for_items(self, train: Interactions) -> list[str]:
        """Step 2: one text per item index."""
        if isinstance(self.item_text, str):
            return [str(t) for t in self.items[self.item_text]]
        texts = self.item_text(train)
        if len(texts) != train.n_items:
            raise ValueError(f"{self.name}: item_text gave {len(texts)} texts for {train.n_items} items")
        return texts


@dataclass(frozen=True)
class Stage:
    """What a model builder gets: the split to fit on, the vectors of step 3 and the seed
    a :func:`seeded` builder should use."""

    split: Split
    validation: Split
    item_vectors: torch.Tensor
    user_vectors: torch.Tensor | None
    seed: int = 0


ModelBuilder = Callable[[Stage], Recommender]


@dataclass(frozen=True)
class Seeded:
    """A builder whose model depends on ``stage.seed``: the pipeline fits it once per seed."""

    build: ModelBuilder

    def __call__(self, stage: Stage) -> Recommender:
        return self.build(stage)


def seeded(build: ModelBuilder) -> Seeded:
    """Mark a builder as stochastic, e.g. ``seeded(lambda stage: MyModel(seed=stage.seed))``."""
    if not callable(build):
        raise TypeError(f"seeded needs a builder (a function of a Stage), got {build!r}")
    return Seeded(build)


@dataclass
class PipelineResult:
    """The fitted models and their test numbers.

    Attributes:
        stage, models, combined, weights: those of the first seed (all of them when no
            builder is seeded).
        table: test metrics per model, the mean over seeds for a seeded model (and for the
            combination when one of its members is seeded).
        seeds: the seeds the seeded models ran with.
        results: model → its test metrics per seed (one row for a deterministic model) and
            its per-user NDCG@k; ``results[name].user_mean`` goes into a paired bootstrap.
        runs: seed → (models, combined, weights) of that seed.
    """

    dataset: str
    split: Split
    validation: Split
    stage: Stage
    models: dict[str, Recommender]
    combined: Recommender | None
    weights: dict[str, float]
    table: pd.DataFrame = field(repr=False)
    seeds: tuple[int, ...] = (0,)
    results: dict[str, SeedResult] = field(default_factory=dict, repr=False)
    runs: dict[int, tuple[dict[str, Recommender], Recommender | None, dict[str, float]]] = field(
        default_factory=dict, repr=False
    )

    def seed_table(self, metrics: Sequence[str] = ("NDCG@10",)) -> pd.DataFrame:
        """Mean, sd (for rows with more than one seed) and n of ``metrics`` per model."""
        return seed_table(self.results, list(metrics))


@dataclass
class Pipeline:
    """Steps 1–6 for one dataset.

    Args:
        models: name → builder; each builder returns an unfitted recommender.
        protocol: "P1" (warm, temporal), "P2" (cold items) or "P3" (cold users).
        combine: tune CombSUM weights over the models on validation (step 6).
        weight_step: the grid step of the weights on the simplex.
        k: the list length for evaluation.
        encoder: the text encoder (default all-MiniLM-L6-v2, cached).
        seeds: the seeds of the :func:`seeded` builders (say three for a reported result);
            ignored when no builder is seeded.
        progress: show progress bars (fitting, encoding); pass False in a checked cell.
    """

    models: Mapping[str, ModelBuilder]
    protocol: Literal["P1", "P2", "P3"] = "P1"
    combine: bool = True
    weight_step: float = 0.25
    k: int = 10
    encoder: TextEncoder | None = None
    seeds: Sequence[int] = (0,)
    progress: bool = True

    def run(self, dataset: DatasetDescription) -> PipelineResult:
        """Run the six steps; returns the fitted models and a table of test metrics."""
        if not self.models:
            raise ValueError("the pipeline needs at least one model")
        if self.protocol not in SPLITS:
            raise ValueError(f"protocol must be one of {list(SPLITS)}, got {self.protocol!r}")
        check_int(self.k, "k", minimum=1)
        check_number(self.weight_step, "weight_step", low=0, high=1, low_open=True)
        seeds = tuple(self.seeds)
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
        for seed in seeds:
            check_int(seed, "seed")
        stochastic = {name for name, build in self.models.items() if isinstance(build, Seeded)}
        if not stochastic:
            seeds = seeds[:1]  # every model is deterministic: one run says it all
        encoder = self.encoder or TextEncoder()
        split = SPLITS[self.protocol](dataset.to_interactions())
        validation = validation_split(split)
        final = self._stage(dataset, encoder, split, validation)
        tuning = None
        if self.combine and len(self.models) > 1:
            # Weights are chosen on the validation split, with every model refitted there.
            tuning = self._stage(dataset, encoder, validation, validation_split(validation))
        shared: dict[tuple[str, str], Recommender] = {}  # deterministic fits, reused by every seed
        runs, evaluated = {}, {}
        for seed in seeds:
            models = self._fit_all(replace(final, seed=seed), stochastic, shared, "final")
            combined, weights = None, {}
            if tuning is not None:
                fitted = self._fit_all(replace(tuning, seed=seed), stochastic, shared, "tuning")
                best, _ = tune_weights(
                    lambda w, fitted=fitted: ScoreFusion(list(fitted.values()), w),
                    len(fitted),
                    validation,
                    step=self.weight_step,
                    metric=f"NDCG@{self.k}",
                    k=self.k,
                )
                weights = dict(zip(fitted, best, strict=True))
                combined = ScoreFusion(list(models.values()), best).fit(split.train)
            runs[seed] = (models, combined, weights)
            evaluated[seed] = models | ({COMBINED: combined} if combined is not None else {})
        # A deterministic model is the same object for every seed, so it is measured once.
        results = evaluate_over_seeds(lambda seed: evaluated[seed], split, seeds, k=self.k)
        table = pd.DataFrame({name: result.summary.mean() for name, result in results.items()}).T
        table.index.name = "model"
        if "users" in table.columns:
            table["users"] = table["users"].astype(np.int64)
        models, combined, weights = runs[seeds[0]]
        return PipelineResult(
            dataset.name, split, validation, final, models, combined, weights, table, seeds, results, runs
        )

    def _stage(self, dataset: DatasetDescription, encoder: TextEncoder, split: Split, inner: Split) -> Stage:
        item_vectors = encoder.encode(dataset.texts_for_items(split.train), progress=self.progress)
        user_vectors = None
        if dataset.user_text is not None:
            texts = dataset.user_text(split.train)
            if len(texts) != split.train.n_users:
                raise ValueError(
                    f"{dataset.name}: user_text gave {len(texts)} texts for {split.train.n_users} users"
                )
            user_vectors = encoder.encode(texts, progress=self.progress)
        return Stage(split, inner, item_vectors, user_vectors)

    def _fit_all(
        self, stage: Stage, stochastic: set[str], shared: dict[tuple[str, str], Recommender], which: str
    ) -> dict[str, Recommender]:
        fitted = {}
        desc = f"fitting (seed {stage.seed})" if stochastic else "fitting"
        bar = tqdm(self.models.items(), desc=desc, leave=False, disable=not self.progress)
        for name, build in bar:
            if name in stochastic:
                fitted[name] = build(stage).fit(stage.split.train)
            else:
                if (which, name) not in shared:
                    shared[which, name] = build(stage).fit(stage.split.train)
                fitted[name] = shared[which, name]
        return fitted


# --- Builders for the book's models -----------------------------------------------------


def popularity() -> ModelBuilder:
    return lambda stage: Popularity()


def ease(l2: float = 300.0) -> ModelBuilder:
    return lambda stage: EASE(l2=l2)


def item_knn(k: int = 1600) -> ModelBuilder:
    """Item-based CF; the default k is chapter 3's validation choice on MovieLens P1."""
    return lambda stage: ItemKNN(k=k)


def content(
    user: Literal["history", "text"] = "history", weighting: str = "mean", half_life_days: float = 30.0
) -> ModelBuilder:
    """BERT content cosine; users from their history's vectors (weighted as in
    :func:`~recutils.embeddings.aggregate_user_vectors`) or from their own text."""

    def build(stage: Stage) -> Recommender:
        if user == "text":
            if stage.user_vectors is None:
                raise ValueError("content(user='text') needs a dataset with user_text")
            return ContentRecommender(stage.item_vectors, user_vectors=stage.user_vectors)
        return ContentRecommender(stage.item_vectors, weighting=weighting, half_life_days=half_life_days)

    return build


def two_tower(user: Literal["history", "text"] = "history", **config: object) -> ModelBuilder:
    """The two-tower, early-stopped on the stage's validation split; with ``user="text"``
    the user tower reads the users' own text vectors (queries) instead of histories.

    Without ``seed`` in ``config`` the builder is :func:`seeded`: the tower is trained
    with each of the pipeline's seeds; with ``seed=...`` it is one fixed model."""

    def build(stage: Stage) -> Recommender:
        user_vectors = None
        if user == "text":
            if stage.user_vectors is None:
                raise ValueError("two_tower(user='text') needs a dataset with user_text")
            user_vectors = stage.user_vectors
        settings = {"seed": stage.seed, **config}
        return TwoTower(
            stage.item_vectors, validation=stage.validation, user_vectors=user_vectors, **settings
        )

    return build if "seed" in config else seeded(build)

"""The book's models, combined as chapters 5–7 use them.

The members (EASE, ItemKNN and iALS tuned on validation, BERT content, the two-tower variant
validation chose), the tuned combination over them (:func:`tuned_combination`, chapters 5, 5b
and 7) and chapter 5's table of combinations (:data:`COMBINATIONS`). The fusion methods
themselves and their weight tuning are in :mod:`recutils.combine`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import torch

from recutils.combine import (
    CachedScores,
    MatrixCombination,
    RankFusion,
    ScoreFusion,
    cache_scores,
    tune_weights,
)
from recutils.metrics import evaluate
from recutils.recommender import Recommender
from recutils.selection import Choice, choose
from recutils.split import Interactions, Split

# --- Chapter 5's combinations, every choice on validation ------------------------------------

#: The combinations chapter 5 compares, in table order.
COMBINATIONS = (
    "RRF (k=60), equal weights",
    "Borda, equal weights",
    "CombSUM (min-max), equal weights",
    "CombSUM (min-max), tuned weights",
    "CombMNZ (min-max), equal weights",
    "softmax mixture, tuned",
    "matrix combination, tuned",
)
#: The mixture temperatures searched on validation.
TEMPERATURES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
#: Why the largest temperature can stand as a choice: it is a limit, not a cut-off.
LARGE_TEMPERATURE_LIMIT = (
    "as τ grows, softmax(z / τ) ≈ (1 + z / τ) / n, so the mixture ranks like CombSUM of "
    "z-scored scores; larger temperatures change the lists less and less"
)


@dataclass(frozen=True)
class CombinationSettings:
    """What validation chose for the tuned combinations of one set of members.

    Attributes:
        combsum: CombSUM weights, one per member.
        temperature: the mixture temperature, chosen with equal weights (a ``Choice``).
        mixture: mixture weights at that temperature, one per member.
        matrix: weights of the matrix combination's terms (``MatrixCombination.TERMS``).
    """

    combsum: tuple[float, ...]
    temperature: Choice
    mixture: tuple[float, ...]
    matrix: tuple[float, ...]


def tune_matrix(
    validation: Split, item_vectors: torch.Tensor, step: float = 0.25, k: int | None = 200
) -> tuple[float, ...]:
    """Weights of the matrix combination's three terms, chosen on ``validation``.

    Each term's product is computed once; a weight vector then only re-weights them
    (CombSUM of the min-max normalised terms is exactly the matrix combination).
    """
    terms = cache_scores(
        [
            MatrixCombination({term: 1.0}, item_vectors=item_vectors, k=k, label=term).fit(validation.train)
            for term in MatrixCombination.TERMS
        ]
    )
    best, _ = tune_weights(lambda w: ScoreFusion(terms, w), len(terms), validation, step=step)
    return best


def tune_combinations(
    members: Sequence[Recommender],
    validation: Split,
    matrix: Sequence[float],
    temperatures: Sequence[float] = TEMPERATURES,
    step: float = 0.25,
    combsum: Sequence[float] | None = None,
) -> CombinationSettings:
    """Choose CombSUM weights, the mixture temperature and mixture weights on ``validation``.

    Args:
        members: models fitted on ``validation.train`` (wrap them with :func:`cache_scores`).
        matrix: the matrix combination's weights (from :func:`tune_matrix`; they do not
            depend on the members, so they are tuned once).
        temperatures: an ordered grid; a choice at its edge raises (widen it), except at a
            largest temperature of 16 or more, the mixture's limit (see :data:`LARGE_TEMPERATURE_LIMIT`).
        combsum: CombSUM weights already chosen on ``validation`` (e.g. ``TunedCombination.weights[seed]``);
            tuned here when not given.
    """
    n = len(members)
    if combsum is None:
        combsum, _ = tune_weights(lambda w: ScoreFusion(members, w), n, validation, step=step)
    elif len(combsum) != n:
        raise ValueError(f"combsum has {len(combsum)} weights for {n} members")
    temperature = choose(
        {
            tau: evaluate(
                ScoreFusion(members, method="mixture", temperature=tau).fit(validation.train), validation
            )["NDCG@10"].iloc[0]
            for tau in temperatures
        },
        ordered=True,
        edge_reason=LARGE_TEMPERATURE_LIMIT if max(temperatures) >= 16 else None,
    )
    if len(temperatures) >= 3 and temperature.best == min(temperatures):
        raise ValueError(
            f"validation chose τ = {temperature.best}, the smallest of {list(temperatures)}; widen the grid"
        )
    mixture, _ = tune_weights(
        lambda w: ScoreFusion(members, w, method="mixture", temperature=temperature.best),
        n,
        validation,
        step=step,
    )
    return CombinationSettings(tuple(combsum), temperature, tuple(mixture), tuple(matrix))


def build_combinations(
    members: Sequence[Recommender], settings: CombinationSettings, item_vectors: torch.Tensor
) -> dict[str, Recommender]:
    """The combinations of :data:`COMBINATIONS` over ``members`` (unfitted), keyed by name."""
    built: list[Recommender] = [
        RankFusion(members),
        RankFusion(members, method="borda"),
        ScoreFusion(members),
        ScoreFusion(members, settings.combsum),
        ScoreFusion(members, method="combmnz"),
        ScoreFusion(members, settings.mixture, method="mixture", temperature=settings.temperature.best),
        MatrixCombination(
            dict(zip(MatrixCombination.TERMS, settings.matrix, strict=True)), item_vectors=item_vectors
        ),
    ]
    for combination, name in zip(built, COMBINATIONS, strict=True):
        combination.label = name
    return dict(zip(COMBINATIONS, built, strict=True))


# --- The book's tuned combination: one protocol for chapters 5 and 7 -------------------------

#: The grids of chapters 3 and 4 for the combination's classic members, widened towards smaller
#: values so that the choice on the global time split G (less train data) is inside them too.
EASE_GRID = {"l2": [30.0, 100.0, 300.0, 1000.0]}
ITEMKNN_GRID = {"k": [100, 200, 400, 800, 1200, 1600, 1681]}
IALS_GRID = {"factors": [16, 32, 64, 128, 512, 1024], "regularization": [3.0, 10.0, 30.0]}


@dataclass(frozen=True)
class Member:
    """One member of :func:`tuned_combination`.

    Attributes:
        name: short name (a column of the weight table).
        make: ``make(split, seed, **setting)`` -> a recommender for ``split.train``, fitted
            there or not (it is fitted here if needed). A member that early-stops uses
            ``split`` to find its own validation split.
        grid: settings tuned on validation (with seed 0) before the combination; empty for none.
        seeded: a learned member, built once per seed; otherwise built once and shared.
        bert: a BERT-based member (left out of the ablation).
        edge_reason: why a choice at the edge of ``grid`` can stand, or a function of the chosen
            setting that returns that reason, or None where that edge cannot stand (e.g. only the
            largest k is a true limit); an edge choice without a reason raises: widen the grid.
    """

    name: str
    make: Callable[..., Recommender]
    grid: Mapping[str, Sequence[object]] = field(default_factory=dict)
    seeded: bool = False
    bert: bool = False
    edge_reason: str | Callable[[Mapping[str, object]], str | None] | None = None


def _every_other_film(best: Mapping[str, object]) -> str | None:
    """ItemKNN's largest k, every film but the item itself, is a limit; its smallest is not."""
    if best["k"] == max(ITEMKNN_GRID["k"]):
        return f"k = {best['k']} is every other film, the grid cannot go further"
    return None


def classic_members() -> list[Member]:
    """EASE, ItemKNN and iALS, each tuned on validation with the grids of chapters 3 and 4."""
    from recutils.baselines import EASE
    from recutils.cf import ItemKNN
    from recutils.mf import ImplicitALS

    return [
        Member("EASE", lambda split, seed, **s: EASE(**s), EASE_GRID),
        Member("ItemKNN", lambda split, seed, **s: ItemKNN(**s), ITEMKNN_GRID, edge_reason=_every_other_film),
        Member("iALS", lambda split, seed, **s: ImplicitALS(**s, seed=seed), IALS_GRID, seeded=True),
    ]


def book_members(
    item_vectors: torch.Tensor,
    profile_vectors: Callable[[Interactions], torch.Tensor],
    tower_variant: str,
) -> list[Member]:
    """The members of the book's tuned combination (chapters 5 and 7), in weight order.

    EASE, ItemKNN, iALS (:func:`classic_members`), BERT content over user-profile vectors, and
    the two-tower variant chosen on validation (``recutils.variants.VARIANTS`` key), one per
    seed, early-stopped on ``validation_split`` of the split it is trained for (cached).

    Args:
        item_vectors: (n_items, dim) BERT item vectors.
        profile_vectors: train interactions -> (n_users, dim) profile vectors, e.g.
            ``lambda train: encoder.encode(user_profile_text(data.users, data.items, train))``.
    """
    from recutils.cf import ContentRecommender
    from recutils.split import validation_split
    from recutils.variants import train_variants

    def content(split: Split, seed: int) -> Recommender:
        return ContentRecommender(
            item_vectors, user_vectors=profile_vectors(split.train), label="BERT content (profile)"
        )

    def tower(split: Split, seed: int) -> Recommender:
        inner = validation_split(split)
        return train_variants(item_vectors, split.train, inner, [tower_variant], [seed], progress=False)[tower_variant][0]

    return [
        *classic_members(),
        Member("BERT content", content, bert=True),
        Member("two-tower", tower, seeded=True, bert=True),
    ]


@dataclass(frozen=True)
class TunedCombination:
    """The result of :func:`tuned_combination`.

    Attributes:
        names: member short names, in weight order.
        bert: for each member, whether it is BERT-based.
        seeds: the seeds, one combination per seed.
        settings: member name -> the setting validation chose (empty for untuned members).
        choices: member name -> a sentence naming that choice (tuned members only).
        on_validation: seed -> members fitted on ``validation.train`` (scores cached).
        on_split: seed -> the same members fitted on ``split.train`` (deterministic members
            are the same object for every seed, so they are evaluated once).
        weights: seed -> CombSUM weights over all members, chosen on validation.
        weights_without_bert: seed -> CombSUM weights over the non-BERT members only.
    """

    names: tuple[str, ...]
    bert: tuple[bool, ...]
    seeds: tuple[int, ...]
    settings: dict[str, dict[str, object]]
    choices: dict[str, str]
    on_validation: dict[int, list[Recommender]]
    on_split: dict[int, list[Recommender]]
    weights: dict[int, tuple[float, ...]]
    weights_without_bert: dict[int, tuple[float, ...]]

    LABEL = "tuned combination"
    LABEL_WITHOUT_BERT = "tuned combination without BERT members"

    def combination(self, seed: int, on: Literal["split", "validation"] = "split") -> ScoreFusion:
        """The tuned CombSUM of ``seed`` (unfitted), over the members fitted on ``on``."""
        members = (self.on_split if on == "split" else self.on_validation)[seed]
        return ScoreFusion(members, self.weights[seed], label=self.LABEL)

    def without_bert(self, seed: int, on: Literal["split", "validation"] = "split") -> ScoreFusion:
        """The same protocol over the non-BERT members only (the ablation), unfitted."""
        members = (self.on_split if on == "split" else self.on_validation)[seed]
        kept = [m for m, is_bert in zip(members, self.bert, strict=True) if not is_bert]
        if not kept:
            raise ValueError("every member is BERT-based: there is no combination without them")
        return ScoreFusion(kept, self.weights_without_bert[seed], label=self.LABEL_WITHOUT_BERT)

    def systems(self, seed: int) -> dict[str, Recommender]:
        """Every member (by model name), the combination and its ablation, for ``seed``: pass
        to :func:`~recutils.selection.evaluate_over_seeds` with the split the combination was tuned for. A learned
        member is keyed by the name its first seed's model has, so the keys do not vary by seed."""
        names = [m.name for m in self.on_split[self.seeds[0]]]
        return dict(zip(names, self.on_split[seed], strict=True)) | {
            self.LABEL: self.combination(seed),
            self.LABEL_WITHOUT_BERT: self.without_bert(seed),
        }

    def restricted(self, names: Sequence[str], validation: Split, step: float = 0.25) -> TunedCombination:
        """The same protocol over some of the members, e.g. to measure what others add.

        The members' settings and fitted models are reused (each was tuned and fitted on its
        own), so only the weights are chosen again on ``validation``: the result equals a fresh
        :func:`tuned_combination` over those members, without refitting them.
        """
        unknown = [n for n in names if n not in self.names]
        if unknown or not names:
            raise ValueError(f"choose member names from {list(self.names)}, got {list(names)}")
        keep = [self.names.index(n) for n in names]
        pick = lambda fitted: {s: [fitted[s][i] for i in keep] for s in self.seeds}  # noqa: E731
        bert = tuple(self.bert[i] for i in keep)
        on_validation = pick(self.on_validation)
        weights, without = _choose_weights(on_validation, bert, validation, step)
        return TunedCombination(
            tuple(names), bert, self.seeds, {n: self.settings[n] for n in names},
            {n: self.choices[n] for n in names if n in self.choices}, on_validation,
            pick(self.on_split), weights, without,
        )

    def weight_table(self) -> pd.DataFrame:
        """Weights per seed (rows) and member (columns), with and without BERT members."""
        plain = [n for n, b in zip(self.names, self.bert, strict=True) if not b]
        rows = {f"seed {s}": dict(zip(self.names, self.weights[s], strict=True)) for s in self.seeds}
        rows |= {
            f"seed {s}, without BERT": dict(zip(plain, self.weights_without_bert[s], strict=True))
            for s in self.seeds
        }
        return pd.DataFrame.from_dict(rows, orient="index")[list(self.names)].rename_axis("weights")


def tuned_combination(
    members: Sequence[Member],
    split: Split,
    validation: Split,
    seeds: Sequence[int] = (0, 1, 2),
    step: float = 0.25,
) -> TunedCombination:
    """The book's tuned combination: CombSUM (min-max) with weights chosen on validation.

    The protocol, every step on ``validation`` (test is never read):
    1. each member with a grid is tuned (``recutils.metrics.tune``, seed 0);
    2. every member is fitted on ``validation.train`` (learned members once per seed);
    3. for each seed, CombSUM weights on the simplex (``step``) are chosen over that seed's
       members, and, for the ablation, over the non-BERT members alone;
    4. the members are fitted on ``split.train`` (per seed where learned) to carry the weights to test.

    Args:
        members: e.g. :func:`book_members` (chapters 5 and 7) or :func:`classic_members`.
        split: the split the combination is reported on (e.g. P1); ``validation`` is its
            validation split.
    Returns: a :class:`TunedCombination`.
    Raises:
        ValueError: no members, duplicate names or seeds, or a grid choice at an edge without
            an ``edge_reason``.
    """
    from recutils.metrics import edge_parameters, tune
    from recutils.selection import choose_setting

    if not members:
        raise ValueError("tuned_combination needs at least one member")
    names = tuple(m.name for m in members)
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be distinct, got {list(names)}")
    seeds = tuple(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and non-empty, got {list(seeds)}")
    settings: dict[str, dict[str, object]] = {}
    choices: dict[str, str] = {}
    for member in members:
        if not member.grid:
            settings[member.name] = {}
            continue
        best, _ = tune(
            lambda member=member, **s: member.make(validation, 0, **s),
            member.grid,
            validation,
            progress=False,
            allow_edge=member.edge_reason is not None,
        )
        settings[member.name] = best
        edge = ""
        if edge_parameters(best, member.grid):
            reason = member.edge_reason(best) if callable(member.edge_reason) else member.edge_reason
            if reason is None:
                raise ValueError(
                    f"{member.name}: {choose_setting(best, member.grid)} and nothing says why that edge "
                    "can stand; widen the grid"
                )
            edge = f"; {reason}"
        choices[member.name] = choose_setting(best, member.grid) + edge

    def fitted(where: Split) -> dict[int, list[Recommender]]:
        shared: dict[str, Recommender] = {}
        out: dict[int, list[Recommender]] = {}
        for seed in seeds:
            row = []
            for member in members:
                if member.seeded or member.name not in shared:
                    model = member.make(where, seed, **settings[member.name])
                    fitted_on = getattr(model, "train_", None)
                    if fitted_on is None or fitted_on.fingerprint() != where.train.fingerprint():
                        model.fit(where.train)
                    model = CachedScores(model).fit(where.train)
                    if not member.seeded:
                        shared[member.name] = model
                row.append(model if member.seeded else shared[member.name])
            out[seed] = row
        return out

    on_validation = fitted(validation)
    bert = tuple(m.bert for m in members)
    weights, without = _choose_weights(on_validation, bert, validation, step)
    return TunedCombination(names, bert, seeds, settings, choices, on_validation, fitted(split), weights, without)


def _choose_weights(
    on_validation: Mapping[int, Sequence[Recommender]], bert: Sequence[bool], validation: Split, step: float
) -> tuple[dict[int, tuple[float, ...]], dict[int, tuple[float, ...]]]:
    """Per seed, CombSUM weights on the simplex chosen on ``validation``: over all members, and
    over the non-BERT members alone (the ablation)."""
    plain = [i for i, is_bert in enumerate(bert) if not is_bert]
    weights: dict[int, tuple[float, ...]] = {}
    without: dict[int, tuple[float, ...]] = {}
    memo: dict[tuple[int, ...], tuple[float, ...]] = {}
    for seed, models in on_validation.items():
        best, _ = tune_weights(lambda w: ScoreFusion(models, w), len(models), validation, step)
        weights[seed] = tuple(best)
        kept = [models[i] for i in plain]
        key = tuple(id(m) for m in kept)  # without a learned non-BERT member, tuned once
        if kept and key not in memo:
            best, _ = tune_weights(lambda w: ScoreFusion(kept, w), len(kept), validation, step)
            memo[key] = tuple(best)
        without[seed] = memo.get(key, ())
    return weights, without


def combination_settings(
    tuned: TunedCombination,
    validation: Split,
    matrix: Sequence[float],
    temperatures: Sequence[float] = TEMPERATURES,
    step: float = 0.25,
) -> dict[int, CombinationSettings]:
    """Per seed, the settings of :data:`COMBINATIONS` over ``tuned``'s validation members.

    CombSUM's weights are the tuned combination's own (``tuned.weights``); the mixture's
    temperature and weights are chosen on ``validation`` (:func:`tune_combinations`) per seed.
    """
    return {
        seed: tune_combinations(
            tuned.on_validation[seed], validation, matrix, temperatures, step, combsum=tuned.weights[seed]
        )
        for seed in tuned.seeds
    }


def combination_systems(
    tuned: TunedCombination,
    settings: Mapping[int, CombinationSettings],
    item_vectors: torch.Tensor,
) -> Callable[..., dict[str, Recommender]]:
    """``systems(seed, on="split")``: ``tuned``'s members and the :data:`COMBINATIONS` over them.

    ``on="validation"`` gives them over the members fitted on the validation split's train part.
    The matrix combination has no member in it, so it is one model shared by every seed
    (evaluated once); the member keys are those of :meth:`TunedCombination.systems`.
    """
    names = [m.name for m in tuned.on_split[tuned.seeds[0]]]
    first = settings[tuned.seeds[0]].matrix
    if any(s.matrix != first for s in settings.values()):
        raise ValueError("the matrix combination's weights differ between seeds; tune them once")
    matrix = {
        on: MatrixCombination(
            dict(zip(MatrixCombination.TERMS, first, strict=True)),
            item_vectors=item_vectors,
            label=COMBINATIONS[-1],
        )
        for on in ("split", "validation")
    }

    def systems(seed: int, on: Literal["split", "validation"] = "split") -> dict[str, Recommender]:
        members = (tuned.on_split if on == "split" else tuned.on_validation)[seed]
        built = build_combinations(members, settings[seed], item_vectors)
        return dict(zip(names, members, strict=True)) | built | {COMBINATIONS[-1]: matrix[on]}

    return systems

"""Texts for BERT(i) and BERT(u), and user vectors built from item vectors.

The article writes u_emb = BERT(u) and i_emb = BERT(i) but feeds BERT raw ids,
which carry no meaning for a language model. BERT reads text, so an item
becomes its title, year and genres, and a user becomes either a profile text
(demographics and liked titles) or an aggregate of their items' vectors.
"""

from __future__ import annotations

import re
from typing import Literal

import pandas as pd
import torch

from recutils.checks import check_number
from recutils.similarity import top_k_neighbours
from recutils.split import Interactions

GENDER_WORDS = {"M": "man", "F": "woman"}


def readable_title(title: str) -> str:
    """MovieLens title without its year, with a trailing article moved to the front.

    "Shawshank Redemption, The (1994)" becomes "The Shawshank Redemption".
    """
    name = re.sub(r"\s*\(\d{4}\)\s*$", "", title).strip()
    match = re.match(r"^(.*), (The|A|An|Les|La|Le|Il|Das|Der|Die|El)$", name)
    return f"{match.group(2)} {match.group(1)}" if match else name


def item_text(items: pd.DataFrame) -> list[str]:
    """One text per item: "Toy Story (1995). Genres: Animation, Children's, Comedy".

    Args:
        items: the ``items`` table of :class:`~recutils.data.RatingsData`
            (``title``, ``year``, ``genres``), one row per item index.
    Returns: ``len(items)`` strings in item-index order. Missing years and
    genres are left out rather than written as "nan"; an item with neither a
    real title nor genres becomes "Unknown film".
    """
    missing = {"title", "year", "genres"} - set(items.columns)
    if missing:
        raise ValueError(f"items table lacks columns {sorted(missing)}")
    texts = []
    for title, year, genres in zip(items["title"], items["year"], items["genres"], strict=True):
        name = readable_title(str(title)) if isinstance(title, str) and title.lower() != "unknown" else ""
        parts = []
        if name:
            parts.append(name if pd.isna(year) else f"{name} ({int(year)})")
        if len(genres):
            parts.append("Genres: " + ", ".join(genres))
        texts.append(". ".join(parts) if parts else "Unknown film")
    return texts


def user_profile_text(
    users: pd.DataFrame,
    items: pd.DataFrame,
    train: Interactions,
    min_rating: int = 4,
    max_titles: int = 20,
    demographics: bool = True,
) -> list[str]:
    """One profile text per user, from demographics and the titles they liked in train.

    "A 24-year-old man, technician. Liked: Toy Story, Star Wars, ..." with the
    user's most recent liked titles first, films liked in the same second in item-index
    order (at most ``max_titles``, so the text fits the encoder's window). Only train
    interactions are read, so no test item leaks into the profile. With
    ``demographics=False`` the text is just "Liked: ...".

    Returns: ``train.n_users`` strings in user-index order.
    """
    if len(users) != train.n_users or len(items) != train.n_items:
        raise ValueError(
            f"tables ({len(users)} users, {len(items)} items) do not match the interactions "
            f"({train.n_users} users, {train.n_items} items)"
        )
    # MovieLens users often rate several films within one second: those are ordered by item
    # index, so the text depends on the data alone, not on the row order or the sort algorithm.
    liked = train.frame[train.frame["rating"] >= min_rating]
    liked = liked.sort_values(["user", "timestamp", "item"], ascending=[True, False, True], kind="stable")
    names = [readable_title(str(t)) for t in items["title"]]
    titles_by_user = liked.groupby("user")["item"].apply(lambda s: [names[i] for i in s[:max_titles]])
    texts = []
    for user, row in enumerate(users.itertuples(index=False)):
        who = f"A {row.age}-year-old {GENDER_WORDS.get(row.gender, 'person')}, {row.occupation}."
        titles = titles_by_user.get(user, [])
        text = f"Liked: {', '.join(titles)}." if titles else "No liked films yet."
        texts.append(f"{who} {text}" if demographics else text)
    return texts


def aggregate_user_vectors(
    train: Interactions,
    item_vectors: torch.Tensor,
    weighting: Literal["mean", "rating", "recency"] = "mean",
    half_life_days: float = 30.0,
) -> torch.Tensor:
    """User vectors as a weighted mean of their train items' vectors, L2-normalised.

    Args:
        train: the interactions to aggregate (never test ones).
        item_vectors: (n_items, dim) item embeddings.
        weighting: "mean" (equal weights), "rating" (weight = rating − 2.5, so
            disliked films push away), or "recency" (weight halves every
            ``half_life_days`` before the user's last train interaction).
    Returns: (n_users, dim) float32; users without train interactions get zeros.
    """
    if item_vectors.ndim != 2 or len(item_vectors) != train.n_items:
        raise ValueError(f"item_vectors must be ({train.n_items}, dim), got {tuple(item_vectors.shape)}")
    # A negative half-life would weight old items more, and 0 divides by zero.
    check_number(half_life_days, "half_life_days", low=0, low_open=True)
    frame = train.frame
    if weighting == "mean":
        weights = torch.ones(len(frame))
    elif weighting == "rating":
        weights = train.column("rating").float() - 2.5
    elif weighting == "recency":
        last = frame.groupby("user")["timestamp"].transform("max").to_numpy()
        age_days = torch.as_tensor((last - frame["timestamp"].to_numpy()) / 86_400.0, dtype=torch.float32)
        weights = 0.5 ** (age_days / half_life_days)
    else:
        raise ValueError(f"weighting must be 'mean', 'rating' or 'recency', got {weighting!r}")
    users = train.column("user")
    summed = torch.zeros(train.n_users, item_vectors.shape[1])
    summed.index_add_(0, users, weights.unsqueeze(1) * item_vectors.float()[train.column("item")])
    return torch.nn.functional.normalize(summed, dim=1)


def genre_matrix(items: pd.DataFrame) -> tuple[torch.Tensor, list[str]]:
    """Genre one-hot vectors.

    Returns: (n_items, n_genres) float32 0/1 matrix and the genre names, in
    order of first appearance. Items without a genre have a zero row.
    """
    names = list(dict.fromkeys(g for genres in items["genres"] for g in genres))
    column = {g: j for j, g in enumerate(names)}
    matrix = torch.zeros(len(items), len(names))
    for row, genres in enumerate(items["genres"]):
        matrix[row, [column[g] for g in genres]] = 1.0
    return matrix, names


def genre_agreement_at_k(vectors: torch.Tensor, genres: torch.Tensor, k: int = 10) -> float:
    """How often an item's k nearest neighbours (cosine) share at least one genre with it.

    Only items with at least one genre take part, as queries and as neighbours.

    Args:
        vectors: (n_items, dim) item representations to judge.
        genres: (n_items, n_genres) 0/1 genre matrix from :func:`genre_matrix`.
    Returns: the share in [0, 1], averaged over items and neighbours.
    """
    if len(vectors) != len(genres):
        raise ValueError(f"{len(vectors)} vectors for {len(genres)} genre rows")
    keep = genres.sum(dim=1) > 0
    g = genres[keep]
    _, neighbours = top_k_neighbours(vectors[keep], k)
    shared = (g.unsqueeze(1) * g[neighbours]).sum(dim=2) > 0
    return shared.float().mean().item()


def genre_agreement_by_chance(genres: torch.Tensor) -> float:
    """The share of random item pairs (with genres, distinct) that share a genre: the floor for
    :func:`genre_agreement_at_k`."""
    g = genres[genres.sum(dim=1) > 0]
    shared = (g @ g.T) > 0
    n = len(g)
    return ((shared.sum() - n) / (n * (n - 1))).item()


def popularity_along_components(vectors: torch.Tensor, counts: torch.Tensor, components: int = 2) -> float:
    """How strongly popularity lines up with the main directions of a set of item vectors.

    Args:
        vectors: (n_items, dim) item vectors.
        counts: (n_items,) interactions per item.
        components: how many leading principal components to look at.
    Returns: the largest |Spearman ρ| between ``counts`` and the items' coordinates on one of
    the first ``components`` principal components, in [0, 1].
    """
    if vectors.ndim != 2 or len(vectors) != len(counts):
        raise ValueError(f"need (n_items, dim) vectors and (n_items,) counts, got {tuple(vectors.shape)} and {tuple(counts.shape)}")
    if not 1 <= components <= min(vectors.shape):
        raise ValueError(f"components must lie in 1..{min(vectors.shape)}, got {components}")
    centred = vectors.double() - vectors.double().mean(dim=0)
    _, _, basis = torch.linalg.svd(centred, full_matrices=False)
    coordinates = pd.DataFrame((centred @ basis[:components].T).numpy())
    popularity = pd.Series(counts.double().numpy())
    return float(max(abs(coordinates[c].corr(popularity, method="spearman")) for c in coordinates))

"""The social case: a simulated network with homophily, and friend-aggregated users.

No social dataset with both friendships and item text ships on PyPI, so the book
simulates one, and says so wherever it is used. Users have a taste (one of the
topics); friendships form within a taste group with probability ``homophily`` and
at random otherwise; users read items of their taste with probability ``in_topic``.
Item titles use their topic's words, so a text encoder can see the topics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recutils.cf import ContentRecommender
from recutils.combine import ScoreFusion
from recutils.data import TOPICS, RatingsData, simulated_ratings
from recutils.embeddings import aggregate_user_vectors, item_text
from recutils.metrics import evaluate
from recutils.pipeline import (
    DatasetDescription,
    ModelBuilder,
    Pipeline,
    PipelineResult,
    Stage,
    content,
    item_knn,
)
from recutils.split import Interactions
from recutils.text import TextEncoder

STYLES = ("quiet", "bold", "strange", "gentle", "dark", "bright", "secret", "last", "first", "lost")


@dataclass(frozen=True)
class SocialData:
    """Simulated interactions with a friendship graph.

    Attributes:
        ratings: interactions, items (``title``, ``genres`` = [topic], ``cluster``) and
            users (``cluster`` = taste topic).
        friends: per user, the sorted indices of their friends (the graph is symmetric).
        homophily: the probability that a friendship was formed within a taste group.
    """

    ratings: RatingsData
    friends: list[np.ndarray]
    homophily: float


def make_social(
    n_users: int = 600,
    n_items: int = 300,
    n_topics: int = 6,
    homophily: float = 0.8,
    n_friends: int = 8,
    history: tuple[int, int] = (3, 20),
    in_topic: float = 0.8,
    seed: int = 0,
) -> SocialData:
    """Simulate users, friendships and reading histories (see the module docstring).

    Args:
        homophily: in [0, 1]; 1 means every friend shares the user's taste, 0 means
            friends are drawn at random (sharing it only by chance, 1 / n_topics).
        n_friends: friendships each user starts (the graph is then made symmetric).
        history: the smallest and largest number of items a user reads (uniform).
        in_topic: the share of a user's items drawn from their own topic.
    """
    if not 0 <= homophily <= 1 or not 0 <= in_topic <= 1:
        raise ValueError(f"homophily and in_topic must lie in [0, 1], got {homophily} and {in_topic}")
    if not 2 <= n_topics <= len(TOPICS):
        raise ValueError(f"n_topics must lie in 2..{len(TOPICS)}, got {n_topics}")
    low, high = history
    if not 1 <= low <= high <= n_items // n_topics:
        raise ValueError(
            f"history must satisfy 1 <= {low} <= {high} <= items per topic ({n_items // n_topics})"
        )
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)[:n_topics]
    item_topic = np.arange(n_items) % n_topics
    taste = rng.integers(0, n_topics, n_users)

    edges = set()
    for user in range(n_users):
        for _ in range(n_friends):
            same = rng.random() < homophily
            pool = np.flatnonzero(taste == taste[user]) if same else np.arange(n_users)
            pool = pool[pool != user]
            if len(pool) == 0:  # the only user of their taste befriends anyone
                pool = np.delete(np.arange(n_users), user)
            friend = int(rng.choice(pool))
            edges.add((min(user, friend), max(user, friend)))
    friends = [[] for _ in range(n_users)]
    for a, b in sorted(edges):
        friends[a].append(b)
        friends[b].append(a)

    rows = []
    for user in range(n_users):
        length = int(rng.integers(low, high + 1))
        own = rng.random(length) < in_topic
        mine, other = np.flatnonzero(item_topic == taste[user]), np.flatnonzero(item_topic != taste[user])
        chosen = np.concatenate(
            [rng.choice(mine, own.sum(), replace=False), rng.choice(other, (~own).sum(), replace=False)]
        )
        for t, item in enumerate(rng.permutation(chosen)):
            rows.append((user, int(item), 5, 1_000_000 + 1_000 * user + t))
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]).astype(np.int64)

    titles = []
    for item in range(n_items):
        first, second = rng.choice(TOPICS[topics[item_topic[item]]], 2, replace=False)
        titles.append(f"The {rng.choice(STYLES)} {first} and the {second}")
    ratings = simulated_ratings(
        frame,
        titles,
        item_topic,
        taste,
        topics,
        rng,
        f"simulated social(h={homophily}, seed={seed})",
        # One year for all, so that item texts differ only by their titles.
        year=2020,
    )
    return SocialData(ratings, [np.array(f, dtype=np.int64) for f in friends], homophily)


def friend_user_vectors(
    train: Interactions, item_vectors: torch.Tensor, friends: list[np.ndarray]
) -> torch.Tensor:
    """Each user as the mean of their friends' history vectors, L2-normalised.

    A friend's vector is the mean of their train items' vectors
    (:func:`~recutils.embeddings.aggregate_user_vectors`); only train interactions
    are read. Returns: (n_users, dim) float32; users without friends (or whose
    friends have no train history) get zeros.
    """
    if len(friends) != train.n_users:
        raise ValueError(f"friends lists for {len(friends)} users, interactions have {train.n_users}")
    own = aggregate_user_vectors(train, item_vectors)
    summed = torch.zeros_like(own)
    for user, mates in enumerate(friends):
        if len(mates):
            summed[user] = own[torch.as_tensor(mates)].sum(dim=0)
    return torch.nn.functional.normalize(summed, dim=1)


def friends_content(friends: list[np.ndarray]) -> ModelBuilder:
    """Pipeline builder: BERT content cosine with users seen through their friends."""

    def build(stage: Stage) -> ContentRecommender:
        vectors = friend_user_vectors(stage.split.train, stage.item_vectors, friends)
        return ContentRecommender(stage.item_vectors, user_vectors=vectors, label="friends (BERT content)")

    return build


@dataclass(frozen=True)
class SocialRun:
    """The pipeline on one simulated network, and the naive mix beside it.

    Attributes:
        social: the simulated network.
        result: steps 1–6 (P1) with own history, friends and ItemKNN, CombSUM weights tuned on validation.
        naive: own history + friends with equal weights, as one might mix them without a validation split.
    """

    social: SocialData
    result: PipelineResult
    naive: ScoreFusion

    def row(self) -> dict[str, float]:
        """Test NDCG@10 of each model, the naive mix and the tuned combination; the tuned weight on friends."""
        table, run = self.result.table["NDCG@10"], self.result
        return {
            "homophily": self.social.homophily,
            "own history": float(table["own history"]),
            "friends": float(table["friends"]),
            "own + friends, equal weights": float(evaluate(self.naive, run.split)["NDCG@10"].iloc[0]),
            "tuned combination": float(table["combined (CombSUM, tuned)"]),
            "tuned weight on friends": float(run.weights["friends"]),
        }


def run_social(
    homophily: float,
    seed: int = 0,
    item_knn_k: int = 50,
    encoder: TextEncoder | None = None,
    progress: bool = True,
    **simulation: object,
) -> SocialRun:
    """Simulate a network (:func:`make_social`) and run the pipeline on it (protocol P1).

    Args:
        homophily, seed, simulation: passed to :func:`make_social`.
        item_knn_k: neighbours of the ItemKNN member of the combination.
        encoder: the text encoder (default: the pipeline's, all-MiniLM-L6-v2, cached).
        progress: show the pipeline's progress bars.
    """
    social = make_social(homophily=homophily, seed=seed, **simulation)
    data = social.ratings
    description = DatasetDescription(
        name=f"simulated social, h={homophily}, seed={seed}",
        interactions=data.interactions.frame,
        user="user",
        item="item",
        items=data.items.reset_index(),
        item_text=lambda train: item_text(data.items),
        time="timestamp",
    )
    models = {
        "own history": content(),
        "friends": friends_content(social.friends),
        "ItemKNN": item_knn(k=item_knn_k),
    }
    result = Pipeline(models, protocol="P1", encoder=encoder, progress=progress).run(description)
    naive = ScoreFusion([result.models["own history"], result.models["friends"]]).fit(result.split.train)
    return SocialRun(social, result, naive)


def gain_by_history_length(
    run: SocialRun, bins: tuple[int, ...] = (0, 3, 8, 100), labels: tuple[str, ...] = ("2-3", "4-8", "9+")
) -> pd.DataFrame:
    """Per test user: the number of train items (binned), and test NDCG@10 of own history and of the naive mix.

    Returns: one row per test user (index ``user``) with columns ``train items``,
    ``own history`` and ``own + friends``.
    """
    split = run.result.split
    history = split.train.user_counts().numpy()
    _, own = evaluate(run.result.models["own history"], split, per_user=True)
    _, mixed = evaluate(run.naive, split, per_user=True)
    return pd.DataFrame(
        {
            "train items": pd.cut(history[own.index], list(bins), labels=list(labels)),
            "own history": own["NDCG@10"],
            "own + friends": mixed["NDCG@10"].reindex(own.index),
        }
    )

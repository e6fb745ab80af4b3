import pandas as pd
import pytest
import torch

from recutils.embeddings import (
    aggregate_user_vectors,
    genre_matrix,
    item_text,
    readable_title,
    user_profile_text,
)
from recutils.split import Interactions


def test_readable_title():
    assert readable_title("Shawshank Redemption, The (1994)") == "The Shawshank Redemption"
    assert readable_title("Toy Story (1995)") == "Toy Story"
    assert readable_title("Thin Man, The") == "The Thin Man"


def test_item_text_handles_gaps(movielens):
    texts = item_text(movielens.items)
    assert len(texts) == 1_682
    assert texts[0] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert texts[266] == "Unknown film"  # item id 267: no title, year or genre
    assert not any("nan" in t.lower().split() or "<na>" in t.lower() for t in texts)
    items = pd.DataFrame({"title": ["Heat (1995)"], "year": [pd.NA], "genres": [[]]})
    assert item_text(items) == ["Heat"]
    with pytest.raises(ValueError, match="lacks columns"):
        item_text(items.drop(columns="genres"))


def _toy():
    rows = [(0, 0, 5, 100), (0, 1, 1, 200), (0, 2, 4, 300), (1, 1, 5, 50)]
    return Interactions(pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"]), 3, 3)


def test_user_profile_text_uses_train_likes_most_recent_first():
    users = pd.DataFrame(
        {"age": [24, 53, 30], "gender": ["M", "F", "X"], "occupation": ["technician", "other", "writer"]}
    )
    items = pd.DataFrame({"title": ["Heat (1995)", "Big (1988)", "Matrix, The (1999)"]})
    texts = user_profile_text(users, items, _toy())
    assert texts[0] == "A 24-year-old man, technician. Liked: The Matrix, Heat."
    assert texts[1] == "A 53-year-old woman, other. Liked: Big."
    assert texts[2] == "A 30-year-old person, writer. No liked films yet."
    plain = user_profile_text(users, items, _toy(), demographics=False)
    assert plain == ["Liked: The Matrix, Heat.", "Liked: Big.", "No liked films yet."]
    assert user_profile_text(users, items, _toy(), max_titles=1)[0] == "A 24-year-old man, technician. Liked: The Matrix."
    with pytest.raises(ValueError, match="do not match"):
        user_profile_text(users.iloc[:2], items, _toy())


def test_aggregate_user_vectors():
    vectors = torch.eye(3)
    mean = aggregate_user_vectors(_toy(), vectors)
    assert torch.allclose(mean[0], torch.tensor([1.0, 1.0, 1.0]) / 3**0.5)
    assert torch.equal(mean[2], torch.zeros(3))  # no history
    rating = aggregate_user_vectors(_toy(), vectors, "rating")
    assert rating[0, 1] < 0 < rating[0, 0]  # a 1-star film pushes away
    recency = aggregate_user_vectors(_toy(), vectors, "recency", half_life_days=100 / 86_400)
    assert recency[0, 2] > recency[0, 1] > recency[0, 0]  # newer weighs more
    assert torch.allclose(recency.norm(dim=1)[:2], torch.ones(2))
    with pytest.raises(ValueError, match="weighting"):
        aggregate_user_vectors(_toy(), vectors, "median")
    with pytest.raises(ValueError, match="item_vectors must be"):
        aggregate_user_vectors(_toy(), torch.eye(4))


def test_genre_matrix(movielens):
    matrix, names = genre_matrix(movielens.items)
    assert matrix.shape == (1_682, 18) and "unknown" not in names
    assert matrix.sum(dim=1).tolist() == [float(len(g)) for g in movielens.items["genres"]]
    assert matrix[266].sum() == 0


def test_genre_agreement():
    from recutils.embeddings import genre_agreement_at_k, genre_agreement_by_chance

    genres = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    aligned = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 1.0]])
    assert genre_agreement_at_k(aligned, genres, k=1) == 1.0
    crossed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [1.0, 1.0]])
    assert genre_agreement_at_k(crossed, genres, k=1) == 0.0
    assert genre_agreement_by_chance(genres) == pytest.approx(4 / 12)
    with pytest.raises(ValueError, match="vectors for"):
        genre_agreement_at_k(aligned[:3], genres)


def test_popularity_along_components():
    import torch

    from recutils.embeddings import popularity_along_components

    generator = torch.Generator().manual_seed(0)
    counts = torch.arange(1, 201)
    # The largest direction of spread follows popularity exactly (monotone), the rest is small noise.
    aligned = torch.stack([counts.float().log() * 10, torch.randn(200, generator=generator)], dim=1)
    assert popularity_along_components(aligned, counts) == pytest.approx(1.0)
    noise = torch.randn(200, 8, generator=generator)
    assert popularity_along_components(noise, counts) < 0.3
    with pytest.raises(ValueError, match="components"):
        popularity_along_components(noise, counts, components=0)
    with pytest.raises(ValueError, match="counts"):
        popularity_along_components(noise, counts[:10])

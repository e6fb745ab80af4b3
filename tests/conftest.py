"""Shared fixtures. The encoder never reaches a hub in tests."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

from recutils.data import load_movielens_100k, make_synthetic  # noqa: E402
from recutils.embeddings import item_text  # noqa: E402
from recutils.pipeline import DatasetDescription  # noqa: E402


@pytest.fixture(scope="session")
def movielens():
    return load_movielens_100k(download=False)


@pytest.fixture(scope="session")
def synthetic():
    return make_synthetic()


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A fresh, empty recutils cache folder for this test."""
    monkeypatch.setenv("RECUTILS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def synthetic_description():
    """Small synthetic data and its description for the pipeline (item text from titles and genres)."""
    data = make_synthetic(n_users=90, n_items=45, per_user=10)
    description = DatasetDescription(
        name="synthetic",
        interactions=data.interactions.frame,
        user="user",
        item="item",
        items=data.items.reset_index(),
        item_text=lambda train: item_text(data.items),
        time="timestamp",
        rating="rating",
    )
    return data, description

"""The e-commerce case: finding the reviewed product from a review's title.

The clothing-review data has no reviewer ids, so it cannot say what a shopper buys
next. It does support a retrieval task a shop has: given what someone wrote (a
review title, standing in for a search query), which of 1,206 products is it about?
Each review is a "user" with one interaction, the reviewed product; a product is
described by its department and class and by the titles of its *train* reviews only,
so nothing from a test review leaks into the catalogue text.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recutils.pipeline import DatasetDescription
from recutils.split import Interactions


def product_table(reviews: pd.DataFrame) -> pd.DataFrame:
    """One row per product in item-index order: ``item``, ``clothing_id``, ``department``, ``class_name``.

    A product's department and class are the most common among its reviews (ties in
    alphabetical order), "unknown" where no review gives one.
    """
    table = reviews.groupby("item", sort=True)[["clothing_id"]].first()
    for column in ("department", "class_name"):
        table[column] = _most_common(reviews, column).reindex(table.index).fillna("unknown").astype(str)
    return table.reset_index()


def _most_common(reviews: pd.DataFrame, column: str) -> pd.Series:
    """Per item, the most frequent non-missing value of ``column``, ties in alphabetical order.

    Reviews of one product can disagree (one is "Jackets" in two reviews and "Outerwear" in
    six); the first review's would depend on the row order (and after an unstable sort, on
    the sort algorithm).
    """
    counts = reviews.groupby(["item", column]).size().rename("n").reset_index()
    ranked = counts.sort_values(["item", "n", column], ascending=[True, False, True], kind="stable")
    return ranked.drop_duplicates("item").set_index("item")[column]


def product_texts(
    reviews: pd.DataFrame,
    products: pd.DataFrame,
    train: Interactions,
    max_titles: int = 20,
    with_category: bool = True,
) -> list[str]:
    """One text per product from its category and its train reviews' titles.

    "Dresses, Dresses. Reviews: Love it!; Runs small; ..." with the most helpful
    titles (by ``positive_feedback_count``) first. A product with no train review
    (a new product) is described by its category alone.

    Args:
        reviews: the review table whose row ``r`` is user ``r`` of ``train``.
        products: :func:`product_table` of the same reviews.
        train: interactions review → product; only these reviews are read.
        with_category: put department and class in the text (turn off to test
            whether review text alone knows the category).
    Returns: ``len(products)`` strings in item-index order.
    """
    if len(reviews) != train.n_users or len(products) != train.n_items:
        raise ValueError(
            f"{len(reviews)} reviews and {len(products)} products do not match the interactions "
            f"({train.n_users} users, {train.n_items} items)"
        )
    seen = reviews.iloc[np.sort(train.frame["user"].to_numpy())]
    helpful = seen.sort_values("positive_feedback_count", ascending=False, kind="stable")
    titles = helpful.groupby("item")["title"].apply(lambda t: [str(x) for x in t.dropna()[:max_titles]])
    texts = []
    for row in products.itertuples(index=False):
        parts = [f"{row.department}, {row.class_name}."] if with_category else []
        listed = titles.get(row.item, [])
        if listed:
            parts.append("Reviews: " + "; ".join(listed) + ".")
        texts.append(" ".join(parts) if parts else "No reviews yet.")
    return texts


def clothing_dataset(reviews: pd.DataFrame) -> DatasetDescription:
    """Reviews with a title, as a pipeline dataset: review → product, query = the title.

    Returns: a :class:`DatasetDescription` whose users are the titled reviews
    (re-indexed 0..n-1 in their original order) and whose items are all products.
    """
    titled = reviews[reviews["title"].notna()].reset_index(drop=True)
    if titled.empty:
        raise ValueError("no review has a title")
    products = product_table(reviews)
    titled = titled.assign(review=np.arange(len(titled)))
    return DatasetDescription(
        name="clothing reviews",
        interactions=titled,
        user="review",
        item="item",
        items=products,
        item_text=lambda train: product_texts(titled, products, train),
        rating="rating",
        user_text=lambda train: [str(t) for t in titled["title"]],
    )

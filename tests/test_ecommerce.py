import numpy as np
import pandas as pd
import pytest

from recutils.ecommerce import clothing_dataset, product_table, product_texts
from recutils.split import Interactions


def _reviews():
    return pd.DataFrame(
        {
            "clothing_id": [10, 10, 10, 20, 30],
            "title": ["Lovely dress", "Runs small", "Great colour", pd.NA, "Warm coat"],
            "positive_feedback_count": [1, 5, 0, 2, 3],
            "rating": [5, 3, 4, 5, 4],
            "department": ["Dresses", "Dresses", "Dresses", pd.NA, "Jackets"],
            "class_name": ["Dresses", "Dresses", "Dresses", pd.NA, "Outerwear"],
            "item": [0, 0, 0, 1, 2],
        }
    )


def test_product_table_one_row_per_product_with_missing_categories_named():
    table = product_table(_reviews())
    assert table["item"].tolist() == [0, 1, 2]
    assert table.loc[1, "department"] == "unknown" and table.loc[1, "class_name"] == "unknown"


def test_product_texts_read_train_reviews_only_most_helpful_first():
    reviews = _reviews()
    products = product_table(reviews)
    # Reviews 0 and 1 are train; review 2 (dress) and 4 (the coat's only review) are test.
    train = Interactions(
        pd.DataFrame({"user": [0, 1], "item": [0, 0], "rating": [5, 3], "timestamp": [0, 1]}), 5, 3
    )
    texts = product_texts(reviews, products, train)
    assert texts[0] == "Dresses, Dresses. Reviews: Runs small; Lovely dress."
    assert "Great colour" not in texts[0]
    assert texts[2] == "Jackets, Outerwear."  # a new product: its category only
    assert product_texts(reviews, products, train, max_titles=1)[0].endswith("Runs small.")
    blind = product_texts(reviews, products, train, with_category=False)
    assert blind[0] == "Reviews: Runs small; Lovely dress." and blind[2] == "No reviews yet."
    with pytest.raises(ValueError, match="do not match"):
        product_texts(reviews.iloc[:3], products, train)


def test_clothing_dataset_keeps_titled_reviews_as_users():
    description = clothing_dataset(_reviews())
    interactions = description.to_interactions()
    assert (interactions.n_users, interactions.n_items) == (4, 3)
    assert interactions.frame["item"].tolist() == [0, 0, 0, 2]
    assert description.user_text(interactions) == ["Lovely dress", "Runs small", "Great colour", "Warm coat"]
    assert len(description.texts_for_items(interactions)) == 3
    with pytest.raises(ValueError, match="no review has a title"):
        clothing_dataset(_reviews().assign(title=np.nan))

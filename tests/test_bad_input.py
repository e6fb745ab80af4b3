"""Bad inputs a reader might pass, one row each: every one must fail at once, with the
expected error type and a message that names the argument (or the column) at fault.

The table is the contract of issue 18: no silent wrong answer and no traceback from
deep inside torch or numpy. Each row is (id, call, error type, pattern the message must match).
"""

import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recutils.baselines import EASE, Popularity
from recutils.cf import ContentRecommender, ItemKNN
from recutils.combine import (
    MatrixCombination,
    MMRReranker,
    RankFusion,
    ScoreFusion,
    normalise_scores,
    simplex_grid,
    tune_weights,
)
from recutils.data import DataError, load_movielens_100k, make_synthetic
from recutils.embeddings import aggregate_user_vectors
from recutils.index import ExactIndex, build_index
from recutils.metrics import evaluate
from recutils.pipeline import DatasetDescription, Pipeline, popularity
from recutils.scale import EncodeBatch
from recutils.similarity import top_k_neighbours
from recutils.split import (
    Interactions,
    Split,
    cold_item_split,
    cold_user_split,
    global_time_split,
    temporal_split,
    validation_split,
)
from recutils.text import TextEncoder
from recutils.twotower import TwoTower

DATA = make_synthetic(n_users=30, n_items=24, per_user=8)
SPLIT = temporal_split(DATA.interactions)
VALIDATION = validation_split(SPLIT)
VECTORS = torch.nn.functional.one_hot(torch.tensor(DATA.items["cluster"].to_numpy()), 3).float() + 0.1
POP = Popularity().fit(SPLIT.train)
EASE_MODEL = EASE(l2=10.0).fit(SPLIT.train)
# Removed when the test session ends.
SCRATCH = tempfile.TemporaryDirectory(prefix="recutils-bad-input-")
INDEX = ExactIndex(
    torch.nn.functional.normalize(torch.randn(20, 4, generator=torch.Generator().manual_seed(0)))
)


def _frame(rows, **dtypes):
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    return frame.astype(dtypes) if dtypes else frame


def _description(**changes):
    fields = dict(
        name="toy",
        interactions=pd.DataFrame({"who": ["b", "a", "b"], "what": ["z", "x", "x"], "when": [3, 1, 2]}),
        user="who",
        item="what",
        items=pd.DataFrame({"what": ["x", "y", "z"], "name": ["Ex", "Why", "Zed"]}),
        item_text="name",
        time="when",
    )
    return DatasetDescription(**{**fields, **changes})


def _rows(**columns):
    """The toy description over the given interaction columns (rating from ``stars`` when given)."""
    return _description(interactions=pd.DataFrame(columns), rating="stars" if "stars" in columns else None)


def _swapped_train():
    """SPLIT.train with one item of user 0 and one of user 1 exchanged: same sizes, same sums."""
    frame = SPLIT.train.frame.copy()
    mine = {u: set(frame.loc[frame["user"] == u, "item"]) for u in (0, 1)}
    a = next(i for i in frame.index[frame["user"] == 0] if frame.at[i, "item"] not in mine[1])
    b = next(i for i in frame.index[frame["user"] == 1] if frame.at[i, "item"] not in mine[0])
    frame.loc[[a, b], "item"] = frame.loc[[b, a], "item"].to_numpy()
    return Interactions(frame, SPLIT.train.n_users, SPLIT.train.n_items)


def _overlapping_split():
    """A hand-built split whose test repeats a train (user, item) pair."""
    test = SPLIT.test.frame.copy()
    train = SPLIT.train.frame
    user = test.at[test.index[0], "user"]
    test.loc[test.index[0], "item"] = int(train.loc[train["user"] == user, "item"].iloc[0])
    return Split("P1", SPLIT.train, Interactions(test, SPLIT.test.n_users, SPLIT.test.n_items))


def _empty_validation():
    """A validation split whose test part holds no interactions."""
    empty = Interactions(SPLIT.test.frame.iloc[:0], SPLIT.test.n_users, SPLIT.test.n_items)
    return Split("P1", SPLIT.train, empty)


def _saved_tower():
    """A one-epoch two-tower on SPLIT.train, saved to a fresh folder."""
    folder = Path(tempfile.mkdtemp(dir=SCRATCH.name))
    TwoTower(VECTORS, epochs=1, batch_size=64, use_cache=False).fit(SPLIT.train).save(folder)
    return folder


def _fusion(**kwargs):
    return ScoreFusion([POP, EASE_MODEL], **kwargs)


CASES = [
    # --- data: Interactions and DatasetDescription ------------------------------------------
    ("interactions-float-user", lambda: Interactions(_frame([(0.5, 1, 1, 0)]), 2, 3), ValueError, "'user'"),
    (
        "interactions-nan-item",
        lambda: Interactions(_frame([(0, math.nan, 1, 0)]), 2, 3),
        ValueError,
        "'item'",
    ),
    (
        "interactions-bool-rating",
        lambda: Interactions(_frame([(0, 1, True, 0)]), 2, 3),
        ValueError,
        "'rating'",
    ),
    (
        "interactions-repeated-pair",
        lambda: Interactions(_frame([(0, 1, 5, 0), (0, 1, 4, 9)]), 2, 3),
        ValueError,
        r"repeated \(user, item\)",
    ),
    (
        "interactions-fractional-n-users",
        lambda: Interactions(_frame([(0, 1, 1, 0)]), 2.5, 3),
        ValueError,
        "n_users",
    ),
    (
        "interactions-item-out-of-range",
        lambda: Interactions(_frame([(0, 3, 1, 0)]), 2, 3),
        ValueError,
        "item indices",
    ),
    (
        "description-fractional-rating",
        lambda: _rows(who=["a"], what=["x"], when=[1], stars=[4.5]).to_interactions(),
        ValueError,
        "rating column 'stars'",
    ),
    (
        "description-missing-user",
        lambda: _rows(who=["a", None], what=["x", "y"], when=[1, 2]).to_interactions(),
        ValueError,
        "column 'who'",
    ),
    (
        "description-unknown-column",
        lambda: _description(rating="stars").to_interactions(),
        ValueError,
        "column 'stars'",
    ),
    (
        "description-empty",
        lambda: _rows(who=[], what=[], when=[]).to_interactions(),
        ValueError,
        "interactions is empty",
    ),
    ("synthetic-clusters", lambda: make_synthetic(n_clusters=0), ValueError, "n_clusters"),
    ("movielens-missing-folder", lambda: load_movielens_100k("/nonexistent/ml-100k"), DataError, "u.data"),
    # --- split ---------------------------------------------------------------------------------
    (
        "temporal-test-share-zero",
        lambda: temporal_split(DATA.interactions, test_share=0),
        ValueError,
        "test_share",
    ),
    (
        "temporal-test-share-negative",
        lambda: temporal_split(DATA.interactions, test_share=-5),
        ValueError,
        "test_share",
    ),
    (
        "temporal-test-share-float",
        lambda: temporal_split(DATA.interactions, test_share=2.5),
        ValueError,
        "test_share",
    ),
    (
        "temporal-tie-break",
        lambda: temporal_split(DATA.interactions, tie_break="time"),
        ValueError,
        "tie_break",
    ),
    ("global-quantile", lambda: global_time_split(DATA.interactions, quantile=1.0), ValueError, "quantile"),
    (
        "cold-item-fraction",
        lambda: cold_item_split(DATA.interactions, cold_fraction=0),
        ValueError,
        "cold_fraction",
    ),
    (
        "cold-user-fraction",
        lambda: cold_user_split(DATA.interactions, cold_fraction=1.5),
        ValueError,
        "cold_fraction",
    ),
    # --- recommenders and evaluation ----------------------------------------------------------
    ("recommend-k-bool", lambda: POP.recommend([0], k=True), ValueError, "k must be an integer"),
    ("recommend-k-zero", lambda: POP.recommend([0], k=0), ValueError, "k must be a positive integer"),
    ("recommend-k-str", lambda: POP.recommend([0], k="5"), ValueError, "k must be an integer"),
    (
        "recommend-float-users",
        lambda: POP.recommend(torch.tensor([0.5]), k=3),
        ValueError,
        "users must be integer",
    ),
    ("recommend-unknown-user", lambda: POP.recommend([10_000], k=3), ValueError, "user index 10000"),
    (
        "recommend-candidates-shape",
        lambda: POP.recommend([0], k=3, candidates=torch.ones(5, dtype=torch.bool)),
        ValueError,
        "candidates",
    ),
    ("ease-l2", lambda: EASE(l2=0), ValueError, "l2"),
    ("ease-l2-nan", lambda: EASE(l2=math.nan), ValueError, "l2 must be finite"),
    ("content-weighting", lambda: ContentRecommender(VECTORS, weighting="latest"), ValueError, "weighting"),
    ("neighbours-k-bool", lambda: top_k_neighbours(VECTORS, True), ValueError, "k must lie in"),
    ("itemknn-k-float", lambda: ItemKNN(k=2.5), ValueError, "k must be an integer"),
    ("itemknn-shrinkage", lambda: ItemKNN(shrinkage=-1.0), ValueError, "shrinkage"),
    (
        "content-half-life-negative",
        lambda: ContentRecommender(VECTORS, weighting="recency", half_life_days=-30),
        ValueError,
        "half_life_days",
    ),
    (
        "content-half-life-zero",
        lambda: ContentRecommender(VECTORS, weighting="recency", half_life_days=0),
        ValueError,
        "half_life_days",
    ),
    (
        "aggregate-half-life-nan",
        lambda: aggregate_user_vectors(SPLIT.train, VECTORS, "recency", half_life_days=math.nan),
        ValueError,
        "half_life_days",
    ),
    (
        "content-vectors-length",
        lambda: ContentRecommender(VECTORS[:-1]).fit(SPLIT.train),
        ValueError,
        "item_vectors",
    ),
    (
        "evaluate-swapped-items",
        lambda: evaluate(Popularity().fit(_swapped_train()), SPLIT),
        ValueError,
        "fitted on other data",
    ),
    ("evaluate-k-float", lambda: evaluate(POP, SPLIT, k=1.5), ValueError, "k must be an integer"),
    (
        "evaluate-train-test-overlap",
        lambda: evaluate(Popularity().fit(SPLIT.train), _overlapping_split()),
        ValueError,
        "also in train",
    ),
    ("twotower-dropout", lambda: TwoTower(VECTORS, dropout=1.5), ValueError, "dropout"),
    ("twotower-epochs-float", lambda: TwoTower(VECTORS, epochs=2.5), ValueError, "epochs must be an integer"),
    (
        "twotower-temperature-nan",
        lambda: TwoTower(VECTORS, temperature=math.nan),
        ValueError,
        "temperature must be finite",
    ),
    (
        "twotower-vectors-length",
        lambda: TwoTower(VECTORS[:-1], epochs=1, batch_size=64, use_cache=False).fit(SPLIT.train),
        ValueError,
        "item_vectors",
    ),
    (
        "twotower-batch-larger-than-data",
        lambda: TwoTower(VECTORS, batch_size=10_000, use_cache=False).fit(SPLIT.train),
        ValueError,
        "batch_size 10000 is larger than the",
    ),
    (
        "twotower-empty-validation",
        lambda: TwoTower(VECTORS, validation=_empty_validation(), batch_size=64, use_cache=False).fit(SPLIT.train),
        ValueError,
        "validation split has no test interactions",
    ),
    (
        "twotower-loss-not-finite",
        lambda: TwoTower(VECTORS, temperature=1e-300, epochs=2, batch_size=64, use_cache=False).fit(SPLIT.train),
        FloatingPointError,
        r"loss became nan in epoch 1 \(optimizer adam, lr 0.001, temperature 1e-300\)",
    ),
    ("twotower-lr-decay", lambda: TwoTower(VECTORS, lr_decay=1.5), ValueError, "lr_decay"),
    ("twotower-history-dropout", lambda: TwoTower(VECTORS, history_dropout=1.0), ValueError, "history_dropout"),
    (
        "twotower-cached-id-size",
        lambda: TwoTower(VECTORS, epochs=1, batch_size=64, id_dim=4).load(_saved_tower(), SPLIT.train),
        ValueError,
        "id_dim: saved 0, here 4",
    ),
    # --- fusion -------------------------------------------------------------------------------
    (
        "fusion-nan-weight",
        lambda: _fusion(weights=[math.nan, 1.0]),
        ValueError,
        r"weights\[0\] must be finite",
    ),
    (
        "fusion-negative-weight",
        lambda: _fusion(weights=[-1.0, 1.0]),
        ValueError,
        r"weights\[0\] must be non-negative",
    ),
    (
        "fusion-zero-weights",
        lambda: _fusion(weights=[0.0, 0.0]),
        ValueError,
        "weights must be non-negative and not all zero",
    ),
    (
        "fusion-string-weight",
        lambda: _fusion(weights=["1", 1.0]),
        ValueError,
        r"weights\[0\] must be a real number",
    ),
    (
        "fusion-temperature-zero",
        lambda: _fusion(method="mixture", temperature=0),
        ValueError,
        "temperature must be positive",
    ),
    (
        "fusion-temperature-negative",
        lambda: _fusion(method="mixture", temperature=-1.0),
        ValueError,
        "temperature must be positive",
    ),
    (
        "fusion-temperature-str",
        lambda: _fusion(method="mixture", temperature="1"),
        ValueError,
        "temperature must be a real number",
    ),
    (
        "fusion-temperature-nan-in-list",
        lambda: _fusion(method="mixture", temperature=[1.0, math.nan]),
        ValueError,
        r"temperature\[1\] must be finite",
    ),
    (
        "fusion-temperatures-count",
        lambda: _fusion(method="mixture", temperature=[1.0]),
        ValueError,
        "temperatures",
    ),
    ("fusion-normalisation", lambda: _fusion(normalisation="l2"), ValueError, "normalisation"),
    ("fusion-depth", lambda: _fusion(method="combmnz", depth=0), ValueError, "depth"),
    ("rrf-k-negative", lambda: RankFusion([POP, EASE_MODEL], k=-1), ValueError, "k must be non-negative"),
    (
        "rrf-infinite-weight",
        lambda: RankFusion([POP, EASE_MODEL], [math.inf, 1.0]),
        ValueError,
        r"weights\[0\] must be finite",
    ),
    (
        "matrix-all-zero",
        lambda: MatrixCombination({"item_cf": 0.0, "user_cf": 0.0}),
        ValueError,
        "weights must not all be zero",
    ),
    (
        "matrix-nan-weight",
        lambda: MatrixCombination({"item_cf": math.nan}),
        ValueError,
        r"weights\['item_cf'\]",
    ),
    (
        "matrix-vectors-length",
        lambda: MatrixCombination({"content": 1.0}, item_vectors=VECTORS[:-1]).fit(SPLIT.train),
        ValueError,
        "item_vectors",
    ),
    (
        "mmr-vectors-length",
        lambda: MMRReranker(EASE_MODEL, VECTORS[:-1], pool=10).fit(SPLIT.train),
        ValueError,
        "item_vectors",
    ),
    ("mmr-lambda", lambda: MMRReranker(EASE_MODEL, VECTORS, lambda_=1.5), ValueError, "lambda_"),
    ("mmr-pool", lambda: MMRReranker(EASE_MODEL, VECTORS, pool=0), ValueError, "pool"),
    (
        "normalise-temperature",
        lambda: normalise_scores(torch.ones(2, 3), "softmax", temperature=0.0),
        ValueError,
        "temperature",
    ),
    (
        "tune-weights-metric-k",
        lambda: tune_weights(lambda w: _fusion(weights=w), 2, VALIDATION, metric="NDCG@10", k=5),
        ValueError,
        "metric 'NDCG@10'",
    ),
    ("simplex-step", lambda: simplex_grid(2, 0.3), ValueError, "step"),
    ("simplex-n", lambda: simplex_grid(2.0, 0.5), ValueError, "n must be an integer"),
    # --- index --------------------------------------------------------------------------------
    ("index-nan-query", lambda: INDEX.search(torch.full((2, 4), math.nan), 3), ValueError, "queries"),
    ("index-k-bool", lambda: INDEX.search(torch.ones(1, 4), True), ValueError, "k must be an integer"),
    (
        "index-k-too-large",
        lambda: INDEX.search(torch.ones(1, 4), 21),
        ValueError,
        "k must be an integer in 1..20",
    ),
    ("index-kind", lambda: build_index(torch.ones(3, 4), "annoy"), ValueError, "index kind 'annoy'"),
    ("index-chunk-items", lambda: ExactIndex(torch.ones(3, 4), chunk_items=0), ValueError, "chunk_items"),
    # --- pipeline -----------------------------------------------------------------------------
    (
        "pipeline-k",
        lambda: Pipeline({"p": popularity()}, k=0).run(_description()),
        ValueError,
        "k must be a positive integer",
    ),
    (
        "pipeline-k-bool",
        lambda: Pipeline({"p": popularity()}, k=True).run(_description()),
        ValueError,
        "k must be an integer",
    ),
    (
        "pipeline-weight-step",
        lambda: Pipeline({"p": popularity()}, weight_step=0).run(_description()),
        ValueError,
        "weight_step",
    ),
    (
        "pipeline-protocol",
        lambda: Pipeline({"p": popularity()}, protocol="P9").run(_description()),
        ValueError,
        "protocol",
    ),
    # --- caches and checkpoints (damaged cache entries are rebuilt: see test_caches.py) ----------
    (
        "checkpoint-missing",
        lambda: TwoTower(VECTORS, epochs=1, batch_size=64).load(Path(tempfile.mkdtemp(dir=SCRATCH.name)), SPLIT.train),
        FileNotFoundError,
        "config.json",
    ),
    (
        "checkpoint-other-data",
        lambda: TwoTower(VECTORS, epochs=1, batch_size=64).load(_saved_tower(), _swapped_train()),
        ValueError,
        "other interactions",
    ),
    (
        "checkpoint-other-config",
        lambda: TwoTower(VECTORS, epochs=2).load(_saved_tower(), SPLIT.train),
        ValueError,
        "epochs: saved 1, here 2",
    ),
    (
        "checkpoint-other-vectors",
        lambda: TwoTower(VECTORS + 1, epochs=1, batch_size=64).load(_saved_tower(), SPLIT.train),
        ValueError,
        "other item vectors",
    ),
]


@pytest.mark.parametrize(("call", "error", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_fails_clearly(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_the_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


# --- the encoder needs its weights loaded once ---------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(use_cache=False)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"max_length": 10_000}, "max_length must be <= 512"),
        ({"max_length": 1}, "max_length must be an integer >= 2"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"precision": "fp16"}, "precision"),
    ],
)
def test_encoder_settings(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        TextEncoder(use_cache=False, **kwargs)


@pytest.mark.parametrize("missing", [None, math.nan, 3])
def test_encoder_and_ray_worker_refuse_the_same_missing_texts(encoder, missing):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        encoder.encode(["a film", missing])
    worker = EncodeBatch.__new__(EncodeBatch)
    worker.encoder = encoder
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        worker({"text": np.array(["a film", missing], dtype=object)})
    # numpy's own strings are str and are encoded as they are.
    out = worker({"text": np.array(["a film", "another"])})
    expected = encoder.encode(["a film", "another"], progress=False)
    assert torch.allclose(torch.from_numpy(out["vector"]), expected)


# --- documented behaviour instead of an error -------------------------------------------------


def test_numpy_integers_are_integers():
    k = np.int64(5)
    assert torch.equal(POP.recommend([0, 1], k), POP.recommend([0, 1], 5))
    assert evaluate(POP, SPLIT, k=k).columns[0] == "Precision@5"
    assert INDEX.search(torch.ones(1, 4), np.int64(3))[1].shape == (1, 3)
    assert torch.equal(POP.recommend(np.array([0, 1], dtype=np.int32), 3), POP.recommend([0, 1], 3))


def test_zero_queries_give_empty_results():
    scores, ids = INDEX.search(torch.zeros(0, 4), 3)
    assert scores.shape == (0, 3) and ids.shape == (0, 3) and ids.dtype == torch.int64


def test_repeated_pairs_in_a_description_are_dropped_with_a_warning_keeping_the_earliest():
    description = _rows(who=["a", "a", "b"], what=["x", "x", "y"], when=[5, 2, 1], stars=[3, 4, 5])
    with pytest.warns(UserWarning, match="dropped 1 repeated"):
        interactions = description.to_interactions()
    kept = interactions.frame[["user", "item", "rating", "timestamp"]].values.tolist()
    assert kept == [[0, 0, 4, 2], [1, 1, 5, 1]]


def test_swapping_items_between_users_changes_the_fingerprint():
    swapped = _swapped_train()
    assert len(swapped) == len(SPLIT.train)
    assert swapped.frame["item"].sum() == SPLIT.train.frame["item"].sum()
    assert swapped.fingerprint() != SPLIT.train.fingerprint()

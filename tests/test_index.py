import pytest
import torch

from recutils.cf import ContentRecommender
import recutils.benchmark as benchmark_module
import recutils.index as index_module
from recutils.index import ExactIndex, FaissIndex, available_routes, build_index, exact_routes, recall_at_k
from recutils.split import temporal_split
from recutils.twotower import TwoTower


def _unit(n, dim, seed):
    return torch.nn.functional.normalize(
        torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1
    )


def _clustered(n, dim, n_clusters, seed):
    """Unit vectors around random centres: the structure approximate indexes rely on."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=generator)
    points = centres[torch.randint(n_clusters, (n,), generator=generator)]
    return torch.nn.functional.normalize(points + 0.3 * torch.randn(n, dim, generator=generator), dim=1)


def _brute_force(items, queries, k):
    """The definition: sort every inner product."""
    scores = queries.double() @ items.double().T
    order = torch.argsort(scores, dim=1, descending=True)[:, :k]
    return scores.gather(1, order).float(), order


@pytest.mark.parametrize("chunk_items", [None, 7, 1000])
def test_exact_index_equals_sorting_every_score(chunk_items):
    items, queries = _unit(500, 16, 0), _unit(40, 16, 1)
    scores, ids = ExactIndex(items, chunk_items=chunk_items).search(queries, 10)
    truth_scores, truth_ids = _brute_force(items, queries, 10)
    assert torch.equal(ids, truth_ids)
    assert torch.allclose(scores, truth_scores, atol=1e-6)


def test_faiss_flat_finds_the_same_items_as_exact():
    items, queries = _unit(2000, 32, 2), _unit(50, 32, 3)
    assert torch.equal(build_index(items, "flat").search(queries, 10)[1], _brute_force(items, queries, 10)[1])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_most_true_neighbours_on_clustered_data(kind):
    items, queries = _clustered(5100, 32, 50, 4).split([5000, 100])
    found = build_index(items, kind).search(queries, 10)[1]
    assert recall_at_k(found, _brute_force(items, queries, 10)[1]) > 0.9


def test_ivf_probing_more_clusters_raises_recall():
    items, queries = _clustered(5100, 32, 50, 6).split([5000, 100])
    truth = _brute_force(items, queries, 10)[1]
    one = recall_at_k(FaissIndex(items, "ivf", nlist=100, nprobe=1).search(queries, 10)[1], truth)
    all_ = recall_at_k(FaissIndex(items, "ivf", nlist=100, nprobe=100).search(queries, 10)[1], truth)
    assert one < all_ == 1.0


def test_hnsw_searching_wider_raises_recall():
    items, queries = _clustered(5100, 32, 50, 7).split([5000, 100])
    truth = _brute_force(items, queries, 10)[1]
    narrow = recall_at_k(FaissIndex(items, "hnsw", hnsw_m=4, ef_search=10).search(queries, 10)[1], truth)
    wide = recall_at_k(FaissIndex(items, "hnsw", hnsw_m=4, ef_search=500).search(queries, 10)[1], truth)
    assert narrow < wide


def test_recall_at_k_hand_case():
    found = torch.tensor([[1, 2], [5, 6]])
    truth = torch.tensor([[2, 3], [6, 5]])
    assert recall_at_k(found, truth) == 0.75


def test_memory_counts_the_vectors():
    items = _unit(1000, 16, 8)
    assert ExactIndex(items).memory_bytes == 1000 * 16 * 4
    # HNSW stores the vectors plus a graph.
    assert FaissIndex(items, "hnsw").memory_bytes > 1000 * 16 * 4


def test_bad_input():
    items = _unit(20, 4, 9)
    with pytest.raises(ValueError, match="k must be an integer in 1..20"):
        ExactIndex(items).search(items[:2], 21)
    with pytest.raises(ValueError, match=r"queries must be \(q, 4\)"):
        ExactIndex(items).search(torch.ones(2, 5), 3)
    with pytest.raises(ValueError, match="unknown index kind 'annoy'"):
        build_index(items, "annoy")
    with pytest.raises(ValueError, match="NaN"):
        ExactIndex(torch.full((3, 4), float("nan")))
    with pytest.raises(ValueError, match="non-empty"):
        ExactIndex(torch.zeros(0, 4))


# --- the index as one argument of a recommender ------------------------------------------


@pytest.fixture(scope="module")
def content_setup(synthetic):
    split = temporal_split(synthetic.interactions)
    vectors = _clustered(split.train.n_items, 16, 3, 10)
    return split, vectors


def test_a_flat_index_recommends_what_exact_scoring_does(content_setup):
    split, vectors = content_setup
    users = torch.arange(split.train.n_users)
    exact = ContentRecommender(vectors).fit(split.train).recommend(users, 10)
    flat = ContentRecommender(vectors, index="flat").fit(split.train).recommend(users, 10)
    assert torch.equal(flat, exact)


def test_indexed_recommendations_respect_seen_items_and_candidates(content_setup):
    split, vectors = content_setup
    model = ContentRecommender(vectors).use_index("ivf", nlist=4, nprobe=1).fit(split.train)
    candidates = torch.zeros(split.train.n_items, dtype=torch.bool)
    candidates[::2] = True
    users = torch.arange(split.train.n_users)
    top = model.recommend(users, 5, candidates=candidates)
    assert top.shape == (len(users), 5)
    assert candidates[top].all()
    assert not model.seen_[users.unsqueeze(1), top].any()
    assert all(len(set(row.tolist())) == 5 for row in top)
    with pytest.raises(ValueError, match="k=31 is larger than"):
        model.recommend(users, 31, candidates=candidates)


@pytest.mark.parametrize("make", ["content", "twotower"])
def test_score_is_the_inner_product_of_the_embeddings(content_setup, make):
    split, vectors = content_setup
    if make == "content":
        model = ContentRecommender(vectors)
    else:
        model = TwoTower(vectors, use_cache=False, hidden=16, out_dim=8, epochs=1, batch_size=64)
    model.fit(split.train)
    users = torch.arange(20)
    expected = model.user_embeddings(users) @ model.item_embeddings().T
    assert torch.allclose(model.score(users), expected, atol=1e-5)


def test_unknown_index_name_is_refused(content_setup):
    _, vectors = content_setup
    with pytest.raises(ValueError, match="unknown index kind 'best'"):
        ContentRecommender(vectors, index="best")


def _integer_vectors(n, dim, seed):
    """Small integers: every product is exact in float32 and many scores tie."""
    return torch.randint(-2, 3, (n, dim), generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("k", [1, 2, 10, 99, 100])
@pytest.mark.parametrize("chunk_items", [3, 7, 64])
def test_small_batch_path_returns_what_the_chunked_path_does_ties_included(k, chunk_items):
    items, queries = _integer_vectors(100, 4, 0), _integer_vectors(16, 4, 1)
    small = ExactIndex(items, small_batch=16).search(queries, k)
    chunked = ExactIndex(items, chunk_items=chunk_items, small_batch=0).search(queries, k)
    assert torch.equal(small[0], chunked[0]) and torch.equal(small[1], chunked[1])
    # The tie rule: equal scores in increasing item index, as a stable sort of all scores gives.
    scores = queries @ items.T
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(small[1], order) and torch.equal(small[0], scores.gather(1, order))
    # One query (a matrix-vector product) and a batch agree too.
    one = ExactIndex(items).search(queries[3:4], k)
    assert torch.equal(one[1], small[1][3:4]) and torch.equal(one[0], small[0][3:4])


def test_small_batch_path_is_taken_only_for_few_queries(monkeypatch):
    items, queries = _unit(300, 8, 0), _unit(20, 8, 1)
    index = ExactIndex(items, small_batch=4, route="numpy")
    calls = []
    exact_all = index._search_all
    monkeypatch.setattr(index, "_search_all", lambda q, k: calls.append(len(q)) or exact_all(q, k))
    index.search(queries[:4], 5)
    index.search(queries, 5)
    assert calls == [4]
    with pytest.raises(ValueError, match="small_batch must be an integer >= 0"):
        ExactIndex(items, small_batch=-1)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_onednn_products_find_what_numpy_products_do(monkeypatch):
    items, queries = _unit(3000, 32, 9), _unit(40, 32, 10)
    fast = ExactIndex(items, chunk_items=256, small_batch=0, route="onednn")
    found = fast.search(queries, 10)
    # The oneDNN copy of the items was made, one tensor per chunk, and is counted.
    assert len(fast._onednn_chunks[256]) == 12
    assert fast.memory_bytes == 2 * 3000 * 32 * 4
    plain = ExactIndex(items, chunk_items=256, small_batch=0, route="numpy")
    reference = plain.search(queries, 10)
    assert not plain._onednn_chunks and plain.memory_bytes == 3000 * 32 * 4
    assert torch.equal(found[1], reference[1])
    assert torch.allclose(found[0], reference[0], atol=1e-6)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with pytest.raises(ValueError, match="route 'onednn' is not available here"):
        ExactIndex(items, route="onednn")


# --- routes: every route returns the same answer; the router picks by a cached timing ------


def _routes():
    return list(available_routes("cpu"))


@pytest.mark.parametrize("n_queries", [1, 5, 40])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_every_route_returns_the_same_ids_and_scores(n_queries, k):
    items, queries = _unit(3000, 24, 11), _unit(n_queries, 24, 12)
    truth_scores, truth_ids = _brute_force(items, queries, k)
    answers = {
        route: ExactIndex(items, route=route, chunk_items=512).search(queries, k) for route in _routes()
    }
    for route, (scores, ids) in answers.items():
        assert torch.equal(ids, truth_ids), route
        assert (scores - truth_scores).abs().max() <= 1e-6, route
        # Not just close: the candidates are rescored in float64, so routes agree to the bit.
        assert torch.equal(scores, answers["numpy"][0]) and torch.equal(ids, answers["numpy"][1]), route


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_every_route_follows_the_tie_rule(k):
    # Small integers: every score is exact and many tie, also across the k-th place (where a
    # route's own candidates cannot be trusted, the row is answered over every item).
    items, queries = _integer_vectors(400, 4, 2), _integer_vectors(30, 4, 3)
    scores = queries @ items.T
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    for route in _routes():
        for batch in (queries[:1], queries[:7], queries):
            found = ExactIndex(items, route=route, chunk_items=64).search(batch, k)
            assert torch.equal(found[1], order[: len(batch)]), route
            assert torch.equal(found[0], scores[: len(batch)].gather(1, order[: len(batch)])), route


def test_near_ties_rank_by_the_exact_score_on_every_route():
    # Two items one float32 step apart in one coordinate: their float32 scores may round alike or
    # in either order depending on the kernel; the float64 rescoring orders them the same way.
    items = _unit(2000, 32, 13)
    items[7] = items[3]
    items[7, 0] = torch.nextafter(items[3, 0], torch.tensor(2.0))
    queries = items[3:4].clone()
    queries[0, 0] = 1.0
    for route in _routes():
        ids = ExactIndex(items, route=route).search(queries, 5)[1][0].tolist()
        assert ids.index(7) < ids.index(3), route


def test_auto_takes_the_route_the_router_chose_per_batch_class(monkeypatch):
    items, queries = _unit(500, 16, 14), _unit(40, 16, 15)
    choice = {"routes": {"one": "faiss", "few": "numpy", "many": "faiss", "bulk": "numpy"}}
    monkeypatch.setattr(index_module, "exact_routes", lambda items, small_batch=16, refresh=False: choice)
    index = ExactIndex(items)
    assert [index.route_for(q) for q in (1, 2, 16, 17, 256, 257, 1000)] == [
        "faiss", "numpy", "numpy", "faiss", "faiss", "numpy", "numpy"
    ]
    assert torch.equal(index.search(queries, 10)[1], _brute_force(items, queries, 10)[1])
    assert index._faiss is not None and index.memory_bytes > 500 * 16 * 4  # the FAISS copy is counted
    assert ExactIndex(items, route="numpy").route_for(1000) == "numpy"  # a forced route stays
    with pytest.raises(ValueError, match="route 'blas' is not available here"):
        ExactIndex(items, route="blas")


def test_the_router_times_each_class_once_per_catalogue_size_and_caches_the_choice(empty_cache, monkeypatch):
    items = _unit(2000, 16, 16)
    first = exact_routes(items)
    assert set(first["routes"]) == {"one", "few", "many", "bulk"}
    assert all(first["routes"][name] in first["timings"][name] for name in first["routes"])
    assert first["timings"]["bulk"].keys() == set(_routes())
    assert "onednn" not in first["timings"]["one"]  # one query takes numpy's product on that route too
    assert first["key"]["dim"] == 16 and "flags" in first["key"] and "versions" in first["key"]
    assert first["key"]["items_power_of_two"] == 11  # 2,000 items: nearest to 2**11
    [stored] = (empty_cache / "routes").iterdir()
    monkeypatch.setattr(index_module, "_time_routes", lambda *a: pytest.fail("timed twice"))
    assert exact_routes(items) == first
    assert exact_routes(_unit(1800, 16, 17))["routes"] == first["routes"]  # the same power of two
    # Another process reads the file rather than timing again.
    monkeypatch.setattr(benchmark_module, "_CHOICES", {})
    assert exact_routes(items)["routes"] == first["routes"] and stored.is_file()
    # A catalogue 8 times larger is timed anew.
    with pytest.raises(pytest.fail.Exception, match="timed twice"):
        exact_routes(_unit(16_000, 16, 18))

"""The HTTP service (recutils.serve) on a small two-tower fitted to synthetic data: right answers,
a clear 4xx for each kind of bad input with the server serving on, and a real server process."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from recutils.data import make_synthetic
from recutils.loadtest import Call, bad_calls, known_user_calls, load_test
from recutils.serve import ServedTower, Service, create_app, free_port, start_server
from recutils.split import temporal_split
from recutils.twotower import TwoTower

SMALL = dict(user_input="text", id_dim=4, user_ids=False, hidden=16, out_dim=8, batch_size=64,
             epochs=3, dropout=0.0, use_cache=False, progress=False)


def fake_encode(texts: list[str]) -> torch.Tensor:
    """(n, 8) unit vectors, the same for the same text: a stand-in for the sentence encoder."""
    seeds = [sum(text.encode()) for text in texts]
    return torch.nn.functional.normalize(
        torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(s)) for s in seeds]), dim=1)


def small_service() -> Service:
    """A two-tower on make_synthetic's 120 users × 60 films (user ids 1..120, film ids 1..60)."""
    data = make_synthetic()
    train = temporal_split(data.interactions).train
    vectors = fake_encode(data.items["title"].tolist())
    tower = TwoTower(vectors, **SMALL).fit(train)
    return Service.from_tower(tower, data.users["user_id"].tolist(), data.items["item_id"].tolist(),
                              data.items["title"].tolist(), fake_encode, ("exact", "hnsw"))


@pytest.fixture(scope="module")
def service() -> Service:
    return small_service()


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield client


def test_served_tower_scores_and_ranks_as_the_two_tower_does(service):
    served = service.models["exact"]
    base, users = served.base, torch.arange(20)
    assert torch.allclose(served.score(users), base.score(users), atol=1e-5)
    assert torch.equal(served.recommend(users, 5), base.recommend(users, 5))
    # A known user folded in from their own history is that user.
    seen = served.seen_[users]
    assert torch.equal(served.recommend_inputs(served.fold_in_inputs(seen), 5, seen), base.recommend(users, 5))
    assert torch.equal(service.models["hnsw"].recommend(users, 5), base.recommend(users, 5))


def test_served_tower_refuses_a_tower_that_cannot_fold_in(service):
    train = service.models["exact"].train_
    history = TwoTower(torch.randn(train.n_items, 8), **{**SMALL, "user_input": "history"}).fit(train)
    with pytest.raises(ValueError, match="user_input='text'"):
        ServedTower(history)


def test_each_endpoint_answers_with_the_version(client, service):
    version = {"model": service.model_key, "data": service.data_fingerprint}
    health = client.get("/health").json()
    assert health == {"status": "ok", "users": 120, "films": 60, "indexes": ["exact", "hnsw"], "version": version}
    user = client.get("/users/7/recommendations", params={"k": 5}).json()
    seen = {service.item_ids[i] for i in torch.nonzero(service.models["exact"].seen_[6]).flatten().tolist()}
    ids = [f["item_id"] for f in user["films"]]
    assert len(ids) == 5 and not seen & set(ids) and user["version"] == version
    expected = service.models["exact"].recommend([6], 5)[0] + 1  # film id = index + 1
    assert ids == expected.tolist()
    assert [f["item_id"] for f in client.get("/users/7/recommendations?k=5&index=hnsw").json()["films"]] == ids
    liked = client.post("/recommendations/from-films", json={"item_ids": [1, 4, 7], "k": 8}).json()
    assert len(liked["films"]) == 8 and not {1, 4, 7} & {f["item_id"] for f in liked["films"]}
    text = client.post("/recommendations/from-text", json={"text": "dragons and wizards"}).json()
    assert len(text["films"]) == 10 and text["version"] == version
    similar = client.get("/films/3/similar", params={"k": 59}).json()
    assert sorted(f["item_id"] for f in similar["films"]) == [i for i in range(1, 61) if i != 3]
    assert similar["films"][0]["title"] == service.titles[service.models["exact"].similar_items(torch.tensor([2]), 1)[0, 0]]


BAD = [  # (what, method, path, body: dict or raw str, status, words the error must hold)
    ("unknown user", "get", "/users/5000/recommendations", None, 404, "user id 5000 is not in the catalogue"),
    ("unknown film", "get", "/films/61/similar", None, 404, "film id 61 is not in the catalogue"),
    ("unknown liked film", "post", "/recommendations/from-films", {"item_ids": [1, 999]}, 404, "film id 999"),
    ("non-integer user", "get", "/users/abc/recommendations", None, 422, "path.user_id"),
    ("k zero", "get", "/users/7/recommendations?k=0", None, 422, "query.k"),
    ("k negative", "post", "/recommendations/from-text", {"text": "space", "k": -3}, 422, "body.k"),
    ("k above catalogue", "get", "/users/7/recommendations?k=61", None, 422, "larger than the catalogue (60 films"),
    ("k above unseen films", "get", "/users/7/recommendations?k=60", None, 422, "without the films the user rated"),
    ("k above the other films", "get", "/films/3/similar?k=60", None, 422, "59 are left"),
    ("k not an integer", "get", "/films/3/similar?k=2.5", None, 422, "query.k"),
    ("unknown index", "get", "/users/7/recommendations?index=lsh", None, 422, "index 'lsh' is not served"),
    ("empty text", "post", "/recommendations/from-text", {"text": ""}, 422, "body.text"),
    ("blank text", "post", "/recommendations/from-text", {"text": "   "}, 422, "text must not be blank"),
    ("over-long text", "post", "/recommendations/from-text", {"text": "x" * 1001}, 422, "at most 1000 characters"),
    ("text not a string", "post", "/recommendations/from-text", {"text": 5}, 422, "body.text"),
    ("duplicated ids", "post", "/recommendations/from-films", {"item_ids": [3, 5, 3]}, 422, "repeated: [3]"),
    ("non-integer ids", "post", "/recommendations/from-films", {"item_ids": [1, 2.5]}, 422, "body.item_ids.1"),
    ("string ids", "post", "/recommendations/from-films", {"item_ids": ["1"]}, 422, "body.item_ids.0"),
    ("no liked films", "post", "/recommendations/from-films", {"item_ids": []}, 422, "body.item_ids"),
    ("unknown field", "post", "/recommendations/from-films", {"item_ids": [1], "n": 3}, 422, "body.n"),
    ("malformed JSON", "post", "/recommendations/from-text", '{"text": "space', 422, "not valid JSON"),
    ("no body", "post", "/recommendations/from-films", "", 422, "body"),
    ("unknown route", "get", "/recommend", None, 404, "Not Found"),
]


@pytest.mark.parametrize("what,method,path,body,status,words", BAD, ids=[row[0] for row in BAD])
def test_bad_input_is_a_clear_4xx_and_the_server_serves_on(client, service, what, method, path, body, status, words):
    if isinstance(body, str):
        response = client.request(method, path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.request(method, path, json=body)
    assert response.status_code == status, response.text
    answer = response.json()
    assert words in answer["error"], answer["error"]
    assert answer["version"] == {"model": service.model_key, "data": service.data_fingerprint}
    assert client.get("/users/7/recommendations?k=3").status_code == 200


def test_a_real_server_process_answers_on_loopback_and_is_gone_after_stop(tmp_path):
    port = free_port()
    script = tmp_path / "serve_small.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import uvicorn
        from test_serve import small_service
        from recutils.serve import create_app
        uvicorn.run(create_app(small_service()), host="127.0.0.1", port={port}, log_level="warning")
    """))
    server = start_server([sys.executable, str(script)], port, tmp_path / "server.log", timeout=120)
    try:
        import httpx

        assert httpx.get(f"{server.url}/users/7/recommendations?k=4").json()["films"][3]["item_id"] > 0
        assert httpx.post(f"{server.url}/recommendations/from-text", content="{").status_code == 422
        assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
        calls = known_user_calls(range(1, 121), 20) + bad_calls()
        table = load_test(server.url, calls, concurrency=(1, 4), requests=30, warmup=2)
        assert table["clients"].tolist() == [1, 4] and table["requests"].tolist() == [30, 30]
        assert table["failed"].sum() == 0 and (table["p99 ms"] >= table["p50 ms"]).all()
        wrong = load_test(server.url, [Call("GET", "/users/5000/recommendations")], (2,), requests=6, warmup=0)
        assert wrong["failed"].tolist() == [6] and wrong["requests/s"].iloc[0] > 0
    finally:
        code = server.stop()
    assert code == -signal.SIGTERM, server.log.read_text()  # a clean shutdown, not a kill (-9)
    assert not server.running()


def test_a_server_that_cannot_start_says_why(tmp_path):
    with pytest.raises(RuntimeError, match="exited with code 3"):
        start_server([sys.executable, "-c", "print('no model'); raise SystemExit(3)"], free_port(),
                     tmp_path / "log", timeout=30)


def test_the_load_test_refuses_other_hosts_and_empty_bounds():
    with pytest.raises(ValueError, match="loopback only"):
        load_test("http://example.org:80", bad_calls())
    with pytest.raises(ValueError, match="no calls"):
        load_test("http://127.0.0.1:1", [])
    with pytest.raises(ValueError, match="requests must be a positive integer"):
        load_test("http://127.0.0.1:1", bad_calls(), requests=0)

"""The service on Ray Serve (recutils.serve_ray): two replicas of the same app behind one route, the
same answers and errors as the app itself, and no Ray process left once the server has stopped."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from test_serve import small_service

from recutils.loadtest import known_user_calls, load_test
from recutils.serve import create_app, free_port, start_server
from recutils.serve_ray import application


def test_a_ray_serve_process_answers_as_the_app_does_and_leaves_nothing_behind(tmp_path):
    port = free_port()
    script = tmp_path / "serve_small_ray.py"
    script.write_text(textwrap.dedent(f"""
        from test_serve import small_service
        from recutils.serve_ray import serve_until_stopped
        serve_until_stopped(lambda indexes: small_service(), replicas=2, port={port})
    """))
    # Ray's workers import test_serve too (the replicas build the service), so it goes on their path.
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    server = start_server([sys.executable, str(script)], port, tmp_path / "server.log", timeout=240,
                          env={**os.environ, "PYTHONPATH": path})
    try:
        with TestClient(create_app(small_service())) as direct:
            for path in ["/users/7/recommendations?k=4", "/films/3/similar?k=2", "/users/5000/recommendations"]:
                answer, expected = httpx.get(f"{server.url}{path}"), direct.get(path)
                assert (answer.status_code, answer.json()) == (expected.status_code, expected.json()), path
        table = load_test(server.url, known_user_calls(range(1, 121), 20), concurrency=(1, 4), requests=20, warmup=2)
        assert table["failed"].sum() == 0 and table["requests"].tolist() == [20, 20]
        assert len(server.leftovers()) > 1  # the server and Ray's own processes, in its session
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()[-3000:]  # Serve and Ray shut down, not killed
    assert server.leftovers() == [], "Ray processes outlived the server"


@pytest.mark.parametrize(("options", "message"), [
    ({"replicas": 0}, "replicas must be"),
    ({"indexes": ("exact", "kd-tree")}, "indexes must be some of"),
    ({"indexes": ()}, "indexes must be some of"),
])
def test_bad_replica_settings_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        application(lambda indexes: small_service(), **options)

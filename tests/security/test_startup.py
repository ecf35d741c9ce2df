"""Ready before ready: requests that arrive while the models are still loading (the server answers at once)
wait for their model and succeed; one that waits too long gets a 503 with ``Retry-After``; ``/health`` and
``/v1/models`` say which models are still loading."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.security.conftest import ServerProcess, assert_envelope, fake_model_table

LOAD_S = 3.0


def _request(server: ServerProcess, key: str, kind: str) -> tuple[int, float]:
    started = time.monotonic()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        if kind == "embeddings":
            response = client.post("/v1/embeddings", json={"model": "fake-embed", "input": "early"})
        elif kind == "chat":
            response = client.post(
                "/v1/chat/completions",
                json={"model": "fake-chat", "messages": [{"role": "user", "content": "early bird"}]},
            )
        else:
            response = client.post(
                "/v1/responses", json={"model": "fake-chat", "input": "early", "stream": True}
            )
    return response.status_code, time.monotonic() - started


def test_requests_made_while_the_models_load_wait_for_them_and_succeed(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process(models=fake_model_table(f"load_delay={LOAD_S}"))
    key, _ = server.create_key("early")
    server.start(loaded=False)
    started = time.monotonic()
    health = httpx.get(server.url + "/health", timeout=5).json()
    assert health == {"status": "loading", "models": {"fake-chat": "loading", "fake-embed": "loading"}}
    listed = httpx.get(
        server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5
    ).json()
    assert [(m["id"], m.get("status")) for m in listed["data"]] == [
        ("fake-chat", "loading"),
        ("fake-embed", "loading"),
    ]
    kinds = ["embeddings"] * 8 + ["chat"] * 3 + ["responses"] * 2
    with ThreadPoolExecutor(len(kinds)) as pool:
        results = list(pool.map(lambda kind: _request(server, key, kind), kinds))
    assert [status for status, _ in results] == [200] * len(kinds), results
    assert time.monotonic() - started >= LOAD_S - 1, "the models were not loading after all"
    health = httpx.get(server.url + "/health", timeout=5).json()
    assert health == {"status": "ok", "models": {"fake-chat": "loaded", "fake-embed": "loaded"}}
    listed = httpx.get(
        server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}, timeout=5
    ).json()
    assert [m["id"] for m in listed["data"]] == ["fake-chat", "fake-embed"]
    assert all("status" not in m for m in listed["data"])
    assert server.stop() == 0
    assert "ERROR" not in server.log()


def test_a_request_that_waits_longer_than_allowed_gets_503_with_retry_after(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process(models=fake_model_table("load_delay=30"), AISP_MODEL_WAIT_S="0.5")
    key, _ = server.create_key("impatient")
    server.start(loaded=False)
    started = time.monotonic()
    response = httpx.post(
        server.url + "/v1/embeddings",
        json={"model": "fake-embed", "input": "now"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    waited = time.monotonic() - started
    error = assert_envelope(response.status_code, response.json(), low=503, high=503)
    assert error["code"] == "model_not_ready" and "loading" in error["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert 0.4 < waited < 3, waited

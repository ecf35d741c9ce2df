"""``kill -9`` during mixed streaming and non-streaming load, then a restart: SQLite's file is intact at once,
and once restarted (which first writes the rows the killed process had journaled) every response a client
received in full has exactly one ledger row with the right token counts, none is duplicated, and the
restarted server serves again. Two cycles run in ``make test``; the soak runs ten."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.access.keys import KeyLimits
from tests.security.conftest import ServerProcess, fake_model_table


@dataclass
class Received:
    """Responses that reached their client in full, with the usage each reported."""

    usage: dict[str, tuple[str, int, int]] = field(default_factory=dict)  # request id -> (endpoint, in, out)
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request_id: str, endpoint: str, tokens_in: int, tokens_out: int) -> None:
        with self.lock:
            assert request_id not in self.usage
            self.usage[request_id] = (endpoint, tokens_in, tokens_out)


def _sse_json(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def _one(client: httpx.Client, rng: random.Random, received: Received) -> None:
    """One random request; its usage is noted only if the whole answer arrived."""
    kind = rng.choice(["chat", "chat-stream", "responses", "responses-stream", "embeddings"])
    tokens = rng.randint(1, 40)
    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(rng.randint(1, 6)))
    if kind == "embeddings":
        response = client.post("/v1/embeddings", json={"model": "fake-embed", "input": [words, "x"]})
        if response.status_code == 200:
            usage = response.json()["usage"]
            received.add(response.headers["x-request-id"], "embeddings", usage["prompt_tokens"], 0)
        return
    if kind.startswith("chat"):
        path = "/v1/chat/completions"
        body: dict[str, Any] = {
            "model": "fake-chat",
            "messages": [{"role": "user", "content": words}],
            "max_tokens": tokens,
        }
    else:
        path = "/v1/responses"
        body = {
            "model": "fake-chat",
            "input": words,
            "max_output_tokens": 16 + tokens,
            "store": rng.random() < 0.5,
        }
    if not kind.endswith("stream"):
        response = client.post(path, json=body)
        if response.status_code == 200:
            value = response.json()
            usage = value["usage"]
            tokens_in = usage.get("prompt_tokens", usage.get("input_tokens"))
            tokens_out = usage.get("completion_tokens", usage.get("output_tokens"))
            received.add(response.headers["x-request-id"], path, tokens_in, tokens_out)
        return
    if kind == "chat-stream":
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    else:
        body |= {"stream": True}
    with client.stream("POST", path, json=body) as response:
        if response.status_code != 200:
            return
        request_id = response.headers["x-request-id"]
        text = response.read().decode()
    events = _sse_json(text)
    if kind == "chat-stream":
        if not text.endswith("data: [DONE]\n\n") or not events or events[-1].get("usage") is None:
            return
        usage = events[-1]["usage"]
        received.add(request_id, path, usage["prompt_tokens"], usage["completion_tokens"])
    else:
        final = [e for e in events if e.get("type") in ("response.completed", "response.incomplete")]
        if not final:
            return
        usage = final[0]["response"]["usage"]
        received.add(request_id, path, usage["input_tokens"], usage["output_tokens"])


def _load(server: ServerProcess, key: str, received: Received, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as client:
        while not stop.is_set():
            try:
                _one(client, rng, received)
            except (httpx.HTTPError, json.JSONDecodeError, KeyError):
                with received.lock:
                    received.failures += 1
                if stop.wait(0.05):
                    return


def _check_integrity(database: Path) -> None:
    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        connection.close()


def _check_ledger(database: Path, received: Received) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(database)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = connection.execute(
            "SELECT request_id, endpoint, input_tokens, output_tokens, total_tokens, status, key_id FROM usage_record"
        ).fetchall()
        ids = [row[0] for row in rows]
        assert len(ids) == len(set(ids)), "a request was recorded twice"
        by_id = {row[0]: row for row in rows}
        endpoints = {
            "/v1/chat/completions": "chat.completions",
            "/v1/responses": "responses",
            "embeddings": "embeddings",
        }
        for request_id, (endpoint, tokens_in, tokens_out) in received.usage.items():
            row = by_id.get(request_id)
            assert row is not None, f"{request_id} ({endpoint}) was received in full but is not in the ledger"
            assert row[1] == endpoints[endpoint] and row[5] == "completed", row
            assert (row[2], row[3], row[4]) == (tokens_in, tokens_out, tokens_in + tokens_out), (
                row,
                tokens_in,
                tokens_out,
            )
        # The roll-ups the graphs and the budgets read agree with the ledger, row for row.
        assert connection.execute(
            "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens) FROM usage_hourly"
        ).fetchone() == (
            connection.execute(
                "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM usage_record"
            ).fetchone()
        )
        spent = connection.execute("SELECT SUM(tokens) FROM key_spend_daily").fetchone()[0]
        billed = connection.execute(
            "SELECT SUM(total_tokens) FROM usage_record WHERE NOT (status = 'failed' AND output_tokens = 0)"
        ).fetchone()[0]
        assert spent == billed
        return rows
    finally:
        connection.close()


def crash_cycles(server: ServerProcess, cycles: int, load_seconds: float, clients: int) -> Received:
    key, _ = server.create_key(
        "load", limits=KeyLimits(budget_unit="tokens", budget_amount=1e9, budget_period="day")
    )
    canary, _ = server.create_key("canary")
    received = Received()
    server.start()
    for cycle in range(cycles):
        stop = threading.Event()
        threads = [
            threading.Thread(target=_load, args=(server, key, received, stop, cycle * 100 + n))
            for n in range(clients)
        ]
        for thread in threads:
            thread.start()
        time.sleep(load_seconds * random.Random(cycle).uniform(0.6, 1.0))
        server.kill()  # kill -9 in the middle of it all
        stop.set()
        for thread in threads:
            thread.join(30)
        _check_integrity(server.data_dir / "aisp.sqlite3")
        server.start()  # writes what the killed process journaled but had not committed, before serving
        _check_ledger(server.data_dir / "aisp.sqlite3", received)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {canary}"}, timeout=10
        ) as client:
            assert client.get("/v1/models").status_code == 200
            answer = client.post(
                "/v1/chat/completions",
                json={"model": "fake-chat", "messages": [{"role": "user", "content": "up"}], "max_tokens": 3},
            )
            assert answer.status_code == 200
    assert server.stop() == 0
    rows = _check_ledger(server.data_dir / "aisp.sqlite3", received)
    assert len(received.usage) >= 10 * cycles, f"only {len(received.usage)} responses completed"
    assert len(rows) >= len(received.usage)
    # Budget reservations held by the killed processes are gone after the restart.
    connection = sqlite3.connect(server.data_dir / "aisp.sqlite3")
    try:
        assert connection.execute("SELECT COUNT(*) FROM budget_reservation").fetchone()[0] == 0
    finally:
        connection.close()
    return received


@pytest.fixture
def crash_server(server_process: Callable[..., ServerProcess]) -> ServerProcess:
    return server_process(models=fake_model_table("delay=0.003,repeat=1"))


def test_kill_9_under_load_loses_and_duplicates_nothing(crash_server: ServerProcess) -> None:
    crash_cycles(crash_server, cycles=2, load_seconds=2.5, clients=6)


@pytest.mark.soak
def test_ten_kill_9_cycles(crash_server: ServerProcess) -> None:
    received = crash_cycles(crash_server, cycles=10, load_seconds=6, clients=10)
    assert len(received.usage) >= 500

"""Nothing lost when the server ends under load: requests still running when it is stopped are ended and
billed exactly (``server_stopped``) before it exits, and requests running when it is killed (``kill -9``)
are billed at the next start from their last checkpoint (``interrupted``, estimated).

(Stopping from the window goes through the same ``ServerThread.stop``: see ``tests/app/test_window.py``.)
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from server.access.keys import KeyLimits
from server.metering.inflight import LOOK_S
from tests.conftest import Live, fake_models
from tests.security.conftest import ServerProcess, fake_model_table

SLOW = "delay=0.01,repeat=1"
"""A chat model that generates about 100 tokens a second, for as long as it is allowed."""
LONG = 4000
MODELS = ("fake-chat", "fake-chat-2", "fake-chat-3", "fake-chat-4")
"""One model per request: a model runs one request at a time, and these run at once."""


def _model_table() -> list[dict[str, Any]]:
    table = fake_model_table(SLOW)
    return table + [{**table[0], "name": name} for name in MODELS[1:]]


@dataclass
class Stream:
    """A request run on its own thread, noting what arrived."""

    url: str
    key: str
    path: str
    body: dict[str, Any]
    request_id: str = ""
    status: int = 0
    deltas: int = 0
    """Pieces of text received (the fake model sends one token per piece)."""
    last: list[dict[str, Any]] = field(default_factory=list)
    """The last events received."""
    error: str = ""

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        try:
            with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
                if not self.body.get("stream"):
                    response = client.post(self.path, json=self.body)
                    self.status, self.last = response.status_code, [response.json()]
                    return
                with client.stream("POST", self.path, json=self.body) as response:
                    self.status = response.status_code
                    self.request_id = response.headers["x-request-id"]
                    for line in response.iter_lines():
                        if not line.startswith("data: {"):
                            continue
                        event = json.loads(line[6:])
                        self.last = [*self.last[-3:], event]
                        if event.get("type") == "response.output_text.delta" or any(
                            choice["delta"].get("content") for choice in event.get("choices", ())
                        ):
                            self.deltas += 1
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"


def _chat(stream: bool, model: str) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "go on"}],
        "max_tokens": LONG,
        "stream": stream,
    }


def _responses(model: str) -> dict[str, Any]:
    return {"model": model, "input": "go on", "max_output_tokens": LONG, "stream": True}


def _wait_for(streams: list[Stream], deltas: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(s.body.get("stream") and s.deltas < deltas for s in streams) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(s.deltas >= deltas for s in streams if s.body.get("stream")), [s.deltas for s in streams]


def _rows(database: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as db:
        rows = db.execute(sql, params).fetchall()
    db.close()
    return rows


def test_requests_running_when_the_server_is_stopped_are_ended_and_billed_exactly(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process(models=_model_table(), AISP_SHUTDOWN_GRACE_S="0.5")
    key, record = server.create_key("stopped")
    server.start()
    streams = [
        Stream(server.url, key, "/v1/chat/completions", _chat(True, MODELS[0])),
        Stream(server.url, key, "/v1/responses", _responses(MODELS[1])),
        Stream(server.url, key, "/v1/chat/completions", _chat(False, MODELS[2])),
    ]
    _wait_for(streams, 50)
    assert server.stop() == 0  # SIGTERM, as a service manager stops it
    for stream in streams:
        stream.thread.join(10)
    chat, responses, whole = streams
    # Each client is told why its answer ended.
    assert chat.last[-1]["error"]["code"] == "server_stopped", chat.last
    assert [e["type"] for e in responses.last[-2:]] == ["error", "response.failed"]
    assert responses.last[-2]["code"] == "server_stopped"
    assert whole.status == 503 and whole.last[0]["error"]["code"] == "server_stopped"
    # Each has its row, with the tokens it generated: no fewer than were delivered, and exact.
    database = server.data_dir / "aisp.sqlite3"
    rows = _rows(
        database,
        "SELECT request_id, status, http_status, output_tokens, exact, stream, client_disconnected "
        "FROM usage_record WHERE key_id = ? ORDER BY created_at",
        record.id,
    )
    assert len(rows) == 3, rows
    by_id = {row[0]: row for row in rows}
    for stream in (chat, responses):
        _, status, http_status, output, exact, streamed, disconnected = by_id[stream.request_id]
        assert (status, http_status, exact, streamed, disconnected) == ("server_stopped", 503, 1, 1, 0)
        assert stream.deltas <= output <= stream.deltas + 10, (output, stream.deltas)
    (unstreamed,) = [row for row in rows if row[5] == 0]
    assert unstreamed[1:3] == ("server_stopped", 503) and unstreamed[3] >= 50
    assert _rows(database, "SELECT COUNT(*) FROM budget_reservation") == [(0,)]
    log = server.log()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]


def test_requests_in_flight_at_kill_9_are_billed_at_the_next_start(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process(models=_model_table())
    budgeted, with_budget = server.create_key(
        "budgeted", limits=KeyLimits(budget_unit="tokens", budget_amount=1e9, budget_period="day")
    )
    free, without_budget = server.create_key("free")
    server.start()
    streams = [
        Stream(server.url, budgeted, "/v1/chat/completions", _chat(True, MODELS[0])),
        Stream(server.url, free, "/v1/chat/completions", _chat(True, MODELS[1])),
        Stream(server.url, free, "/v1/responses", _responses(MODELS[2])),
        Stream(server.url, budgeted, "/v1/chat/completions", _chat(False, MODELS[3])),
    ]
    _wait_for(streams, 150)  # past a second and 64 tokens: each has been checkpointed
    server.kill()
    for stream in streams:
        stream.thread.join(10)
    database = server.data_dir / "aisp.sqlite3"
    assert _rows(database, "SELECT COUNT(*) FROM usage_record") == [(0,)], "nothing had finished"
    held = _rows(database, "SELECT request_id, output_tokens FROM budget_reservation")
    assert len(held) == 4 and all(output > 0 for _, output in held), held

    server.start()
    rows = _rows(
        database,
        "SELECT request_id, key_id, endpoint, status, output_tokens, input_tokens, exact, cost "
        "FROM usage_record ORDER BY created_at",
    )
    assert len(rows) == 4, rows
    assert {row[3] for row in rows} == {"interrupted"} and {row[6] for row in rows} == {0}
    by_id = {row[0]: row for row in rows}
    for stream in streams[:3]:
        output = by_id[stream.request_id][4]
        # The last checkpoint was at most 64 tokens (and a look) behind what the client had received.
        assert stream.deltas - 100 <= output <= stream.deltas + 20, (output, stream.deltas)
        assert by_id[stream.request_id][5] > 0 and by_id[stream.request_id][7] > 0
    keys = sorted(row[1] for row in rows)
    assert keys == sorted([with_budget.id, without_budget.id, without_budget.id, with_budget.id])
    # Reservations are gone, and the budget counts what was billed.
    assert _rows(database, "SELECT COUNT(*) FROM budget_reservation") == [(0,)]
    spent = _rows(database, "SELECT SUM(tokens) FROM key_spend_daily WHERE key_id = ?", with_budget.id)
    billed = _rows(database, "SELECT SUM(total_tokens) FROM usage_record WHERE key_id = ?", with_budget.id)
    assert spent == billed
    assert "billed 4 requests" in server.log()
    assert server.stop() == 0


def test_requests_that_end_leave_no_checkpoint_behind(make_live: Callable[..., Live]) -> None:
    """Requests long enough to be checkpointed, ending every way (completed, cut by their client) while the
    checkpointer runs: each has one row, and no checkpoint survives it (a restart bills nothing more)."""
    chat, embed = fake_models(delay="0.01", repeat="1")
    models = (chat, embed, *(chat.model_copy(update={"name": name}) for name in MODELS[1:]))
    live = make_live(models=models)
    budget = KeyLimits(budget_unit="tokens", budget_amount=1e9, budget_period="day")
    keys = [live.key, live.new_key("budgeted", limits=budget)]

    def one(n: int) -> None:
        body = _chat(n % 2 == 0, MODELS[n % len(MODELS)]) | {"max_tokens": 90 + n}
        headers = {"Authorization": f"Bearer {keys[n % 2]}"}
        with httpx.Client(base_url=live.url, headers=headers, timeout=60) as client:
            if not body["stream"]:
                assert client.post("/v1/chat/completions", json=body).status_code == 200
                return
            with client.stream("POST", "/v1/chat/completions", json=body) as response:
                for number, _ in enumerate(response.iter_lines()):
                    if n % 4 == 0 and number == 70:
                        return  # the client leaves, after the first checkpoint

    database = live.services.settings.database_path
    seen: set[str] = set()  # requests seen checkpointed while they ran
    running = threading.Event()
    running.set()

    def watch() -> None:
        while running.is_set():
            sql = "SELECT request_id FROM budget_reservation WHERE output_tokens > 0"
            seen.update(row[0] for row in _rows(database, sql))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=one, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    running.clear()
    watcher.join(10)
    assert len(seen) >= 8, f"only {len(seen)} requests were checkpointed"
    deadline = time.monotonic() + 10
    while len(live.services.inflight) and time.monotonic() < deadline:
        time.sleep(0.05)
    live.services.ledger.flush()
    time.sleep(3 * LOOK_S)  # a checkpoint started before its request ended has landed by now
    assert _rows(database, "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage_record") == [(12, 12)]
    assert _rows(database, "SELECT COUNT(*) FROM budget_reservation") == [(0,)]

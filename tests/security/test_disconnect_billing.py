"""Billing under randomised disconnects: every request leaves exactly one ledger row, billing exactly the tokens
the engine generated (delivered or not); failures before the first token cost nothing and release their
budget reservations. The short run is part of ``make test``; the 1,000-request run is a soak test."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from server.access.keys import KeyLimits
from server.engines.fake import FakeChat
from server.metering.ledger import ledger_rows
from tests.conftest import Live, fake_models

CHAT = "fake-chat"
PRICE_IN, PRICE_OUT = 1.0, 2.0  # fake-chat's prices per million tokens (tests/conftest.py)
BUDGET = KeyLimits(budget_unit="tokens", budget_amount=1e9, budget_period="day")


@dataclass(frozen=True)
class Plan:
    """One request and when its client hangs up."""

    path: str
    body: dict[str, Any]
    stream: bool
    cut_after: int | None
    """Streams: hang up after this many text deltas (0: right after the headers; None: read to the end)."""
    timeout: float
    """Whole answers: hang up after this many seconds."""
    reset: bool
    """Hang up with a TCP reset rather than a clean close."""


def _plan(rng: random.Random) -> Plan:
    max_tokens = rng.randint(1, 60)
    stream = rng.random() < 0.6
    if rng.random() < 0.5:
        n = rng.choice([1, 1, 2])
        path, body = "/v1/chat/completions", {"model": CHAT, "messages": [{"role": "user", "content": "tick tock"}], "max_tokens": max_tokens, "n": n}  # fmt: skip
    else:
        path, body = "/v1/responses", {"model": CHAT, "input": "tick tock", "max_output_tokens": max(16, max_tokens), "store": False}  # fmt: skip
    cut_after = None if rng.random() < 0.1 else rng.randint(0, 70)
    return Plan(path, body, stream, cut_after, timeout=rng.uniform(0.005, 0.15), reset=rng.random() < 0.3)


def _is_delta(line: bytes) -> bool:
    return (b'"content":"' in line and b'"content":""' not in line) or b'"response.output_text.delta"' in line


def _run(live: Live, key: str, plan: Plan) -> None:
    """Send ``plan`` over a raw socket and hang up as it says (clean close, or a reset)."""
    body = httpx.Request("POST", "http://x", json={**plan.body, "stream": plan.stream}).content
    head = (
        f"POST {plan.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", live.thread.port), timeout=30)
    try:
        sock.sendall(head + body)
        if plan.stream:
            seen, buffer = 0, b""
            while (
                plan.cut_after is None
                or seen < plan.cut_after
                or (plan.cut_after == 0 and b"\r\n\r\n" not in buffer)
            ):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                seen = sum(_is_delta(line) for line in buffer.split(b"\n"))
                if (
                    b"data: [DONE]" in buffer
                    or b"response.completed" in buffer
                    or b"response.incomplete" in buffer
                ):
                    break
                if plan.cut_after == 0 and b"\r\n\r\n" in buffer:
                    break
        else:
            sock.settimeout(plan.timeout)
            try:
                while sock.recv(65536):
                    pass
            except TimeoutError:
                pass
    finally:
        if plan.reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def _generated(live: Live) -> int:
    backend, _, _ = live.services.models.get(CHAT, "chat")
    assert isinstance(backend, FakeChat)
    return backend.generated


def _rows(live: Live) -> list[dict[str, Any]]:
    live.services.ledger.flush()
    return list(ledger_rows(live.services.store))


def _settled(live: Live, expected_rows: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Wait until the ledger holds ``expected_rows`` and the model is idle (generation has really stopped)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(live)
        queue = live.services.models.status(CHAT).queue
        idle = queue is not None and queue.running == 0 and queue.waiting == 0
        if (len(rows) >= expected_rows and idle) or time.monotonic() > deadline:
            return rows
        time.sleep(0.005)


def _cost(row: dict[str, Any]) -> float:
    return float(row["input_tokens"] * PRICE_IN + row["output_tokens"] * PRICE_OUT) / 1e6


def _assert_budget_settled(live: Live, key: str, rows: list[dict[str, Any]]) -> None:
    record = live.services.keys.authenticate(key)
    state = live.services.limiter.budget(record)
    assert state is not None
    assert state.reserved == 0, "every reservation was released with its row"
    billed = sum(r["total_tokens"] for r in rows if not (r["status"] == "failed" and r["output_tokens"] == 0))
    assert state.spent == billed


def disconnect_storm(live: Live, requests: int, seed: int) -> dict[str, int]:
    """Run ``requests`` randomised requests one after another, checking each one's row as it lands."""
    rng = random.Random(seed)
    key = live.new_key("storm", limits=BUDGET)
    outcomes: dict[str, int] = {}
    rows = _rows(live)
    for number in range(requests):
        plan = _plan(rng)
        before, known = _generated(live), {r["request_id"] for r in rows}
        _run(live, key, plan)
        rows = _settled(live, len(known) + 1)
        new = [r for r in rows if r["request_id"] not in known]
        where = f"request {number} ({plan})"
        assert len(new) == 1, f"{where}: {len(new)} new ledger rows"
        row = new[0]
        assert row["output_tokens"] == _generated(live) - before, f"{where}: billed {row} vs generated"
        assert row["cost"] == pytest.approx(_cost(row), rel=1e-9, abs=1e-15), where
        assert row["total_tokens"] == row["input_tokens"] + row["output_tokens"]
        assert row["stream"] is plan.stream
        if row["status"] == "completed":
            assert (row["http_status"], row["client_disconnected"]) == (200, False), where
        else:
            assert (row["status"], row["http_status"], row["client_disconnected"]) == (
                "disconnected",
                499,
                True,
            ), where
        outcomes[row["status"]] = outcomes.get(row["status"], 0) + 1
    _assert_budget_settled(
        live, key, [r for r in rows if r["key_id"] == live.services.keys.authenticate(key).id]
    )
    return outcomes


@pytest.fixture
def storm_live(make_live: Callable[..., Live]) -> Live:
    return make_live(models=fake_models(delay="0.002", repeat="1"))


def test_random_disconnects_bill_exactly_what_was_generated(storm_live: Live) -> None:
    outcomes = disconnect_storm(storm_live, requests=120, seed=7)
    assert outcomes.get("disconnected", 0) >= 40 and outcomes.get("completed", 0) >= 5, outcomes


@pytest.mark.soak
def test_a_thousand_random_disconnects(storm_live: Live) -> None:
    outcomes = disconnect_storm(storm_live, requests=1000, seed=20251126)
    assert outcomes.get("disconnected", 0) >= 400 and outcomes.get("completed", 0) >= 50, outcomes


def test_concurrent_disconnects_add_up(storm_live: Live) -> None:
    """Eight clients at once, all hanging up at random: one row per request, and the rows add up to what
    the engine generated."""
    live = storm_live
    key = live.new_key("crowd", limits=BUDGET)
    before = _generated(live)
    sent = [0]
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            _run(live, key, _plan(rng))
            with lock:
                sent[0] += 1

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    rows = _settled(live, sent[0], timeout=30)
    assert sent[0] == 120 and len(rows) == 120
    assert len({r["request_id"] for r in rows}) == 120
    assert sum(r["output_tokens"] for r in rows) == _generated(live) - before
    _assert_budget_settled(live, key, rows)


def test_failures_before_the_first_token_cost_nothing(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(fail_at="0"))
    key = live.new_key(
        "unlucky", limits=KeyLimits(budget_unit="tokens", budget_amount=100_000, budget_period="day")
    )
    headers = {"Authorization": f"Bearer {key}"}
    bodies: list[tuple[str, dict[str, Any]]] = [
        (
            "/v1/chat/completions",
            {"model": CHAT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 50},
        ),
        ("/v1/responses", {"model": CHAT, "input": "x", "max_output_tokens": 50}),
    ]
    with httpx.Client(base_url=live.url, headers=headers, timeout=30) as client:
        for _ in range(10):
            for path, body in bodies:
                response = client.post(path, json=body)
                assert response.status_code == 500 and response.json()["error"]["code"] == "engine_error"
                with client.stream("POST", path, json={**body, "stream": True}) as streamed:
                    text = streamed.read().decode()
                assert "engine_error" in text or "response.failed" in text, text[-300:]
        rows = _settled(live, 40)
        assert len(rows) == 40
        for row in rows:
            assert (row["status"], row["output_tokens"], row["cost"]) == ("failed", 0, 0.0), row
        _assert_budget_settled(live, key, rows)
        state = live.services.limiter.budget(live.services.keys.authenticate(key))
        assert state is not None and state.spent == 0 and state.reserved == 0
        # The whole budget is still there: a request needing almost all of it is admitted.
        big = client.post("/v1/chat/completions", json={**bodies[0][1], "max_tokens": 2000})
        assert big.json()["error"]["code"] == "engine_error"

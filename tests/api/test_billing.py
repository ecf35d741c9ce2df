"""The usage ledger: one row per request with exact tokens and cost, even when the client goes away."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from server.engines.fake import FakeChat
from tests.api.conftest import (
    CHAT,
    EMBED,
    http,
    ledger,
    ledger_row,
    messages,
    reasoning_models,
    wait_for,
)
from tests.conftest import Live, fake_models

PRICE_IN, PRICE_OUT = 1.0, 2.0  # fake-chat's prices per million tokens (tests/conftest.py)
LEDGER_FIELDS = {
    "request_id",
    "created_at",
    "key_id",
    "model",
    "endpoint",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "stream",
    "client_disconnected",
    "exact",
}


def cost(
    input_tokens: int, output_tokens: int, price_in: float = PRICE_IN, price_out: float = PRICE_OUT
) -> float:
    return input_tokens * price_in / 1e6 + output_tokens * price_out / 1e6


def key_id(live: Live, key: str | None = None) -> str:
    return live.services.keys.authenticate(key or live.key).id


def assert_completed_row(
    row: dict[str, Any], live: Live, *, endpoint: str, model: str, stream: bool, tokens: tuple[int, int]
) -> None:
    assert set(row) == LEDGER_FIELDS
    assert row["key_id"] == key_id(live)
    assert (row["model"], row["endpoint"], row["stream"]) == (model, endpoint, stream)
    assert (row["input_tokens"], row["output_tokens"]) == tokens
    assert row["total_tokens"] == sum(tokens)
    assert (row["status"], row["http_status"], row["client_disconnected"], row["exact"]) == (
        "completed",
        200,
        False,
        True,
    )
    assert row["latency_ms"] > 0
    assert abs(row["created_at"] - time.time()) < 60


def test_a_chat_completion_is_one_exact_row(api: httpx.Client, live: Live) -> None:
    response = api.post("/v1/chat/completions", json={"model": CHAT, "messages": messages("one two three")})
    usage = response.json()["usage"]
    row = ledger_row(live, response.headers["x-request-id"])
    assert_completed_row(row, live, endpoint="chat.completions", model=CHAT, stream=False, tokens=(5, 3))
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (5, 3)
    assert row["cost"] == pytest.approx(cost(5, 3), rel=1e-12)
    assert row["cached_tokens"] == row["reasoning_tokens"] == 0
    assert row["ttft_ms"] is not None and 0 <= row["ttft_ms"] <= row["latency_ms"]
    assert len(ledger(live)) == 1


def test_every_endpoint_writes_its_row(api: httpx.Client, live: Live) -> None:
    sent: list[tuple[str, str, bool, tuple[int, int]]] = []
    with api.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": CHAT, "messages": messages("a b"), "stream": True, "n": 2},
    ) as r:
        r.read()
        sent.append((r.headers["x-request-id"], "chat.completions", True, (4, 4)))
    r2 = api.post("/v1/responses", json={"model": CHAT, "input": "a b c"})
    sent.append((r2.headers["x-request-id"], "responses", False, (5, 3)))
    with api.stream("POST", "/v1/responses", json={"model": CHAT, "input": "a", "stream": True}) as r3:
        r3.read()
        sent.append((r3.headers["x-request-id"], "responses", True, (3, 1)))
    for request_id, endpoint, stream, tokens in sent:
        row = ledger_row(live, request_id)
        assert_completed_row(row, live, endpoint=endpoint, model=CHAT, stream=stream, tokens=tokens)
        assert row["cost"] == pytest.approx(cost(*tokens), rel=1e-12)
    r4 = api.post("/v1/embeddings", json={"model": EMBED, "input": ["four words right here", "two more"]})
    row = ledger_row(live, r4.headers["x-request-id"])
    assert_completed_row(row, live, endpoint="embeddings", model=EMBED, stream=False, tokens=(6, 0))
    assert row["cost"] == 0.0  # fake-embed has no price
    assert len(ledger(live)) == 4


def test_rows_belong_to_the_key_that_asked(live: Live) -> None:
    other = live.new_key("other")
    with http(live, other) as api:
        response = api.post("/v1/chat/completions", json={"model": CHAT, "messages": messages("x")})
    assert ledger_row(live, response.headers["x-request-id"])["key_id"] == key_id(live, other) != key_id(live)


def test_reasoning_tokens_are_recorded(make_live: Callable[..., Live]) -> None:
    live = make_live(models=reasoning_models())
    with http(live) as api:
        response = api.post("/v1/chat/completions", json={"model": CHAT, "messages": messages("the answer")})
    row = ledger_row(live, response.headers["x-request-id"])
    assert (row["output_tokens"], row["reasoning_tokens"]) == (7, 5)
    assert row["cost"] == pytest.approx(cost(row["input_tokens"], 7), rel=1e-12)


def test_usage_in_the_response_and_the_ledger_agree(api: httpx.Client, live: Live) -> None:
    for text in ("x", "a b c d e f g h", "the quick brown fox jumps"):
        for max_tokens in (1, 3, 100):
            body = {"model": CHAT, "messages": messages(text), "max_tokens": max_tokens}
            response = api.post("/v1/chat/completions", json=body)
            usage = response.json()["usage"]
            row = ledger_row(live, response.headers["x-request-id"])
            assert (row["input_tokens"], row["output_tokens"]) == (
                usage["prompt_tokens"],
                usage["completion_tokens"],
            )
            assert usage["completion_tokens"] == min(max_tokens, len(text.split()))
            assert row["cost"] == pytest.approx(cost(row["input_tokens"], row["output_tokens"]), rel=1e-12)


# -- disconnects ------------------------------------------------------------------------------------

DELAY = 0.02  # seconds per token: slow enough to disconnect mid-stream, fast enough for a quick test
MAX_TOKENS = 2000  # 40 s of generation if nothing stopped it
IN_FLIGHT = 25  # tokens the server may make between the client's last read and its noticing (0.5 s)


def generated(live: Live) -> int:
    """Tokens the fake chat model has generated since it loaded, delivered or not."""
    backend, _, _ = live.services.models.get(CHAT, "chat")
    assert isinstance(backend, FakeChat)
    return backend.generated


def running(live: Live) -> int:
    """Jobs the chat model's worker is running now (0 or 1)."""
    queue = live.services.models.status(CHAT).queue
    assert queue is not None
    return queue.running


def wait_idle(live: Live) -> None:
    """The chat model's worker has nothing running: generation has really stopped."""
    wait_for(lambda: running(live) == 0, timeout=2, what="the worker to go idle")


def read_then_disconnect(api: httpx.Client, path: str, body: dict[str, Any], pieces: int) -> tuple[str, int]:
    """Stream, read ``pieces`` text deltas, and hang up; the request id and the deltas received."""
    received = 0
    with api.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line or '"response.output_text.delta"' in line:
                received += 1
                if received == pieces:
                    break
    # Leaving the block closes the connection while the server is still generating.
    return request_id, received


@pytest.mark.parametrize(
    ("path", "body", "endpoint"),
    [
        (
            "/v1/chat/completions",
            {"model": CHAT, "messages": messages("tick tock"), "max_tokens": MAX_TOKENS},
            "chat.completions",
        ),
        (
            "/v1/responses",
            {"model": CHAT, "input": "tick tock", "max_output_tokens": MAX_TOKENS},
            "responses",
        ),
    ],
)
def test_a_disconnect_mid_stream_stops_generation_and_bills_what_was_generated(
    make_live: Callable[..., Live], path: str, body: dict[str, Any], endpoint: str
) -> None:
    live = make_live(models=fake_models(delay=str(DELAY), repeat="1"))
    with http(live) as api:
        started = time.monotonic()
        request_id, received = read_then_disconnect(api, path, body, pieces=8)
    assert received == 8
    # Generation stops: the model's worker is idle again at once, not after MAX_TOKENS tokens.
    wait_idle(live)
    row = ledger_row(live, request_id)
    assert (row["status"], row["client_disconnected"], row["stream"]) == ("disconnected", True, True)
    assert row["endpoint"] == endpoint
    assert row["http_status"] == 499
    # Billed: everything the client received, plus at most what was in flight when it hung up.
    assert received <= row["output_tokens"] <= received + IN_FLIGHT
    assert row["output_tokens"] == generated(live)
    assert row["input_tokens"] == 4
    assert row["cost"] == pytest.approx(cost(4, row["output_tokens"]), rel=1e-12)
    assert row["ttft_ms"] is not None
    # The model is free for the next request straight away.
    with http(live) as api:
        quick = api.post(
            "/v1/chat/completions", json={"model": CHAT, "messages": messages("x"), "max_tokens": 2}
        )
    assert quick.status_code == 200
    assert time.monotonic() - started < MAX_TOKENS * DELAY / 2


def test_the_bill_counts_exactly_what_the_engine_generated(make_live: Callable[..., Live]) -> None:
    """A stream cut short bills every token generated, even those the client never received.

    The fake checks for cancellation before each token, then takes DELAY to make it: a disconnect
    usually lands while it is making one more, which the client never sees and which must be billed.
    """
    live = make_live(models=fake_models(delay=str(DELAY), repeat="1"))
    for pieces in (1, 3, 6):
        with http(live) as api:
            before = generated(live)
            request_id, received = read_then_disconnect(
                api,
                "/v1/chat/completions",
                {"model": CHAT, "messages": messages("w"), "max_tokens": MAX_TOKENS},
                pieces,
            )
        wait_idle(live)
        row = ledger_row(live, request_id)
        assert row["output_tokens"] == generated(live) - before, "billed exactly what the engine generated"
        assert received <= row["output_tokens"] <= received + IN_FLIGHT


def test_a_disconnect_while_queued_generates_nothing(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(delay=str(DELAY), repeat="1"))
    busy_body = {"model": CHAT, "messages": messages("busy"), "max_tokens": 60, "stream": True}
    # The first stream occupies the model; the second waits in the queue and hangs up there.
    with (
        http(live) as first,
        http(live) as second,
        first.stream("POST", "/v1/chat/completions", json=busy_body) as busy,
    ):
        lines = busy.iter_lines()
        next(line for line in lines if '"content":"busy"' in line)
        with pytest.raises(httpx.ReadTimeout):
            second.post(
                "/v1/chat/completions",
                json={"model": CHAT, "messages": messages("queued"), "max_tokens": 5},
                timeout=0.3,
            )
        # Billed at once, while the first request still streams.
        wait_for(lambda: len(ledger(live)) == 1, what="the queued request's row")
        [queued] = ledger(live)
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]", "the first stream finished undisturbed"
    assert (queued["status"], queued["client_disconnected"], queued["stream"]) == (
        "disconnected",
        True,
        False,
    )
    assert queued["output_tokens"] == 0 and queued["ttft_ms"] is None
    first_row = next(r for r in ledger(live) if r["request_id"] != queued["request_id"])
    assert (first_row["status"], first_row["output_tokens"]) == ("completed", 60)
    queue = live.services.models.status(CHAT).queue
    assert queue is not None and queue.served == 1, "the queued request never ran"


def test_a_whole_answer_abandoned_mid_generation_is_billed_as_generated(
    make_live: Callable[..., Live],
) -> None:
    live = make_live(models=fake_models(delay=str(DELAY), repeat="1"))
    started = time.monotonic()
    with http(live) as api, pytest.raises(httpx.ReadTimeout):
        api.post(
            "/v1/chat/completions",
            json={"model": CHAT, "messages": messages("slow"), "max_tokens": MAX_TOKENS},
            timeout=0.5,
        )
    wait_for(lambda: len(ledger(live)) == 1, what="the abandoned request's row")
    elapsed = time.monotonic() - started
    wait_idle(live)
    [row] = ledger(live)
    assert (row["status"], row["client_disconnected"], row["stream"]) == ("disconnected", True, False)
    # About 0.5 s of generation at one token per DELAY: far from MAX_TOKENS, and never nothing.
    assert 1 <= row["output_tokens"] <= elapsed / DELAY + 1
    assert row["output_tokens"] == generated(live)
    assert row["cost"] == pytest.approx(cost(row["input_tokens"], row["output_tokens"]), rel=1e-12)

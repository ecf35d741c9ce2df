"""Per-key limits through the front door: the official SDK and raw HTTP against a live server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from server.access.keys import KeyLimits
from server.access.limits import period_end, period_start
from server.metering.ledger import ledger_rows
from server.store import Store
from tests.conftest import Live, fake_models

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "one two three four"}]


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Any:
    yield
    while _OPEN:
        _OPEN.pop().close()


def client(live: Live, key: str) -> openai.OpenAI:
    made = openai.OpenAI(base_url=live.base_url, api_key=key, max_retries=0)
    _OPEN.append(made)
    return made


def chat(live: Live, key: str, **extra: Any) -> Any:
    return client(live, key).chat.completions.create(
        model="fake-chat", messages=MESSAGES, max_tokens=8, **extra
    )


def test_requests_per_minute(live: Live) -> None:
    key = live.new_key("rpm", limits=KeyLimits(rpm=3))
    for _ in range(3):
        chat(live, key)
    with pytest.raises(openai.RateLimitError) as caught:
        chat(live, key)
    error = caught.value
    assert error.code == "rate_limit_exceeded"
    assert int(error.response.headers["retry-after"]) >= 1
    assert error.response.headers.get("x-should-retry") != "false"
    # Another key is not affected.
    chat(live, live.key)


def test_tokens_per_minute_counts_input_and_maximum_output(live: Live) -> None:
    first = chat(live, live.key)
    estimate = first.usage.prompt_tokens + 8
    key = live.new_key("tpm", limits=KeyLimits(tpm=estimate * 2))
    chat(live, key)  # settles to the real (smaller) use: prompt + 4 words
    chat(live, key)
    with pytest.raises(openai.RateLimitError, match="tokens per minute"):
        chat(live, key)
    with pytest.raises(openai.RateLimitError, match="Request too large"):
        client(live, key).chat.completions.create(
            model="fake-chat", messages=MESSAGES, max_tokens=estimate * 3
        )


def test_concurrent_requests(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(delay="0.05", repeat="1"))
    key = live.new_key("one-at-a-time", limits=KeyLimits(max_concurrent=1))
    stream = client(live, key).chat.completions.create(
        model="fake-chat", messages=MESSAGES, max_tokens=40, stream=True
    )
    next(iter(stream))
    with pytest.raises(openai.RateLimitError, match="concurrent"):
        chat(live, key)
    for _ in stream:
        pass
    chat(live, key)  # the slot is free again once the stream ended


def test_model_scope(live: Live) -> None:
    key = live.new_key("embed-only", allowed_models=["fake-embed"])
    assert [m.id for m in client(live, key).models.list()] == ["fake-embed"]
    with pytest.raises(openai.NotFoundError) as caught:
        chat(live, key)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client(live, key).models.retrieve("fake-chat")
    assert client(live, key).embeddings.create(model="fake-embed", input="hi").data


def test_expired_and_revoked_keys_get_401(live: Live) -> None:
    key = live.new_key("brief", expires_at=time.time() + 0.5)
    chat(live, key)
    time.sleep(0.6)
    with pytest.raises(openai.AuthenticationError):
        chat(live, key)
    key2, record = live.services.keys.create("revoked")
    chat(live, key2)
    live.services.keys.revoke(record.id)
    with pytest.raises(openai.AuthenticationError):
        chat(live, key2)


async def _fire(live: Live, key: str, count: int, body: dict[str, Any]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=live.base_url, headers={"authorization": f"Bearer {key}"}) as http:
        return list(await asyncio.gather(*(http.post("/chat/completions", json=body) for _ in range(count))))


def test_fifty_concurrent_requests_with_budget_for_one(live: Live) -> None:
    probe = chat(live, live.key)
    worst = probe.usage.prompt_tokens + 8
    key = live.new_key(
        "budget", limits=KeyLimits(budget_unit="tokens", budget_amount=worst * 1.5, budget_period="day")
    )
    body = {"model": "fake-chat", "messages": MESSAGES, "max_tokens": 8}
    responses = asyncio.run(_fire(live, key, 50, body))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 1, statuses
    refused = [r for r in responses if r.status_code == 429]
    assert len(refused) == 49
    for r in refused:
        assert r.json()["error"]["code"] == "insufficient_quota"
        assert r.json()["error"]["type"] == "insufficient_quota"
        assert r.headers["x-should-retry"] == "false"
    live.services.ledger.flush()
    state = live.services.limiter.budget(live.services.keys.get(_key_id(live, key)))
    assert state is not None
    assert state.reserved == 0  # settled
    assert state.spent == probe.usage.total_tokens  # the exact use, not the reservation


def _key_id(live: Live, secret: str) -> str:
    return live.services.keys.authenticate(secret).id


def test_money_budget_is_reserved_at_worst_case_and_settled_exactly(live: Live) -> None:
    # fake-chat costs 1.0 per million input tokens and 2.0 per million output tokens.
    probe = chat(live, live.key)
    cost = (probe.usage.prompt_tokens * 1.0 + probe.usage.completion_tokens * 2.0) / 1e6
    worst = (probe.usage.prompt_tokens * 1.0 + 8 * 2.0) / 1e6
    # Enough for the worst case after one request, not after two.
    budget = cost * 1.5 + worst
    key = live.new_key(
        "money", limits=KeyLimits(budget_unit="cost", budget_amount=budget, budget_period="month")
    )
    chat(live, key)
    chat(live, key)
    with pytest.raises(openai.RateLimitError) as caught:
        chat(live, key)
    assert caught.value.code == "insufficient_quota"
    live.services.ledger.flush()
    state = live.services.limiter.budget(live.services.keys.get(_key_id(live, key)))
    assert state is not None and state.spent == pytest.approx(cost * 2)


def test_failure_before_the_first_token_costs_nothing_and_releases(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(fail_at="0"))
    key = live.new_key(
        "failing", limits=KeyLimits(budget_unit="tokens", budget_amount=10_000, budget_period="lifetime")
    )
    with pytest.raises(openai.InternalServerError):
        chat(live, key)
    live.services.ledger.flush()
    record = live.services.keys.authenticate(key)
    state = live.services.limiter.budget(record)
    assert state is not None and state.spent == 0 and state.reserved == 0
    rows = [r for r in ledger_rows(live.services.store) if r["key_id"] == record.id]
    assert len(rows) == 1 and rows[0]["status"] == "failed" and rows[0]["cost"] == 0


def test_orphaned_reservations_are_released_at_start(
    make_services: Callable[..., Any], tmp_path: Any
) -> None:
    services = make_services()
    _, record = services.keys.create(
        "orphan", limits=KeyLimits(budget_unit="tokens", budget_amount=100, budget_period="day")
    )
    services.store.db.execute_sql(
        "INSERT INTO budget_reservation (key_id, unit, amount, boot, created_at) VALUES (?, ?, ?, ?, ?)",
        (record.id, "tokens", 100.0, "a-dead-process", time.time()),
    )
    state = services.limiter.budget(record)
    assert state is not None and state.reserved == 100
    path = services.store.path
    services.close()
    reopened = make_services()
    assert reopened.store.path == path
    state = reopened.limiter.budget(reopened.keys.get(record.id))
    assert state is not None and state.reserved == 0


def test_failed_authentication_is_throttled_per_address(live: Live) -> None:
    bad = {"authorization": "Bearer aisp-not-a-key"}
    with httpx.Client(base_url=live.base_url) as http:
        codes = [http.get("/models", headers=bad).status_code for _ in range(25)]
        assert codes[:20] == [401] * 20
        assert set(codes[20:]) == {429}
        throttled = http.get("/models", headers=bad)
        assert throttled.status_code == 429 and throttled.json()["error"]["code"] == "rate_limit_exceeded"
        # Only failures are throttled: a valid key from the same address is served.
        assert http.get("/models", headers={"authorization": f"Bearer {live.key}"}).status_code == 200
    other = httpx.Client(base_url=live.base_url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
    with other:
        assert other.get("/models", headers={"authorization": f"Bearer {live.key}"}).status_code == 200


def test_budget_periods() -> None:
    at = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, a Tuesday
    assert period_start("day", at) == 1_699_920_000.0
    assert period_start("week", at) == 1_699_833_600.0  # Monday 13 November
    assert period_start("month", at) == 1_698_796_800.0  # 1 November
    assert period_start("lifetime", at) == 0.0
    assert period_end("month", at) == 1_701_388_800.0  # 1 December
    assert period_end("day", at) == 1_700_006_400.0
    assert period_end("lifetime", at) is None


def test_limits_are_validated() -> None:
    from server.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        KeyLimits(rpm=0)
    with pytest.raises(InvalidRequest):
        KeyLimits(budget_unit="tokens", budget_amount=5)
    assert Store is not None


def test_refused_requests_leave_a_free_ledger_row(live: Live) -> None:
    limited = live.new_key("rejected", limits=KeyLimits(rpm=1))
    chat(live, limited)
    with pytest.raises(openai.RateLimitError):
        chat(live, limited)
    with pytest.raises(openai.BadRequestError):
        chat(live, limited, temperature=5)  # refused before the rate limit is even consulted
    with pytest.raises(openai.AuthenticationError):
        chat(live, "aisp-" + "x" * 49)
    live.services.ledger.flush()
    record = live.services.keys.authenticate(limited)
    rows = [r for r in ledger_rows(live.services.store) if r["key_id"] == record.id]
    assert [(r["status"], r["http_status"]) for r in rows] == [
        ("completed", 200),
        ("rejected", 429),
        ("rejected", 400),
    ]
    assert all(r["cost"] == 0 and r["model"] == "fake-chat" for r in rows[1:])
    assert not [r for r in ledger_rows(live.services.store) if r["key_id"] is None]


def test_a_rolled_key_shares_one_budget_and_one_rate_limit_with_the_key_it_replaced(live: Live) -> None:
    first = chat(live, live.key)
    cost = first.usage.prompt_tokens + 8  # what one request reserves: its input and its maximum output
    limits = KeyLimits(rpm=5, budget_unit="tokens", budget_amount=3 * cost, budget_period="day")
    old = live.new_key("rolled", limits=limits)
    keys = live.services.keys
    record = next(r for r in keys.list() if r.name == "rolled")
    chat(live, old)
    chat(live, old)
    new, replacement = keys.roll(record.id, grace_seconds=3600)
    assert replacement.limits == limits
    state = live.services.limiter.budget(replacement)
    assert state is not None and state.spent > 0  # the new key starts where the old one was
    assert state.spent == live.services.limiter.budget(keys.get(record.id)).spent  # type: ignore[union-attr]
    chat(live, new)  # the third request of the shared budget
    for key in (new, old):  # neither key has a budget of its own left
        with pytest.raises(openai.RateLimitError) as caught:
            chat(live, key)
        assert caught.value.code == "insufficient_quota"

    # Requests per minute too: five between them, not five each.
    again = live.new_key("rate", limits=KeyLimits(rpm=5))
    rate = next(r for r in keys.list() if r.name == "rate")
    for _ in range(3):
        chat(live, again)
    rolled, _ = keys.roll(rate.id, grace_seconds=3600)
    chat(live, rolled)
    chat(live, again)
    for key in (rolled, again):
        with pytest.raises(openai.RateLimitError) as caught:
            chat(live, key)
        assert caught.value.code == "rate_limit_exceeded"
    activity = live.services.limiter.activity(keys.get(rate.id))
    assert activity.requests_last_minute == 5
    assert live.services.limiter.activity(keys.get(rate.id)) == live.services.limiter.activity(
        next(r for r in keys.list() if r.name == "rate" and r.id != rate.id)
    )

"""An upstream OpenAI-compatible engine behind the appliance: failover, balancing, faults and metering."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from server.access.keys import KeyLimits
from tests.conftest import Live
from tests.support.mock_upstream import MockUpstream, Script
from tests.upstream.conftest import upstream_models, upstream_rows

MESSAGES = [{"role": "user", "content": "hello there upstream"}]


def _dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def sdk(request: pytest.FixtureRequest) -> Iterator[Callable[[Live, str], openai.OpenAI]]:
    made: list[openai.OpenAI] = []

    def build(live: Live, key: str) -> openai.OpenAI:
        client = openai.OpenAI(base_url=live.base_url, api_key=key, max_retries=0)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def test_chat_through_an_upstream_is_metered_exactly(
    make_live: Callable[..., Live], mock: MockUpstream, sdk: Any
) -> None:
    live = make_live(models=upstream_models(mock.url))
    client = sdk(live, live.key)
    assert "up-chat" in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(model="up-chat", messages=MESSAGES, max_tokens=20)
    assert reply.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert reply.model == "up-chat"
    assert reply.usage.completion_tokens == 5 and reply.usage.prompt_tokens == 6
    sent = mock.requests[-1]
    assert sent["model"] == "upstream-model"
    assert sent["stream"] is False and "stream_options" not in sent  # one call, exact usage
    assert sent["max_tokens"] == 20
    (row,) = upstream_rows(live)
    assert (row["input_tokens"], row["output_tokens"], row["exact"]) == (6, 5, True)
    assert row["cost"] == pytest.approx((6 * 1.0 + 5 * 2.0) / 1e6)


def test_streamed_usage_is_stripped_unless_asked(
    make_live: Callable[..., Live], mock: MockUpstream, sdk: Any
) -> None:
    live = make_live(models=upstream_models(mock.url))
    client = sdk(live, live.key)
    plain = list(client.chat.completions.create(model="up-chat", messages=MESSAGES, stream=True))
    assert all(chunk.usage is None for chunk in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == "w0 w1 w2 w3 w4"
    assert mock.requests[-1]["stream_options"] == {"include_usage": True}  # asked for, then stripped
    asked = list(
        client.chat.completions.create(
            model="up-chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert asked[-1].choices == [] and asked[-1].usage.completion_tokens == 5
    assert len(upstream_rows(live)) == 2


def test_failover_before_the_first_byte(make_live: Callable[..., Live], mock: MockUpstream, sdk: Any) -> None:
    failing = MockUpstream(Script(fault="error500")).start()
    try:
        live = make_live(models=upstream_models(failing.url, mock.url))
        for _ in range(3):
            reply = sdk(live, live.key).chat.completions.create(model="up-chat", messages=MESSAGES)
            assert reply.choices[0].message.content == "w0 w1 w2 w3 w4"
        (status,) = [s for s in live.services.models.statuses() if s.name == "up-chat"]
        bad, good = status.replicas
        assert bad.failures >= 1 and good.served == 3
        assert len(failing.requests) >= 1 and len(mock.requests) == 3
    finally:
        failing.stop()


def test_health_checks_mark_a_dead_replica(
    make_live: Callable[..., Live], mock: MockUpstream, sdk: Any
) -> None:
    live = make_live(models=upstream_models(_dead_url(), mock.url))
    reply = sdk(live, live.key).chat.completions.create(model="up-chat", messages=MESSAGES)
    assert reply.choices[0].message.content == "w0 w1 w2 w3 w4"
    (status,) = [s for s in live.services.models.statuses() if s.name == "up-chat"]
    dead, alive = status.replicas
    assert not dead.healthy and "connect" in (dead.last_error or "").lower() and dead.checked_at
    assert alive.healthy and alive.served == 1


def test_requests_are_balanced_by_outstanding_requests(make_live: Callable[..., Live], sdk: Any) -> None:
    first, second = (
        MockUpstream(Script(chunks=20, interval=0.02)).start(),
        MockUpstream(Script(chunks=20, interval=0.02)).start(),
    )
    try:
        live = make_live(models=upstream_models(first.url, second.url))
        client = sdk(live, live.key)
        threads = [
            threading.Thread(
                target=lambda: list(
                    client.chat.completions.create(model="up-chat", messages=MESSAGES, stream=True)
                )
            )
            for _ in range(6)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(first.requests) == 3 and len(second.requests) == 3
    finally:
        first.stop()
        second.stop()


def test_an_upstream_refusal_is_relayed_as_sent(
    make_live: Callable[..., Live], mock: MockUpstream, sdk: Any
) -> None:
    mock.script = Script(fault="refuse")
    live = make_live(models=upstream_models(mock.url))
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(live, live.key).chat.completions.create(model="up-chat", messages=MESSAGES)
    assert caught.value.body["param"] == "temperature"  # type: ignore[index]
    (row,) = upstream_rows(live)
    assert row["status"] == "failed" and row["cost"] == 0


def test_an_upstream_that_fails_everywhere_is_a_502(
    make_live: Callable[..., Live], mock: MockUpstream, sdk: Any
) -> None:
    mock.script = Script(fault="error500")
    live = make_live(models=upstream_models(mock.url, _dead_url()))
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(live, live.key).chat.completions.create(model="up-chat", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_error"  # type: ignore[index]
    assert len(mock.requests) == 1  # tried once, then the other replica
    assert sdk(live, live.key).models.list().data  # and the server keeps serving


@pytest.mark.parametrize("fault", ["reset", "garbage"])
def test_a_fault_mid_stream_ends_the_stream_with_an_error(
    make_live: Callable[..., Live], mock: MockUpstream, fault: str
) -> None:
    mock.script = Script(chunks=6, fault=fault, fault_after=3)
    live = make_live(models=upstream_models(mock.url))
    body = {"model": "up-chat", "messages": MESSAGES, "stream": True}
    with httpx.Client(
        base_url=live.base_url, headers={"authorization": f"Bearer {live.key}"}, timeout=20
    ) as http:
        response = http.post("/chat/completions", json=body)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])
    assert set(error["error"]) == {"message", "type", "param", "code"}
    contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
    assert [c for c in contents if c] == ["w0", " w1", " w2"]
    (row,) = upstream_rows(live)
    assert row["status"] == "failed" and row["exact"] is False
    assert row["output_tokens"] == 3  # what reached the client, estimated one token per chunk


def test_keys_and_budgets_apply_to_upstream_models(
    make_live: Callable[..., Live], mock: MockUpstream, sdk: Any
) -> None:
    live = make_live(models=upstream_models(mock.url))
    scoped = live.new_key("embed only", allowed_models=["fake-embed"])
    with pytest.raises(openai.NotFoundError):
        sdk(live, scoped).chat.completions.create(model="up-chat", messages=MESSAGES)
    broke = live.new_key(
        "broke", limits=KeyLimits(budget_unit="tokens", budget_amount=10, budget_period="day")
    )
    with pytest.raises(openai.RateLimitError) as caught:
        sdk(live, broke).chat.completions.create(model="up-chat", messages=MESSAGES, max_tokens=50)
    assert caught.value.code == "insufficient_quota"
    assert mock.requests == []


def test_embeddings_through_an_upstream(make_live: Callable[..., Live], mock: MockUpstream, sdk: Any) -> None:
    live = make_live(models=upstream_models(mock.url))
    result = sdk(live, live.key).embeddings.create(
        model="up-embed", input=["a", "b"], encoding_format="float"
    )
    assert [d.embedding for d in result.data] == [[0.6, 0.8], [0.6, 0.8]]
    assert result.usage.prompt_tokens == 6
    assert mock.requests[-1]["model"] == "e"
    assert "input_type" not in mock.requests[-1] and "dimensions" not in mock.requests[-1]
    # The upstream's own model decides what an input type or a size means: they pass through as sent.
    sdk(live, live.key).embeddings.create(
        model="up-embed", input="a", dimensions=2, extra_body={"input_type": "query"}
    )
    assert (mock.requests[-1]["input_type"], mock.requests[-1]["dimensions"]) == ("query", 2)


def test_a_stalled_upstream_ends_the_stream_with_an_error(
    make_live: Callable[..., Live], mock: MockUpstream
) -> None:
    mock.script = Script(chunks=6, fault="stall", fault_after=2)
    live = make_live(models=upstream_models(mock.url), upstream_timeout_s=1.0)
    body = {"model": "up-chat", "messages": MESSAGES, "stream": True}
    with httpx.Client(
        base_url=live.base_url, headers={"authorization": f"Bearer {live.key}"}, timeout=20
    ) as http:
        response = http.post("/chat/completions", json=body)
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "upstream_error"
        assert http.get("/models").status_code == 200  # and the server keeps serving
    (row,) = upstream_rows(live)
    assert row["status"] == "failed" and row["output_tokens"] == 2

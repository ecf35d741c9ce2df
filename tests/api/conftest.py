"""Helpers for the API tests: clients for a live server, server-sent events, the ledger, error envelopes.

Every test here talks to a real server on loopback (``live`` from tests/conftest.py, or ``real_live``
with the embedded models) through the official ``openai`` SDK or plain httpx.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from server.config import ModelConfig, SamplingPreset, default_models, load_settings
from server.metering.ledger import ledger_rows
from server.runner import ServerThread
from server.services import Services
from tests.conftest import FAKE_CHAT, FAKE_EMBED, Live
from tests.spec import validate
from tests.support.templates import QWEN3, SETUP_HINT

CHAT = "fake-chat"
EMBED = "fake-embed"
REAL_CHAT = "smollm2-135m-instruct"
REAL_EMBED = "all-minilm-l6-v2"
TOOL_CHAT = "smol-qwen3"
"""The embedded SmolLM2 rendered by Qwen3's chat template, which renders tools (``templated_live``)."""
THINKING_CHAT = "smol-qwen3-thinking"
"""The same as a reasoning model: Qwen3's template switches its thinking."""


def sdk(live: Live, key: str | None = None, **options: Any) -> openai.OpenAI:
    """The official SDK pointed at ``live``; no retries, so every failure surfaces."""
    options.setdefault("max_retries", 0)
    options.setdefault("timeout", 60)
    return openai.OpenAI(base_url=live.base_url, api_key=key or live.key, **options)


def http(live: Live, key: str | None = None, **options: Any) -> httpx.Client:
    """Plain HTTP with the key in the Authorization header (``key=""`` sends none)."""
    token = live.key if key is None else key
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    options.setdefault("timeout", 60)
    return httpx.Client(base_url=live.url, headers=headers, **options)


@pytest.fixture
def client(live: Live) -> Iterator[openai.OpenAI]:
    with sdk(live) as c:
        yield c


@pytest.fixture
def api(live: Live) -> Iterator[httpx.Client]:
    with http(live) as c:
        yield c


@pytest.fixture(scope="session")
def templated_live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The embedded SmolLM2 with Qwen3's real chat template (tests/support/templates.py), loaded once:
    as ``TOOL_CHAT`` and as the reasoning model ``THINKING_CHAT``."""
    smol = default_models()[0]
    if not smol.source:
        pytest.skip("the embedded chat model's package is not installed")
    assert QWEN3.is_file(), f"{SETUP_HINT}: no {QWEN3}"
    common = {"chat_template": str(QWEN3), "threads": 1, "parallel": 2, "context_length": 2048}
    greedy = SamplingPreset(temperature=0.0)  # examples that set no temperature get the same answer each run
    models = (
        smol.model_copy(update={"name": TOOL_CHAT, "sampling_direct": greedy, **common}),
        smol.model_copy(update={"name": THINKING_CHAT, "reasoning": True, **common}),
    )
    data = tmp_path_factory.mktemp("templated-data")
    services = Services.open(load_settings(environ={"AISP_DATA_DIR": str(data)}, port=0, models=models))
    assert services.models.wait_loaded(300), "the templated models did not load in time"
    failed = [s for s in services.models.statuses() if s.state != "loaded"]
    assert not failed, f"the templated models failed to load: {failed}"
    thread = ServerThread(services)
    thread.start()
    key, _ = services.keys.create("templated")
    yield Live(thread, services, key)
    thread.stop()
    services.close()


def reasoning_models(**options: str) -> tuple[ModelConfig, ...]:
    """The fake chat model as a reasoning (Qwen3-style) model that thinks first."""
    source = ",".join(f"{k}={v}" for k, v in {"think": "1", **options}.items())
    return (FAKE_CHAT.model_copy(update={"source": source, "reasoning": True}), FAKE_EMBED)


def messages(text: str = "hello there world") -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


# -- server-sent events -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One server-sent event: its ``event:`` name (if any) and its raw ``data:``."""

    name: str | None
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def parse_sse(text: str) -> list[Event]:
    """Split an event stream into events, checking the framing as a strict client would."""
    events: list[Event] = []
    assert text.endswith("\n\n"), f"the stream does not end with a blank line: {text[-80:]!r}"
    for block in text.split("\n\n")[:-1]:
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            field, sep, value = line.partition(":")
            assert sep, f"not a field line: {line!r}"
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            else:
                raise AssertionError(f"unexpected SSE field {field!r}")
        assert data, f"an event without data: {block!r}"
        events.append(Event(name, "\n".join(data)))
    return events


def chat_stream(api: httpx.Client, **body: Any) -> tuple[list[dict[str, Any]], list[Event]]:
    """POST a streamed chat completion; the JSON chunks (each checked against the spec) and raw events."""
    with api.stream("POST", "/v1/chat/completions", json={"stream": True, **body}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    assert events[-1].data == "[DONE]", events[-1]
    assert all(e.name is None for e in events), "chat completion events carry no event names"
    assert sum(e.data == "[DONE]" for e in events) == 1
    chunks = [e.json for e in events[:-1]]
    return chunks, events


# -- errors -------------------------------------------------------------------------------------


def assert_error(
    response: httpx.Response,
    status: int,
    *,
    code: str | None = None,
    param: str | None = None,
    type: str = "invalid_request_error",  # noqa: A002 - the envelope's own word
    message: str | None = None,
) -> dict[str, Any]:
    """The OpenAI error envelope with all four keys, checked against the spec; returns ``error``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    validate("ErrorResponse", body)
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == type, error
    assert error["code"] == code, error
    assert error["param"] == param, error
    if message is not None:
        assert message.lower() in error["message"].lower(), error["message"]
    return error  # type: ignore[no-any-return]


# -- the ledger ---------------------------------------------------------------------------------


def ledger(live: Live) -> list[dict[str, Any]]:
    """Every ledger row, once everything queued so far is committed."""
    live.services.ledger.flush()
    return list(ledger_rows(live.services.store))


def ledger_row(live: Live, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The row of one request; rows of abandoned requests are written without waiting, so poll."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in ledger(live) if r["request_id"] == request_id]
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert len(rows) == 1, f"expected one ledger row for {request_id}, found {len(rows)}"
    return rows[0]


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)

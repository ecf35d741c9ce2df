"""The real embedded chat model (SmolLM2-135M on llama.cpp) behind the API: grammar-constrained JSON,
seeds, stop sequences, n, context limits, streaming, concurrency, and stopping on a disconnect.

Answers are kept short (max_tokens <= 32) so the whole module stays fast on two cores.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest

from tests.api.conftest import (
    REAL_CHAT,
    REAL_EMBED,
    assert_error,
    chat_stream,
    http,
    ledger_row,
    messages,
    sdk,
)
from tests.conftest import Live
from tests.spec import validate

PRICE_IN, PRICE_OUT = 0.5, 1.5  # real_live's prices per million tokens
STORY = messages("Tell me a story.")
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 100},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}


@pytest.fixture
def api(real_live: Live) -> Iterator[httpx.Client]:
    with http(real_live, timeout=120) as client:
        yield client


def complete(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/chat/completions", json={"model": REAL_CHAT, **body})
    assert response.status_code == 200, response.text
    value: dict[str, Any] = response.json()
    validate("CreateChatCompletionResponse", value)
    return value


def text(completion: dict[str, Any], index: int = 0) -> str:
    content: str = completion["choices"][index]["message"]["content"]
    return content


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_json_schema_output_parses_and_matches(api: httpx.Client, temperature: float) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": ANSWER_SCHEMA, "strict": True}}
    done = complete(
        api,
        messages=messages("Is the sky blue? Answer in JSON."),
        max_tokens=32,
        temperature=temperature,
        response_format=fmt,
    )
    assert done["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(text(done)), ANSWER_SCHEMA)


def test_json_schema_through_the_responses_api(real_live: Live) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 16}},
        "required": ["city"],
    }
    response = sdk(real_live).responses.create(
        model=REAL_CHAT,
        input="Name a big city, in JSON.",
        max_output_tokens=32,
        text={"format": {"type": "json_schema", "name": "place", "schema": schema}},
    )
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": 5},
        {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}},
        {"$ref": "https://example.com/schema.json"},  # never fetched
    ],
    ids=["bad-type", "bad-ref", "remote-ref"],
)
def test_schemas_the_grammar_engine_cannot_use_are_400(api: httpx.Client, schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    for stream in (False, True):
        response = api.post(
            "/v1/chat/completions",
            json={
                "model": REAL_CHAT,
                "messages": STORY,
                "max_tokens": 4,
                "response_format": fmt,
                "stream": stream,
            },
        )
        assert_error(response, 400, param="response_format", message="schema")
    response = api.post(
        "/v1/responses",
        json={
            "model": REAL_CHAT,
            "input": "hi",
            "text": {"format": {"type": "json_schema", "name": "x", "schema": schema}},
        },
    )
    assert_error(response, 400, param="text.format", message="schema")
    # The server (and the model, in this same process) survived it.
    assert complete(api, messages=STORY, max_tokens=2)["usage"]["completion_tokens"] <= 2


def test_json_object_mode_starts_an_object(api: httpx.Client) -> None:
    done = complete(
        api,
        messages=messages("Describe a cat in JSON."),
        max_tokens=32,
        temperature=0,
        response_format={"type": "json_object"},
    )
    content = text(done)
    assert content.lstrip().startswith("{")
    if done["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)


def test_a_seed_makes_sampling_reproducible(api: httpx.Client) -> None:
    seeded = [
        text(complete(api, messages=STORY, max_tokens=12, temperature=1.0, seed=1234)) for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
    assert seeded[0]
    # A seed is for its own request only: the requests after it sample afresh.
    unseeded = {text(complete(api, messages=STORY, max_tokens=12, temperature=1.0)) for _ in range(3)}
    assert unseeded != {seeded[0]}
    assert len(unseeded) > 1


def test_n_gives_distinct_reproducible_choices(api: httpx.Client) -> None:
    first = complete(api, messages=STORY, max_tokens=10, temperature=1.0, n=2, seed=5)
    assert [c["index"] for c in first["choices"]] == [0, 1]
    assert text(first, 0) != text(first, 1), "each choice is its own sample"
    again = complete(api, messages=STORY, max_tokens=10, temperature=1.0, n=2, seed=5)
    assert [text(again, i) for i in (0, 1)] == [text(first, i) for i in (0, 1)]
    assert 2 <= first["usage"]["completion_tokens"] <= 20


def test_stop_sequences_cut_the_output(api: httpx.Client) -> None:
    full = text(complete(api, messages=STORY, max_tokens=16, temperature=0))
    words = full.split()
    assert len(words) >= 5, full
    stop = " " + words[3]
    cut = complete(api, messages=STORY, max_tokens=16, temperature=0, stop=[stop, "never-appears"])
    assert text(cut) == full[: full.index(stop)]
    assert cut["choices"][0]["finish_reason"] == "stop"
    chunks, _ = chat_stream(api, model=REAL_CHAT, messages=STORY, max_tokens=16, temperature=0, stop=stop)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == text(cut)


def test_logit_bias_steers_the_model(api: httpx.Client) -> None:
    # +100 on one token makes it the only choice: the answer is that token, over and over.
    forced = text(complete(api, messages=STORY, max_tokens=4, temperature=0, logit_bias={"28": 100}))
    unit = forced[: len(forced) // 4]
    assert forced and forced == unit * 4
    assert text(complete(api, messages=STORY, max_tokens=4, temperature=0)) != forced  # without the bias


def test_max_tokens_beyond_the_context_is_refused(api: httpx.Client) -> None:
    response = api.post(
        "/v1/chat/completions", json={"model": REAL_CHAT, "messages": STORY, "max_tokens": 8192}
    )
    error = assert_error(response, 400, param="max_tokens", code="context_length_exceeded")
    assert "8192" in error["message"]
    response = api.post("/v1/responses", json={"model": REAL_CHAT, "input": "hi", "max_output_tokens": 9000})
    assert_error(response, 400, param="max_output_tokens", code="context_length_exceeded")


def test_streaming_matches_the_whole_answer(api: httpx.Client, real_live: Live) -> None:
    whole = complete(api, messages=messages("Name three colours."), max_tokens=20, temperature=0)
    chunks, _ = chat_stream(
        api,
        model=REAL_CHAT,
        messages=messages("Name three colours."),
        max_tokens=20,
        temperature=0,
        stream_options={"include_usage": True},
    )
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == text(whole)
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == whole["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == whole["usage"]["completion_tokens"] <= 20
    # The same prompt again: its prefix is still in llama.cpp's cache, and is reported as cached.
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
    real_live.services.ledger.flush()


def test_usage_is_billed_at_the_models_price(api: httpx.Client, real_live: Live) -> None:
    response = api.post("/v1/chat/completions", json={"model": REAL_CHAT, "messages": STORY, "max_tokens": 8})
    usage = response.json()["usage"]
    row = ledger_row(real_live, response.headers["x-request-id"])
    assert (row["input_tokens"], row["output_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert row["cached_tokens"] == usage["prompt_tokens_details"]["cached_tokens"]
    expected = usage["prompt_tokens"] * PRICE_IN / 1e6 + usage["completion_tokens"] * PRICE_OUT / 1e6
    assert row["cost"] == pytest.approx(expected, rel=1e-12)
    assert row["ttft_ms"] is not None and row["ttft_ms"] <= row["latency_ms"]


def test_concurrent_requests_complete_and_other_endpoints_never_stall(real_live: Live) -> None:
    prompts = ["Name a fruit.", "Name a river.", "Name a planet."]

    def chat(prompt: str) -> dict[str, Any]:
        with http(real_live, timeout=120) as api:
            return complete(api, messages=messages(prompt), max_tokens=24, temperature=0.7)

    def generating() -> tuple[int, int]:
        queue = real_live.services.models.status(REAL_CHAT).queue
        assert queue is not None
        return queue.running, queue.served

    answered_mid_generation: list[tuple[str, float]] = []
    with ThreadPoolExecutor(len(prompts)) as pool, http(real_live) as api:
        futures = [pool.submit(chat, p) for p in prompts]
        probes: list[tuple[str, Callable[[], httpx.Response]]] = [
            ("models", lambda: api.get("/v1/models")),
            (
                "embeddings",
                lambda: api.post("/v1/embeddings", json={"model": REAL_EMBED, "input": "still here"}),
            ),
        ]
        turn = 0
        while not all(f.done() for f in futures):
            before = generating()
            if before[0]:
                name, probe = probes[turn % len(probes)]
                started = time.monotonic()
                assert probe().status_code == 200
                elapsed = time.monotonic() - started
                if generating() == before:  # the same generation ran from before the request to after it
                    answered_mid_generation.append((name, elapsed))
                    turn += 1
            time.sleep(0.01)
        results = [f.result() for f in futures]
    answered = {name for name, _ in answered_mid_generation}
    assert answered == {"models", "embeddings"}, "other endpoints answered while the chat model generated"
    slowest = max(elapsed for _, elapsed in answered_mid_generation)
    assert slowest < 2.0, f"an endpoint stalled behind generation: {slowest:.2f} s"
    for result in results:
        assert 1 <= result["usage"]["completion_tokens"] <= 24
        assert text(result).strip()


def test_a_disconnect_stops_the_real_engine(real_live: Live) -> None:
    body = {"model": REAL_CHAT, "messages": STORY, "max_tokens": 4000, "temperature": 1.0, "stream": True}
    received = 0
    with (
        http(real_live, timeout=120) as api,
        api.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        request_id = response.headers["x-request-id"]
        for line in response.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                received += 1
                if received == 3:
                    break
    row = ledger_row(real_live, request_id, timeout=10)
    queue = real_live.services.models.status(REAL_CHAT).queue
    assert queue is not None and queue.running == 0, "generation stopped when the client left"
    assert (row["status"], row["client_disconnected"]) == ("disconnected", True)
    assert 3 <= row["output_tokens"] < 200
    assert row["cost"] == pytest.approx(
        row["input_tokens"] * PRICE_IN / 1e6 + row["output_tokens"] * PRICE_OUT / 1e6, rel=1e-12
    )


def test_responses_continue_a_conversation_on_the_real_model(real_live: Live) -> None:
    client = sdk(real_live)
    first = client.responses.create(
        model=REAL_CHAT,
        input="My name is Ada.",
        instructions="Be brief.",
        max_output_tokens=16,
        temperature=0,
    )
    assert first.output_text.strip()
    second = client.responses.create(
        model=REAL_CHAT,
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=16,
        temperature=0,
    )
    assert first.usage is not None and second.usage is not None
    # The second prompt holds the first turn and its answer.
    assert second.usage.input_tokens > first.usage.output_tokens + 5
    events = list(
        client.responses.create(model=REAL_CHAT, input="Say hi.", max_output_tokens=16, stream=True)
    )
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    with http(real_live) as api:
        stored = api.get(f"/v1/responses/{second.id}").json()
    validate("Response", stored)
    assert stored["previous_response_id"] == first.id

"""Streamed chat completions: the order and shape of the chunks, usage, reasoning and errors mid-stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import CHAT, chat_stream, http, ledger_row, messages, parse_sse, reasoning_models, sdk
from tests.conftest import Live, fake_models
from tests.spec import validate


def content_of(chunks: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        c["delta"].get("content") or "" for chunk in chunks for c in chunk["choices"] if c["index"] == index
    )


def test_chunks_come_in_order_with_usage_last(api: httpx.Client) -> None:
    chunks, events = chat_stream(
        api, model=CHAT, messages=messages("one two three"), stream_options={"include_usage": True}
    )
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    first, *middle, finish, usage = chunks
    # Every chunk belongs to the same completion.
    assert len({(c["id"], c["created"], c["model"], c["object"]) for c in chunks}) == 1
    assert first["id"].startswith("chatcmpl-")
    assert first["object"] == "chat.completion.chunk"
    # The first chunk announces the assistant's role; then content, one chunk per token.
    assert first["choices"] == [
        {
            "index": 0,
            "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    assert [c["choices"][0]["delta"] for c in middle] == [
        {"content": "one"},
        {"content": " two"},
        {"content": " three"},
    ]
    assert all(c["choices"][0]["finish_reason"] is None for c in middle)
    # Then the finish reason with an empty delta.
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    # With include_usage every chunk carries usage: null, and a last chunk with no choices carries the usage.
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 5
    assert usage["usage"]["completion_tokens"] == 3
    assert usage["usage"]["total_tokens"] == 8
    assert [e.data for e in events[-1:]] == ["[DONE]"]


def test_without_include_usage_there_is_no_usage_chunk(api: httpx.Client) -> None:
    chunks, _ = chat_stream(api, model=CHAT, messages=messages("one two"))
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    assert content_of(chunks) == "one two"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_streamed_and_whole_answers_agree(api: httpx.Client) -> None:
    body = {"model": CHAT, "messages": messages("a b c d e f"), "max_tokens": 4, "stop": [" d"]}
    whole = api.post("/v1/chat/completions", json=body).json()
    chunks, _ = chat_stream(api, **body, stream_options={"include_usage": True})
    assert content_of(chunks) == whole["choices"][0]["message"]["content"] == "a b c"
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == whole["usage"]


def test_the_token_limit_ends_a_stream_with_length(api: httpx.Client) -> None:
    chunks, _ = chat_stream(api, model=CHAT, messages=messages("a b c d e f"), max_tokens=2)
    assert content_of(chunks) == "a b"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_n_choices_stream_each_with_its_index(api: httpx.Client) -> None:
    chunks, _ = chat_stream(
        api, model=CHAT, messages=messages("x y"), n=2, stream_options={"include_usage": True}
    )
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    choices = [c for chunk in chunks for c in chunk["choices"]]
    assert {c["index"] for c in choices} == {0, 1}
    for index in (0, 1):
        mine = [c for c in choices if c["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == ["stop"]
        assert mine[-1]["finish_reason"] == "stop"
    assert content_of(chunks, 0) == content_of(chunks, 1) == "x y"
    assert chunks[-1]["usage"]["completion_tokens"] == 4


def test_the_sdk_streams_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=CHAT,
        messages=messages("streaming works fine"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streaming works fine"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_reasoning_streams_before_the_answer(make_live: Callable[..., Live]) -> None:
    live = make_live(models=reasoning_models())
    with http(live) as api:
        chunks, _ = chat_stream(
            api, model=CHAT, messages=messages("the answer"), stream_options={"include_usage": True}
        )
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    kinds = [k for d in deltas for k in ("reasoning_content", "content") if d.get(k)]
    assert kinds == sorted(kinds, key=lambda k: k == "content"), "all reasoning comes before the answer"
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think."
    assert "".join(d.get("content") or "" for d in deltas) == "the answer"
    assert not any("<think>" in (d.get("content") or "") + d.get("reasoning_content", "") for d in deltas)
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 5
    assert usage["completion_tokens"] == 7


def test_an_engine_failure_mid_stream_is_an_error_event_then_done(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(fail_at="2"))
    with (
        http(live) as api,
        api.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": CHAT, "messages": messages("a b c d"), "stream": True},
        ) as response,
    ):
        assert response.status_code == 200  # the headers were sent before the failure
        request_id = response.headers["x-request-id"]
        events = parse_sse(response.read().decode())
    assert events[-1].data == "[DONE]"
    *chunks, error_event, _ = events
    error = error_event.json
    validate("ErrorResponse", error)
    assert set(error["error"]) == {"message", "type", "param", "code"}
    assert error["error"]["type"] == "server_error"
    assert error["error"]["code"] == "engine_error"
    assert content_of([c.json for c in chunks]) == "a b"
    # What was generated before the failure is billed; the error text is not.
    row = ledger_row(live, request_id)
    assert (row["status"], row["output_tokens"], row["client_disconnected"]) == ("failed", 2, False)
    # The official SDK turns the error event into an exception.
    with pytest.raises(openai.APIError, match="failed"):
        list(sdk(live).chat.completions.create(model=CHAT, messages=messages("a b c"), stream=True))
    # And the server keeps serving.
    with http(live) as api:
        assert api.get("/v1/models").status_code == 200


def test_a_failure_before_the_first_token_costs_nothing(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(fail_at="0"))
    with http(live) as api:
        response = api.post("/v1/chat/completions", json={"model": CHAT, "messages": messages("a b")})
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "engine_error")
    row = ledger_row(live, response.headers["x-request-id"])
    assert (row["status"], row["output_tokens"], row["cost"], row["http_status"]) == ("failed", 0, 0.0, 500)

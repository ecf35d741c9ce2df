"""``POST /v1/chat/completions`` without streaming, on the deterministic fake model.

The fake answers with the words of the last user message, one token per word; its prompt is one token
per role marker and per word, so token counts are known exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import CHAT, http, messages, reasoning_models, sdk
from tests.conftest import Live, fake_models
from tests.spec import validate


def prompt_tokens(turns: list[tuple[str, str]]) -> int:
    """What the fake's template makes of ``turns``: a marker per turn, a token per word, one to answer."""
    return sum(1 + len(text.split()) for _, text in turns) + 1


def test_a_completion_conforms_to_the_spec_and_counts_tokens(api: httpx.Client) -> None:
    response = api.post(
        "/v1/chat/completions", json={"model": CHAT, "messages": messages("hello there world")}
    )
    assert response.status_code == 200
    body = response.json()
    validate("CreateChatCompletionResponse", body)
    assert body["object"] == "chat.completion"
    assert body["model"] == CHAT
    assert body["id"] == "chatcmpl-" + response.headers["x-request-id"].removeprefix("req_")
    [choice] = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "hello there world"
    assert "reasoning_content" not in choice["message"]  # not a reasoning model
    usage = body["usage"]
    assert usage["prompt_tokens"] == prompt_tokens([("user", "hello there world")])
    assert usage["completion_tokens"] == 3
    assert usage["total_tokens"] == usage["prompt_tokens"] + 3
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


def test_every_role_and_text_parts_reach_the_model(client: openai.OpenAI) -> None:
    turns: list[dict[str, Any]] = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in English."}]},
        {"role": "user", "content": "What is six times seven?"},
        {"role": "assistant", "content": "Let me check."},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "assistant", "content": [{"type": "text", "text": "It is 42."}], "name": "calc"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "alpha"}, {"type": "text", "text": "beta gamma"}],
        },
    ]
    completion = client.chat.completions.create(model=CHAT, messages=turns)  # type: ignore[arg-type]
    # Text parts are separate pieces of text: they must not run together into one word.
    assert completion.choices[0].message.content == "alpha beta gamma"
    texts = [
        ("system", "You are terse."),
        ("developer", "Answer in English."),
        ("user", "What is six times seven?"),
        ("assistant", "Let me check."),
        ("tool", "42"),
        ("assistant", "It is 42."),
        ("user", "alpha beta gamma"),
    ]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt_tokens(texts)


def test_every_sampling_parameter_is_accepted(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=CHAT,
        messages=messages("one two three four"),
        temperature=0.7,
        top_p=0.9,
        max_tokens=64,
        stop=["zzz"],
        n=1,
        seed=1234,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"17": -100},
        response_format={"type": "text"},
        user="user-42",
    )
    assert completion.choices[0].message.content == "one two three four"
    for fmt in (
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    ):
        done = client.chat.completions.create(model=CHAT, messages=messages("x"), response_format=fmt)  # type: ignore[call-overload]
        assert done.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_the_token_limit_cuts_the_answer(api: httpx.Client, param: str) -> None:
    body = {"model": CHAT, "messages": messages("one two three four five"), param: 2}
    response = api.post("/v1/chat/completions", json=body).json()
    validate("CreateChatCompletionResponse", response)
    assert response["choices"][0]["message"]["content"] == "one two"
    assert response["choices"][0]["finish_reason"] == "length"
    assert response["usage"]["completion_tokens"] == 2


def test_max_completion_tokens_wins_over_max_tokens(api: httpx.Client) -> None:
    body = {"model": CHAT, "messages": messages("a b c d e"), "max_tokens": 4, "max_completion_tokens": 1}
    assert api.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] == "a"


@pytest.mark.parametrize(
    ("stop", "content", "generated"),
    [
        ("three", "one two ", 3),  # the stop sequence itself is never sent
        (["nothing", "o th"], "one tw", 3),  # a stop spanning two tokens
        (["four"], "one two three", 3),  # a stop that never occurs
    ],
)
def test_stop_sequences_cut_the_output(
    api: httpx.Client, stop: str | list[str], content: str, generated: int
) -> None:
    body = {"model": CHAT, "messages": messages("one two three"), "stop": stop}
    response = api.post("/v1/chat/completions", json=body).json()
    assert response["choices"][0]["message"]["content"] == content
    assert response["choices"][0]["finish_reason"] == "stop"
    assert response["usage"]["completion_tokens"] == generated


def test_n_gives_that_many_choices_in_order(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=CHAT, messages=messages("red green"), n=3, max_tokens=5)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert [c.message.content for c in completion.choices] == ["red green"] * 3
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    validate("CreateChatCompletionResponse", completion.model_dump(mode="json", exclude_unset=True))


def test_reasoning_is_returned_apart_and_counted(make_live: Callable[..., Live]) -> None:
    live = make_live(models=reasoning_models())
    completion = sdk(live).chat.completions.create(model=CHAT, messages=messages("the answer"))
    message = completion.choices[0].message
    assert message.content == "the answer"
    assert message.reasoning_content == "Let me think."  # type: ignore[attr-defined]
    assert completion.usage is not None
    details = completion.usage.completion_tokens_details
    assert details is not None
    # <think> Let me think. </think> are five tokens of thought; "the answer" two of content.
    assert details.reasoning_tokens == 5
    assert completion.usage.completion_tokens == 7
    with http(live) as api:
        validate(
            "CreateChatCompletionResponse",
            api.post("/v1/chat/completions", json={"model": CHAT, "messages": messages()}).json(),
        )


def test_reasoning_cut_short_by_the_token_limit(make_live: Callable[..., Live]) -> None:
    live = make_live(models=reasoning_models())
    completion = sdk(live).chat.completions.create(model=CHAT, messages=messages("the answer"), max_tokens=3)
    choice = completion.choices[0]
    assert choice.finish_reason == "length"
    assert choice.message.content == ""
    assert choice.message.reasoning_content == "Let me"  # type: ignore[attr-defined]
    assert completion.usage is not None and completion.usage.completion_tokens_details is not None
    assert completion.usage.completion_tokens_details.reasoning_tokens == 3


def test_a_fixed_reply_model_and_an_empty_message(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(reply="Hi_there"))
    completion = sdk(live).chat.completions.create(model=CHAT, messages=[{"role": "user", "content": ""}])
    assert completion.choices[0].message.content == "Hi there"

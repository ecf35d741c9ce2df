"""Tool calls in chat completions with the fake engine, whose ``call=lookup`` answers with a call in the markup
tool-calling models write: what the calls, their stream chunks and the finish reason look like, the tool-result
turn, ``tool_choice: none``, and thinking switched by ``reasoning_effort``. tests/api/test_tool_templates.py
runs the same through a real template and real generation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.chat import (
    ChatCompletionMessageParam,
    ChatCompletionToolChoiceOptionParam,
    ChatCompletionToolParam,
)

from tests.api.conftest import CHAT, chat_stream, http, messages, reasoning_models, sdk
from tests.conftest import Live, fake_models
from tests.spec import validate

LOOKUP: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up",
        "parameters": {"type": "object", "properties": {"words": {"type": "integer"}}, "required": ["words"]},
    },
}


@pytest.fixture
def calling(make_live: Callable[..., Live]) -> Live:
    return make_live(models=fake_models(call="lookup"))


def test_a_call_comes_back_as_tool_calls_with_its_own_finish_reason(calling: Live) -> None:
    with http(calling) as api:
        body = {"model": CHAT, "messages": messages("one two three"), "tools": [LOOKUP]}
        response = api.post("/v1/chat/completions", json=body).json()
    validate("CreateChatCompletionResponse", response)
    (choice,) = response["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "lookup", "arguments": json.dumps({"words": 3})}


def test_streamed_calls_are_chunks_the_sdk_assembles(calling: Live) -> None:
    with http(calling) as api:
        chunks, _ = chat_stream(api, model=CHAT, messages=messages("a b"), tools=[LOOKUP])
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "lookup")]
    assert not any(d.get("content") for d in deltas), "the markup never reaches content"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

    with (
        sdk(calling) as client,
        client.chat.completions.stream(model=CHAT, messages=messages("a b"), tools=[LOOKUP]) as stream,
    ):
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in kinds
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"words": 2}


def test_the_tool_result_turn_is_answered_in_words(calling: Live) -> None:
    history: list[ChatCompletionMessageParam] = messages("weather in Paris")
    with sdk(calling) as client:
        first = client.chat.completions.create(model=CHAT, messages=history, tools=[LOOKUP])
        (call,) = first.choices[0].message.tool_calls or []
        history += [
            first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny and warm"},
        ]
        second = client.chat.completions.create(model=CHAT, messages=history, tools=[LOOKUP])
    choice = second.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert choice.message.content == "weather in Paris sunny and warm"


def test_tool_choice_none_is_answered_in_words(calling: Live) -> None:
    with sdk(calling) as client:
        done = client.chat.completions.create(
            model=CHAT, messages=messages("just words"), tools=[LOOKUP], tool_choice="none"
        )
    assert done.choices[0].message.content == "just words"
    assert done.choices[0].finish_reason == "stop" and not done.choices[0].message.tool_calls


def test_a_thought_before_a_call_goes_to_reasoning(make_live: Callable[..., Live]) -> None:
    live = make_live(models=reasoning_models(call="lookup"))
    with http(live) as api:
        body = {"model": CHAT, "messages": messages("x y"), "tools": [LOOKUP]}
        message = api.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
        chunks, _ = chat_stream(api, **body)
    assert message["reasoning_content"] == "Let me think."
    assert message["content"] is None and len(message["tool_calls"]) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think."
    assert not any(d.get("content") for d in deltas)
    assert sum(len(d.get("tool_calls", [])) for d in deltas) == 1


@pytest.mark.parametrize(
    ("effort", "thinks"), [("none", False), ("minimal", False), ("low", True), (None, True)]
)
def test_reasoning_effort_switches_thinking_in_the_template(
    make_live: Callable[..., Live], effort: str | None, thinks: bool
) -> None:
    live = make_live(models=reasoning_models())
    extra: dict[str, Any] = {} if effort is None else {"reasoning_effort": effort}
    with sdk(live) as client:
        done = client.chat.completions.create(model=CHAT, messages=messages("the answer"), **extra)
    message = done.choices[0].message
    assert message.content == "the answer"
    assert bool(message.reasoning_content) is thinks
    # The template writes an empty thought when thinking is off: one more prompt token here.
    assert done.usage is not None and done.usage.prompt_tokens == (4 if thinks else 5)


def test_calls_under_tool_choice_required_and_a_named_function(calling: Live) -> None:
    other: ChatCompletionToolParam = {"type": "function", "function": {"name": "other"}}
    with sdk(calling) as client:
        choices: list[ChatCompletionToolChoiceOptionParam] = [
            "required",
            {"type": "function", "function": {"name": "lookup"}},
        ]
        for choice in choices:
            done = client.chat.completions.create(
                model=CHAT,
                messages=messages("one"),
                tools=[other, LOOKUP],
                tool_choice=choice,
                parallel_tool_calls=False,
            )
            calls = done.choices[0].message.tool_calls or []
            assert [c.function.name for c in calls if c.type == "function"] == ["lookup"]


def test_n_choices_each_carry_their_calls(calling: Live) -> None:
    with sdk(calling) as client:
        done = client.chat.completions.create(model=CHAT, messages=messages("a"), tools=[LOOKUP], n=2)
    ids = [c.message.tool_calls[0].id for c in done.choices if c.message.tool_calls]
    assert len(ids) == 2 and len(set(ids)) == 2, "every call has an id of its own"


def test_tools_the_sdk_types_are_accepted_as_sent(calling: Live) -> None:
    strict: ChatCompletionToolParam = {
        "type": "function",
        "function": {**LOOKUP["function"], "strict": True},
    }
    with sdk(calling) as client:
        done = client.chat.completions.create(model=CHAT, messages=messages("a"), tools=[strict])
    assert done.choices[0].finish_reason == "tool_calls"
    assert isinstance(done, openai.types.chat.ChatCompletion)


def test_a_call_cut_by_the_token_limit_is_returned_as_far_as_it_came(calling: Live) -> None:
    """As OpenAI returns a call cut by max_tokens: finish_reason length, never the markup as content."""
    with sdk(calling) as client:
        for max_tokens, calls in ((1, 0), (2, 1)):
            body: dict[str, Any] = {"model": CHAT, "messages": messages("a b"), "tools": [LOOKUP]}
            done = client.chat.completions.create(**body, max_tokens=max_tokens)
            choice = done.choices[0]
            assert choice.finish_reason == "length"
            assert not choice.message.content
            assert len(choice.message.tool_calls or []) == calls
            chunks = list(client.chat.completions.create(**body, max_tokens=max_tokens, stream=True))
            deltas = [c.choices[0].delta for c in chunks]
            assert not any(d.content for d in deltas)
            assert sum(len(d.tool_calls or []) for d in deltas) == calls
            assert chunks[-1].choices[0].finish_reason == "length"

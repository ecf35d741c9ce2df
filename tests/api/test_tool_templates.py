"""Tool calling through a real chat template and real generation: the embedded SmolLM2 rendered by Qwen3's
template (``templated_live``), called with the official SDK. Calls asked for with ``required`` or a named
function are enforced by a grammar built from the functions' schemas, so even this small model makes valid
ones; the template renders the tools, the calls in the history, the tools' results and the thinking switch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, ChatCompletionToolParam
from openai.types.responses import FunctionToolParam

from tests.api.conftest import REAL_CHAT, THINKING_CHAT, TOOL_CHAT, assert_error, http, messages, sdk
from tests.conftest import Live
from tests.spec import validate

pytestmark = pytest.mark.slow

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": WEATHER_SCHEMA,
    },
}
TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"timezone": {"type": "string", "maxLength": 40}},
    "required": ["timezone"],
    "additionalProperties": False,
}
TIME: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_time", "description": "The time in a timezone.", "parameters": TIME_SCHEMA},
}
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
QUESTION = messages("What is the weather in Paris?")


@pytest.fixture
def client(templated_live: Live) -> Iterator[openai.OpenAI]:
    with sdk(templated_live, timeout=120) as c:
        yield c


def calls_of(completion: ChatCompletion, *, check: bool = True) -> list[tuple[str, str]]:
    """The choice's calls as (name, arguments), each checked against its function's schema unless not
    ``check``; and no markup in ``content``."""
    message = completion.choices[0].message
    assert "<tool_call>" not in (message.content or ""), message.content
    found = []
    for call in message.tool_calls or []:
        assert call.type == "function" and call.id.startswith("call_")
        if check:
            jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
        found.append((call.function.name, call.function.arguments))
    return found


def test_required_gives_a_call_whose_arguments_validate(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model=TOOL_CHAT,
        messages=QUESTION,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=200,
        temperature=0,
    )
    validate("CreateChatCompletionResponse", done.model_dump(mode="json", exclude_unset=True))
    assert done.choices[0].finish_reason == "tool_calls"
    calls = calls_of(done)
    assert calls and all(name == "get_weather" for name, _ in calls)
    assert done.choices[0].message.content is None


def test_a_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model=TOOL_CHAT,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=120,
        temperature=0,
    )
    assert [name for name, _ in calls_of(done)] == ["get_time"]


def test_parallel_tool_calls_false_makes_one_call(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model=TOOL_CHAT,
        messages=messages("What is the weather in Paris, in Rome and in Oslo?"),
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
        temperature=0,
    )
    assert len(calls_of(done)) == 1


def test_the_sdk_assembles_streamed_calls(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=TOOL_CHAT,
        messages=QUESTION,
        tools=[WEATHER, TIME],
        tool_choice="required",
        max_tokens=200,
        temperature=0,
    ) as stream:
        done_events = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    calls = calls_of(final)
    assert calls and len(done_events) == len(calls)
    assert [(e.name, e.arguments) for e in done_events] == calls


def test_the_tool_result_turn_is_answered_with_text(client: openai.OpenAI) -> None:
    history: list[ChatCompletionMessageParam] = list(QUESTION)
    first = client.chat.completions.create(
        model=TOOL_CHAT,
        messages=history,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=120,
        temperature=0,
    )
    (call,) = first.choices[0].message.tool_calls or []
    history += [
        first.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {
            "role": "tool",
            "tool_call_id": call.id,
            "content": json.dumps({"temperature": 18, "sky": "cloudy"}),
        },
    ]
    answer = client.chat.completions.create(
        model=TOOL_CHAT, messages=history, tools=[WEATHER], max_tokens=60, temperature=0
    )
    choice = answer.choices[0]
    assert choice.finish_reason in ("stop", "length") and not choice.message.tool_calls
    assert choice.message.content and "<tool_call>" not in choice.message.content
    # The template rendered the call and its result: the prompt grew by both.
    assert answer.usage is not None and first.usage is not None
    assert answer.usage.prompt_tokens > first.usage.prompt_tokens + 20


def test_tool_choice_none_gives_text(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model=TOOL_CHAT, messages=QUESTION, tools=[WEATHER], tool_choice="none", max_tokens=30
    )
    assert not done.choices[0].message.tool_calls
    assert done.choices[0].finish_reason in ("stop", "length")
    assert done.choices[0].message.content and not calls_of(done)


def test_auto_never_leaks_markup(client: openai.OpenAI) -> None:
    for seed in range(3):
        done = client.chat.completions.create(
            model=TOOL_CHAT, messages=QUESTION, tools=[WEATHER, TIME], max_tokens=80, seed=seed
        )
        calls_of(done, check=False)  # under auto a call is not enforced: its arguments are as written
        finish = done.choices[0].finish_reason
        if finish != "length":  # a call cut short comes back as far as it came
            assert (finish == "tool_calls") is bool(done.choices[0].message.tool_calls)


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_effort_switches_the_templates_thinking(client: openai.OpenAI, stream: bool) -> None:
    used = {}
    for effort in ("none", "high"):
        body: dict[str, Any] = {
            "model": THINKING_CHAT,
            "messages": QUESTION,
            "tools": [WEATHER],
            "tool_choice": "required",
            "reasoning_effort": effort,
            "parallel_tool_calls": False,
            "max_tokens": 200,
            "temperature": 0,
        }
        if stream:
            with client.chat.completions.stream(**body, stream_options={"include_usage": True}) as events:
                done = events.get_final_completion()
        else:
            done = client.chat.completions.create(**body)
        assert calls_of(done)
        assert done.usage is not None
        used[effort] = done.usage.prompt_tokens
    # Thinking off, Qwen3's template writes an empty thought into the prompt (<think>\n\n</think>\n\n).
    assert used["none"] > used["high"]


def test_a_template_that_cannot_render_tools_refuses_them(real_live: Live) -> None:
    with http(real_live) as api:
        body = {"model": REAL_CHAT, "messages": QUESTION, "tools": [WEATHER]}
        response = api.post("/v1/chat/completions", json=body)
    assert_error(response, 400, param="tools", message=f"'{REAL_CHAT}' cannot call tools")
    with http(real_live) as api:  # offering none of them is fine
        body["tool_choice"] = "none"
        assert api.post("/v1/chat/completions", json={**body, "max_tokens": 4}).status_code == 200


# -- the Responses API ------------------------------------------------------------------------------

RESPONSE_WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city.",
    "parameters": WEATHER_SCHEMA,
    "strict": True,
}


def test_responses_call_a_function_and_continue_after_its_output(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=TOOL_CHAT,
        input="What is the weather in Paris?",
        tools=[RESPONSE_WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=120,
    )
    validate("Response", first.model_dump(mode="json", exclude_unset=True))
    (call,) = first.output
    assert call.type == "function_call" and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER_SCHEMA)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 18}'}
    second = client.responses.create(
        model=TOOL_CHAT,
        previous_response_id=first.id,
        input=[result],  # type: ignore[list-item]
        tools=[RESPONSE_WEATHER],
        max_output_tokens=60,
        temperature=0,
    )
    assert second.output[-1].type == "message" and second.output_text
    assert "<tool_call>" not in second.output_text
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the call and its output were replayed


def test_responses_stream_a_call(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model=TOOL_CHAT,
        input="What is the weather in Paris?",
        tools=[RESPONSE_WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=120,
    ) as stream:
        done = [e for e in stream if e.type == "response.function_call_arguments.done"]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert calls and len(done) == len(calls)
    for call in calls:
        assert call.parsed_arguments == json.loads(call.arguments)
        jsonschema.validate(call.parsed_arguments, WEATHER_SCHEMA)
    assert client.responses.retrieve(final.id).output[0].type == "function_call"

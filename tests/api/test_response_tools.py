"""Function tools in ``/v1/responses`` with the fake engine (``call=lookup`` answers with a call when the
function is offered, and in words once a tool has answered): ``function_call`` output items, their outputs
sent back through ``previous_response_id`` or in ``input``, stored chains that replay both, and the typed
stream events the SDK assembles. tests/api/test_tool_templates.py runs them through a real template."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import FunctionToolParam

from tests.api.conftest import CHAT, http, reasoning_models, sdk
from tests.api.test_responses import collapse, create, stream
from tests.conftest import Live, fake_models
from tests.spec import validate

LOOKUP: FunctionToolParam = {
    "type": "function",
    "name": "lookup",
    "description": "Look a word up",
    "parameters": {
        "type": "object",
        "properties": {"words": {"type": "integer"}},
        "required": ["words"],
        "additionalProperties": False,
    },
    "strict": True,
}
CALL_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
def calling(make_live: Callable[..., Live]) -> Live:
    return make_live(models=fake_models(call="lookup"))


@pytest.fixture
def api(calling: Live) -> Iterator[httpx.Client]:
    with http(calling) as client:
        yield client


def output_of(api: httpx.Client, call: dict[str, Any], result: str, **body: Any) -> dict[str, Any]:
    item = {"type": "function_call_output", "call_id": call["call_id"], "output": result}
    return create(api, tools=[LOOKUP], **{"input": [item], **body})


def test_a_function_tool_gives_a_function_call_item(api: httpx.Client) -> None:
    body = create(api, input="weather in Paris", tools=[LOOKUP])
    assert body["status"] == "completed"
    (call,) = body["output"]
    assert call["type"] == "function_call" and call["status"] == "completed"
    assert call["id"].startswith("fc_") and call["call_id"].startswith("call_")
    assert (call["name"], json.loads(call["arguments"])) == ("lookup", {"words": 3})
    validate("FunctionToolCallResource", call)
    assert body["tools"] == [{**LOOKUP}] and body["tool_choice"] == "auto"


def test_the_output_is_answered_through_previous_response_id(api: httpx.Client) -> None:
    first = create(api, input="weather in Paris", tools=[LOOKUP])
    second = output_of(api, first["output"][0], "sunny and warm", previous_response_id=first["id"])
    (message,) = second["output"]
    assert message["type"] == "message"
    assert message["content"][0]["text"] == "weather in Paris sunny and warm"
    # The stored chain replays the call and its output as they were: a third turn's prompt holds both.
    third = create(api, input="thanks", tools=[LOOKUP], previous_response_id=second["id"])
    resent = create(
        api,
        input=[
            {"role": "user", "content": "weather in Paris"},
            first["output"][0],
            {
                "type": "function_call_output",
                "call_id": first["output"][0]["call_id"],
                "output": "sunny and warm",
            },
            second["output"][0],
            {"role": "user", "content": "thanks"},
        ],
        tools=[LOOKUP],
    )
    assert third["usage"]["input_tokens"] == resent["usage"]["input_tokens"]
    assert [i["type"] for i in third["output"]] == [i["type"] for i in resent["output"]] == ["function_call"]


def test_the_items_sent_back_in_input_are_answered(api: httpx.Client) -> None:
    first = create(api, input="weather in Paris", tools=[LOOKUP], store=False)
    (call,) = first["output"]
    second = create(
        api,
        input=[
            {"role": "user", "content": "weather in Paris"},
            call,
            {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": [{"type": "input_text", "text": "rain"}],
            },
        ],
        tools=[LOOKUP],
    )
    assert second["output"][0]["content"][0]["text"] == "weather in Paris rain"
    # Stored with its input items as sent: the call and its output are listed.
    items = api.get(f"/v1/responses/{second['id']}/input_items", params={"order": "asc"}).json()["data"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output"]
    assert items[1]["call_id"] == items[2]["call_id"] == call["call_id"]
    for item in items[1:]:
        validate("ItemResource", item)


def test_streamed_calls_are_typed_events_in_order(api: httpx.Client) -> None:
    events = stream(api, input="a b", tools=[LOOKUP])
    assert collapse([e.json["type"] for e in events]) == CALL_EVENTS
    added, delta, done, item_done = (e.json for e in events[2:6])
    assert added["item"]["status"] == "in_progress" and added["item"]["arguments"] == ""
    assert {added["item"]["id"], delta["item_id"], done["item_id"], item_done["item"]["id"]} == {
        item_done["item"]["id"]
    }
    assert delta["delta"] == done["arguments"] == item_done["item"]["arguments"] == json.dumps({"words": 2})
    assert done["name"] == "lookup"
    completed = events[-1].json["response"]
    assert completed["output"] == [item_done["item"]]
    assert api.get(f"/v1/responses/{completed['id']}").json() == completed


def test_the_sdk_stream_assembles_the_call_and_retrieves_it(calling: Live) -> None:
    with sdk(calling) as client:
        with client.responses.stream(model=CHAT, input="one two", tools=[LOOKUP]) as events:
            kinds = [event.type for event in events]
            final = events.get_final_response()
        assert "response.function_call_arguments.done" in kinds
        (call,) = final.output
        assert call.type == "function_call" and call.name == "lookup"
        assert call.parsed_arguments == {"words": 2}
        stored = client.responses.retrieve(final.id)
        assert stored.output[0].model_dump() == final.output[0].model_dump(exclude={"parsed_arguments"})
        answered = client.responses.create(
            model=CHAT,
            previous_response_id=final.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "done"}],
            tools=[LOOKUP],
        )
    assert answered.output_text == "one two done"


def test_a_thought_then_a_call(make_live: Callable[..., Live]) -> None:
    live = make_live(models=reasoning_models(call="lookup"))
    with http(live) as api:
        whole = create(api, input="x y", tools=[LOOKUP])
        events = stream(api, input="x y", tools=[LOOKUP])
    assert [i["type"] for i in whole["output"]] == ["reasoning", "function_call"]
    completed = events[-1].json["response"]
    assert [i["type"] for i in completed["output"]] == ["reasoning", "function_call"]
    assert [e.json["output_index"] for e in events if e.json["type"] == "response.output_item.done"] == [0, 1]


def test_tool_choice_none_and_required(api: httpx.Client) -> None:
    none = create(api, input="plain words", tools=[LOOKUP], tool_choice="none")
    assert [i["type"] for i in none["output"]] == ["message"] and none["tool_choice"] == "none"
    named = create(
        api,
        input="x",
        tools=[LOOKUP],
        tool_choice={"type": "function", "name": "lookup"},
        parallel_tool_calls=False,
    )
    assert [i["type"] for i in named["output"]] == ["function_call"]
    assert named["tool_choice"] == {"type": "function", "name": "lookup"}
    assert named["parallel_tool_calls"] is False


def test_the_sdk_parse_helper_parses_strict_function_arguments(calling: Live) -> None:
    with sdk(calling) as client:
        parsed = client.responses.parse(model=CHAT, input="one two three", tools=[LOOKUP])
    (call,) = parsed.output
    assert call.type == "function_call" and call.parsed_arguments == {"words": 3}
    assert isinstance(parsed, openai.types.responses.ParsedResponse)

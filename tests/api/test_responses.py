"""``/v1/responses``: create (string or items, stored, chained, streamed), retrieve, delete, input items."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.api.conftest import CHAT, Event, assert_error, http, ledger_row, parse_sse, reasoning_models
from tests.conftest import Live, fake_models
from tests.spec import validate

STREAM_ORDER = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/responses", json={"model": CHAT, **body})
    assert response.status_code == 200, response.text
    value: dict[str, Any] = response.json()
    validate("Response", value)
    return value


def stream(api: httpx.Client, **body: Any) -> list[Event]:
    with api.stream("POST", "/v1/responses", json={"model": CHAT, "stream": True, **body}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    for event in events:
        validate("ResponseStreamEvent", event.json)
        assert event.name == event.json["type"], "the event name repeats the data's type"
    assert [e.json["sequence_number"] for e in events] == list(range(len(events)))
    return events


def collapse(kinds: list[str]) -> list[str]:
    """Runs of the same event kind as one (deltas come one per token)."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


def test_a_string_input_gives_a_completed_stored_response(api: httpx.Client) -> None:
    body = create(api, input="hello there")
    assert body["object"] == "response"
    assert body["id"].startswith("resp_")
    assert (body["status"], body["model"], body["store"]) == ("completed", CHAT, True)
    [message] = body["output"]
    assert (message["type"], message["role"], message["status"]) == ("message", "assistant", "completed")
    assert message["content"][0]["type"] == "output_text"
    assert message["content"][0]["text"] == "hello there"
    # <user> hello there <assistant>: four tokens in, two out.
    assert body["usage"]["input_tokens"] == 4
    assert body["usage"]["output_tokens"] == 2
    assert body["usage"]["total_tokens"] == 6
    assert body["completed_at"] >= body["created_at"]


def test_the_sdk_creates_retrieves_lists_and_deletes(client: openai.OpenAI) -> None:
    response = client.responses.create(model=CHAT, input="sdk round trip", temperature=0.2, top_p=0.5)
    assert response.output_text == "sdk round trip"
    assert response.usage is not None and response.usage.output_tokens == 3
    assert (response.temperature, response.top_p) == (0.2, 0.5)
    again = client.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()
    items = client.responses.input_items.list(response.id)
    assert [item.type for item in items.data] == ["message"]
    client.responses.delete(response.id)  # the SDK returns nothing on success, and raises on an error
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_item_arrays_instructions_and_every_role(api: httpx.Client) -> None:
    items = [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "input_text", "text": "use English"}]},
        {"type": "message", "role": "user", "content": "first question"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "first answer"}]},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "second"}, {"type": "input_text", "text": "question"}],
        },
    ]
    body = create(api, input=items, instructions="You are a test.")
    assert body["instructions"] == "You are a test."
    assert body["output"][0]["content"][0]["text"] == "second question"
    # instructions + five items, each a marker and its words, plus the answer marker.
    words = [
        "You are a test.",
        "be brief",
        "use English",
        "first question",
        "first answer",
        "second question",
    ]
    assert body["usage"]["input_tokens"] == sum(1 + len(w.split()) for w in words) + 1


def test_max_output_tokens_makes_an_incomplete_response(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(repeat="1"))
    with http(live) as api:
        body = create(api, input="on and on", max_output_tokens=16)
    assert body["status"] == "incomplete"
    assert body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["max_output_tokens"] == 16
    assert body["usage"]["output_tokens"] == 16
    assert len(body["output"][0]["content"][0]["text"].split()) == 16


def test_store_false_is_not_kept(api: httpx.Client) -> None:
    body = create(api, input="forget me", store=False)
    assert body["store"] is False
    assert_error(api.get(f"/v1/responses/{body['id']}"), 404, code="not_found", param="response_id")
    # Nor can a conversation continue from it.
    continued = api.post(
        "/v1/responses", json={"model": CHAT, "input": "x", "previous_response_id": body["id"]}
    )
    assert_error(continued, 404, code="not_found", param="previous_response_id")


def test_previous_response_id_continues_the_conversation(api: httpx.Client) -> None:
    first = create(api, input="hello you", instructions="be kind")
    second = create(api, input="and more", previous_response_id=first["id"])
    assert second["previous_response_id"] == first["id"]
    # The whole conversation is the prompt: the first turn and its answer, then the new turn.
    # (Instructions are not carried over, as OpenAI documents.)
    assert second["usage"]["input_tokens"] == (1 + 2) + (1 + 2) + (1 + 2) + 1
    third = create(api, input="last", previous_response_id=second["id"])
    assert third["usage"]["input_tokens"] == 3 + 3 + 3 + 3 + 2 + 1
    assert third["output"][0]["content"][0]["text"] == "last"
    # The input items are this response's own, not the history's.
    items = api.get(f"/v1/responses/{third['id']}/input_items").json()
    assert [i["content"][0]["text"] for i in items["data"]] == ["last"]


def test_retrieve_returns_what_create_returned(api: httpx.Client) -> None:
    body = create(api, input="keep me", metadata={"topic": "tests"})
    fetched = api.get(f"/v1/responses/{body['id']}")
    assert fetched.status_code == 200
    validate("Response", fetched.json())
    assert fetched.json() == body
    assert body["metadata"] == {"topic": "tests"}


def test_delete_removes_a_response(api: httpx.Client) -> None:
    body = create(api, input="delete me")
    response = api.delete(f"/v1/responses/{body['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": body["id"], "object": "response.deleted", "deleted": True}
    assert_error(api.get(f"/v1/responses/{body['id']}"), 404, code="not_found", param="response_id")
    assert_error(api.delete(f"/v1/responses/{body['id']}"), 404, code="not_found", param="response_id")
    assert_error(
        api.get(f"/v1/responses/{body['id']}/input_items"), 404, code="not_found", param="response_id"
    )


def test_input_items_page_in_either_order(api: httpx.Client) -> None:
    items = [{"role": "user", "content": f"turn {i}"} for i in range(5)]
    body = create(api, input=items)
    path = f"/v1/responses/{body['id']}/input_items"
    listed = api.get(path).json()
    validate("ResponseItemList", listed)
    texts = [i["content"][0]["text"] for i in listed["data"]]
    assert texts == [f"turn {i}" for i in reversed(range(5))]  # newest first by default
    assert listed["first_id"] == listed["data"][0]["id"] and listed["last_id"] == listed["data"][-1]["id"]
    assert listed["has_more"] is False
    page = api.get(path, params={"order": "asc", "limit": 2}).json()
    validate("ResponseItemList", page)
    assert [i["content"][0]["text"] for i in page["data"]] == ["turn 0", "turn 1"]
    assert page["has_more"] is True
    rest = api.get(path, params={"order": "asc", "limit": 10, "after": page["last_id"]}).json()
    assert [i["content"][0]["text"] for i in rest["data"]] == ["turn 2", "turn 3", "turn 4"]
    assert rest["has_more"] is False
    assert_error(api.get(path, params={"limit": 0}), 400, param="limit")
    assert_error(api.get(path, params={"limit": 101}), 400, param="limit")
    assert_error(api.get(path, params={"order": "sideways"}), 400, param="order")
    assert_error(api.get(path, params={"after": "msg_nope"}), 400, param="after")


def test_a_response_belongs_to_its_key(live: Live) -> None:
    with http(live) as api:
        body = create(api, input="mine")
    with http(live, live.new_key("other")) as other:
        assert_error(other.get(f"/v1/responses/{body['id']}"), 404, code="not_found", param="response_id")
        assert_error(other.delete(f"/v1/responses/{body['id']}"), 404, code="not_found", param="response_id")
        chained = other.post(
            "/v1/responses", json={"model": CHAT, "input": "x", "previous_response_id": body["id"]}
        )
        assert_error(chained, 404, code="not_found", param="previous_response_id")
    with http(live) as api:
        assert api.get(f"/v1/responses/{body['id']}").status_code == 200


def test_stream_events_are_typed_numbered_and_in_order(api: httpx.Client) -> None:
    events = stream(api, input="one two three")
    kinds = [e.json["type"] for e in events]
    assert collapse(kinds) == STREAM_ORDER
    deltas = [e.json for e in events if e.json["type"] == "response.output_text.delta"]
    assert [d["delta"] for d in deltas] == ["one", " two", " three"]
    created, completed = events[0].json["response"], events[-1].json["response"]
    assert created["status"] == "in_progress" and created["output"] == []
    assert completed["id"] == created["id"] and completed["status"] == "completed"
    assert completed["output"][0]["content"][0]["text"] == "one two three"
    assert completed["usage"]["output_tokens"] == 3
    done = next(e.json for e in events if e.json["type"] == "response.output_text.done")
    assert done["text"] == "one two three"
    assert {d["item_id"] for d in deltas} == {done["item_id"], completed["output"][0]["id"]}
    # A streamed response is stored like any other.
    fetched = api.get(f"/v1/responses/{completed['id']}").json()
    assert fetched == completed


def test_the_sdk_streams_events(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=CHAT, input="typed events", stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "typed events"
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_a_reasoning_model_streams_its_thought_as_its_own_item(make_live: Callable[..., Live]) -> None:
    live = make_live(models=reasoning_models())
    with http(live) as api:
        events = stream(api, input="the answer")
        whole = create(api, input="the answer")
    kinds = collapse([e.json["type"] for e in events])
    assert kinds[:7] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_text.delta",
        "response.reasoning_text.done",
        "response.output_item.done",
        "response.output_item.added",
    ]
    assert kinds[-1] == "response.completed"
    completed = events[-1].json["response"]
    assert [item["type"] for item in completed["output"]] == ["reasoning", "message"]
    assert completed["output"][0]["content"][0]["text"] == "Let me think."
    assert completed["output"][1]["content"][0]["text"] == "the answer"
    assert completed["usage"]["output_tokens_details"]["reasoning_tokens"] == 5
    assert [item["type"] for item in whole["output"]] == ["reasoning", "message"]
    assert whole["usage"] == {**completed["usage"]}


def test_a_failure_mid_stream_ends_with_response_failed(make_live: Callable[..., Live]) -> None:
    live = make_live(models=fake_models(fail_at="2"))
    with (
        http(live) as api,
        api.stream(
            "POST", "/v1/responses", json={"model": CHAT, "input": "a b c d", "stream": True}
        ) as response,
    ):
        request_id = response.headers["x-request-id"]
        events = parse_sse(response.read().decode())
    for event in events:
        validate("ResponseStreamEvent", event.json)
    assert [e.json["sequence_number"] for e in events] == list(range(len(events)))
    assert [e.json["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2].json["code"] == "engine_error"
    failed = events[-1].json["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error"  # the spec's own list
    row = ledger_row(live, request_id)
    assert (row["endpoint"], row["status"], row["output_tokens"]) == ("responses", "failed", 2)
    with http(live) as api:  # a failed response is not stored
        assert api.get(f"/v1/responses/{failed['id']}").status_code == 404

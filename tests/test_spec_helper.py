"""The OpenAPI validation helper (tests/spec.py) must accept conforming bodies and reject others."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tests.spec import SCHEMAS_FILE, schema_names, validate

CHAT_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "smollm2",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}

MODEL_LIST: dict[str, Any] = {
    "object": "list",
    "data": [
        {"id": "smollm2", "object": "model", "created": 1_700_000_000, "owned_by": "aisp"},
        {"id": "all-minilm-l6-v2", "object": "model", "created": 1_700_000_000, "owned_by": "aisp"},
    ],
}

MESSAGE_ITEM: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "output_text", "text": "Hello!", "annotations": [], "logprobs": []}],
}

RESPONSE: dict[str, Any] = {
    "id": "resp_1",
    "object": "response",
    "created_at": 1_700_000_000,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "instructions": None,
    "model": "smollm2",
    "output": [MESSAGE_ITEM],
    "parallel_tool_calls": False,
    "metadata": {},
    "tool_choice": "auto",
    "tools": [],
    "temperature": 1.0,
    "top_p": 1.0,
    "usage": {
        "input_tokens": 5,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 7,
    },
}


def rejection(schema_name: str, instance: object) -> str:
    with pytest.raises(AssertionError) as info:
        validate(schema_name, instance)
    return str(info.value)


def test_accepts_valid_chat_completion_and_model_list() -> None:
    validate("CreateChatCompletionResponse", CHAT_COMPLETION)
    validate("ListModelsResponse", MODEL_LIST)
    validate("Model", MODEL_LIST["data"][0])


def test_rejects_missing_choices() -> None:
    body = {k: v for k, v in CHAT_COMPLETION.items() if k != "choices"}
    assert "'choices' is a required property" in rejection("CreateChatCompletionResponse", body)


def test_rejects_wrong_type_for_created() -> None:
    body = {**CHAT_COMPLETION, "created": "2024-01-01"}
    message = rejection("CreateChatCompletionResponse", body)
    assert "$.created" in message
    assert "not of type 'integer'" in message


def test_reports_every_violation() -> None:
    body = {k: v for k, v in CHAT_COMPLETION.items() if k != "choices"} | {"created": 1.5}
    message = rejection("CreateChatCompletionResponse", body)
    assert "2 schema violation(s)" in message
    assert "choices" in message and "$.created" in message


def test_rejects_nested_mistakes() -> None:
    models = copy.deepcopy(MODEL_LIST)
    del models["data"][1]["owned_by"]
    assert "$.data[1]" in rejection("ListModelsResponse", models)
    chat = copy.deepcopy(CHAT_COMPLETION)
    chat["choices"][0]["message"]["role"] = "user"
    assert "$.choices[0].message.role" in rejection("CreateChatCompletionResponse", chat)


def test_openapi_nullable_allows_null_but_keeps_the_enum() -> None:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "smollm2",
        "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}],
        "usage": None,
    }
    validate("CreateChatCompletionStreamResponse", chunk)
    chunk["choices"][0]["finish_reason"] = "done"
    assert "is not one of" in rejection("CreateChatCompletionStreamResponse", chunk)


def test_response_and_stream_events() -> None:
    validate("Response", RESPONSE)
    validate(
        "ResponseStreamEvent",
        {"type": "response.completed", "sequence_number": 9, "response": RESPONSE},
    )
    validate(
        "ResponseStreamEvent",
        {"type": "response.output_item.added", "sequence_number": 2, "output_index": 0,
         "item": {**MESSAGE_ITEM, "status": "in_progress", "content": []}},
    )  # fmt: skip
    delta = {"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1",
             "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []}  # fmt: skip
    validate("ResponseStreamEvent", delta)
    # The reason names the variant the 'type' picks, not some other event schema.
    del delta["logprobs"]
    assert "'logprobs' is a required property" in rejection("ResponseStreamEvent", delta)
    assert "no variant has type='response.bogus'" in rejection(
        "ResponseStreamEvent", {"type": "response.bogus", "sequence_number": 1}
    )


def test_response_requires_fields_the_spec_requires() -> None:
    body = {k: v for k, v in RESPONSE.items() if k != "tools"}
    assert "'tools' is a required property" in rejection("Response", body)
    part = copy.deepcopy(RESPONSE)
    del part["output"][0]["content"][0]["logprobs"]
    assert "$.output[0].content[0]: 'logprobs' is a required property" in rejection("Response", part)


def test_error_response() -> None:
    error = {"message": "Invalid API key", "type": "invalid_request_error", "param": None, "code": None}
    validate("ErrorResponse", {"error": error})
    assert "'error' is a required property" in rejection("ErrorResponse", error)


def test_unknown_schema_name() -> None:
    with pytest.raises(KeyError, match="NoSuchSchema"):
        validate("NoSuchSchema", {})


def test_schemas_file_is_self_contained() -> None:
    names = set(schema_names())
    assert {"CreateEmbeddingResponse", "ResponseItemList", "DeleteModelResponse"} <= names
    text = SCHEMAS_FILE.read_text(encoding="utf-8")
    assert set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', text)) <= names

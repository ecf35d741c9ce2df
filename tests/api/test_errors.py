"""Every error path: always OpenAI's envelope with all four keys, a 4xx for anything out of bounds, and a
server that keeps serving whatever it was sent."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam

from server.access.keys import KeyLimits
from tests.api.conftest import CHAT, EMBED, assert_error, http, messages, sdk
from tests.conftest import Live

CHAT_BODY: dict[str, Any] = {"model": CHAT, "messages": messages("hi")}
RESPONSE_BODY: dict[str, Any] = {"model": CHAT, "input": "hi"}
EMBED_BODY: dict[str, Any] = {"model": EMBED, "input": "hi"}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}


def user(content: Any) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


# -- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer aisp-" + "A" * 49},  # the right shape, a wrong checksum
    ],
    ids=["none", "empty", "malformed", "basic", "bad-checksum"],
)
def test_a_missing_or_bad_key_is_401(live: Live, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=live.url, headers=headers) as api:
        for method, path, body in (
            ("GET", "/v1/models", None),
            ("POST", "/v1/chat/completions", CHAT_BODY),
            ("POST", "/v1/embeddings", EMBED_BODY),
            ("POST", "/v1/responses", RESPONSE_BODY),
            ("GET", "/v1/responses/resp_1", None),
        ):
            assert_error(api.request(method, path, json=body), 401, code="invalid_api_key")


def test_revoked_expired_and_unknown_keys_are_401(live: Live) -> None:
    revoked_secret, revoked = live.services.keys.create("revoked")
    live.services.keys.revoke(revoked.id)
    expired, _ = live.services.keys.create("expired", expires_at=time.time() - 1)
    other, record = live.services.keys.create("deleted-later")
    live.services.keys.revoke(record.id)
    for key, why in ((revoked_secret, "revoked"), (expired, "expired"), (other, "revoked")):
        with http(live, key) as api:
            assert_error(api.get("/v1/models"), 401, code="invalid_api_key", message=why)
    unknown = "aisp-" + live.key[5:-10] + live.key[-10:][::-1]
    with http(live, unknown) as api:
        assert api.get("/v1/models").status_code == 401


def test_a_key_in_the_url_is_refused(live: Live) -> None:
    with http(live, key="") as api:
        assert_error(
            api.get("/v1/models", params={"api_key": live.key}), 401, code="invalid_api_key", message="header"
        )


def test_the_sdk_raises_authentication_error(live: Live) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(live, key="aisp-wrong").models.list()
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


# -- not found ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT_BODY, "model": "gpt-4o"}),
        ("/v1/responses", {**RESPONSE_BODY, "model": "gpt-4o"}),
        ("/v1/embeddings", {**EMBED_BODY, "model": "text-embedding-3-small"}),
    ],
)
def test_an_unknown_model_is_404_model_not_found(api: httpx.Client, path: str, body: dict[str, Any]) -> None:
    error = assert_error(api.post(path, json=body), 404, code="model_not_found", param="model")
    assert body["model"] in error["message"]


def test_the_sdk_raises_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=messages())
    assert caught.value.code == "model_not_found"


def test_unknown_routes_and_methods(api: httpx.Client) -> None:
    assert_error(api.get("/v1/engines"), 404, code="not_found")
    assert_error(api.post("/v1/completions", json={}), 404, code="not_found")
    assert_error(api.put("/v1/models"), 405, code="method_not_allowed")
    assert_error(api.get("/v1/chat/completions"), 405, code="method_not_allowed")


# -- invalid requests name their param ---------------------------------------------------------------

SCHEMA_PARAM = "response_format.json_schema.schema"


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


CHAT_CASES: list[tuple[dict[str, Any], str | None, str | None]] = [
    # (changes to a valid chat body, the param named, a word the message must hold)
    ({"n": "5"}, "n", "integer"),
    ({"n": 2.0}, "n", "integer"),
    ({"n": 0}, "n", None),
    ({"n": 17}, "n", None),
    ({"n": True}, "n", None),
    ({"temperature": "0.5"}, "temperature", "number"),
    ({"temperature": 2.5}, "temperature", None),
    ({"temperature": -0.1}, "temperature", None),
    ({"top_p": 1.5}, "top_p", None),
    ({"presence_penalty": 2.1}, "presence_penalty", None),
    ({"frequency_penalty": -2.1}, "frequency_penalty", None),
    ({"max_tokens": 0}, "max_tokens", None),
    ({"max_tokens": "16"}, "max_tokens", "integer"),
    ({"max_tokens": 10**12}, "max_tokens", None),
    ({"max_completion_tokens": -1}, "max_completion_tokens", None),
    ({"seed": "7"}, "seed", None),
    ({"seed": 2**64}, "seed", None),
    ({"stop": 5}, "stop", "string or an array"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"stop": "x" * 257}, "stop", "256"),
    ({"stop": ["ok", 5]}, "stop[1]", "string"),
    ({"stream": "true"}, "stream", "boolean"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "stream"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", None),
    ({"response_format": {"type": "xml"}}, "response_format.type", None),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
        "response_format.json_schema.name",
        None,
    ),
    ({"response_format": schema_format({"type": "string", "maxLength": 5000})}, SCHEMA_PARAM, "at most 1000"),
    ({"response_format": schema_format({"type": "string", "pattern": "^a{9999}$"})}, SCHEMA_PARAM, "repeat"),
    ({"response_format": schema_format(nested(40))}, SCHEMA_PARAM, "nested"),
    ({"logit_bias": {"dog": 1}}, "logit_bias", "token"),
    ({"logit_bias": {"5": 101}}, "logit_bias.5", None),
    ({"top_logprobs": 3}, "top_logprobs", "requires logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", None),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}}, "tool_choice", "'g'"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name", None),
    ({"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type", None),
    ({"functions": [{"name": "f"}]}, "functions", "tools"),
    ({"modalities": ["text", "audio"]}, "modalities", "text-only"),
    ({"user": 42}, "user", "string"),
    ({"user": "u" * 513}, "user", None),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "16"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort", None),
    ({"frobnicate": 1}, "frobnicate", "unrecognized"),
    ({"model": ""}, "model", None),
    ({"model": 5}, "model", "string"),
    ({"messages": []}, "messages", "at least 1"),
    ({"messages": "hi"}, "messages", None),
    ({"messages": [{"content": "hi"}]}, "messages[0].role", "missing"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", None),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing"),
    ({"messages": user(5)}, "messages[0].content", "string"),
    ({"messages": user([IMAGE])}, "messages[0].content", "text-only"),
    ({"messages": user([{"type": "text", "text": "look"}, IMAGE])}, "messages[0].content", "image_url"),
    ({"messages": user([AUDIO])}, "messages[0].content", "text-only"),
    ({"messages": user([{"type": "file", "file": {"file_id": "f"}}])}, "messages[0].content", "text-only"),
    ({"messages": user([{"type": "text"}])}, "messages[0].content", "text"),
    ({"messages": user([{"type": "hologram"}])}, "messages[0].content", "unknown type"),
    ({"messages": user([{"type": "text", "text": "x"}] * 1025)}, "messages[0].content", "1024"),
    ({"messages": [{"role": "user", "content": "hi"}] * 4097}, "messages", "4096"),
    ({"messages": [{"role": "user", "content": "hi", "name": "n" * 257}]}, "messages[0].name", None),
]


def check_cases(
    api: httpx.Client,
    subtests: pytest.Subtests,
    path: str,
    base: dict[str, Any],
    cases: list[tuple[dict[str, Any], str | None, str | None]],
) -> None:
    """Each case against one server (they share nothing): a 400 naming the param, and a clear message."""
    for changes, param, word in cases:
        with subtests.test(param=param, changes=str(changes)[:80]):
            assert_error(api.post(path, json={**base, **changes}), 400, param=param, message=word)
    assert api.post(path, json=base).status_code == 200, "the server serves on after them all"


def test_chat_rejects_with_the_param_named(api: httpx.Client, subtests: pytest.Subtests) -> None:
    check_cases(api, subtests, "/v1/chat/completions", CHAT_BODY, CHAT_CASES)


RESPONSE_CASES: list[tuple[dict[str, Any], str | None, str | None]] = [
    ({"input": 5}, "input", "string or an array"),
    ({"input": []}, "input", "at least 1"),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
        "input[0].content",
        "text-only",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file_1"}]}]},
        "input[0].content",
        "text-only",
    ),
    ({"input": [{"role": "user"}]}, "input[0].content", "missing"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", None),
    ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type", "function_call_output"),
    ({"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]}, "input[0].name", "missing"),
    ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output", "missing"),
    (
        {"input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image"}]}]},
        "input[0].output",
        "text-only",
    ),
    ({"max_output_tokens": 15}, "max_output_tokens", "16"),
    ({"max_output_tokens": "20"}, "max_output_tokens", "integer"),
    ({"temperature": 3}, "temperature", None),
    ({"top_p": -1}, "top_p", None),
    ({"store": "yes"}, "store", "boolean"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", "'function'"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools[0].name", "missing"),
    ({"tool_choice": "required"}, "tool_choice", "needs tools"),
    (
        {"tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
        "tool_choice",
        "'g'",
    ),
    ({"background": True}, "background", None),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type", None),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema", "schema"),
    (
        {
            "text": {
                "format": {"type": "json_schema", "name": "x", "schema": {"type": "array", "minItems": 10**6}}
            }
        },
        "text.format.schema",
        "at most 1000",
    ),
    ({"stream_options": {"include_obfuscation": False}}, "stream_options", "stream"),
    ({"previous_response_id": ""}, "previous_response_id", None),
    ({"instructions": 7}, "instructions", "string"),
    ({"metadata": {"k": 5}}, "metadata.k", "string"),
    ({"unknown_thing": True}, "unknown_thing", "unrecognized"),
]


def test_responses_reject_with_the_param_named(api: httpx.Client, subtests: pytest.Subtests) -> None:
    check_cases(api, subtests, "/v1/responses", RESPONSE_BODY, RESPONSE_CASES)


EMBED_CASES: list[tuple[dict[str, Any], str | None, str | None]] = [
    ({"encoding_format": "int8"}, "encoding_format", None),
    ({"dimensions": 0}, "dimensions", None),
    ({"dimensions": "64"}, "dimensions", "integer"),
    ({"input": None}, "input", None),
    ({"user": 5}, "user", "string"),
    ({"extra": 1}, "extra", "unrecognized"),
]


def test_embeddings_reject_with_the_param_named(api: httpx.Client, subtests: pytest.Subtests) -> None:
    check_cases(api, subtests, "/v1/embeddings", EMBED_BODY, EMBED_CASES)


def test_the_sdk_raises_bad_request_naming_the_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=CHAT, messages=messages(), n="5")  # type: ignore[call-overload]
    assert caught.value.param == "n"
    assert caught.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="text-only"):
        client.chat.completions.create(model=CHAT, messages=user([IMAGE]))


# -- token limits within the context ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {**CHAT_BODY, "max_tokens": 2048}, "max_tokens"),
        ("/v1/chat/completions", {**CHAT_BODY, "max_completion_tokens": 5000}, "max_completion_tokens"),
        ("/v1/chat/completions", {"model": CHAT, "messages": messages("word " * 2100)}, "messages"),
        ("/v1/responses", {**RESPONSE_BODY, "max_output_tokens": 4096}, "max_output_tokens"),
        ("/v1/responses", {"model": CHAT, "input": "word " * 2100}, "input"),
    ],
)
def test_beyond_the_context_is_context_length_exceeded(
    api: httpx.Client, path: str, body: dict[str, Any], param: str
) -> None:
    error = assert_error(api.post(path, json=body), 400, param=param, code="context_length_exceeded")
    assert "2048" in error["message"]  # fake-chat's context


def test_the_whole_context_is_allowed(api: httpx.Client) -> None:
    # "<user> hi <assistant>" is 3 tokens; the rest of 2048 may be asked for, and not one more.
    fits = api.post("/v1/chat/completions", json={**CHAT_BODY, "max_tokens": 2045})
    assert fits.status_code == 200
    assert_error(
        api.post("/v1/chat/completions", json={**CHAT_BODY, "max_tokens": 2046}),
        400,
        param="max_tokens",
        code="context_length_exceeded",
    )


# -- malformed bodies -----------------------------------------------------------------------------------


MALFORMED: list[tuple[bytes, str]] = [
    (b"", "empty"),
    (b"{not json", "parse"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"null", "JSON object"),
    (b'{"model": NaN}', "finite"),
    (b'{"model": "fake-chat", "temperature": 1e999}', "finite"),
    (b'{"n": ' + b"9" * 5000 + b"}", "too long"),
    (b"\xff\xfe{}", "UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "deeply"),
]


def test_malformed_bodies_are_400(api: httpx.Client, subtests: pytest.Subtests) -> None:
    for body, word in MALFORMED:
        with subtests.test(body=body[:40]):
            response = api.post(
                "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
            )
            assert_error(response, 400, message=word)


def test_a_lone_surrogate_is_refused_where_it_is(api: httpx.Client) -> None:
    body = b'{"model": "fake-chat", "messages": [{"role": "user", "content": "\\ud800"}]}'
    response = api.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, param="messages[0].content", message="surrogate")


def test_a_body_that_is_not_json_is_415(api: httpx.Client) -> None:
    response = api.post("/v1/chat/completions", content=b"hello", headers={"content-type": "text/plain"})
    assert_error(response, 415, code="unsupported_media_type")


# -- oversized bodies ----------------------------------------------------------------------------------


@pytest.fixture
def small_body_live(make_live: Callable[..., Live]) -> Live:
    return make_live(max_body_bytes=4096)


def test_an_oversized_body_is_413(small_body_live: Live) -> None:
    big = {"model": CHAT, "messages": messages("word " * 2000)}
    with http(small_body_live) as api:
        assert_error(
            api.post("/v1/chat/completions", json=big), 413, code="request_too_large", message="4096"
        )
        assert_error(
            api.post("/v1/embeddings", json={"model": EMBED, "input": ["x" * 5000]}),
            413,
            code="request_too_large",
        )
        assert_error(
            api.post("/v1/responses", json={"model": CHAT, "input": "x" * 5000}),
            413,
            code="request_too_large",
        )
        assert api.post("/v1/chat/completions", json=CHAT_BODY).status_code == 200


def test_the_default_limit_is_8_mib(api: httpx.Client) -> None:
    body = {"model": EMBED, "input": ["x" * 1_000_000] * 9}
    assert_error(
        api.post("/v1/embeddings", json=body), 413, code="request_too_large", message=str(8 * 1024 * 1024)
    )
    assert api.get("/v1/models").status_code == 200


def test_an_oversized_body_without_a_length_is_413(small_body_live: Live) -> None:
    """A chunked body (no Content-Length) is read no further than the limit."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "fake-chat", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}]}'

    with http(small_body_live) as api:
        response = api.post(
            "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        assert_error(response, 413, code="request_too_large")
        assert api.get("/v1/models").status_code == 200


def test_the_sdk_sees_413(small_body_live: Live) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(small_body_live).embeddings.create(model=EMBED, input=["x" * 5000])
    assert caught.value.status_code == 413


# -- limits and errors inside a stream ------------------------------------------------------------------


def test_a_rate_limit_is_429_with_retry_after(live: Live) -> None:
    key = live.new_key("one-a-minute", limits=KeyLimits(rpm=1))
    with http(live, key) as api:
        assert api.post("/v1/chat/completions", json=CHAT_BODY).status_code == 200
        response = api.post("/v1/chat/completions", json=CHAT_BODY)
    error = assert_error(response, 429, type="requests", code="rate_limit_exceeded")
    assert "1 requests per minute" in error["message"]
    assert int(response.headers["retry-after"]) >= 1


def test_errors_before_a_stream_starts_are_plain_json(api: httpx.Client) -> None:
    response = api.post("/v1/chat/completions", json={**CHAT_BODY, "stream": True, "max_tokens": 9999})
    assert_error(response, 400, param="max_tokens", code="context_length_exceeded")
    response = api.post("/v1/responses", json={**RESPONSE_BODY, "stream": True, "model": "nope"})
    assert_error(response, 404, param="model", code="model_not_found")


# -- out of bounds is never a 500, and the server keeps serving ------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
CHAT_FIELDS = [
    "messages", "model", "n", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
    "presence_penalty", "frequency_penalty", "logit_bias", "response_format", "stream", "stream_options", "user",
    "metadata", "tool_choice", "logprobs", "top_logprobs", "modalities", "audio", "prediction",
]  # fmt: skip
RESPONSE_FIELDS = [
    "input", "model", "instructions", "max_output_tokens", "temperature", "top_p", "store",
    "previous_response_id", "stream", "text", "metadata", "include", "truncation", "reasoning", "tool_choice",
]  # fmt: skip
EMBED_FIELDS = ["input", "model", "encoding_format", "dimensions", "user"]


TARGETS = [
    ("/v1/chat/completions", CHAT_BODY, CHAT_FIELDS),
    ("/v1/responses", RESPONSE_BODY, RESPONSE_FIELDS),
    ("/v1/embeddings", EMBED_BODY, EMBED_FIELDS),
]
CASES = st.sampled_from(TARGETS).flatmap(
    lambda target: st.tuples(
        st.just(target[0]),
        st.just(target[1]),
        st.dictionaries(st.sampled_from(target[2]), JSON_VALUES, min_size=1, max_size=3),
    )
)


def test_any_value_in_any_field_is_answered_without_a_500(live: Live) -> None:
    """Whatever JSON lands in whichever field, the answer is a 2xx or a 4xx in the error envelope."""
    seen: set[int] = set()
    with http(live) as api:

        @settings(
            max_examples=150,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=True,  # the same cases every run; raise max_examples locally to hunt for more
        )
        @given(CASES)
        def check(case: tuple[str, dict[str, Any], dict[str, Any]]) -> None:
            path, base, changes = case
            body = {**base, **changes}
            if body.get("stream") is True:
                body["stream"] = False  # a stream answers 200 first; its errors are tested elsewhere
            response = api.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
            seen.add(response.status_code)
            assert response.status_code < 500, (body, response.text)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}, error

        check()
        assert api.get("/v1/models").status_code == 200
        assert (
            api.post("/v1/chat/completions", json=CHAT_BODY).json()["choices"][0]["message"]["content"]
            == "hi"
        )
    assert 400 in seen and 200 in seen

"""Structured outputs on the real embedded model (SmolLM2-135M on llama.cpp): JSON that finishes, parses and
matches its schema, through plain HTTP, the ``openai`` SDK's parse helpers and LangChain's
``with_structured_output``.

A small model follows its grammar only as well as the grammar matches how it writes JSON: these requests
loop to ``max_tokens`` under a grammar that forbids a newline after ``{``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr
from typing_extensions import TypedDict

from tests.api.conftest import REAL_CHAT, http, messages, sdk
from tests.conftest import Live
from tests.spec import validate

MAX_TOKENS = 256
JOKE_SCHEMA = {
    "type": "object",
    "properties": {"setup": {"type": "string"}, "punchline": {"type": "string"}},
    "required": ["setup", "punchline"],
    "additionalProperties": False,
}


class Joke(BaseModel):
    setup: str
    punchline: str


class JokeDict(TypedDict):
    """A joke."""

    setup: str
    punchline: str


@pytest.fixture
def api(real_live: Live) -> Iterator[httpx.Client]:
    with http(real_live, timeout=120) as client:
        yield client


def structured(api: httpx.Client, prompt: str, schema: dict[str, Any], **body: Any) -> dict[str, Any]:
    """A strict json_schema completion; returns the choice, checked against the spec."""
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    response = api.post(
        "/v1/chat/completions",
        json={
            "model": REAL_CHAT,
            "messages": messages(prompt),
            "max_tokens": MAX_TOKENS,
            "response_format": fmt,
            **body,
        },
    )
    assert response.status_code == 200, response.text
    completion: dict[str, Any] = response.json()
    validate("CreateChatCompletionResponse", completion)
    choice: dict[str, Any] = completion["choices"][0]
    choice["usage"] = completion["usage"]
    return choice


def test_the_cats_joke_finishes(api: httpx.Client) -> None:
    """Issue 24's request: it ran to max_tokens (``"Situ pakai, sampu, sampu, ...``) under the old grammar."""
    choice = structured(api, "Tell me a joke about cats.", JOKE_SCHEMA, temperature=0)
    content = choice["message"]["content"]
    assert choice["finish_reason"] == "stop", content
    assert choice["usage"]["completion_tokens"] < MAX_TOKENS
    jsonschema.validate(json.loads(content), JOKE_SCHEMA)


POINT = {
    "type": "object",
    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
    "required": ["x", "y"],
    "additionalProperties": False,
}
SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    "flat-object": (
        "Describe a cat: its name and age, in JSON.",
        {
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    ),
    "nested-object": (
        "Give a person with a name and an address (street and city), in JSON.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                    "required": ["street", "city"],
                    "additionalProperties": False,
                },
            },
            "required": ["name", "address"],
            "additionalProperties": False,
        },
    ),
    "array-of-objects": (
        "List two points with x and y coordinates, in JSON.",
        {
            "type": "object",
            "properties": {"points": {"type": "array", "items": POINT, "minItems": 1, "maxItems": 4}},
            "required": ["points"],
            "additionalProperties": False,
        },
    ),
    "enum": (
        "What colour is the sky? Answer in JSON.",
        {
            "type": "object",
            "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
            "required": ["colour"],
            "additionalProperties": False,
        },
    ),
    "optional-property": (
        "Name a city, and its country if you know it, in JSON.",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    ),
    "integer-range": (
        "Rate pizza from 1 to 10, in JSON.",
        {
            "type": "object",
            "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
            "required": ["score"],
            "additionalProperties": False,
        },
    ),
}


@pytest.mark.parametrize("name", list(SCHEMAS))
@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_schemas_through_the_real_model(api: httpx.Client, name: str, temperature: float) -> None:
    prompt, schema = SCHEMAS[name]
    choice = structured(api, prompt, schema, temperature=temperature, seed=7)
    content = choice["message"]["content"]
    assert choice["finish_reason"] == "stop", content
    jsonschema.validate(json.loads(content), schema)


def test_the_openai_sdk_parse_helpers(real_live: Live) -> None:
    client = sdk(real_live, timeout=120)
    completion = client.chat.completions.parse(
        model=REAL_CHAT,
        messages=[{"role": "user", "content": "Tell me a joke about cats."}],
        response_format=Joke,
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    message = completion.choices[0].message
    assert isinstance(message.parsed, Joke), message.content
    response = client.responses.parse(
        model=REAL_CHAT,
        input="Tell me a joke about dogs.",
        text_format=Joke,
        max_output_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert response.status == "completed"
    assert isinstance(response.output_parsed, Joke), response.output_text


def langchain_model(live: Live) -> ChatOpenAI:
    return ChatOpenAI(
        model=REAL_CHAT,
        base_url=live.base_url,
        api_key=SecretStr(live.key),
        temperature=0,
        max_completion_tokens=MAX_TOKENS,
        max_retries=0,
        timeout=120,
    )


def test_langchain_structured_output(real_live: Live) -> None:
    model = langchain_model(real_live)
    prompt = "Tell me a joke about cats."
    joke = model.with_structured_output(Joke).invoke(prompt)
    assert isinstance(joke, Joke)
    as_dict = model.with_structured_output(JokeDict).invoke(prompt)
    assert isinstance(as_dict, dict)
    jsonschema.validate(as_dict, JOKE_SCHEMA)
    schema = {"title": "joke", "description": "A joke.", **JOKE_SCHEMA}
    from_schema = model.with_structured_output(schema).invoke(prompt)
    assert isinstance(from_schema, dict)
    jsonschema.validate(from_schema, JOKE_SCHEMA)

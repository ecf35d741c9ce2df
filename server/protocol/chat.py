"""``POST /v1/chat/completions``: the request, bounded and strictly typed, and the response builders."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

MAX_MESSAGES = 4096
MAX_N = 16
MAX_STOP = 4
MAX_TOKENS_CAP = 1_048_576

Strict = ConfigDict(extra="forbid", strict=True)


TEXT_PARTS = frozenset({"text", "input_text", "output_text"})


def check_content(value: Any) -> str | list[dict[str, Any]] | None:
    """Message content: a string or a list of parts; non-text parts are refused with a clear reason."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise ValueError("content must be a string or an array of content parts")
    if len(value) > 1024:
        raise ValueError("content may hold at most 1024 parts")
    for index, part in enumerate(value):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ValueError(f"content part {index} must be an object with a 'type'")
        kind = part["type"]
        if kind in TEXT_PARTS:
            if not isinstance(part.get("text"), str):
                raise ValueError(f"content part {index} of type '{kind}' needs a string 'text'")
        elif kind == "refusal":
            if not isinstance(part.get("refusal"), str):
                raise ValueError(f"content part {index} of type 'refusal' needs a string 'refusal'")
        elif kind in {"image_url", "input_image", "input_audio", "file", "input_file"}:
            raise ValueError(
                f"content part {index} is of type '{kind}': this server is text-only and accepts text parts only"
            )
        else:
            raise ValueError(f"content part {index} has an unknown type '{kind[:64]}'")
    return value


def content_text(content: str | list[dict[str, Any]] | None) -> str:
    """The text of checked content; separate parts stay separate (a newline apart), never run together."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(p.get("text") or p.get("refusal") or "" for p in content)


FunctionName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
MAX_TOOLS = 128
MAX_ARGUMENTS = 1_048_576


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: Annotated[str, Field(min_length=1, max_length=256)]
    arguments: Annotated[str, Field(max_length=MAX_ARGUMENTS)]


class ToolCallItem(BaseModel):
    """A tool call the assistant made, as a client replays it in the history."""

    model_config = ConfigDict(extra="allow", strict=True)
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Any = Field(default=None, validate_default=True)
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_call_id: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: Annotated[list[ToolCallItem], Field(max_length=MAX_TOOLS)] | None = None
    refusal: str | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any, info: ValidationInfo) -> str | list[dict[str, Any]] | None:
        # Only an assistant turn (one that called tools or refused) may come without content.
        if value is None and info.data.get("role", "assistant") != "assistant":
            raise PydanticCustomError("missing", "Field required")
        return check_content(value)

    @property
    def text(self) -> str:
        return content_text(self.content)


MAX_SCHEMA_NODES = 5000
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_REPEAT = 1000
"""The largest count a schema may ask for (``maxLength``, ``minItems``, ``{n}`` in a pattern...): each
becomes that many grammar rules, and llama.cpp crashes on grammars past its own limits."""
_REPEAT_KEYS = frozenset(
    {
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minContains",
        "maxContains",
    }
)
_PATTERN_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema small enough to become a grammar: bounded size, depth and repetition counts."""
    nodes = 0
    stack: list[tuple[Any, int]] = [(schema, 1)]
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise ValueError(f"the schema is too large (more than {MAX_SCHEMA_NODES} values)")
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"the schema is nested too deeply (more than {MAX_SCHEMA_DEPTH} levels)")
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _REPEAT_KEYS and isinstance(value, int | float) and value > MAX_SCHEMA_REPEAT:
                    raise ValueError(f"{key} may be at most {MAX_SCHEMA_REPEAT}, not {value}")
                if key == "pattern" and isinstance(value, str):
                    if len(value) > MAX_SCHEMA_REPEAT:
                        raise ValueError(f"a pattern may be at most {MAX_SCHEMA_REPEAT} characters long")
                    counts = [int(n) for m in _PATTERN_REPEAT.finditer(value) for n in m.groups() if n]
                    if any(n > MAX_SCHEMA_REPEAT for n in counts):
                        raise ValueError(f"a pattern may repeat at most {MAX_SCHEMA_REPEAT} times")
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
    return schema


class JsonSchemaFormat(BaseModel):
    model_config = Strict
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: Annotated[str, Field(max_length=4096)] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)


class FunctionFields(BaseModel):
    """What describes a function to the model, in both APIs' tool shapes."""

    model_config = Strict
    name: FunctionName
    description: Annotated[str, Field(max_length=16384)] | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None

    @field_validator("parameters")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)


class FunctionSpec(FunctionFields):
    """The ``function`` of a Chat Completions tool."""


class ToolSpec(BaseModel):
    """A function the model may call (the only kind of tool this server runs: text only)."""

    model_config = Strict
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = Strict
    name: FunctionName


class NamedToolChoice(BaseModel):
    model_config = Strict
    type: Literal["function"]
    function: NamedFunction


class ResponseFormat(BaseModel):
    model_config = Strict
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(BaseModel):
    model_config = Strict
    include_usage: StrictBool | None = None
    include_obfuscation: StrictBool | None = None


Temperature = Annotated[float, Field(ge=0, le=2)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
TokenLimit = Annotated[StrictInt, Field(ge=1, le=MAX_TOKENS_CAP)]


class ChatCompletionRequest(BaseModel):
    """The parameters OpenAI documents; unknown ones are refused, as OpenAI does."""

    model_config = Strict

    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
    model: Annotated[str, Field(min_length=1, max_length=256)]
    frequency_penalty: Penalty | None = None
    logit_bias: (
        Annotated[dict[str, Annotated[float, Field(ge=-100, le=100)]], Field(max_length=1024)] | None
    ) = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    max_tokens: TokenLimit | None = None
    max_completion_tokens: TokenLimit | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] | None = None
    presence_penalty: Penalty | None = None
    response_format: ResponseFormat | None = None
    seed: Annotated[StrictInt, Field(ge=-(2**63), le=2**64 - 1)] | None = None
    stop: (
        Annotated[str, Field(max_length=256)]
        | Annotated[list[Annotated[str, Field(max_length=256)]], Field(max_length=MAX_STOP)]
        | None
    ) = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    tools: Annotated[list[ToolSpec], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    user: Annotated[str, Field(max_length=512)] | None = None
    safety_identifier: Annotated[str, Field(max_length=512)] | None = None
    prompt_cache_key: Annotated[str, Field(max_length=512)] | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | None = None
    store: StrictBool | None = None
    service_tier: Annotated[str, Field(max_length=32)] | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    modalities: Annotated[list[Literal["text", "audio"]], Field(max_length=2)] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    web_search_options: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for key in value or {}:
            if not key.isdigit() or int(key) >= 2**31:
                raise ValueError(f"logit_bias keys must be non-negative token ids, not {key!r}")
        return value


def usage(
    prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0, reasoning_tokens: int = 0
) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def assistant_message(
    content: str, reasoning: str | None, tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content if content or not tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return message


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def tool_call_delta(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A whole call in one stream chunk (the SDKs assemble chunks by ``index``)."""
    return {"index": index, **tool_call(call_id, name, arguments)}


def token_logprob(token: str, raw: tuple[int, ...], logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(raw)}


def logprobs(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": entries, "refusal": None}


def completion(
    completion_id: str, created: int, model: str, choices: list[dict[str, Any]], usage_: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_,
        "service_tier": "default",
    }


def choice(
    index: int, message: dict[str, Any], finish_reason: str, logprobs_: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"index": index, "message": message, "logprobs": logprobs_, "finish_reason": finish_reason}


def chunk(
    completion_id: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    usage_: dict[str, Any] | None = None,
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
        "service_tier": "default",
    }
    if usage_ is not None:
        value["usage"] = usage_
    return value


def chunk_choice(
    index: int,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    logprobs_: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs_, "finish_reason": finish_reason}

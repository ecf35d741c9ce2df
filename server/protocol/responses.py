"""``/v1/responses``: the request, the response object and its typed stream events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from server.protocol.chat import check_content, check_json_schema, content_text

MAX_ITEMS = 4096
Strict = ConfigDict(extra="forbid", strict=True)


class InputMessage(BaseModel):
    """A message item of ``input``: the only item type a text-only server without tools accepts."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Any
    id: Annotated[str, Field(max_length=128)] | None = None
    status: str | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> str | list[dict[str, Any]]:
        checked = check_content(value)
        if checked is None:
            raise ValueError("a message needs content")
        return checked

    @property
    def text(self) -> str:
        return content_text(self.content)


class TextFormat(BaseModel):
    model_config = Strict
    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Field(max_length=64)] | None = None
    description: Annotated[str, Field(max_length=4096)] | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json_schema(value)


class TextConfig(BaseModel):
    model_config = Strict
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningConfig(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None


class ResponseRequest(BaseModel):
    model_config = Strict

    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: (
        Annotated[str, Field(max_length=4_000_000)]
        | Annotated[list[InputMessage], Field(min_length=1, max_length=MAX_ITEMS)]
    )
    instructions: Annotated[str, Field(max_length=4_000_000)] | None = None
    max_output_tokens: Annotated[StrictInt, Field(ge=16, le=1_048_576)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    store: StrictBool | None = None
    previous_response_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    stream: StrictBool | None = None
    stream_options: dict[str, Any] | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | None = None
    user: Annotated[str, Field(max_length=512)] | None = None
    safety_identifier: Annotated[str, Field(max_length=512)] | None = None
    prompt_cache_key: Annotated[str, Field(max_length=512)] | None = None
    text: TextConfig | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=0)] | None = None
    tool_choice: Literal["none", "auto"] | None = None
    parallel_tool_calls: StrictBool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: ReasoningConfig | None = None
    include: Annotated[list[str], Field(max_length=16)] | None = None
    background: Literal[False] | None = None
    service_tier: Annotated[str, Field(max_length=32)] | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=0)] | None = None
    max_tool_calls: StrictInt | None = None

    def items(self) -> list[InputMessage]:
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return list(self.input)


def output_message(message_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": message_id,
        "status": status,
        "role": "assistant",
        "content": [output_text_part(text)],
    }


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "type": "reasoning",
        "id": item_id,
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    }


def response_usage(input_tokens: int, output_tokens: int, cached: int, reasoning: int) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def response_object(
    *,
    response_id: str,
    created_at: int,
    status: Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"],
    request: ResponseRequest,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    fmt: dict[str, Any] = {"type": "text"}
    if request.text is not None and request.text.format is not None:
        fmt = request.text.format.model_dump(by_alias=True, exclude_none=True)
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": None if incomplete_reason is None else {"reason": incomplete_reason},
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "model": request.model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls
        if request.parallel_tool_calls is not None
        else True,
        "previous_response_id": request.previous_response_id,
        "reasoning": {"effort": None, "summary": None},
        "store": request.store is not False,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": {"format": fmt},
        "tool_choice": request.tool_choice or "auto",
        "tools": [],
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": request.truncation or "disabled",
        "usage": usage,
        "user": request.user,
        "metadata": request.metadata or {},
    }
    # The spec makes these optional but not nullable: absent rather than null.
    for optional in ("usage", "user"):
        if body[optional] is None:
            del body[optional]
    return body


def input_item(item_id: str, message: InputMessage) -> dict[str, Any]:
    if isinstance(message.content, str):
        kind = "output_text" if message.role == "assistant" else "input_text"
        parts: list[dict[str, Any]] = [{"type": kind, "text": message.content}]
    else:
        parts = message.content
    return {"type": "message", "id": item_id, "status": "completed", "role": message.role, "content": parts}


def item_list(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": has_more,
    }


def deleted(response_id: str) -> dict[str, Any]:
    return {"id": response_id, "object": "response.deleted", "deleted": True}

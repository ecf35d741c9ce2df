"""``/v1/responses``: the request, the response object and its typed stream events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    Tag,
    field_validator,
)

from server.protocol.chat import (
    MAX_ARGUMENTS,
    MAX_TOOLS,
    FunctionFields,
    FunctionName,
    check_content,
    check_json_schema,
    content_text,
)

MAX_ITEMS = 4096
Strict = ConfigDict(extra="forbid", strict=True)
Echoed = ConfigDict(extra="allow", strict=True)
"""Items a client sends back as it received them, with fields this server does not read."""
CallId = Annotated[str, Field(min_length=1, max_length=256)]


def _required_content(value: Any, missing: str) -> str | list[dict[str, Any]]:
    """``value`` as a string or text parts; ``missing`` is the error when it holds nothing."""
    checked = check_content(value)
    if checked is None:
        raise ValueError(missing)
    return checked


class InputMessage(BaseModel):
    """A message item of ``input`` (``type`` may be left out, as the SDKs' easy form does)."""

    model_config = ConfigDict(extra="allow", strict=True)

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Any
    id: Annotated[str, Field(max_length=128)] | None = None
    status: str | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> str | list[dict[str, Any]]:
        return _required_content(value, "a message needs content")

    @property
    def text(self) -> str:
        return content_text(self.content)


class FunctionCallInput(BaseModel):
    """A call the model made, sent back in ``input`` (an output item of an earlier response)."""

    model_config = Echoed

    type: Literal["function_call"]
    call_id: CallId
    name: Annotated[str, Field(min_length=1, max_length=256)]
    arguments: Annotated[str, Field(max_length=MAX_ARGUMENTS)]
    id: Annotated[str, Field(max_length=128)] | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutputInput(BaseModel):
    """What the client's function returned for a call: a string, or text parts."""

    model_config = Echoed

    type: Literal["function_call_output"]
    call_id: CallId
    output: Any
    id: Annotated[str, Field(max_length=128)] | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    @field_validator("output")
    @classmethod
    def _output(cls, value: Any) -> str | list[dict[str, Any]]:
        return _required_content(value, "a function call output needs an output")

    @property
    def text(self) -> str:
        return content_text(self.output)


class ReasoningInput(BaseModel):
    """A reasoning item sent back in ``input``: accepted, and left out of the prompt (chat templates
    render no earlier turns' thoughts)."""

    model_config = Echoed

    type: Literal["reasoning"]
    id: Annotated[str, Field(max_length=128)] | None = None
    summary: Annotated[list[dict[str, Any]], Field(max_length=1024)] = []


class _OtherItem(BaseModel):
    """Any other item type: refused, naming the types this server takes."""

    model_config = Echoed
    type: Literal["message", "function_call", "function_call_output", "reasoning"]


ITEM_TYPES = frozenset({"message", "function_call", "function_call_output", "reasoning"})


def _item_type(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return kind if kind in ITEM_TYPES else "other"


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")]
    | Annotated[FunctionCallInput, Tag("function_call")]
    | Annotated[FunctionCallOutputInput, Tag("function_call_output")]
    | Annotated[ReasoningInput, Tag("reasoning")]
    | Annotated[_OtherItem, Tag("other")],
    Discriminator(_item_type),
]


class _FunctionType(BaseModel):
    model_config = Strict
    type: Literal["function"]


class FunctionTool(FunctionFields, _FunctionType):
    """A function the model may call, in the Responses API's flat shape (the only tool type this server
    runs: text only). ``type`` is checked before the other fields (pydantic orders fields from the last base
    first), so a tool of another type is refused for its type, not for a missing name."""


class FunctionChoice(BaseModel):
    model_config = Strict
    type: Literal["function"]
    name: FunctionName


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
        | Annotated[list[InputItem], Field(min_length=1, max_length=MAX_ITEMS)]
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
    tools: Annotated[list[FunctionTool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: ReasoningConfig | None = None
    include: Annotated[list[str], Field(max_length=16)] | None = None
    background: Literal[False] | None = None
    service_tier: Annotated[str, Field(max_length=32)] | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=0)] | None = None
    max_tool_calls: StrictInt | None = None

    def items(self) -> list[InputMessage | FunctionCallInput | FunctionCallOutputInput | ReasoningInput]:
        if isinstance(self.input, str):
            return [InputMessage(role="user", content=self.input)]
        return [item for item in self.input if not isinstance(item, _OtherItem)]


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


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


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
    choice = request.tool_choice
    tool_choice = choice.model_dump() if isinstance(choice, FunctionChoice) else choice or "auto"
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
        "reasoning": {
            "effort": request.reasoning.effort if request.reasoning is not None else None,
            "summary": None,
        },
        "store": request.store is not False,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": {"format": fmt},
        "tool_choice": tool_choice,
        "tools": [tool_object(tool) for tool in request.tools or ()],
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


def tool_object(tool: FunctionTool) -> dict[str, Any]:
    """A function tool as a response echoes it (``parameters`` and ``strict`` always present)."""
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
        "strict": tool.strict,
    }


def input_item(
    item_id: str, item: InputMessage | FunctionCallInput | FunctionCallOutputInput | ReasoningInput
) -> dict[str, Any]:
    """An input item as it is stored and listed (``input_items``), and replayed in later turns."""
    if isinstance(item, FunctionCallInput):
        return function_call_item(item_id, item.call_id, item.name, item.arguments)
    if isinstance(item, FunctionCallOutputInput):
        output = item.output
        return {
            "type": "function_call_output",
            "id": item_id,
            "call_id": item.call_id,
            "output": output,
            "status": "completed",
        }
    if isinstance(item, ReasoningInput):
        return {"type": "reasoning", "id": item_id, "summary": item.summary}
    if isinstance(item.content, str):
        kind = "output_text" if item.role == "assistant" else "input_text"
        parts: list[dict[str, Any]] = [{"type": kind, "text": item.content}]
    else:
        parts = item.content
    return {"type": "message", "id": item_id, "status": "completed", "role": item.role, "content": parts}


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

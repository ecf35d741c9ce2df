"""Decoding request bodies and encoding JSON and server-sent events, strictly and within bounds."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class BodyError(ValueError):
    """A body that is not acceptable JSON; ``param`` names the field when one is to blame."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _no_constants(name: str) -> Any:
    raise BodyError(f"{name} is not valid JSON: numbers must be finite")


def decode_json(body: bytes) -> Any:
    """Parse a JSON body: UTF-8 only, no NaN or Infinity, no lone surrogates, no runaway nesting."""
    if not body.strip():
        raise BodyError("We could not parse the JSON body of your request: the body is empty.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"The request body is not valid UTF-8 (byte {exc.start}).") from exc
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError as exc:
        raise BodyError("The JSON body is nested too deeply.") from exc
    except json.JSONDecodeError as exc:
        raise BodyError(
            f"We could not parse the JSON body of your request: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from exc
    return value


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """The path of the first string holding a lone surrogate, which no model can tokenize."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or None
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((f"{where}.{key}" if where else str(key), child))
        elif isinstance(item, list):
            for index, child in enumerate(item):
                stack.append((f"{where}[{index}]", child))
    return None


def param_of(loc: tuple[int | str, ...]) -> str:
    """``('messages', 0, 'content')`` → ``messages[0].content``, as OpenAI names params."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_request(model: type[M], body: bytes) -> M:
    """Decode and validate a request body into ``model``, or raise :class:`BodyError`."""
    value = decode_json(body)
    if not isinstance(value, dict):
        raise BodyError("The request body must be a JSON object.")
    bad = _surrogate_path(value)
    if bad is not None:
        raise BodyError(f"Invalid value for '{bad}': the string holds an unpaired surrogate.", param=bad)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p and p.endswith("]")))
        param = param_of(loc) or None
        if first["type"] == "extra_forbidden":
            raise BodyError(f"Unrecognized request argument supplied: {param}", param=param) from exc
        if first["type"] == "missing":
            raise BodyError(f"Missing required parameter: '{param}'.", param=param) from exc
        message = first["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        raise BodyError(f"Invalid value for '{param}': {message}.", param=param) from exc


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sse_data(value: Any) -> bytes:
    """One server-sent event carrying JSON (chat completions style)."""
    return b"data: " + dumps(value).encode("utf-8") + b"\n\n"


def sse_event(event: str, value: Any) -> bytes:
    """One named server-sent event (Responses API style)."""
    return b"event: " + event.encode("ascii") + b"\ndata: " + dumps(value).encode("utf-8") + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"

"""Decoding request bodies and encoding JSON and server-sent events, strictly and within bounds."""

from __future__ import annotations

import json
import math
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


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 parses to infinity, which no field means and no encoder can write back
        raise BodyError(f"The number {text[:32]} is out of range: numbers must be finite.")
    return value


def decode_json(body: bytes) -> Any:
    """Parse a JSON body: UTF-8 only, no NaN or Infinity, no lone surrogates, no runaway nesting."""
    if not body.strip():
        raise BodyError("We could not parse the JSON body of your request: the body is empty.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"The request body is not valid UTF-8 (byte {exc.start}).") from exc
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError as exc:
        raise BodyError("The JSON body is nested too deeply.") from exc
    except json.JSONDecodeError as exc:
        raise BodyError(
            f"We could not parse the JSON body of your request: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from exc
    except BodyError:
        raise
    except ValueError as exc:  # an integer longer than Python converts (4300 digits)
        raise BodyError("We could not parse the JSON body of your request: a number is too long.") from exc
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


_TYPE_NAMES = {
    "string_type": "a string",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "a boolean",
}


def _data_path(value: Any, loc: tuple[int | str, ...], missing: bool) -> tuple[tuple[int | str, ...], int | None]:
    """The part of pydantic's ``loc`` that indexes the request itself, and where a union branch was named.

    Pydantic names the branch of a union it tried (``constrained-str``, ``list[InputMessage]``...) in
    ``loc``; those names are not parameters, so they are dropped: a part is kept only if it indexes the
    value (or is the name of a missing field).
    """
    path: list[int | str] = []
    branch: int | None = None
    current = value
    for at, part in enumerate(loc):
        if isinstance(current, dict) and isinstance(part, str) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif missing and at == len(loc) - 1 and isinstance(current, dict):
            pass
        else:
            if branch is None:
                branch = len(path)
            continue
        path.append(part)
    return tuple(path), branch


def _explain(value: Any, exc: ValidationError) -> BodyError:
    """One clear error for the client: the first that is not merely a union branch of the wrong type."""
    located = []
    for error in exc.errors(include_url=False):
        path, branch = _data_path(value, tuple(error["loc"]), error["type"] == "missing")
        wrong_branch = branch == len(path) and error["type"] in _TYPE_NAMES
        located.append((error, path, wrong_branch))
    chosen = next(((e, p) for e, p, wrong in located if not wrong), None)
    if chosen is None:
        # Every branch of a union refused the value's type: say what it may be.
        error, path, _ = located[0]
        param = param_of(path) or None
        kinds = [_TYPE_NAMES[e["type"]] for e, p, _ in located if p == path]
        expected = " or ".join(dict.fromkeys(kinds))
        return BodyError(f"Invalid type for '{param}': expected {expected}.", param=param)
    error, path = chosen
    param = param_of(path) or None
    if error["type"] == "extra_forbidden":
        return BodyError(f"Unrecognized request argument supplied: {param}", param=param)
    if error["type"] == "missing":
        return BodyError(f"Missing required parameter: '{param}'.", param=param)
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return BodyError(f"Invalid value for '{param}': {message.rstrip('.')}.", param=param)


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
        raise _explain(value, exc) from exc


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def sse_data(value: Any) -> bytes:
    """One server-sent event carrying JSON (chat completions style)."""
    return b"data: " + dumps(value).encode("utf-8") + b"\n\n"


def sse_event(event: str, value: Any) -> bytes:
    """One named server-sent event (Responses API style)."""
    return b"event: " + event.encode("ascii") + b"\ndata: " + dumps(value).encode("utf-8") + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"

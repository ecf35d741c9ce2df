"""Decoding request bodies and encoding JSON and server-sent events, strictly and within bounds."""

from __future__ import annotations

import json
import math
import re
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class BodyError(ValueError):
    """A body that is not acceptable JSON; ``param`` names the field when one is to blame."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.model: str | None = None
        """The request's ``model``, when the body was JSON with one (for the ledger's refused row)."""


def _no_constants(name: str) -> Any:
    raise BodyError(f"{name} is not valid JSON: numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 parses to infinity, which no field means and no encoder can write back
        raise BodyError(f"The number {text[:32]} is out of range: numbers must be finite.")
    return value


MAX_CONTAINERS = 100_000
"""Arrays and objects in one body at most: far more than any real request holds, and what bounds the time
and memory that parsing a body of the largest accepted size can cost (8 MB of ``[],`` would otherwise
make 2.8 million lists and hold the event loop for seconds)."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


MAX_DEPTH = 128
"""Arrays and objects nested in one another at most: deep enough for any JSON schema, shallow enough that
everything echoing a request (a stored response, its input items) can write it back."""


def _too_deep(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _containers(body: bytes) -> int:
    """How many arrays and objects the body opens: its brackets outside strings."""
    quick = body.count(b"[") + body.count(b"{")
    if quick <= MAX_CONTAINERS:
        return quick
    skeleton = _STRING.sub(b"", body)
    return skeleton.count(b"[") + skeleton.count(b"{")


def decode_json(body: bytes) -> Any:
    """Parse a JSON body: UTF-8 only, no NaN or Infinity, no lone surrogates, no runaway nesting."""
    containers = _containers(body)
    if containers > MAX_CONTAINERS:
        raise BodyError(f"The JSON body holds more than {MAX_CONTAINERS} arrays and objects.")
    if _LONG_DIGITS.search(body) is None:
        # orjson parses the usual body several times faster and refuses all that is refused below (NaN,
        # infinities, lone surrogates, bad UTF-8), but turns integers past 64 bits into floats: a body with
        # a run of digits that long, or that orjson refuses, takes the standard parser and its exact errors.
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass
        else:
            if containers > MAX_DEPTH and _too_deep(value):
                raise BodyError(f"The JSON body is nested too deeply (at most {MAX_DEPTH} levels).")
            return value
    if not body.strip():
        raise BodyError("We could not parse the JSON body of your request: the body is empty.")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"The request body is not valid UTF-8 (byte {exc.start}).") from exc
    try:
        value = json.loads(text, parse_constant=_no_constants, parse_float=_finite_float)
    except RecursionError as exc:
        raise BodyError(f"The JSON body is nested too deeply (at most {MAX_DEPTH} levels).") from exc
    except json.JSONDecodeError as exc:
        raise BodyError(
            f"We could not parse the JSON body of your request: {exc.msg} at line {exc.lineno} column {exc.colno}."
        ) from exc
    except BodyError:
        raise
    except ValueError as exc:  # an integer longer than Python converts (4300 digits)
        raise BodyError("We could not parse the JSON body of your request: a number is too long.") from exc
    if containers > MAX_DEPTH and _too_deep(value):  # nesting needs as many containers as levels
        raise BodyError(f"The JSON body is nested too deeply (at most {MAX_DEPTH} levels).")
    return value


def _surrogate_path(value: Any) -> str | None:
    """Where the first lone surrogate is (a string, or an object with such a key; ``""`` for the body
    itself), or None: no model can tokenize one and no encoder can write it back.

    Only ``\\uD800``-``\\uDFFF`` escapes can make one (raw surrogate bytes are not UTF-8), so callers
    look only in bodies that hold such an escape; a path is built only for what is found.
    """
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # C speed: fails only on a lone surrogate
        return None
    except UnicodeEncodeError:
        pass
    stack: list[tuple[Any, Any]] = [(None, value)]  # (where, item); where is (the parent's where, key)
    found: Any = None
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if not _encodable(item):
                found = where
                break
        elif isinstance(item, dict):
            if not all(_encodable(key) for key in item):
                found = where  # the key cannot be named in the error: name the object that holds it
                break
            stack.extend(((where, k), v) for k, v in item.items() if isinstance(v, str | dict | list))
        elif isinstance(item, list):
            stack.extend(((where, i), v) for i, v in enumerate(item) if isinstance(v, str | dict | list))
    parts: list[str | int] = []
    while found is not None:
        found, part = found
        parts.append(part)
    return param_of(tuple(reversed(parts)))


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


def _data_path(
    value: Any, loc: tuple[int | str, ...], missing: bool
) -> tuple[tuple[int | str, ...], int | None]:
    """The part of pydantic's ``loc`` that indexes the request itself, and where a union branch was named.

    Pydantic names the branch of a union it tried (``constrained-str``, ``list[InputMessage]``...) in
    ``loc``; those names are not parameters, so they are dropped: a part is kept only if it indexes the
    value (or is the name of a missing field).
    """
    path: list[int | str] = []
    branch: int | None = None
    current = value
    for at, part in enumerate(loc):
        found, child = _child(current, part)
        if found:
            current = child
        elif not (missing and at == len(loc) - 1 and isinstance(current, dict)):
            if branch is None:
                branch = len(path)
            continue
        path.append(part)
    return tuple(path), branch


def _child(value: Any, part: int | str) -> tuple[bool, Any]:
    """``value[part]`` if ``part`` indexes it (a key of an object, a position in an array)."""
    if isinstance(value, dict):
        return (True, value[part]) if isinstance(part, str) and part in value else (False, None)
    if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
        return True, value[part]
    return False, None


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
    bad = _surrogate_path(value) if _SURROGATE_ESCAPE.search(body) else None
    if bad == "":
        raise BodyError("The request body holds an unpaired surrogate.")
    if bad is not None:
        raise BodyError(f"Invalid value for '{bad}': the string holds an unpaired surrogate.", param=bad)
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        error = _explain(value, exc)
        named = value.get("model")
        error.model = named[:256] if isinstance(named, str) else None
        try:
            raise error from exc
        finally:
            # The error's traceback holds this frame: without this, the frame would hold the error (a
            # cycle only the garbage collector frees) and with it the whole parsed body, megabytes a time.
            del error, value


_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as OpenAI sends it. numpy arrays are written as arrays, a float32 array with
    the shortest text that reads back as the same float32."""
    return orjson.dumps(value, option=_ORJSON_OPTIONS)


def sse_data(value: Any) -> bytes:
    """One server-sent event carrying JSON (chat completions style)."""
    return b"data: " + dumps(value) + b"\n\n"


def sse_event(event: str, value: Any) -> bytes:
    """One named server-sent event (Responses API style)."""
    return b"event: " + event.encode("ascii") + b"\ndata: " + dumps(value) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"

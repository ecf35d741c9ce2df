"""A request's JSON body: its content type and declared length checked, read no further than the limit
within the body deadline, and parsed strictly into the endpoint's model."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.types import Receive

from server.api.request import services
from server.connections import DISCONNECT_EXTENSION, DisconnectSignal
from server.errors import InvalidRequest, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from server.protocol.wire import BodyError, parse_request

M = TypeVar("M", bound=BaseModel)
INLINE_PARSE_BYTES = 256 * 1024
"""Larger bodies are parsed on the application's one parser thread (``app.state.json_parser``): megabytes
of JSON take long enough to parse that every other request on the event loop would wait for them, and one
thread parsing one body at a time bounds the memory that parsing takes."""


async def read_json(request: Request, model: type[M]) -> M:
    """The body as ``model``, read no further than the configured limit."""
    content_type, declared = _body_headers(request.scope["headers"])
    content_type = content_type.split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"Unsupported content type '{content_type[:100]}': send the request body as application/json."
        )
    settings = services(request).settings
    limit = settings.max_body_bytes
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge(f"The request body is larger than the {limit} bytes this server accepts.")
    signal: DisconnectSignal | None = request.scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
    if signal is not None and signal.body_arrived:
        body = await _read_body(request.receive, limit)  # all of it is here: nothing to wait for
    else:
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                body = await _read_body(request.receive, limit)
        except TimeoutError as exc:
            raise RequestTimeout(
                f"The request body did not arrive within {settings.body_timeout_s:g} seconds."
            ) from exc
    try:
        if len(body) > INLINE_PARSE_BYTES:
            parser = request.app.state.json_parser
            return await asyncio.get_running_loop().run_in_executor(parser, parse_request, model, body)
        return parse_request(model, body)
    except BodyError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from exc  # the cause names the model, if any


def _body_headers(headers: list[tuple[bytes, bytes]]) -> tuple[str, str | None]:
    """The request's content type (JSON if it names none) and declared length, each as first given."""
    content_type: str | None = None
    length: str | None = None
    for name, value in headers:
        if name == b"content-type" and content_type is None:
            content_type = value.decode("latin-1")
        elif name == b"content-length" and length is None:
            length = value.decode("latin-1")
    return content_type if content_type is not None else "application/json", length


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # The client left, or the connection refused what it sent (a malformed chunk): a bad request
            # like any other, with its ledger row, rather than an unexpected error.
            raise InvalidRequest(
                "The request body ended before it was complete, or was malformed.", code="invalid_body"
            )
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than the {limit} bytes this server accepts.")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)

"""What every handler shares: reading a bounded JSON body, finding the caller's key, errors as the
OpenAI envelope, and an event stream that notices a client going away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from server.errors import (
    APIError,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    Unauthenticated,
    UnsupportedMediaType,
)
from server.keys import KeyRecord
from server.protocol.wire import BodyError, dumps, parse_request
from server.services import Services

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
KEY_PARAMS = frozenset({"api_key", "api-key", "apikey", "key", "token", "access_token"})
INLINE_PARSE_BYTES = 256 * 1024
"""Larger bodies are parsed on the application's one parser thread (``app.state.json_parser``): megabytes
of JSON take long enough to parse that every other request on the event loop would wait for them, and one
thread parsing one body at a time bounds the memory that parsing takes."""


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


class JSON(JSONResponse):
    """Compact UTF-8 JSON, as OpenAI sends it."""

    def render(self, content: object) -> bytes:
        return dumps(content).encode("utf-8")


def error_response(error: APIError, request_id: str | None = None) -> Response:
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return JSON(error.body(), status_code=error.status, headers=headers)


async def require_key(request: Request) -> KeyRecord:
    """The key behind ``Authorization: Bearer …``; every protected route depends on this."""
    svc = services(request)
    address = request.client.host if request.client else "unknown"
    svc.auth_throttle.check(address)
    try:
        return _authenticate(request, svc)
    except Unauthenticated:
        svc.auth_throttle.failed(address)
        raise


def _authenticate(request: Request, svc: Services) -> KeyRecord:
    if KEY_PARAMS.intersection(k.lower() for k in request.query_params):
        raise Unauthenticated("API keys are accepted only in the Authorization header, never in the URL.")
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        raise Unauthenticated(
            "You didn't provide an API key. You need to provide your API key in an Authorization header "
            "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            if not values
            else "Send exactly one Authorization header."
        )
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Use Bearer auth: Authorization: Bearer YOUR_KEY.")
    record = svc.keys.authenticate(token.strip())
    request.state.key = record
    return record


async def read_json(request: Request, model: type[M]) -> M:
    """The body as ``model``, read no further than the configured limit."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type not in ("application/json", ""):
        raise UnsupportedMediaType(
            f"Unsupported content type '{content_type[:100]}': send the request body as application/json."
        )
    settings = services(request).settings
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise PayloadTooLarge(f"The request body is larger than the {limit} bytes this server accepts.")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The request body is larger than the {limit} bytes this server accepts.")
                chunks.append(chunk)
    except TimeoutError as exc:
        raise RequestTimeout(f"The request body did not arrive within {settings.body_timeout_s:g} seconds.") from exc
    body = b"".join(chunks)
    try:
        if len(body) > INLINE_PARSE_BYTES:
            parser = request.app.state.json_parser
            return await asyncio.get_running_loop().run_in_executor(parser, parse_request, model, body)
        return parse_request(model, body)
    except BodyError as exc:
        request.state.model = exc.model
        raise InvalidRequest(exc.message, param=exc.param) from exc


class EventStream(Response):
    """Server-sent events from an async iterator of bytes, cancelled as soon as the client disconnects.

    Cancelling the iterator lets its ``finally`` blocks stop generation and bill what was generated.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(content=None, status_code=200, headers=headers, media_type=self.media_type)
        del self.headers["content-length"]
        self.headers["cache-control"] = "no-cache"
        self.headers["x-accel-buffering"] = "no"
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def produce() -> None:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self._body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        producer = asyncio.ensure_future(produce())
        watcher = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({producer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (producer, watcher):
                if not task.done():
                    task.cancel()
            for task in (producer, watcher):
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()
            if self._on_close is not None:
                self._on_close()  # a stream that never started still releases what it held
        if producer.done() and not producer.cancelled():
            error = producer.exception()
            if error is not None and not isinstance(error, OSError):
                raise error


async def until_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work``, or cancel it and return None as soon as the client hangs up.

    Starlette notices a disconnect only while a response streams; a request that waits for a whole
    answer would otherwise keep its model busy for a client that is gone.
    """
    task = asyncio.ensure_future(work)

    async def hung_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(hung_up())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task  # its clean-up (stopping the engine) ends before the bill is written
    if task.cancelled():
        return None
    return task.result()

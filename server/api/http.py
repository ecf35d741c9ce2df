"""What every handler shares: reading a bounded JSON body, finding the caller's key, errors as the
OpenAI envelope, and an event stream that notices a client going away."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from server.api.billing import record_rejection
from server.connections import DISCONNECT_EXTENSION, DisconnectSignal
from server.errors import (
    APIError,
    EngineFailure,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    StorageFailure,
    Unauthenticated,
    UnsupportedMediaType,
)
from server.keys import KeyRecord
from server.protocol.wire import BodyError, dumps, parse_request
from server.services import Services
from server.store import StoreError, disk_error

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
KEY_PARAMS = frozenset({"api_key", "api-key", "apikey", "key", "token", "access_token"})
INLINE_PARSE_BYTES = 256 * 1024
"""Larger bodies are parsed on the application's one parser thread (``app.state.json_parser``): megabytes
of JSON take long enough to parse that every other request on the event loop would wait for them, and one
thread parsing one body at a time bounds the memory that parsing takes."""


def services(request: Request) -> Services:
    found: Services = request.scope["app"].services
    return found


def new_id(prefix: str) -> str:
    """``prefix``, then the time in milliseconds since the epoch (11 hex digits) and 64 random bits (16).

    Ids made later sort later (to the millisecond), so the ledger's and the response store's unique
    indexes on them grow at their right-hand end: a random id would change a random page of an index that
    outgrows the page cache, for every row, and write that whole page to the log at each commit."""
    return f"{prefix}{time.time_ns() // 1_000_000:011x}{secrets.randbits(64):016x}"


class JSON(JSONResponse):
    """Compact UTF-8 JSON, as OpenAI sends it."""

    def render(self, content: object) -> bytes:
        return dumps(content)


def error_response(error: APIError, request_id: str | None = None) -> Response:
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return JSON(error.body(), status_code=error.status, headers=headers)


def server_error_response(request_id: str) -> Response:
    """A request that failed in a way no handler foresaw (the details are in the log)."""
    error = APIError(f"The server had an error while processing your request (request id {request_id}).")
    return error_response(error, request_id)


async def exception_response(request: Request, exc: Exception) -> Response:
    """Any exception a request raised, as the OpenAI envelope: the one renderer of errors."""
    request_id: str | None = getattr(request.state, "request_id", None)
    if isinstance(exc, APIError):
        record_rejection(request, exc.status, exc)
        return error_response(exc, request_id)
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first["loc"][1:]) or None
        return error_response(InvalidRequest(f"Invalid request: {first['msg']}", param=param), request_id)
    if isinstance(exc, HTTPException):
        if exc.status_code == 405:
            error: APIError = MethodNotAllowed(
                f"Method {request.method} is not allowed for {request.url.path}."
            )
        elif exc.status_code == 404:
            error = NotFound(f"Invalid URL ({request.method} {request.url.path[:200]})")
        else:
            error = APIError(str(exc.detail))
            error.status = exc.status_code
        return error_response(error, request_id)
    cause = disk_error(exc) if isinstance(exc, StoreError) else None
    if cause is not None:
        log.error("request %s: the store cannot be written: %s", request_id, cause)
        return error_response(
            StorageFailure(f"The server cannot write its data ({cause}); try again when it has recovered."),
            request_id,
        )
    log.error("unexpected error in request %s", request_id, exc_info=exc)
    return error_response(
        EngineFailure(f"The server had an error while processing your request (request id {request_id})."),
        request_id,
    )


async def require_key(request: Request) -> KeyRecord:
    """The key behind ``Authorization: Bearer …``; every protected route depends on this."""
    svc = services(request)
    client = request.scope.get("client")
    address = client[0] if client else "unknown"
    svc.auth_throttle.check(address)
    try:
        return _authenticate(request, svc)
    except Unauthenticated:
        svc.auth_throttle.failed(address)
        raise


def _authenticate(request: Request, svc: Services) -> KeyRecord:
    if request.scope.get("query_string") and KEY_PARAMS.intersection(k.lower() for k in request.query_params):
        raise Unauthenticated("API keys are accepted only in the Authorization header, never in the URL.")
    values = [value.decode("latin-1") for name, value in request.scope["headers"] if name == b"authorization"]
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
        request.state.model = exc.model
        raise InvalidRequest(exc.message, param=exc.param) from exc


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
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than the {limit} bytes this server accepts.")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class DisconnectGuard:
    """``async with DisconnectGuard(scope, receive):`` runs the block in the current task and cancels it if
    the client disconnects meanwhile; a block cancelled that way ends quietly (``disconnected`` is then
    true) once its clean-up has run.

    The work stays in the request's own task. The server's connection says when the client leaves (the
    scope's :class:`DisconnectSignal`); under another server a task waits on ``receive`` for it.
    """

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._signal: DisconnectSignal | None = scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
        self._receive = receive
        self.disconnected = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Future[None] | None = None

    def _left(self) -> None:
        self.disconnected = True
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._left()

    async def __aenter__(self) -> DisconnectGuard:
        self._task = asyncio.current_task()
        if self._signal is not None:
            self._signal.add(self._left)
        else:
            self._watcher = asyncio.ensure_future(self._watch())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: object
    ) -> bool:
        # First, so that the client leaving from here on can no longer cancel this task.
        if self._signal is not None:
            self._signal.remove(self._left)
        if self._watcher is not None:
            self._watcher.cancel()
        if kind is None or not issubclass(kind, asyncio.CancelledError) or not self.disconnected:
            return False
        assert self._task is not None
        return self._task.uncancel() == 0  # cancelled by someone else as well (shutting down): not ours


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
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in (headers or {}).items()
            ),
        ]
        self._body = body
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with DisconnectGuard(scope, receive):
                await send(
                    {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
                )
                async for chunk in self._body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the connection broke while sending: the same as a disconnect
        finally:
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()
            if self._on_close is not None:
                self._on_close()  # a stream that never started still releases what it held


async def until_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work``, or cancel it and return None as soon as the client hangs up.

    Starlette notices a disconnect only while a response streams; a request that waits for a whole
    answer would otherwise keep its model busy for a client that is gone. The work's clean-up (stopping
    the engine) has ended by the time this returns, so the bill written next holds all it used.
    """
    async with DisconnectGuard(request.scope, request.receive):
        return await work
    return None

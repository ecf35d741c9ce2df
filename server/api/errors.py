"""Errors as the OpenAI envelope: the one renderer every exception a request raises goes through."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from server.errors import (
    APIError,
    EngineFailure,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    StorageFailure,
)
from server.protocol.wire import dumps
from server.store import StoreError, disk_error

log = logging.getLogger(__name__)


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

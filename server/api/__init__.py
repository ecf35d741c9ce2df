"""The HTTP layer: ``create_app`` builds a FastAPI application around one :class:`Services`.

Handlers are thin: parse and bound the request, find the key, hand the work to the engines, meter it.
Every route is in the one table of :func:`add_routes`; a handler that takes a ``Key`` runs only for a
valid key. Every error, wherever it is raised, leaves as the OpenAI error envelope.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import server
from server.api import chat, embeddings, models, openapi, responses
from server.api.errors import JSON, exception_response, server_error_response
from server.api.request import new_id, services
from server.config import Settings
from server.engines.manager import Factory
from server.errors import APIError
from server.services import Services
from server.store import StoreError

log = logging.getLogger(__name__)

PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset({("GET", "/health")})
"""Routes that answer without a key. Every other route's handler takes a ``Key``."""


async def health(request: Request) -> Response:
    """``GET /health`` (no key needed): serving, and each model's state; ``loading`` until every model has
    loaded (or failed to)."""
    states = {config.name: state for config, _, state in services(request).models.states()}
    return JSON({"status": "loading" if "loading" in states.values() else "ok", "models": states})


def add_routes(app: FastAPI) -> None:
    """Every route the server answers."""
    route = app.add_api_route
    route("/health", health, methods=["GET"], include_in_schema=False)
    route("/v1/models", models.list_models, methods=["GET"])
    route("/v1/models/{model:path}", models.retrieve_model, methods=["GET"])
    route("/v1/chat/completions", chat.create_chat_completion, methods=["POST"])
    route("/v1/embeddings", embeddings.create_embeddings, methods=["POST"])
    route("/v1/responses", responses.create_response, methods=["POST"])
    route("/v1/responses/{response_id}", responses.retrieve_response, methods=["GET"])
    route("/v1/responses/{response_id}", responses.delete_response, methods=["DELETE"])
    route("/v1/responses/{response_id}/input_items", responses.list_input_items, methods=["GET"])
    route("/v1/openapi.json", openapi.serve_document, methods=["GET"], include_in_schema=False)


class RequestIds:
    """Give every request an id (``x-request-id``) before anything else runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request_id = new_id("req_")
            scope.setdefault("state", {})["request_id"] = request_id

            started = False

            async def send_with_id(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    headers = list(message.get("headers", []))
                    if not any(k.lower() == b"x-request-id" for k, _ in headers):
                        headers.append((b"x-request-id", request_id.encode()))
                    message["headers"] = headers
                await send(message)

            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                # Answered here rather than re-raised to the server, which would drop a kept-alive
                # connection that the next request of the same client is about to use.
                log.exception("unexpected error in request %s", request_id)
                if not started:
                    await server_error_response(request_id)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    *,
    services: Services | None = None,
    engines: Mapping[str, Factory] | None = None,
) -> FastAPI:
    """Build the application. Without ``services`` it opens (and on shutdown closes) its own."""
    owned = services is None
    if services is None:
        if settings is None:
            raise ValueError("create_app needs settings or services")
        services = Services.open(settings, engines=engines)
    opened = services

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await opened.upstream.start()
        try:
            yield
        finally:
            await opened.upstream.close()
            _app.state.json_parser.shutdown(wait=False)
            if owned:
                opened.close()

    app = FastAPI(
        title="AI Service Platform",
        version=server.__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
        redirect_slashes=False,  # a redirect would echo the client's Host header back as a Location
        # No OpenTelemetry: the appliance exports nothing about its requests to whatever collector the
        # environment names, and each request no longer asks OpenTelemetry whether one is configured.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.services = services
    app.state.json_parser = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="json-parser"
    )  # see read_json
    add_routes(app)
    for handled in (APIError, RequestValidationError, HTTPException, StoreError):
        app.add_exception_handler(handled, exception_response)
    app.add_middleware(RequestIds)
    return app

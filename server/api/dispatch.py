"""Direct dispatch: the routes declared with FastAPI, served without FastAPI's per-request machinery.

The routes stay declared the FastAPI way (decorators, a router-level ``require_key`` dependency), which
is what the OpenAPI document and the route audit read. But solving dependencies, the middleware stack
and the router's matching cost more CPU per request than the rest of a gateway request together. Every
route whose endpoint takes only the request and string path parameters (all of ours) is called directly
here: the path is looked up in a table built once, the key is checked when the route depends on
``require_key``, and any exception leaves through the same renderer as FastAPI's exception handlers.
Whatever does not match (unknown paths, wrong methods) goes on to FastAPI, which answers 404 and 405.
Both ways give a request the same id, key check, errors, headers and ledger row.
"""

from __future__ import annotations

import inspect
import logging
import re
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from server.api.http import exception_response, new_id, require_key, server_error_response
from server.services import Services

log = logging.getLogger(__name__)

Endpoint = Callable[..., Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """One (method, path) served directly."""

    method: str
    path: str
    regex: re.Pattern[str] | None
    """None for a path without parameters (found by a dictionary look-up)."""
    convertors: dict[str, Convertor[Any]]
    endpoint: Endpoint
    protected: bool
    takes_request: bool


def needs_key(dependant: Dependant) -> bool:
    """Whether ``require_key`` is among a route's dependencies, however deep."""
    stack = list(dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if dependency.call is require_key:
            return True
        stack.extend(dependency.dependencies)
    return False


def declared_routes(routes: Iterable[Any]) -> list[Any]:
    """Every route as served, routers included (FastAPI ≥ 0.16x includes routers lazily)."""
    contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(contexts(routes)) if contexts is not None else list(routes)


def _direct(route: Any, parameters: Iterable[str]) -> bool:
    """Whether the endpoint, whose signature has ``parameters``, can be called as
    ``endpoint([request], **path_params)``: it asks FastAPI for nothing else (no query, header, cookie or
    body parameters, no dependency but the key check)."""
    dependant: Dependant = route.dependant
    if dependant.query_params or dependant.header_params or dependant.cookie_params or dependant.body_params:
        return False
    if any(d.call is not require_key for d in dependant.dependencies):
        return False
    names = set(parameters) - {"request"}
    hints = typing.get_type_hints(route.endpoint)
    return names == set(route.param_convertors) and all(
        hints.get(name) is str and type(convertor).__name__ in ("StringConvertor", "PathConvertor")
        for name, convertor in route.param_convertors.items()
    )


class RouteTable:
    """The directly served routes, by method and path."""

    def __init__(self, routes: Iterable[Any]) -> None:
        self._static: dict[tuple[str, str], Route] = {}
        self._dynamic: list[Route] = []
        for route in declared_routes(routes):
            original = getattr(route, "original_route", route)
            parameters = inspect.signature(route.endpoint).parameters
            if not isinstance(original, APIRoute) or not _direct(route, parameters):
                continue
            regex = route.path_regex if route.param_convertors else None
            protected = needs_key(route.dependant)
            takes_request = "request" in parameters
            for method in route.methods:
                served = Route(
                    method,
                    route.path,
                    regex,
                    dict(route.param_convertors),
                    route.endpoint,
                    protected,
                    takes_request,
                )
                if regex is None:
                    self._static[(method, route.path)] = served
                else:
                    self._dynamic.append(served)
        for method, path in self._static:
            # A static path is looked up before any path with parameters: no route may hide another.
            clash = next((r for r in self._dynamic if r.regex is not None and r.regex.match(path)), None)
            if clash is not None:
                raise ValueError(f"{method} {path} is also matched by {clash.path}")

    def __len__(self) -> int:
        return len(self._static) + len(self._dynamic)

    def find(self, method: str, path: str) -> tuple[Route, dict[str, Any]] | None:
        route = self._static.get((method, path))
        if route is not None:
            return route, {}
        for route in self._dynamic:
            if route.method != method or route.regex is None:
                continue
            match = route.regex.match(path)
            if match is not None:
                return route, {
                    name: route.convertors[name].convert(value) for name, value in match.groupdict().items()
                }
        return None


class Application(FastAPI):
    """A FastAPI application whose routes are called directly (see the module's docstring).

    ``serve_directly()`` builds the route table once every route is declared; until then, and for every
    request no direct route matches, FastAPI serves as usual.
    """

    services: Services
    """What the endpoints serve with (``server.api.http.services``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct_routes: RouteTable | None = None

    def serve_directly(self) -> None:
        self.direct_routes = RouteTable(self.routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.direct_routes is not None:
            found = self.direct_routes.find(scope["method"], scope["path"])
            if found is not None:
                await self._serve(found[0], found[1], scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve(
        self, route: Route, params: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> None:
        request_id = new_id("req_")
        scope["app"] = self
        scope.setdefault("state", {})["request_id"] = request_id
        request = Request(scope, receive, send)
        try:
            if route.protected:
                await require_key(request)
            response = await (
                route.endpoint(request, **params) if route.takes_request else route.endpoint(**params)
            )
        except Exception as exc:
            response = await exception_response(request, exc)
        if not any(name == b"x-request-id" for name, _ in response.raw_headers):
            response.raw_headers.append((b"x-request-id", request_id.encode()))
        started = False

        async def send_noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await response(scope, receive, send_noting_start)
        except Exception:
            # Answered here rather than raised to the server, which would drop a kept-alive connection
            # that the client's next request is about to use.
            log.exception("unexpected error in request %s", request_id)
            if not started:
                await server_error_response(request_id)(scope, receive, send)

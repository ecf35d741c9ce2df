"""Direct dispatch answers exactly as FastAPI's own routing would: the same statuses, headers, bodies and
ledger rows, for successes and for every kind of error; and only routes it can call faithfully are
dispatched directly."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from starlette.responses import Response

from server.api import create_app
from server.api.dispatch import RouteTable, declared_routes
from server.api.http import JSON, require_key
from server.services import Services
from server.usage import ledger_rows

CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/health", {}),
    ("GET", "/v1/models", {}),
    ("GET", "/v1/models/fake-chat", {}),
    ("GET", "/v1/models/no/such/model", {}),
    (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": "fake-chat", "messages": [{"role": "user", "content": "hi"}]}},
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
    ),
    (
        "POST",
        "/v1/chat/completions",
        {"json": {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}},
    ),
    ("POST", "/v1/chat/completions", {"content": b"{}", "headers": {"content-type": "text/plain"}}),
    ("POST", "/v1/embeddings", {"json": {"model": "fake-embed", "input": ["a", "b"]}}),
    ("POST", "/v1/embeddings", {"json": {"model": "fake-embed", "input": []}}),
    ("GET", "/v1/responses/resp_0123456789abcdef01234567", {}),
    ("DELETE", "/v1/responses/resp_0123456789abcdef01234567", {}),
    ("GET", "/v1/responses/resp_0123456789abcdef01234567/input_items", {}),
    ("GET", "/v1/openapi.json", {}),
    ("PUT", "/v1/models", {}),  # a method the path does not have: 405, from FastAPI either way
    ("GET", "/v1/nowhere", {}),  # no such path: 404, from FastAPI either way
]
VARYING = re.compile(
    rb'"(id|created|created_at|system_fingerprint)":("[^"]*"|\d+)|req_[0-9a-f]{27}|chatcmpl-[0-9a-f]+'
)


def _answer(app: FastAPI, key: str | None, method: str, path: str, options: dict[str, Any]) -> httpx.Response:
    async def call() -> httpx.Response:
        headers = dict(options.get("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://aisp.test") as client:
            return await client.request(method, path, **{**options, "headers": headers})

    return asyncio.run(call())


def _comparable(response: httpx.Response) -> tuple[int, str | None, bool, bytes]:
    return (
        response.status_code,
        response.headers.get("content-type"),
        "x-request-id" in response.headers,
        VARYING.sub(b"<varies>", response.content),
    )


@pytest.mark.parametrize("key_kind", ["valid", "bogus", "none"])
def test_direct_and_fastapi_routing_answer_alike(
    make_services: Callable[..., Services], key_kind: str
) -> None:
    services = make_services()
    direct, routed = create_app(services=services), create_app(services=services)
    routed.direct_routes = None  # FastAPI's routing, middleware and dependencies, as without dispatch
    assert direct.direct_routes is not None
    key = {"valid": services.keys.create("dispatch")[0], "bogus": "aisp-bogus", "none": None}[key_kind]
    for method, path, options in CALLS:
        rows_before = len(list(ledger_rows(services.store)))
        answers = [_answer(app, key, method, path, options) for app in (direct, routed)]
        services.ledger.flush()
        rows = list(ledger_rows(services.store))[rows_before:]
        assert _comparable(answers[0]) == _comparable(answers[1]), (method, path)
        assert len(rows) in (0, 2), (method, path, rows)  # a ledger row from each path, or from neither
        if rows:
            assert {
                k: v for k, v in rows[0].items() if k in ("status", "http_status", "endpoint", "model")
            } == {k: v for k, v in rows[1].items() if k in ("status", "http_status", "endpoint", "model")}


def test_every_api_route_is_served_directly(make_services: Callable[..., Services]) -> None:
    app = create_app(services=make_services())
    assert app.direct_routes is not None
    declared = [(m, r.path) for r in declared_routes(app.routes) for m in r.methods]
    assert len(app.direct_routes) == len(declared)
    for method, path in declared:
        concrete = path.replace("{model:path}", "a/b").replace("{response_id}", "resp_1")
        found = app.direct_routes.find(method, concrete)
        assert found is not None and found[0].path == path, (method, path)
    assert app.direct_routes.find("GET", "/v1/models/a/b")[1] == {"model": "a/b"}  # type: ignore[index]


def test_routes_that_need_fastapi_are_left_to_it() -> None:
    """A route with a query or body parameter, or a dependency other than the key, is not dispatched
    directly: calling its endpoint with the request alone would skip what FastAPI gives it."""
    router = APIRouter()

    async def other() -> None:
        return None

    @router.get("/query")
    async def query(request: Request, limit: int = 10) -> Response:
        return JSON({"limit": limit})

    @router.get("/other", dependencies=[Depends(other)])
    async def with_other(request: Request) -> Response:
        return JSON({})

    @router.get("/typed/{number}")
    async def typed(request: Request, number: int) -> Response:
        return JSON({"number": number})

    @router.get("/plain/{name}", dependencies=[Depends(require_key)])
    async def plain(request: Request, name: str) -> Response:
        return JSON({"name": name})

    app = FastAPI()
    app.include_router(router)
    table = RouteTable(app.routes)
    assert table.find("GET", "/query") is None
    assert table.find("GET", "/other") is None
    assert table.find("GET", "/typed/1") is None
    found = table.find("GET", "/plain/x")
    assert found is not None and found[0].protected and found[1] == {"name": "x"}


def test_a_static_path_hidden_by_a_parameter_route_is_refused() -> None:
    app = FastAPI()

    @app.get("/items/{item}")
    async def item(request: Request, item: str) -> Response:
        return JSON({})

    @app.get("/items/special")
    async def special(request: Request) -> Response:
        return JSON({})

    with pytest.raises(ValueError, match="also matched"):
        RouteTable(app.routes)

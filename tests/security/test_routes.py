"""Every route is either on the explicit public list or behind a key; path tricks and spoofed headers change
nothing; a stored response is visible only to the key that created it."""

from __future__ import annotations

import re
import typing
from collections.abc import Callable

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from server.api import PUBLIC_ROUTES, create_app
from server.api.auth import Key
from tests.conftest import Live
from tests.security.conftest import assert_envelope, raw

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
SAMPLE_PARAMS = {"model": "fake-chat", "response_id": "resp_0123456789abcdef01234567"}


def _concrete(path: str) -> str:
    """A route's path with its parameters filled in."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: SAMPLE_PARAMS[m.group(1)], path)


def _routes(app: FastAPI) -> list[APIRoute]:
    """The application's routes, each checked to be a plain API route (no mount or router would be seen
    through here: anything else could answer without the key check)."""
    for route in app.routes:
        assert isinstance(route, APIRoute), f"{route!r} is not an API route: it would bypass the key check"
    return [route for route in app.routes if isinstance(route, APIRoute)]


def _takes_key(route: APIRoute) -> bool:
    """Whether the route's handler has a ``Key`` parameter, which FastAPI fills by checking the key."""
    return Key in typing.get_type_hints(route.endpoint, include_extras=True).values()


def test_every_route_is_public_or_protected(live: Live) -> None:
    """Enumerates the application's routes: each (method, path) is public by name or its handler takes the
    key, and answers 401 without one. A route added without either fails here."""
    app = create_app(services=live.services)
    found: list[tuple[str, str]] = []
    for route in _routes(app):
        for method in sorted(route.methods or ()):
            found.append((method, route.path))
            if (method, route.path) in PUBLIC_ROUTES:
                continue
            assert _takes_key(route), f"{method} {route.path} is neither public nor protected"
    assert set(PUBLIC_ROUTES) <= set(found), "a public route that does not exist"
    assert len(found) >= 8
    with httpx.Client(base_url=live.url, timeout=10) as anonymous:
        for method, path in found:
            response = anonymous.request(method, _concrete(path), headers={"Authorization": "Bearer bogus"})
            if (method, path) in PUBLIC_ROUTES:
                assert response.status_code == 200
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            assert_envelope(response.status_code, response.content)


def test_every_method_on_every_path_is_refused_without_a_key(live: Live) -> None:
    """Methods a route does not have answer 405 (in the envelope), never the route's handler."""
    paths = {_concrete(route.path) for route in _routes(create_app(services=live.services))}
    with httpx.Client(base_url=live.url, timeout=10) as anonymous:
        for path in sorted(paths):
            for method in METHODS:
                response = anonymous.request(method, path)
                if path == "/health" and method == "GET":
                    continue
                assert response.status_code in (401, 405), (method, path, response.status_code)
                if method != "HEAD":
                    assert_envelope(response.status_code, response.content)


TRICKS = [
    "//v1/models",
    "/v1//models",
    "/v1/models/",
    "/v1/models//",
    "/V1/MODELS",
    "/v1/Models",
    "/v1/%6Dodels",
    "/v1%2Fmodels",
    "/v1/%2Fmodels",
    "/v1/models%2F",
    "/./v1/models",
    "/v1/./models",
    "/v1/../v1/models",
    "/health/../v1/models",
    "/health/..%2Fv1/models",
    "/health%2F..%2Fv1%2Fmodels",
    "/v1/models/..%2F..%2Fhealth",
    "/v1/chat/completions/",
    "/v1/chat//completions",
    "/v1/responses/x/",
    "/v1/responses/x/input_items/",
    "/v1/responses/..%2F..%2Fmodels",
    "/v1/models;x=1",
    "/v1/models%00",
    "/v1/models%20",
    "/v1/models#fragment",
    "/v1/models?",
    "http://127.0.0.1/v1/models",
    "*",
    "/health/",
    "//health",
    "/HEALTH",
]


@pytest.mark.parametrize("path", TRICKS)
def test_path_tricks_never_reach_a_handler_without_a_key(live: Live, path: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        request = f"{method} {path} HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n".encode()
        response = raw(live.thread.port, request, source="127.0.3.1")
        assert response.status in (400, 401, 404, 405), (method, path, response.status, response.body[:200])
        assert "location" not in response.headers, (
            f"{method} {path} redirects to {response.headers['location']}"
        )
        assert_envelope(response.status, response.body)


@pytest.mark.parametrize("path", TRICKS)
def test_path_tricks_with_a_key_reach_nothing_new(live: Live, path: str) -> None:
    """With a key, a trick answers as its canonical path does, or 404: it never reaches another handler."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {live.key}\r\n\r\n"
    ).encode()
    response = raw(live.thread.port, request, source="127.0.3.2")
    assert "location" not in response.headers, response.headers
    if response.status == 200:
        # Only what any client could ask for directly: the model list or the health check.
        assert response.body.startswith((b'{"object":"list"', b'{"status":"ok"}')), response.body[:200]
    else:
        assert_envelope(response.status, response.body)


SPOOFS: list[dict[str, str]] = [
    {"Host": "evil.example"},
    {"Host": "127.0.0.1:1"},
    {"X-Forwarded-For": "127.0.0.1"},
    {"X-Forwarded-For": "10.1.2.3, 127.0.0.1"},
    {"X-Forwarded-Proto": "https"},
    {"X-Forwarded-Host": "evil.example"},
    {"X-Real-IP": "127.0.0.1"},
    {"Forwarded": "for=127.0.0.1;proto=https;host=evil.example"},
    {"X-Original-URL": "/health"},
    {"X-Rewrite-URL": "/health"},
    {"X-HTTP-Method-Override": "GET"},
]


@pytest.mark.parametrize("spoof", SPOOFS, ids=[next(iter(s)) + ":" + next(iter(s.values())) for s in SPOOFS])
def test_spoofed_host_and_forwarding_headers_change_nothing(live: Live, spoof: dict[str, str]) -> None:
    # From 127.0.0.1: the address a server behind a local proxy would be tempted to trust.
    with httpx.Client(base_url=live.url, timeout=10) as client:
        assert client.get("/v1/models", headers=spoof).status_code == 401
        assert (
            client.get("/v1/models", headers={**spoof, "Authorization": f"Bearer {live.key}"}).status_code
            == 200
        )
        assert client.delete("/v1/models", headers=spoof).status_code == 405
        assert client.get("/v1/chat/completions/", headers=spoof).status_code == 404


def test_forwarding_headers_do_not_move_the_throttle(make_live: Callable[..., Live]) -> None:
    """The failed-authentication throttle counts the connection's real address, whatever headers claim."""
    live = make_live()
    guesser = httpx.Client(
        base_url=live.url, transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=10
    )
    with guesser:
        statuses = [
            guesser.get(
                "/v1/models", headers={"X-Forwarded-For": f"10.0.0.{i}", "X-Real-IP": f"10.0.1.{i}"}
            ).status_code
            for i in range(25)
        ]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}, statuses
    # Blaming another address in a header does not lock that address out.
    framer = httpx.Client(
        base_url=live.url, transport=httpx.HTTPTransport(local_address="127.0.0.1"), timeout=10
    )
    with framer:
        for _ in range(25):
            framer.get("/v1/models", headers={"X-Forwarded-For": "127.0.4.3"})
    victim = httpx.Client(
        base_url=live.url, transport=httpx.HTTPTransport(local_address="127.0.4.3"), timeout=10
    )
    with victim:
        assert victim.get("/v1/models", headers={"Authorization": f"Bearer {live.key}"}).status_code == 200


def test_a_stored_response_is_visible_only_to_its_key(live: Live) -> None:
    owner = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}, timeout=30)
    other = httpx.Client(
        base_url=live.url, headers={"Authorization": f"Bearer {live.new_key('other')}"}, timeout=30
    )
    with owner, other:
        created = owner.post(
            "/v1/responses", json={"model": "fake-chat", "input": "secret plans", "store": True}
        )
        assert created.status_code == 200
        response_id = created.json()["id"]
        for method, path in (
            ("GET", f"/v1/responses/{response_id}"),
            ("GET", f"/v1/responses/{response_id}/input_items"),
            ("DELETE", f"/v1/responses/{response_id}"),
        ):
            refused = other.request(method, path)
            error = assert_envelope(refused.status_code, refused.content, low=404, high=404)
            assert "secret" not in refused.text and error["code"] == "not_found"
        chained = other.post(
            "/v1/responses",
            json={"model": "fake-chat", "input": "go on", "previous_response_id": response_id},
        )
        assert_envelope(chained.status_code, chained.content, low=404, high=404)
        assert chained.json()["error"]["param"] == "previous_response_id"
        # An unknown id and someone else's id look the same.
        unknown = other.get("/v1/responses/resp_" + "0" * 24)
        assert unknown.status_code == 404
        assert unknown.json()["error"]["message"].replace("0" * 24, "") == refused.json()["error"][
            "message"
        ].replace(response_id.removeprefix("resp_"), "")
        # The owner still has it, untouched by the other key's delete.
        kept = owner.get(f"/v1/responses/{response_id}")
        assert kept.status_code == 200 and kept.json()["id"] == response_id
        assert (
            owner.get(f"/v1/responses/{response_id}/input_items").json()["data"][0]["content"][0]["text"]
            == "secret plans"
        )

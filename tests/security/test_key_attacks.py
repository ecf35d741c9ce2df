"""Attacks on API keys: malformed tokens are refused in well under 50 ms without a single SQL statement, keys
never travel in URLs, and a key that is revoked, expired or rolled past its grace is refused at once."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from server.access import keys
from tests.conftest import Live
from tests.security.conftest import TracedLive, assert_envelope, raw


def _client(live: Live, source: str, headers: dict[str, str] | None = None) -> httpx.Client:
    """A client from its own loopback address: the failed-authentication throttle counts per address."""
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=live.url, headers=headers or {}, transport=transport, timeout=10)


def _addresses() -> Iterator[str]:
    for third in range(1, 255):
        for fourth in range(2, 255):
            yield f"127.0.{third}.{fourth}"


def _malformed(valid: str) -> dict[str, list[tuple[str, str | bytes]]]:
    """Header lists that must be refused by their shape alone."""
    body = valid[len(keys.PREFIX) : -6]
    wrong_check = valid[:-1] + ("A" if valid[-1] != "A" else "B")
    flipped = valid[:10] + ("x" if valid[10] != "x" else "y") + valid[11:]
    return {
        "missing": [],
        "empty-bearer": [("authorization", "Bearer")],
        "basic": [("authorization", "Basic dXNlcjpwYXNzd29yZA==")],
        "basic-with-key": [("authorization", f"Basic {valid}")],
        "token-scheme": [("authorization", f"Token {valid}")],
        "no-space": [("authorization", f"Bearer{valid}")],
        "two-headers-both-valid": [
            ("authorization", f"Bearer {valid}"),
            ("authorization", f"Bearer {valid}"),
        ],
        "two-headers-one-valid": [("authorization", "Bearer nope"), ("authorization", f"Bearer {valid}")],
        "sql-injection": [("authorization", "Bearer ' OR '1'='1' --")],
        "sql-injection-shaped": [("authorization", "Bearer aisp-'; DROP TABLE api_key; --" + "a" * 14)],
        "like-wildcard": [("authorization", "Bearer aisp-" + "%" * 49)],
        "10KB": [("authorization", "Bearer " + "a" * 10_240)],
        "10KB-prefixed": [("authorization", "Bearer aisp-" + "A" * 10_240)],
        "wrong-checksum": [("authorization", f"Bearer {wrong_check}")],
        "flipped-body": [("authorization", f"Bearer {flipped}")],
        "lowercased": [("authorization", f"Bearer {valid.lower()}")],
        "truncated": [("authorization", f"Bearer {valid[:-1]}")],
        "extended": [("authorization", f"Bearer {valid}x")],
        "other-prefix": [("authorization", f"Bearer sk-{body}{valid[-6:]}")],
        "latin1": [("authorization", "Bearer aisp-\xe9\xe9\xe9".encode("latin-1"))],
        "json": [("authorization", 'Bearer {"key": "aisp-"}')],
        "comma-list": [("authorization", f"Bearer {valid}, Bearer {valid}")],
    }


def _send(client: httpx.Client, headers: list[tuple[str, str | bytes]]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    mixed: Any = headers  # httpx takes str and bytes values alike; its annotations say one or the other
    response = client.get("/v1/models", headers=httpx.Headers(mixed))
    return response, time.perf_counter() - started


def test_malformed_keys_get_401_fast_and_never_reach_the_database(traced_live: TracedLive) -> None:
    live, trace = traced_live.live, traced_live.trace
    addresses = _addresses()
    # The trace sees every connection: a valid key is looked up by its digest, on the server's thread.
    with _client(live, next(addresses), {"Authorization": f"Bearer {live.key}"}) as client:
        trace.clear()
        assert client.get("/v1/models").status_code == 200
        assert any("FROM api_key WHERE digest" in sql for _, sql in trace.statements), trace.statements
    timings: dict[str, float] = {}
    for name, headers in _malformed(live.key).items():
        with _client(live, next(addresses)) as client:
            _send(client, [("authorization", "Bearer warm-up")])  # open the connection first
            trace.clear()
            best = float("inf")
            for _ in range(3):
                response, elapsed = _send(client, headers)
                assert response.status_code == 401, (name, response.status_code, response.text)
                error = assert_envelope(response.status_code, response.content)
                assert error["code"] == "invalid_api_key", (name, error)
                best = min(best, elapsed)
            assert trace.statements == [], f"{name}: {trace.statements}"
            timings[name] = best
    slow = {name: round(t * 1000, 1) for name, t in timings.items() if t >= 0.05}
    assert not slow, f"refusals slower than 50 ms: {slow}"
    assert statistics.median(timings.values()) < 0.01, timings


def test_a_well_formed_unknown_key_costs_one_indexed_lookup(traced_live: TracedLive) -> None:
    live, trace = traced_live.live, traced_live.trace
    forged = keys.generate_key()  # the right shape and checksum, but never issued
    with _client(live, "127.0.9.9", {"Authorization": f"Bearer {forged}"}) as client:
        client.get("/health")
        trace.clear()
        response = client.get("/v1/models")
    assert response.status_code == 401
    statements = [sql for _, sql in trace.statements if not sql.startswith("PRAGMA")]  # opening a connection
    assert len(statements) == 1 and "FROM api_key WHERE digest = " in statements[0], statements
    assert forged not in statements[0] and live.services.keys.digest(forged) in statements[0]


def test_injection_in_the_key_header_over_raw_http(live: Live) -> None:
    """Header bytes a client library would refuse to send: a 4xx in the envelope, and nothing else."""
    for number, value in enumerate(
        [
            b"Bearer \x00aisp-",
            b"Bearer aisp-\xff\xfe",
            b"Bearer " + b"\xc3\xa9" * 30,
            b"Bearer\t" + live.key.encode(),
            b"Bearer   ",
            b"Bearer \x1b[2J" + live.key.encode(),
        ]
    ):
        request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: " + value + b"\r\n\r\n"
        response = raw(live.thread.port, request, source=f"127.0.8.{number + 1}")
        assert_envelope(response.status, response.body)


@pytest.mark.parametrize("param", ["api_key", "API_KEY", "key", "token", "access_token", "apikey", "api-key"])
def test_a_key_in_the_query_string_is_refused(live: Live, param: str) -> None:
    with _client(live, "127.0.7.1") as anonymous:
        response = anonymous.get("/v1/models", params={param: live.key})
    assert_envelope(response.status_code, response.content, low=401, high=401)
    # Even alongside a valid header: a key that has been in a URL is in someone's logs.
    with _client(live, "127.0.7.2", {"Authorization": f"Bearer {live.key}"}) as client:
        response = client.get("/v1/models", params={param: live.key})
        assert response.status_code == 401
        assert "header" in response.json()["error"]["message"]
        assert client.post("/v1/chat/completions", params={param: "x"}, json={}).status_code == 401


def test_revoked_expired_and_rolled_keys_are_refused_on_the_next_request(live: Live) -> None:
    service = live.services.keys
    revoked_secret, revoked = service.create("to-revoke")
    expiring_secret, _ = service.create("to-expire", expires_at=time.time() + 1.0)
    rolled_secret, rolled = service.create("to-roll")
    with (
        _client(live, "127.0.6.1", {"Authorization": f"Bearer {revoked_secret}"}) as revoked_client,
        _client(live, "127.0.6.2", {"Authorization": f"Bearer {expiring_secret}"}) as expiring_client,
        _client(live, "127.0.6.3", {"Authorization": f"Bearer {rolled_secret}"}) as rolled_client,
    ):
        for client in (revoked_client, expiring_client, rolled_client):
            assert client.get("/v1/models").status_code == 200  # connections kept alive from here on
        service.revoke(revoked.id)
        response = revoked_client.get("/v1/models")
        assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]
        new_secret, _ = service.roll(rolled.id, grace_seconds=1.0)
        assert rolled_client.get("/v1/models").status_code == 200, "the old key works during its grace"
        time.sleep(1.1)
        response = expiring_client.get("/v1/models")
        assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
        assert rolled_client.get("/v1/models").status_code == 401, "past its grace the old key is refused"
    with _client(live, "127.0.6.4", {"Authorization": f"Bearer {new_secret}"}) as client:
        assert client.get("/v1/models").status_code == 200


def test_failed_authentication_is_throttled_per_address(live: Live) -> None:
    with _client(live, "127.0.5.1", {"Authorization": "Bearer wrong"}) as guesser:
        statuses = [guesser.get("/v1/models").status_code for _ in range(25)]
        assert statuses[:20] == [401] * 20
        assert set(statuses[20:]) == {429}
        throttled = guesser.get("/v1/models")
        assert_envelope(throttled.status_code, throttled.json())
        assert int(throttled.headers["retry-after"]) >= 1
    with _client(live, "127.0.5.2", {"Authorization": f"Bearer {live.key}"}) as other:
        assert other.get("/v1/models").status_code == 200, "other addresses are not locked out"


def test_a_valid_key_works_while_bad_keys_from_its_address_are_throttled(live: Live) -> None:
    """One forgotten script with a revoked key shares 127.0.0.1 with every local client: its failures are
    throttled, the valid keys beside it are not."""
    revoked, record = live.services.keys.create("forgotten")
    live.services.keys.revoke(record.id)
    flood = {"Authorization": f"Bearer {revoked}"}
    valid = {"Authorization": f"Bearer {live.key}"}
    with _client(live, "127.0.5.3") as client:
        statuses = []
        for n in range(60):
            statuses.append(client.get("/v1/models", headers=flood).status_code)
            if n % 5 == 0:
                assert client.get("/v1/models", headers=valid).status_code == 200, f"after {n} failures"
        assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}
        answer = client.post(
            "/v1/chat/completions",
            headers=valid,
            json={"model": "fake-chat", "messages": [{"role": "user", "content": "still here"}]},
        )
        assert answer.status_code == 200

"""Attacks on connections: a request body that is never read cannot pin a connection past the header
deadline, and one address that opens connections and sends nothing cannot keep anyone else out."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import Live, fake_models
from tests.security.conftest import assert_envelope, parse_raw

HEADER_TIMEOUT_S = 1.0
PIECE = b"x" * (200 * 1024)
"""More than uvicorn buffers before it stops reading (64 KB): the rest waits in the socket."""


def _connect(live: Live, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", live.thread.port), timeout=10, source_address=(source, 0))


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without answering: {data[:200]!r}"
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = parse_raw(data).headers.get("content-length")
            if length is not None and len(body) >= int(length):
                return data


def _seconds_until_closed(sock: socket.socket, limit: float) -> float:
    """How long until the server closes the connection (reading and dropping anything else it says)."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            if not sock.recv(65536):
                break
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
    return time.monotonic() - started


def _pinning_requests(key: str) -> dict[str, bytes]:
    """Requests answered without their body being read, each declaring far more body than will come."""
    big = "Content-Length: 10000000\r\n"
    return {
        "health-with-a-body": f"GET /health HTTP/1.1\r\nHost: x\r\n{big}\r\n".encode(),
        "401": f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{big}\r\n".encode(),
        "405": f"PUT /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n{big}\r\n".encode(),
        "413": f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n{big}\r\n".encode(),
        "415": (
            f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: 300000\r\n\r\n"
        ).encode(),
    }


def test_connections_pinned_by_unread_bodies_are_closed_within_the_header_deadline(
    make_live: Callable[..., Live],
) -> None:
    live = make_live(header_timeout_s=HEADER_TIMEOUT_S)
    requests = _pinning_requests(live.key)
    socks: dict[str, socket.socket] = {}
    try:
        for name, head in requests.items():
            sock = _connect(live)
            sock.sendall(head + PIECE)  # then nothing more: the rest of the body never comes
            status = parse_raw(_read_response(sock)).status
            assert status == {"health-with-a-body": 200}.get(name, int(name) if name.isdigit() else 0), name
            socks[name] = sock
        for name, sock in socks.items():
            held = _seconds_until_closed(sock, limit=HEADER_TIMEOUT_S + 5)
            assert held < HEADER_TIMEOUT_S + 2, f"{name}: the connection was held {held:.1f} s"
    finally:
        for sock in socks.values():
            sock.close()
    with httpx.Client(base_url=live.base_url, headers={"Authorization": f"Bearer {live.key}"}) as client:
        assert client.get("/models").status_code == 200


def test_a_body_that_arrives_after_its_answer_leaves_the_connection_usable(
    make_live: Callable[..., Live],
) -> None:
    """Drained in time, the connection serves the next request, and still closes when it goes idle."""
    live = make_live(header_timeout_s=HEADER_TIMEOUT_S)
    with _connect(live) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: {len(PIECE) * 2}\r\n\r\n".encode())
        sock.sendall(PIECE)
        assert parse_raw(_read_response(sock)).status == 200
        sock.sendall(PIECE)  # the rest of the body, after the answer
        sock.sendall(
            f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live.key}\r\n\r\n".encode()
        )
        answer = parse_raw(_read_response(sock))
        assert answer.status == 200 and json.loads(answer.body)["object"] == "list"


def test_one_address_cannot_take_every_connection(make_live: Callable[..., Live]) -> None:
    """A flood of idle connections from one address: it keeps at most its cap, its oldest idle connections
    make room for its newer ones, and a valid client, from that address or another, is served."""
    live = make_live(max_connections=16, max_connections_per_address=4, header_timeout_s=30)
    flood = [_connect(live, "127.0.8.1") for _ in range(40)]
    try:
        time.sleep(0.3)
        closed = sum(1 for sock in flood if _seconds_until_closed(sock, 0.05) < 0.05)
        assert closed >= 36, f"only {closed} of the 40 idle connections were closed"
        for source in ("127.0.8.1", "127.0.8.2"):
            transport = httpx.HTTPTransport(local_address=source)
            with httpx.Client(base_url=live.base_url, transport=transport) as client:
                response = client.get("/models", headers={"Authorization": f"Bearer {live.key}"})
                assert response.status_code == 200, source
    finally:
        for sock in flood:
            sock.close()


def test_many_addresses_cannot_fill_the_server(make_live: Callable[..., Live]) -> None:
    """Idle connections from many addresses fill the overall cap; a new client still gets in."""
    live = make_live(max_connections=16, max_connections_per_address=4, header_timeout_s=30)
    flood = [_connect(live, f"127.0.9.{1 + n % 8}") for n in range(32)]
    try:
        time.sleep(0.3)
        transport = httpx.HTTPTransport(local_address="127.0.9.100")
        with httpx.Client(base_url=live.base_url, transport=transport) as client:
            assert client.get("/models", headers={"Authorization": f"Bearer {live.key}"}).status_code == 200
    finally:
        for sock in flood:
            sock.close()


@pytest.mark.timeout(60)
def test_an_address_whose_connections_are_all_busy_is_refused_with_retry_after(
    make_live: Callable[..., Live],
) -> None:
    live = make_live(models=fake_models(delay="0.05", repeat="1"), max_connections_per_address=2)
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "a b"}], "max_tokens": 40}
    finished: list[int] = []

    def stream() -> None:
        transport = httpx.HTTPTransport(local_address="127.0.10.1")
        with httpx.Client(base_url=live.base_url, transport=transport, timeout=30) as client:
            response = client.post(
                "/chat/completions", json=body, headers={"Authorization": f"Bearer {live.key}"}
            )
            finished.append(response.status_code)

    threads = [threading.Thread(target=stream) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    with _connect(live, "127.0.10.1") as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        refused = parse_raw(_read_response(sock))
    assert refused.status == 503 and int(refused.headers["retry-after"]) >= 1
    assert_envelope(refused.status, refused.body, low=503, high=503)
    for thread in threads:
        thread.join(30)
    assert finished == [200, 200], "the busy connections were never cut"

"""LAN safety: loopback unless switched on, bounded bodies and headers and connections, slow clients cut off."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from server.config import ConfigError, load_settings
from server.runner import ServerThread
from tests.conftest import Live


def test_binds_loopback_unless_lan_is_switched_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"AISP_DATA_DIR": str(tmp_path)}
    assert load_settings(environ=env).bind_host == "127.0.0.1"
    assert load_settings(environ={**env, "AISP_LAN": "1"}).bind_host == "0.0.0.0"
    with pytest.raises(ConfigError, match="loopback"):
        load_settings(environ={**env, "AISP_HOST": "0.0.0.0"})
    with pytest.raises(ConfigError, match="AISP_LAN"):
        load_settings(environ={**env, "AISP_LAN": "maybe"})


def test_a_live_server_listens_on_loopback_only(live: Live) -> None:
    assert live.thread.host == "127.0.0.1"
    probe = socket.socket()
    try:
        probe.settimeout(1)
        probe.connect(("127.0.0.1", live.thread.port))
    finally:
        probe.close()


def _raw(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def _body(response: bytes) -> dict:  # type: ignore[type-arg]
    return json.loads(response.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


def test_oversized_bodies_get_413(make_live: Callable[..., Live]) -> None:
    live = make_live(max_body_bytes=64 * 1024)
    headers = {"authorization": f"Bearer {live.key}"}
    big = {"model": "fake-chat", "messages": [{"role": "user", "content": "x" * 100_000}]}
    with httpx.Client(base_url=live.base_url, headers=headers) as http:
        declared = http.post("/chat/completions", json=big)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "request_too_large"

        def chunks() -> Iterator[bytes]:
            yield b'{"model": "fake-chat", "messages": [{"role": "user", "content": "'
            for _ in range(200):
                yield b"y" * 1024
            yield b'"}]}'

        streamed = http.post(
            "/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert http.get("/models").status_code == 200


def test_oversized_headers_are_refused_in_the_envelope(live: Live) -> None:
    request = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    response = _raw(live.thread.port, request)
    assert response.startswith(b"HTTP/1.1 431")
    error = _body(response)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "headers_too_large"


def test_malformed_http_is_refused_in_the_envelope(live: Live) -> None:
    response = _raw(live.thread.port, b"GARBAGE / HTTP/9\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400")
    assert _body(response)["error"]["code"] == "invalid_http_request"


def test_slow_headers_are_timed_out(make_live: Callable[..., Live]) -> None:
    live = make_live(header_timeout_s=0.5)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", live.thread.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
        received = b""
        for char in b"Host: 127.0.0.1\r\n":
            try:
                sock.sendall(bytes([char]))
            except OSError:
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                received += sock.recv(65536)
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            if received:
                break
    elapsed = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 408"), received[:80]
    assert _body(received)["error"]["code"] == "request_timeout"
    assert elapsed < 3


def test_slow_bodies_are_timed_out(make_live: Callable[..., Live]) -> None:
    live = make_live(body_timeout_s=0.5)
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live.key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    ).encode()
    response = _raw(live.thread.port, head, timeout=3)
    assert b" 408 " in response.split(b"\r\n", 1)[0]
    assert _body(response)["error"]["code"] == "request_timeout"


def test_a_body_that_arrives_in_pieces_within_the_deadline_is_read_whole(
    make_live: Callable[..., Live],
) -> None:
    live = make_live(body_timeout_s=2.0)
    body = json.dumps(
        {"model": "fake-chat", "messages": [{"role": "user", "content": "in two pieces"}]}
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {live.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live.thread.port), timeout=5) as sock:
        sock.sendall(head + body[:10])
        time.sleep(0.3)
        sock.sendall(body[10:])
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    assert _body(received)["choices"][0]["message"]["content"] == "in two pieces"


def test_connections_are_bounded(make_live: Callable[..., Live]) -> None:
    """At the cap, the oldest idle connection makes room for a new one; nothing past the cap stays open."""
    live = make_live(max_connections=8)
    held = [socket.create_connection(("127.0.0.1", live.thread.port)) for _ in range(8)]
    try:
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", live.thread.port), timeout=2)
        with extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := extra.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")
        held[0].settimeout(2)
        assert held[0].recv(4096) == b"", "the oldest idle connection was closed to make room"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.2)
    with httpx.Client(base_url=live.base_url) as http:
        assert http.get("/models", headers={"authorization": f"Bearer {live.key}"}).status_code == 200


def test_port_in_use_is_reported(live: Live) -> None:
    clash = ServerThread(live.services, port=live.thread.port)
    with pytest.raises(Exception, match="already in use"):
        clash.start()

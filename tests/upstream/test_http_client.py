"""The upstream HTTP client against small raw servers on loopback: framing, decoding, keep-alive, the one
retry of a stale connection, timeouts, flow control and malformed answers. Each test runs on uvloop (the
server's loop) and on asyncio's own loop (Windows has no uvloop)."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from server.engines import http_client
from server.engines.http_client import (
    ConnectError,
    Disconnected,
    Endpoint,
    HTTPClient,
    ProtocolError,
    ReadTimeout,
)
from server.runner import new_event_loop

T = TypeVar("T")
Handler = Callable[["Conn"], Awaitable[None]]
HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-test"}


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    factory = new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(scenario: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(scenario)

    return run


@dataclass
class Conn:
    """One accepted connection, as the handler sees it."""

    number: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def request(self) -> tuple[bytes, bytes] | None:
        """The next request's head and body, or None once the client has closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return head, await self.reader.readexactly(length)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


@dataclass
class Upstream:
    endpoint: Endpoint
    connections: int = 0
    """Accepted so far; the first is number 1."""
    hangups: set[int] = field(default_factory=set)
    """The connections the client closed."""

    async def hung_up(self, number: int) -> None:
        """Wait until the client closes connection ``number``."""
        async with asyncio.timeout(5):
            while number not in self.hangups:
                await asyncio.sleep(0.01)


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Upstream]:
    """A raw HTTP server on 127.0.0.1 answering with whatever ``handler`` writes; its base URL ends in /v1."""
    upstream: Upstream | None = None
    handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert upstream is not None
        upstream.connections += 1
        conn = Conn(upstream.connections, reader, writer)
        task = asyncio.current_task()
        assert task is not None
        handlers[task] = writer
        try:
            await handler(conn)
            if await reader.read() == b"":
                upstream.hangups.add(conn.number)
        except (ConnectionError, asyncio.IncompleteReadError):
            upstream.hangups.add(conn.number)
        finally:
            writer.transport.abort()
            handlers.pop(task, None)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = Upstream(Endpoint(f"http://127.0.0.1:{port}/v1", HEADERS))
    try:
        yield upstream
    finally:
        server.close()
        for writer in handlers.values():
            writer.transport.abort()  # ends handlers still waiting on the client
        if handlers:
            await asyncio.wait(list(handlers), timeout=5)
        await server.wait_closed()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in (f"Content-Length: {len(body)}", *headers))
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def keep_answering(
    conn: Conn, make: Callable[[bytes], bytes] = lambda body: answer(b"ok:" + body)
) -> None:
    while (request := await conn.request()) is not None:
        await conn.send(make(request[1]))


def test_a_response_framed_by_content_length(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(conn: Conn) -> None:
        request = await conn.request()
        assert request is not None
        seen.append(request)
        await conn.send(answer(b'{"ok": true}', "X-Upstream: Mock", "Set-Cookie: a=1", "Set-Cookie: b=2"))

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            response = await client.request(
                upstream.endpoint, "POST", "/chat/completions", b'{"x": 1}', read_timeout_s=5
            )
            assert response.status == 200
            assert response.headers["x-upstream"] == "Mock"
            assert response.headers["set-cookie"] == "a=1, b=2"
            assert await response.read() == b'{"ok": true}'
            response.close()
            await client.close()

    run(scenario())
    ((head, body),) = seen
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert {"content-length: 8", "accept-encoding: identity", "authorization: Bearer sk-test"} <= set(lines)
    assert any(line.startswith("host: 127.0.0.1:") for line in lines)
    assert body == b'{"x": 1}'


def test_a_chunked_body_arrives_chunk_by_chunk(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for word in (b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"):
            await conn.send(chunk(word))
            await asyncio.sleep(0.02)
        await conn.send(b"0\r\n\r\n")
        await keep_answering(conn)

    async def scenario() -> list[bytes]:
        async with serve(handler) as upstream:
            client = HTTPClient()
            response = await client.request(
                upstream.endpoint, "POST", "/chat/completions", b"{}", read_timeout_s=5
            )
            chunks = [c async for c in response.iter_chunks()]
            response.close()
            again = await client.request(
                upstream.endpoint, "POST", "/chat/completions", b"2", read_timeout_s=5
            )
            assert await again.read() == b"ok:2"
            assert upstream.connections == 1  # the chunked answer ended cleanly: the connection was kept
            await client.close()
            return chunks

    assert run(scenario()) == [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]


def test_a_body_framed_by_the_close_and_the_connection_not_reused(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await conn.send(b"the end")
        conn.writer.close()

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            for _ in range(2):
                response = await client.request(upstream.endpoint, "GET", "/models", read_timeout_s=5)
                assert await response.read() == b"until the end"
                response.close()
            assert upstream.connections == 2
            await client.close()

    run(scenario())


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),  # raw deflate, as some servers send it
    ],
)
def test_a_compressed_body_is_decoded(
    run: Callable[[Coroutine[Any, Any, Any]], Any], encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    text = b'{"content": "' + b"compressible " * 5000 + b'"}'

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer(compress(text), f"Content-Encoding: {encoding}"))
        await keep_answering(conn)

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            response = await client.request(upstream.endpoint, "POST", "/embeddings", b"{}", read_timeout_s=5)
            assert await response.read() == text
            again = await client.request(upstream.endpoint, "POST", "/embeddings", b"{}", read_timeout_s=5)
            assert await again.read() == b"ok:{}"
            assert upstream.connections == 1
            await client.close()

    run(scenario())


def test_keep_alive_serves_sequential_and_concurrent_requests(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    async def scenario() -> None:
        async with serve(keep_answering) as upstream:
            client = HTTPClient()
            for i in range(3):
                response = await client.request(
                    upstream.endpoint, "POST", "/x", str(i).encode(), read_timeout_s=5
                )
                assert await response.read() == f"ok:{i}".encode()
                response.close()
            assert upstream.connections == 1

            async def one(i: int) -> bytes:
                response = await client.request(
                    upstream.endpoint, "POST", "/x", str(i).encode(), read_timeout_s=5
                )
                return await response.read()

            assert await asyncio.gather(*(one(i) for i in range(4))) == [f"ok:{i}".encode() for i in range(4)]
            assert upstream.connections == 4  # one was idle; three more opened for the others in flight
            await client.close()
            for number in range(1, 5):
                await upstream.hung_up(number)

    run(scenario())


def test_a_stale_idle_connection_is_retried_once_on_a_fresh_one(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    async def handler(conn: Conn) -> None:
        if conn.number == 1:
            await conn.request()
            await conn.send(answer(b"first"))
            await conn.request()  # the upstream gave up on the connection as the request arrived
            conn.writer.transport.abort()
            return
        await keep_answering(conn)

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            first = await client.request(upstream.endpoint, "POST", "/x", b"1", read_timeout_s=5)
            assert await first.read() == b"first"
            second = await client.request(upstream.endpoint, "POST", "/x", b"2", read_timeout_s=5)
            assert await second.read() == b"ok:2"
            assert upstream.connections == 2
            await client.close()

    run(scenario())


@pytest.mark.parametrize("partial", [b"", b"HTTP/1.1 200 OK\r\n"])
def test_no_retry_on_a_fresh_connection_or_after_the_answer_began(
    run: Callable[[Coroutine[Any, Any, Any]], Any], partial: bytes
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        if partial:
            await conn.send(answer(b"first"))
            await conn.request()
            await conn.send(partial)
        conn.writer.transport.abort()

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            if partial:  # reused, but the answer had begun
                first = await client.request(upstream.endpoint, "POST", "/x", b"1", read_timeout_s=5)
                assert await first.read() == b"first"
            with pytest.raises(Disconnected, match="closed the connection"):
                await client.request(upstream.endpoint, "POST", "/x", b"2", read_timeout_s=5)
            assert upstream.connections == 1
            await client.close()

    run(scenario())


def test_closing_a_response_mid_body_closes_its_connection(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"data: one\n\n"))
        # and more to come, until the client hangs up

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            response = await client.request(upstream.endpoint, "POST", "/x", b"{}", read_timeout_s=5)
            async for data in response.iter_chunks():
                assert data == b"data: one\n\n"
                break
            response.close()
            await upstream.hung_up(1)
            await client.close()

    run(scenario())


def test_the_read_timeout_before_the_head_and_between_chunks(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        if conn.number == 2:
            await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"one"))
        await conn.reader.read()  # and silent until the client hangs up

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            with pytest.raises(ReadTimeout, match="sent nothing for 0.2 s"):
                await client.request(upstream.endpoint, "POST", "/x", b"{}", read_timeout_s=0.2)
            response = await client.request(upstream.endpoint, "POST", "/x", b"{}", read_timeout_s=0.2)
            received = []
            with pytest.raises(ReadTimeout):
                async for data in response.iter_chunks():
                    received.append(data)
            assert received == [b"one"]
            await upstream.hung_up(1)
            await upstream.hung_up(2)  # a silent upstream is dropped
            await client.close()

    run(scenario())


def test_a_refused_connection(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    async def scenario() -> None:
        async with serve(keep_answering) as upstream:
            endpoint = upstream.endpoint  # the server is gone once the block ends
        client = HTTPClient()
        with pytest.raises(ConnectError, match="cannot connect to 127.0.0.1"):
            await client.request(endpoint, "POST", "/x", b"{}", read_timeout_s=5)
        await client.close()

    run(scenario())


def test_a_large_body_is_read_with_flow_control(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    size = 48 << 20
    body = bytes(range(256)) * (size // 256)
    backlog: list[int] = []

    async def handler(conn: Conn) -> None:
        await conn.request()
        conn.writer.write(answer(body))  # no drain: what the client does not read waits here
        await asyncio.sleep(0.5)
        backlog.append(conn.writer.transport.get_write_buffer_size())
        await conn.writer.drain()
        await keep_answering(conn)

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            response = await client.request(upstream.endpoint, "POST", "/x", b"{}", read_timeout_s=5)
            await asyncio.sleep(1.0)  # not reading: the client stops taking bytes off the socket
            assert backlog and backlog[0] > size // 2
            received = 0
            async for data in response.iter_chunks():
                assert data == body[received : received + len(data)]
                received += len(data)
            assert received == size
            again = await client.request(upstream.endpoint, "POST", "/x", b"2", read_timeout_s=5)
            assert await again.read() == b"ok:2"
            assert upstream.connections == 1
            await client.close()

    run(scenario())


def test_read_takes_a_large_body_whole(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    body = b"x" * (8 << 20)

    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 1 << 16):
            conn.writer.write(chunk(body[start : start + (1 << 16)]))
        await conn.send(b"0\r\n\r\n")

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            response = await client.request(upstream.endpoint, "POST", "/x", b"{}", read_timeout_s=5)
            assert await response.read() == body
            await client.close()

    run(scenario())


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"this is not HTTP\r\n\r\n", "malformed response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi", "malformed response"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Encoding: br\r\n\r\nhi",
            "unsupported encoding: br",
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\nnope!",
            "does not decompress",
        ),
    ],
)
def test_a_malformed_response_is_an_error(
    run: Callable[[Coroutine[Any, Any, Any]], Any], reply: bytes, message: str
) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(reply)
        await conn.reader.read()

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            with pytest.raises(ProtocolError, match=message):
                response = await client.request(upstream.endpoint, "POST", "/x", b"{}", read_timeout_s=5)
                await response.read()
            await upstream.hung_up(1)  # and the connection is dropped
            await client.close()

    run(scenario())


def test_an_interim_answer_is_skipped(run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    async def handler(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + answer(b"final", "X-Final: yes"))

    async def scenario() -> None:
        async with serve(handler) as upstream:
            client = HTTPClient()
            response = await client.request(upstream.endpoint, "POST", "/x", b"{}", read_timeout_s=5)
            assert (response.status, response.headers.get("link"), response.headers["x-final"]) == (
                200,
                None,
                "yes",
            )
            assert await response.read() == b"final"
            await client.close()

    run(scenario())


def test_idle_connections_expire(
    run: Callable[[Coroutine[Any, Any, Any]], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_client, "IDLE_S", 0.1)
    monkeypatch.setattr(http_client, "SWEEP_S", 0.1)

    async def scenario() -> None:
        async with serve(keep_answering) as upstream:
            client = HTTPClient()
            response = await client.request(upstream.endpoint, "POST", "/x", b"1", read_timeout_s=5)
            assert await response.read() == b"ok:1"
            await upstream.hung_up(1)  # the sweep closed it
            response = await client.request(upstream.endpoint, "POST", "/x", b"2", read_timeout_s=5)
            assert await response.read() == b"ok:2"
            assert upstream.connections == 2
            await client.close()

    run(scenario())


def test_an_endpoint_refuses_what_it_cannot_send() -> None:
    with pytest.raises(ValueError, match="header"):
        Endpoint("http://127.0.0.1:1/v1", {"authorization": "Bearer x\r\nx-injected: 1"})
    with pytest.raises(ValueError, match="credentials"):
        Endpoint("http://user:pw@127.0.0.1:1/v1", {})
    with pytest.raises(ValueError, match="http"):
        Endpoint("ftp://127.0.0.1/v1", {})
    endpoint = Endpoint("https://gpu-box/v1/", {})
    assert endpoint.origin == ("https", "gpu-box", 443)
    assert endpoint.head("GET", "/models", None).startswith(b"GET /v1/models HTTP/1.1\r\nhost: gpu-box\r\n")

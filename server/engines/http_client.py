"""A lean HTTP/1.1 client for the upstream engines: keep-alive pools, one write per request, little else.

The upstreams are OpenAI-compatible servers that take a JSON body and answer JSON or an event stream, so
the client needs little; a general client (aiohttp: request and response objects, URL and header classes,
tracing, timeouts) cost the gateway more CPU per relayed request than any other layer. This one is an
asyncio Protocol around ``httptools``' parser, with the request head for each endpoint made once.

What it does, and what it leaves out on purpose:

- One pool of keep-alive connections per origin (scheme, host, port), of any size; a connection idle for
  ``IDLE_S`` is closed. A connection goes back to the pool once the last byte of its response has arrived
  (the bytes wait in the ``Response``) and the upstream keeps it alive. Closing a response before that
  closes its connection, which is how a generating upstream learns that nobody is listening.
- A reused connection that fails before any byte of the answer (the upstream closed it while it was idle)
  is retried once on a fresh connection. Nothing else is retried: ``upstream.py`` fails over across
  replicas, and a POST that reached an upstream must not run twice.
- Bodies framed by content-length, chunked, or the connection's close; gzip and deflate are decoded,
  although the request asks for ``identity``.
- Timeouts: opening a connection, and an upstream that stays silent (before the head, or between two body
  reads). The silence timer runs only while a caller waits; a body already buffered costs none.
- Reading pauses while more than ``HIGH_WATER`` bytes wait unread, and resumes once they are taken.
- No proxies, no cookies, no redirects: a 3xx is returned like any other status (``upstream.py`` treats it
  as the replica failing: a base URL that redirects is misconfigured). aiohttp followed 307 and 308 with
  the body, and turned 301–303 into a GET the upstream would refuse anyway.
- Request bodies are small (a prompt): they are written at once, without write-side flow control.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools

IDLE_S = 60.0
"""An idle connection older than this is not reused, and the sweep closes it."""
SWEEP_S = 10.0
HIGH_WATER = 1 << 20
"""Bytes of a response buffered unread before the connection stops reading."""

Origin = tuple[str, str, int]


class HTTPClientError(Exception):
    """No (complete) response; the message says what happened, for logs and error replies."""


class ConnectError(HTTPClientError):
    """No connection could be opened: refused, unresolvable, TLS failed, or no answer in time."""


class ReadTimeout(HTTPClientError):
    """The upstream stayed silent longer than the request's read timeout."""


class Disconnected(HTTPClientError):
    """The connection closed before the response was complete."""


class ProtocolError(HTTPClientError):
    """The upstream sent something that is not an HTTP/1.1 response this client can read."""


class Endpoint:
    """A base URL parsed once, with the part of every request head to it that never changes."""

    __slots__ = ("base_url", "origin", "_prefix", "_fixed", "_starts")

    def __init__(self, base_url: str, headers: Mapping[str, str]) -> None:
        """``headers`` go into every request; a ValueError says what is wrong with the URL or a header."""
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url}")
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError(f"a base URL has no credentials, query or fragment: {base_url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_url = base_url
        self.origin: Origin = (parts.scheme, parts.hostname, port)
        self._prefix = parts.path.rstrip("/")
        fields = {
            "host": parts.netloc,
            "user-agent": "ai-service-platform",
            "accept-encoding": "identity",
            **{name.lower(): value for name, value in headers.items()},
        }
        for name, value in fields.items():
            if any(c in name + value for c in "\r\n\0") or not name or ":" in name:
                raise ValueError(f"a header that cannot be sent: {name!r}")
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in fields.items()).encode("latin-1")
        self._starts: dict[tuple[str, str], bytes] = {}

    def head(self, method: str, path: str, length: int | None) -> bytes:
        """The request head for ``path`` below the base URL, with a content-length unless ``None``."""
        start = self._starts.get((method, path))
        if start is None:
            line = f"{method} {self._prefix}{path} HTTP/1.1\r\n".encode("ascii")
            start = self._starts[(method, path)] = line + self._fixed
        if length is None:
            return start + b"\r\n"
        return start + b"content-length: %d\r\n\r\n" % length


class Response:
    """One response as its connection's parser feeds it: read it whole or chunk by chunk, then close it.

    The ``on_*`` methods are the parser's callbacks, not for callers."""

    __slots__ = (
        "status", "headers", "touched", "_connection", "_timeout", "_parser", "_chunks", "_buffered", "_paused",
        "_decoder", "_maybe_raw_deflate", "_head_done", "_until_close", "_complete", "_keep_alive", "_error",
        "_waiter",
    )  # fmt: skip

    def __init__(self, connection: _Connection, read_timeout_s: float) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        """Lower-cased names; a repeated header's values are joined with commas."""
        self.touched = False
        """Whether any byte of the response has arrived."""
        self._connection = connection
        self._timeout = read_timeout_s
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._decoder: zlib._Decompress | None = None
        self._maybe_raw_deflate = False
        self._head_done = False
        self._until_close = False
        self._complete = False
        self._keep_alive = False
        self._error: HTTPClientError | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """The whole (remaining) body."""
        parts: list[bytes] = []
        while True:
            if self._chunks:
                parts.append(self._take())
            if self._complete:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            if self._error is not None:
                raise self._error
            await self._wait()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: each chunk is everything received since the last one."""
        while True:
            if self._chunks:
                yield self._take()
            elif self._complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    def close(self) -> None:
        """Done with the response. If some of it has yet to arrive, its connection is closed: an upstream
        generating it sees the client gone and stops."""
        if self._connection.response is self:
            self._connection.fail(Disconnected("the response was closed before its end"))
        self._chunks = []

    async def _head(self) -> None:
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def _wait(self) -> None:
        loop = self._connection.loop
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(self._timeout, self._time_out)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _time_out(self) -> None:
        error = ReadTimeout(f"the upstream sent nothing for {self._timeout:g} s")
        if self._connection.response is self:
            self._connection.fail(error)  # the rest of the answer is nobody's: drop the connection
        else:
            self._fail(error)

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._connection.resume_reading()
        return data

    def _fail(self, error: HTTPClientError) -> None:
        if not self._complete and self._error is None:
            self._error = error
            self._wake()

    def _lost(self, exc: Exception | None) -> None:
        """The connection closed: the end of a body framed by the close, or a cut."""
        if self._complete or self._error is not None:
            return
        if self._head_done and self._until_close and exc is None:
            try:
                self._end()
            except HTTPClientError as error:
                self._fail(error)
            return
        reason = f": {exc}" if exc else ""
        if self._head_done:
            self._fail(
                Disconnected(f"the upstream closed the connection before the end of its response{reason}")
            )
        else:
            self._fail(Disconnected(f"the upstream closed the connection without answering{reason}"))

    def _end(self) -> None:
        if self._decoder is not None:
            tail = self._decoder.flush()
            if not self._decoder.eof:
                raise ProtocolError("the upstream sent a truncated compressed body")
            if tail:
                self._chunks.append(tail)
        self._complete = True
        if self._paused:
            self._paused = False
            self._connection.resume_reading()
        self._wake()

    def _decode(self, decoder: zlib._Decompress, data: bytes) -> bytes:
        try:
            decoded = decoder.decompress(data)
        except zlib.error as exc:
            if self._maybe_raw_deflate:
                # Some servers send raw deflate, without the zlib wrapper that HTTP's "deflate" means.
                self._maybe_raw_deflate = False
                self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._decode(self._decoder, data)
            raise ProtocolError(f"the upstream sent a body that does not decompress: {exc}") from exc
        self._maybe_raw_deflate = False
        return decoded

    def on_message_begin(self) -> None:
        if self._complete:
            raise ProtocolError("the upstream sent more than one response")

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status < 200:
            return  # an interim answer (100, 103): the real one follows
        headers = self.headers
        self._until_close = (
            "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        coding = headers.get("content-encoding", "identity").strip().lower()
        if coding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS)
            self._maybe_raw_deflate = True
        elif coding not in ("identity", ""):
            raise ProtocolError(f"the upstream sent a body in an unsupported encoding: {coding}")
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        decoder = self._decoder
        if decoder is not None:
            body = self._decode(decoder, body)
            if not body:
                return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused:
            self._paused = True
            self._connection.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200:
            self.headers = {}
            return
        # Asked here: once the parser is past the message, it no longer knows.
        self._keep_alive = self._parser.should_keep_alive()
        self._end()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection: feeds the response it serves, and goes back to the pool after it."""

    __slots__ = ("client", "origin", "loop", "transport", "response", "closed", "idle_since", "lost")

    def __init__(self, client: HTTPClient, origin: Origin) -> None:
        self.client = client
        self.origin = origin
        self.loop = client.loop
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self.lost: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, response: Response, data: bytes) -> None:
        self.response = response
        cast(asyncio.Transport, self.transport).write(data)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.close()  # bytes nobody asked for: nothing said on this connection can be trusted
            return
        response.touched = True
        try:
            response._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if not isinstance(cause, HTTPClientError):
                cause = ProtocolError(f"the upstream sent a malformed response: {exc}")
            self.fail(cause)
            return
        if response._complete:
            self.response = None
            if response._keep_alive:
                self.client._release(self)
            else:
                self.close()

    def eof_received(self) -> bool | None:
        self.closed = True
        return None  # the transport closes itself, then connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client._forget(self)
        response, self.response = self.response, None
        if response is not None:
            response._lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)

    def fail(self, error: HTTPClientError) -> None:
        """End the response in flight with ``error``, and the connection with it."""
        response, self.response = self.response, None
        if response is not None:
            response._fail(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class HTTPClient:
    """Pools of keep-alive connections to every origin. Made on, and used from, one running event loop."""

    def __init__(self, *, connect_timeout_s: float = 5.0) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.loop = asyncio.get_running_loop()
        self._idle: dict[Origin, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def request(
        self, endpoint: Endpoint, method: str, path: str, body: bytes | None = None, *, read_timeout_s: float
    ) -> Response:
        """Send a request and wait for the head of its response (any status); the caller reads the body,
        then closes the response."""
        if self._closed:
            raise HTTPClientError("the HTTP client is closed")
        data = endpoint.head(method, path, None if body is None else len(body))
        if body:
            data += body
        connection = self._idle_connection(endpoint.origin)
        reused = connection is not None
        while True:
            if connection is None:
                connection = await self._connect(endpoint)
            response = Response(connection, read_timeout_s)
            connection.send(response, data)
            try:
                await response._head()
            except Disconnected:
                if reused and not response.touched:
                    reused, connection = False, None  # the upstream closed it while it was idle
                    continue
                raise
            except BaseException:
                response.close()  # cancelled or timed out: the rest of the answer is nobody's
                raise
            return response

    async def close(self) -> None:
        """Close every connection, idle or not, and wait (briefly) until they are closed."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        connections = list(self._open)
        for connection in connections:
            connection.fail(Disconnected("the HTTP client was closed"))
        if connections:
            await asyncio.wait([c.lost for c in connections], timeout=1.0)

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        fresh_since = self.loop.time() - IDLE_S
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to have been closed
            if not connection.closed and connection.idle_since > fresh_since:
                return connection
            connection.close()
        return None

    async def _connect(self, endpoint: Endpoint) -> _Connection:
        scheme, host, port = endpoint.origin
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await self.loop.create_connection(
                    lambda: _Connection(self, endpoint.origin),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise ConnectError(
                f"cannot connect to {host}:{port}: no answer within {self.connect_timeout_s:g} s"
            ) from exc
        except OSError as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc}") from exc
        self._open.add(connection)
        return connection

    def _release(self, connection: _Connection) -> None:
        if self._closed or connection.closed:
            connection.close()
            return
        connection.idle_since = self.loop.time()
        idle = self._idle.get(connection.origin)
        if idle is None:
            self._idle[connection.origin] = [connection]
        else:
            idle.append(connection)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

    def _forget(self, connection: _Connection) -> None:
        self._open.discard(connection)

    def _sweep(self) -> None:
        """Close the connections idle for longer than IDLE_S; again every SWEEP_S while any are idle."""
        self._sweeper = None
        fresh_since = self.loop.time() - IDLE_S
        for origin, idle in list(self._idle.items()):
            keep = []
            for connection in idle:
                if not connection.closed and connection.idle_since > fresh_since:
                    keep.append(connection)
                else:
                    connection.close()
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        if self._idle:
            self._sweeper = self.loop.call_later(SWEEP_S, self._sweep)

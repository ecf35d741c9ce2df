"""The HTTP connection guard: bounded connections and header sizes, headers that must arrive in time,
and protocol errors answered in the OpenAI error envelope.

uvicorn times out idle keep-alive connections but not a client that trickles its request headers a byte
at a time, nor one whose request body is still arriving when its answer has been sent (uvicorn drops that
body as it comes, and every piece of it cancels the idle timeout): on a LAN either could hold connections
open for ever. Built on uvicorn's httptools protocol (the C parser: most of a small request's cost is
parsing when the parser is pure Python).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

LINGER_S = 0.5
MAX_HEADER_BYTES = 64 * 1024


class GuardedConfig(uvicorn.Config):
    """uvicorn's configuration plus the guard's bounds (from ``Settings``)."""

    def __init__(
        self,
        *args: Any,
        header_timeout_s: float,
        max_connections: int,
        max_connections_per_address: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["http"] = GuardedHttpToolsProtocol
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.connection_table = ConnectionTable(
            max_connections, max_connections_per_address or max_connections
        )


class ConnectionTable:
    """The server's open connections by client address, within a cap per address and one overall.

    At a cap, the oldest connection that has no request being answered (an idle keep-alive, or a client
    still sending its headers) is closed to make room, from the new connection's own address or, at the
    overall cap, from the address holding the most: a host that opens connections and sends nothing can
    take no more than its share, and cannot keep anyone out. Only when every connection in the way is
    answering a request is the new one refused.
    """

    def __init__(self, max_connections: int, max_per_address: int) -> None:
        self.max_connections = max_connections
        self.max_per_address = min(max_per_address, max_connections)
        self._by_address: dict[str, dict[GuardedHttpToolsProtocol, None]] = {}
        self._count = 0

    def add(self, connection: GuardedHttpToolsProtocol) -> str | None:
        """Take in a new connection; or why it is refused (a message for the client)."""
        address = connection.address
        mine = self._by_address.get(address, {})
        if len(mine) >= self.max_per_address and not self._evict(mine):
            return "Too many open connections from your address."
        if self._count >= self.max_connections:
            holders = sorted(self._by_address.values(), key=len, reverse=True)
            if not any(self._evict(connections) for connections in holders):
                return "The server has too many open connections."
        self._by_address.setdefault(address, {})[connection] = None
        self._count += 1
        return None

    def remove(self, connection: GuardedHttpToolsProtocol) -> None:
        mine = self._by_address.get(connection.address)
        if mine is None or connection not in mine:
            return
        del mine[connection]
        self._count -= 1
        if not mine:
            del self._by_address[connection.address]

    def _evict(self, connections: dict[GuardedHttpToolsProtocol, None]) -> bool:
        """Close the oldest of ``connections`` that answers no request; whether there was one."""
        victim = next((c for c in connections if not c.busy), None)
        if victim is None:
            return False
        self.remove(victim)
        victim.evict()
        return True


def _envelope(message: str, code: str) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    ).encode()


DISCONNECT_EXTENSION = "aisp.disconnect"
"""The scope extension holding a request's :class:`DisconnectSignal`."""


class DisconnectSignal:
    """Tells a request's handler what only the connection knows: that its client left, without a task
    waiting on ``receive`` for it, and whether its whole body has arrived.

    The protocol puts one in each request's scope (``scope["extensions"]["aisp.disconnect"]``) and fires
    it when the connection is lost before the response is complete: the same moment at which ``receive``
    would return ``http.disconnect``.
    """

    __slots__ = ("_callbacks", "body_arrived", "fired")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self.fired = False
        self.body_arrived = False
        """The request's body is all in ``receive``'s buffer: reading it cannot wait on the client."""

    def add(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the client leaves (at once if it has left already)."""
        if self.fired:
            callback()
        else:
            self._callbacks.append(callback)

    def remove(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def fire(self) -> None:
        self.fired = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


class CoalescingTransport:
    """A transport that sends what was written during one pass of the event loop in one system call.

    uvicorn writes a response's head and body, and each event of a stream, separately; when several are
    ready at once (a whole answer, or a burst of tokens relayed from an upstream) each would otherwise
    cost a send of its own. What is written is sent at the start of the loop's next pass, before it
    waits for anything: no later than the event loop could have sent it anyway.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a header size limit and a connection cap."""

    def __init__(self, config: GuardedConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout = config.header_timeout_s
        self._table = config.connection_table
        self.address = ""
        self._header_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._discarding = False
        self._in_headers = True  # until the first request's headers are complete
        self._header_bytes = 0
        self._header_size = 0
        self._signals: list[tuple[Any, DisconnectSignal]] = []  # (cycle, signal) of requests not yet answered

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self.address = self.client[0] if self.client else ""
        refused = self._table.add(self)
        if refused is not None:
            self._reply(503, "Service Unavailable", refused, "server_busy", retry_after=1)
            return
        self._arm()

    @property
    def busy(self) -> bool:
        """A request on this connection is being answered (or waits its turn behind one)."""
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def evict(self) -> None:
        """Close this idle connection to make room for another (see :class:`ConnectionTable`)."""
        self._disarm()
        self._discarding = True
        self.transport.close()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and self._in_headers:
            self._reply(
                408, "Request Timeout", "The request headers did not arrive in time.", "request_timeout"
            )

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self._in_headers:
            self._header_bytes += len(data)
            if self._header_bytes > MAX_HEADER_BYTES + 65536:
                # Far past the limit without the parser finishing the headers: stop reading now.
                self._reply(
                    431,
                    "Request Header Fields Too Large",
                    "The request headers are too large.",
                    "headers_too_large",
                )
                return
        super().data_received(data)
        if self._in_headers and self._header_timer is None and not self._discarding:
            # A request's headers began but did not all arrive with this read: they get a deadline. (A
            # request that arrives whole, the usual case, never needs a timer.)
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        self._header_size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_size += len(name) + len(value) + 4
        if self._header_size > MAX_HEADER_BYTES:
            self._reply(
                431,
                "Request Header Fields Too Large",
                "The request headers are too large.",
                "headers_too_large",
            )
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._discarding:
            return
        self._in_headers = False
        self._disarm()
        signal = DisconnectSignal()
        self.scope.setdefault("extensions", {})[DISCONNECT_EXTENSION] = signal  # type: ignore[assignment]
        super().on_headers_complete()
        self._signals = [(c, s) for c, s in self._signals if not c.response_complete]
        if self.cycle is not None and self.cycle.scope is self.scope:
            self._signals.append((self.cycle, signal))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._drain_timer is not None:
            # The rest of a body nobody read has arrived in time: the connection is idle again.
            self._drain_timer.cancel()
            self._drain_timer = None
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            return
        for cycle, signal in reversed(self._signals):
            if cycle is self.cycle:
                signal.body_arrived = True
                break

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and cycle.more_body
            and not self.transport.is_closing()
        ):
            # Answered before its body arrived (refused, or a route that reads none): what is still on its
            # way is read and dropped, for no longer than headers may take; then the connection closes.
            self._drain_timer = self.loop.call_later(self._header_timeout, self._body_too_slow)

    def _body_too_slow(self) -> None:
        self._drain_timer = None
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._table.remove(self)
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        super().connection_lost(exc)
        signals, self._signals = self._signals, []
        for cycle, signal in signals:
            if not cycle.response_complete:
                signal.fire()

    def send_400_response(self, msg: str) -> None:
        self._reply(400, "Bad Request", msg, "invalid_http_request")

    def _reply(
        self, status: int, reason: str, message: str, code: str, retry_after: int | None = None
    ) -> None:
        if self._discarding:
            return
        self._discarding = True
        self._disarm()
        body = _envelope(message, code)
        retry = f"retry-after: {retry_after}\r\n" if retry_after is not None else ""
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{retry}connection: close\r\n\r\n".encode()
            + body
        )
        # Linger briefly, reading and dropping what the client still sends, so that closing does not
        # reset the connection before the client has read the answer.
        self.loop.call_later(LINGER_S, self.transport.close)

"""The HTTP connection guard: bounded connections, headers that must arrive in time, and protocol
errors answered in the OpenAI error envelope.

uvicorn times out idle keep-alive connections but not a client that trickles its request headers a byte
at a time; on a LAN that client could hold connections open for ever.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

LINGER_S = 0.5


class GuardedConfig(uvicorn.Config):
    """uvicorn's configuration plus the guard's bounds (from ``Settings``)."""

    def __init__(self, *args: Any, header_timeout_s: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, http=GuardedH11Protocol, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections


def _envelope(message: str, code: str) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    ).encode()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers and a cap on connections."""

    def __init__(self, config: GuardedConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._header_timeout = config.header_timeout_s
        self._max_connections = config.max_connections
        self._header_timer: asyncio.TimerHandle | None = None
        self._discarding = False
        self._seen_cycle: object = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            self._reply(
                503, "Service Unavailable", "The server has too many open connections.", "server_busy"
            )
            return
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self._header_timeout, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle is self._seen_cycle or self.cycle.response_complete:
            self._reply(
                408, "Request Timeout", "The request headers did not arrive in time.", "request_timeout"
            )

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if self.cycle is None or self.cycle.response_complete:
            if self._header_timer is None:
                self._arm()  # the first byte of a new request starts its header deadline
        super().data_received(data)
        if self.cycle is not None and self.cycle is not self._seen_cycle:
            self._seen_cycle = self.cycle  # headers complete: the handler takes over from here
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._reply(400, "Bad Request", msg, "invalid_http_request")

    def _reply(self, status: int, reason: str, message: str, code: str) -> None:
        body = _envelope(message, code)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        try:
            self.transport.write(
                self.conn.send(h11.Response(status_code=status, headers=headers, reason=reason)) or b""
            )
            self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
            self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            # h11 may refuse to speak in this state; send the bytes ourselves.
            self.transport.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode()
                + body
            )
        # Linger briefly, reading and dropping what the client still sends, so that closing does not
        # reset the connection before the client has read the answer.
        self._discarding = True
        self.loop.call_later(LINGER_S, self.transport.close)

"""Answers that take time: server-sent event streams, and work cancelled the moment its client leaves (or
ended cleanly when the server stops)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.connections import DISCONNECT_EXTENSION, DisconnectSignal
from server.errors import APIError, ServerStopping

T = TypeVar("T")


class DisconnectGuard:
    """``async with DisconnectGuard(scope, receive):`` runs the block in the current task and cancels it if
    the client disconnects meanwhile; a block cancelled that way ends quietly (``disconnected`` is then
    true) once its clean-up has run.

    The work stays in the request's own task. The server's connection says when the client leaves (the
    scope's :class:`DisconnectSignal`); under another server a task waits on ``receive`` for it.
    """

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self._signal: DisconnectSignal | None = scope.get("extensions", {}).get(DISCONNECT_EXTENSION)
        self._state: dict[str, Any] = scope.get("state", {})
        self._receive = receive
        self.disconnected = False
        self._task: asyncio.Task[Any] | None = None
        self._watcher: asyncio.Future[None] | None = None

    def _left(self) -> None:
        self.disconnected = True
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self._left()

    async def __aenter__(self) -> DisconnectGuard:
        self._task = asyncio.current_task()
        if self._signal is not None:
            self._signal.add(self._left)
        else:
            self._watcher = asyncio.ensure_future(self._watch())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: object
    ) -> bool:
        # First, so that the client leaving from here on can no longer cancel this task.
        if self._signal is not None:
            self._signal.remove(self._left)
        if self._watcher is not None:
            self._watcher.cancel()
        if kind is None or not issubclass(kind, asyncio.CancelledError):
            return False
        assert self._task is not None
        if self.disconnected:
            return self._task.uncancel() == 0  # cancelled by someone else as well (shutting down): not ours
        flight = self._state.get("flight")
        if flight is not None and flight.stopped and self._task.uncancel() == 0:
            # Ended by the server stopping (``InFlight.stop_all``): billed by now; the client is told why.
            raise ServerStopping(
                "The server stopped while this request ran; what was generated until then is billed."
            ) from error
        return False


class EventStream(Response):
    """Server-sent events from an async iterator of bytes, cancelled as soon as the client disconnects.

    Cancelling the iterator lets its ``finally`` blocks stop generation and bill what was generated.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        body: AsyncIterator[bytes],
        headers: dict[str, str] | None = None,
        on_close: Callable[[], None] | None = None,
        error_frame: Callable[[APIError], bytes] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
            *(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in (headers or {}).items()
            ),
        ]
        self._body = body
        self._on_close = on_close
        self._error_frame = error_frame
        """The stream's last event when it is cut short by the server stopping."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        started = False
        try:
            async with DisconnectGuard(scope, receive):
                await send(start)
                started = True
                async for chunk in self._body:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except ServerStopping as stopped:
            # The generation has stopped and is billed: the client gets an event that says why, and the end.
            if not started:
                await send(start)
            if self._error_frame is not None:
                await send(
                    {"type": "http.response.body", "body": self._error_frame(stopped), "more_body": True}
                )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the connection broke while sending: the same as a disconnect
        finally:
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()
            if self._on_close is not None:
                self._on_close()  # a stream that never started still releases what it held


async def until_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await ``work``, or cancel it and return None as soon as the client hangs up.

    Starlette notices a disconnect only while a response streams; a request that waits for a whole
    answer would otherwise keep its model busy for a client that is gone. The work's clean-up (stopping
    the engine) has ended by the time this returns, so the bill written next holds all it used.
    """
    async with DisconnectGuard(request.scope, request.receive):
        return await work
    return None

"""The chat engine process: it holds the model, renders prompts and streams generated pieces back.

llama.cpp runs native code that can crash the process (a segfault, an ``abort()`` on a CUDA error such as
running out of memory mid-generation); here a crash costs only this process, which the server restarts
(``chat_process.ProcessChat``). One connection carries everything, each message tagged with its request
id: a reader thread takes requests as they come (rendering at once, so a new request is never kept
waiting behind a generation) and hands generations and cancellations to the main thread, which advances
every running generation one decode step at a time (``base.BatchedChat``): a new request joins at the next
step, a cancelled one leaves at the next.

Messages to the child: ``("render", id, messages)``, ``("check", id, sampling)``,
``("generate", id, prompt, sampling)``, ``("cancel", id)``, and ``None`` to stop.
From the child: ``("ready", info)`` or ``("load_error", reason)`` first; then ``("done", id, value)``,
``("piece", id, piece)``, ``("end", id)``, ``("invalid", id, message, param, code)``, ``("failed", id, reason)``,
and ``("many", None, [replies])`` for the replies of one step.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from server.config import ModelConfig
from server.engines.base import (
    BatchedChat,
    ChatBackend,
    EngineFailureError,
    Event,
    LoadError,
    Piece,
    Prompt,
    Sampling,
)
from server.errors import InvalidRequest

Factory = Callable[[ModelConfig], tuple[ChatBackend, dict[str, Any]]]


def _llama(config: ModelConfig) -> tuple[ChatBackend, dict[str, Any]]:
    from server.engines import llama_backends  # noqa: PLC0415  (only the engine process loads llama.cpp)
    from server.engines.llama import LlamaChat  # noqa: PLC0415

    backend = LlamaChat(config)
    return backend, {"llama": llama_backends.load().as_dict()}


def _fake(config: ModelConfig) -> tuple[ChatBackend, dict[str, Any]]:
    from server.engines.fake import FakeChat  # noqa: PLC0415

    return FakeChat(config), {}


FACTORIES: dict[str, Factory] = {"llama.cpp": _llama, "fake": _fake}


class _Sender:
    """The connection's sending end, shared by the reader thread and the generation loop."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    def __call__(self, *message: Any) -> None:
        with self._lock:
            self._connection.send(message)


class GeneratorSteps:
    """A ``BatchedChat`` over an engine that generates one request at a time (``generate``): each step
    advances every running request by one piece, in turn."""

    def __init__(self, backend: ChatBackend) -> None:
        self._backend = backend
        self._running: dict[str, Iterator[Piece]] = {}
        self._cancelled: set[str] = set()

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def start(self, request_id: str, prompt: Prompt, sampling: Sampling) -> None:
        self._running[request_id] = self._backend.generate(
            prompt, sampling, lambda: request_id in self._cancelled
        )

    def cancel(self, request_id: str) -> None:
        if request_id in self._running:
            self._cancelled.add(request_id)

    def step(self) -> list[Event]:
        events: list[Event] = []
        for request_id, pieces in list(self._running.items()):
            try:
                piece = next(pieces)
            except StopIteration:
                piece = Piece("", 0, finish_reason="length")
            except EngineFailureError as exc:
                events.append((request_id, exc))
                self._forget(request_id)
                continue
            events.append((request_id, piece))
            if piece.finish_reason is not None:
                self._forget(request_id)
        return events

    def _forget(self, request_id: str) -> None:
        self._running.pop(request_id, None)
        self._cancelled.discard(request_id)


def serve(connection: Connection, config: dict[str, Any], engine: str) -> None:
    """The child's entry point: load the model, then serve until told to stop or the parent goes away."""
    model = ModelConfig(**config)
    send = _Sender(connection)
    try:
        backend, info = FACTORIES[engine](model)
    except LoadError as exc:
        send("load_error", str(exc))
        return
    except Exception as exc:  # a broken installation: the operator reads what went wrong, not an exit code
        send("load_error", f"{type(exc).__name__}: {exc}")
        return
    stepped: BatchedChat = backend if hasattr(backend, "step") else GeneratorSteps(backend)  # type: ignore[assignment]
    slots = int(getattr(backend, "slots", model.parallel or 1))
    capabilities = dataclasses.asdict(backend.capabilities)
    send(
        "ready",
        {
            "context_length": backend.context_length,
            "slots": slots,
            "capabilities": capabilities,
            "pid": os.getpid(),
            **info,
        },
    )
    inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
    threading.Thread(
        target=_read, args=(connection, backend, send, inbox), name="engine-reader", daemon=True
    ).start()
    while _take(stepped, inbox, send):
        replies: list[tuple[Any, ...]] = []
        for request_id, event in _step(stepped):
            if isinstance(event, EngineFailureError):
                replies.append(("failed", request_id, str(event)))
                continue
            replies.append(("piece", request_id, event))
            if event.finish_reason is not None:
                replies.append(("end", request_id))
        # A step's replies travel together: one message, one wake-up of the server, however many slots.
        if len(replies) == 1:
            send(*replies[0])
        elif replies:
            send("many", None, replies)
    backend.close()


def _take(stepped: BatchedChat, inbox: queue.SimpleQueue[tuple[Any, ...] | None], send: _Sender) -> bool:
    """Apply what arrived (new requests, cancellations), waiting for something when nothing runs;
    False once told to stop."""
    block = not stepped.busy
    while True:
        try:
            message = inbox.get(block=block)
        except queue.Empty:
            return True
        block = False
        if message is None:
            return False
        kind, request_id, *rest = message
        if kind == "cancel":
            stepped.cancel(request_id)
            continue
        try:
            stepped.start(request_id, *rest)
        except InvalidRequest as exc:
            send("invalid", request_id, exc.message, exc.param, exc.code)
        except Exception as exc:  # this request cannot start; the others go on
            send("failed", request_id, f"{type(exc).__name__}: {exc}")


def _step(stepped: BatchedChat) -> list[Event]:
    try:
        return stepped.step()
    except EngineFailureError as exc:  # the step itself failed: nothing is known of any request's state
        raise RuntimeError(f"the engine's step failed: {exc}") from exc


def _read(
    connection: Connection,
    backend: ChatBackend,
    send: _Sender,
    inbox: queue.SimpleQueue[tuple[Any, ...] | None],
) -> None:
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            message = None  # the server went away: stop
        if message is None:
            inbox.put(None)
            return
        kind, request_id, *rest = message
        if kind in ("generate", "cancel"):
            inbox.put((kind, request_id, *rest))
        else:
            _answer(backend, send, kind, request_id, rest)


def _answer(backend: ChatBackend, send: _Sender, kind: str, request_id: str, args: list[Any]) -> None:
    try:
        if kind == "render":
            value: Any = backend.render(args[0], args[1])
        elif kind == "check":
            backend.check_sampling(args[0])
            value = None
        else:
            raise ValueError(f"unknown request {kind!r}")
    except InvalidRequest as exc:
        send("invalid", request_id, exc.message, exc.param, exc.code)
    except Exception as exc:  # reported to the request that caused it; the engine keeps serving
        send("failed", request_id, f"{type(exc).__name__}: {exc}")
    else:
        send("done", request_id, value)

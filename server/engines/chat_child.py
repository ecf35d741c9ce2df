"""The chat engine process: it holds the model, renders prompts and streams generated pieces back.

llama.cpp runs native code that can crash the process (a segfault, an ``abort()`` on a CUDA error such as
running out of memory mid-generation); here a crash costs only this process, which the server restarts
(``chat_process.ProcessChat``). One connection carries everything, each message tagged with its request
id: a reader thread takes requests as they come (rendering at once, so a new request is never kept
waiting behind a generation) and hands generations to the main thread, which runs them one after another
and stops one within a token of its cancellation.

Messages to the child: ``("render", id, messages)``, ``("check", id, sampling)``,
``("generate", id, prompt, sampling)``, ``("cancel", id)``, and ``None`` to stop.
From the child: ``("ready", info)`` or ``("load_error", reason)`` first; then ``("done", id, value)``,
``("piece", id, piece)``, ``("end", id)``, ``("invalid", id, message, param, code)``, ``("failed", id, reason)``.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from server.config import ModelConfig
from server.engines.base import ChatBackend, EngineFailureError, LoadError, Prompt, Sampling
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
    send("ready", {"context_length": backend.context_length, "pid": os.getpid(), **info})
    jobs: queue.SimpleQueue[tuple[str, Prompt, Sampling] | None] = queue.SimpleQueue()
    cancelled: set[str] = set()
    reader = threading.Thread(
        target=_read, args=(connection, backend, send, jobs, cancelled), name="engine-reader", daemon=True
    )
    reader.start()
    while (job := jobs.get()) is not None:
        _generate(backend, send, job, cancelled)
    backend.close()


def _read(
    connection: Connection,
    backend: ChatBackend,
    send: _Sender,
    jobs: queue.SimpleQueue[tuple[str, Prompt, Sampling] | None],
    cancelled: set[str],
) -> None:
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            message = None  # the server went away: stop
        if message is None:
            jobs.put(None)
            return
        kind, request_id, *rest = message
        if kind == "generate":
            jobs.put((request_id, *rest))
        elif kind == "cancel":
            cancelled.add(request_id)
        else:
            _answer(backend, send, kind, request_id, rest)


def _answer(backend: ChatBackend, send: _Sender, kind: str, request_id: str, args: list[Any]) -> None:
    try:
        if kind == "render":
            value: Any = backend.render(args[0])
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


def _generate(
    backend: ChatBackend, send: _Sender, job: tuple[str, Prompt, Sampling], cancelled: set[str]
) -> None:
    request_id, prompt, sampling = job
    try:
        for piece in backend.generate(prompt, sampling, lambda: request_id in cancelled):
            send("piece", request_id, piece)
    except EngineFailureError as exc:
        send("failed", request_id, str(exc))
    except Exception as exc:  # a failure of this request only
        send("failed", request_id, f"{type(exc).__name__}: {exc}")
    else:
        send("end", request_id)
    finally:
        cancelled.discard(request_id)

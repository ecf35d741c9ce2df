"""A model's engine in a child process of its own, restarted when it crashes.

Native engines can die with the whole process: a segfault in llama.cpp, an ``abort()`` on a CUDA error, the
kernel's out-of-memory killer. In a child process such a death costs only the requests the engine was
running: each gets an ``engine_crashed`` error (with what happened), the requests still waiting in the
server's queue are kept, and the engine starts again after a pause that grows with each crash. After
``CRASH_LIMIT`` restarts within ``CRASH_WINDOW_S`` the next crash leaves the engine down, with its reason,
until the operator loads the model again: an engine that dies at every start would otherwise burn the
machine in a loop.

Requests and replies travel on one connection, each tagged with a request id (the replies of one engine
step may come as one ``("many", None, [replies])`` message); a reader thread hands each reply to the
request waiting for it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Literal

from server.engines.base import EngineCrashedError, EngineFailureError, LoadError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 300.0
"""How long a model may take to load (a large GGUF from a slow disk takes minutes)."""
RESTART_DELAYS_S = (0.5, 2.0, 5.0)
"""The pause before the first, second and later restarts within the crash window."""
CRASH_LIMIT = 3
"""Restarts allowed within ``CRASH_WINDOW_S``; the crash after them leaves the engine down."""
CRASH_WINDOW_S = 600.0
STOP_TIMEOUT_S = 10.0

State = Literal["running", "restarting", "down", "closed"]
Target = Callable[..., None]
"""The child's entry point: ``target(connection, *args)``; it sends ``("ready", info)`` or
``("load_error", reason)`` first, then answers tagged requests."""


@dataclass(frozen=True)
class Crash:
    """One death of the engine process."""

    at: float
    """When it was noticed (seconds since the epoch)."""
    reason: str


SIGNAL_CAUSES = {
    "SIGSEGV": "a segmentation fault in the engine",
    "SIGABRT": "the engine aborted (llama.cpp does on a CUDA error, such as running out of GPU memory)",
    "SIGKILL": "killed (by the out-of-memory killer, or by hand)",
    "SIGILL": "an instruction this CPU does not have",
    "SIGBUS": "a bus error (the model file changed or its disk went away?)",
}
WINDOWS_CAUSES = {
    0xC0000005: "an access violation in the engine",
    0xC000001D: "an instruction this CPU does not have",
}


def describe_exit(code: int | None) -> str:
    """What an exit code says happened, in words."""
    if code is None:
        return "the engine process stopped answering"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        cause = SIGNAL_CAUSES.get(name)
        return f"killed by signal {-code} ({name})" + (f": {cause}" if cause else "")
    if sys.platform == "win32" and code & 0xFFFFFFFF in WINDOWS_CAUSES:
        return f"exited with code {code & 0xFFFFFFFF:#x}: {WINDOWS_CAUSES[code & 0xFFFFFFFF]}"
    return f"exited with code {code}"


class _Child:
    """One run of the engine process."""

    def __init__(self, process: Any, connection: Connection, info: dict[str, Any]) -> None:
        self.process = process
        self.connection = connection
        self.info = info
        self.pending: dict[str, queue.SimpleQueue[tuple[Any, ...]]] = {}
        self.dead = False
        self.stopping = False
        self.send_lock = threading.Lock()

    def send(self, message: tuple[Any, ...] | None) -> None:
        with self.send_lock, contextlib.suppress(OSError, ValueError):
            # A send to a dead child fails here; its reader reports the death to every waiting request.
            self.connection.send(message)


class Supervisor:
    """Starts the engine process, carries requests to it, and restarts it when it dies."""

    def __init__(self, name: str, target: Target, args: tuple[Any, ...]) -> None:
        self.name = name
        self._target = target
        self._args = args
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self.state: State = "running"
        self.crashes: list[Crash] = []
        self.restarts = 0
        self.down_reason: str | None = None
        self._child = self._start()
        self._ready.set()

    # -- the process ------------------------------------------------------------------------------
    def _start(self) -> _Child:
        """A new engine process, loaded and ready; ``LoadError`` if it cannot load."""
        context = multiprocessing.get_context("spawn")
        connection, child_end = context.Pipe()
        process = context.Process(
            target=self._target, args=(child_end, *self._args), name=f"engine:{self.name}", daemon=True
        )
        process.start()
        child_end.close()
        try:
            if not connection.poll(START_TIMEOUT_S):
                raise LoadError(f"the model did not load within {START_TIMEOUT_S:.0f} s")
            first = connection.recv()
        except (EOFError, OSError) as exc:
            process.join(STOP_TIMEOUT_S)
            raise LoadError(
                f"the engine process ended while loading: {describe_exit(process.exitcode)}"
            ) from exc
        except LoadError:
            process.kill()
            raise
        if first[0] != "ready":
            process.join(STOP_TIMEOUT_S)
            connection.close()
            raise LoadError(str(first[1]))
        child = _Child(process, connection, dict(first[1]))
        threading.Thread(
            target=self._read, args=(child,), name=f"engine-reader:{self.name}", daemon=True
        ).start()
        return child

    @property
    def pid(self) -> int | None:
        """The engine process's id (while it runs)."""
        pid: int | None = self._child.process.pid if self._child.process is not None else None
        return pid

    @property
    def info(self) -> dict[str, Any]:
        """What the engine said of itself when it last started."""
        return self._child.info

    def _read(self, child: _Child) -> None:
        while True:
            try:
                message = child.connection.recv()
            except (EOFError, OSError):
                break
            for reply in message[2] if message[0] == "many" else (message,):
                inbox = child.pending.get(reply[1])
                if inbox is not None:
                    inbox.put(reply)
        child.process.join(STOP_TIMEOUT_S)
        if child.stopping:
            self._fail_pending(child, ("closed",))
        else:
            self._crashed(child, describe_exit(child.process.exitcode))

    def _fail_pending(self, child: _Child, message: tuple[Any, ...]) -> None:
        with self._lock:
            child.dead = True
            pending, child.pending = child.pending, {}
        for inbox in pending.values():
            inbox.put(message)

    def _crashed(self, child: _Child, reason: str) -> None:
        now = time.time()
        with self._lock:
            self._ready.clear()
            self.crashes.append(Crash(now, reason))
            recent = [crash for crash in self.crashes if now - crash.at <= CRASH_WINDOW_S]
            if len(recent) > CRASH_LIMIT:
                self.state = "down"
                self.down_reason = (
                    f"the engine crashed {len(recent)} times within {CRASH_WINDOW_S / 60:.0f} minutes "
                    f"and stays down until the model is loaded again; last: {reason}"
                )
            else:
                self.state = "restarting"
        log.error("model %s: the engine process died (%s); %s", self.name, reason,
                  "it stays down" if self.state == "down" else "restarting it")  # fmt: skip
        self._fail_pending(child, ("crashed", reason))
        if self.state == "down":
            self._ready.set()  # wake every waiting request: each learns the engine is down
            return
        delay = RESTART_DELAYS_S[min(len(recent), len(RESTART_DELAYS_S)) - 1]
        threading.Thread(
            target=self._restart, args=(delay,), name=f"engine-restart:{self.name}", daemon=True
        ).start()

    def _restart(self, delay: float) -> None:
        if self._stop.wait(delay):
            return
        try:
            child = self._start()
        except LoadError as exc:
            # The engine no longer loads: counted as a crash of its own, so that the limit ends the loop.
            placeholder = _Child(None, None, {})  # type: ignore[arg-type]
            self._crashed(placeholder, f"it did not start again: {exc}")
            return
        with self._lock:
            if self.state == "closed":
                child.stopping = True
                child.send(None)
                return
            self._child = child
            self.state = "running"
            self.restarts += 1
        log.info("model %s: the engine process is running again (restart %d)", self.name, self.restarts)
        self._ready.set()

    # -- requests ---------------------------------------------------------------------------------
    def _open(self) -> tuple[_Child, str, queue.SimpleQueue[tuple[Any, ...]]]:
        """A request id and its inbox on a live engine, waiting for a restart in progress."""
        while True:
            if not self._ready.wait(START_TIMEOUT_S + RESTART_DELAYS_S[-1]):
                raise EngineCrashedError(self.name, "the engine did not start again in time")
            with self._lock:
                if self.state == "down":
                    raise EngineCrashedError(self.name, self.down_reason or "the engine is down", down=True)
                if self.state == "closed":
                    raise EngineFailureError(f"the model {self.name} was unloaded")
                child = self._child
                if not child.dead:
                    request_id = str(next(self._ids))
                    inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
                    child.pending[request_id] = inbox
                    return child, request_id, inbox

    def call(self, kind: str, *args: Any) -> tuple[Any, ...]:
        """Send one request and wait for its one reply (whatever its kind, or a crash report)."""
        child, request_id, inbox = self._open()
        try:
            child.send((kind, request_id, *args))
            return self._check(inbox.get())
        finally:
            child.pending.pop(request_id, None)

    def stream(
        self, kind: str, *args: Any, should_stop: Callable[[], bool], cancel: str
    ) -> Iterator[tuple[Any, ...]]:
        """Send one request and yield its replies until one that is not a ``piece``; when ``should_stop()``
        turns true, ask the engine to stop (``(cancel, id)``) and go on yielding what it still sends."""
        child, request_id, inbox = self._open()
        asked_to_stop = ended = False
        try:
            child.send((kind, request_id, *args))
            while not ended:
                try:
                    message = inbox.get(timeout=None if asked_to_stop else 0.05)
                except queue.Empty:
                    message = None
                if message is not None:
                    ended = self._check(message)[0] != "piece"
                    yield message
                if not ended and not asked_to_stop and should_stop():
                    asked_to_stop = True
                    child.send((cancel, request_id))
        except EngineCrashedError:
            ended = True
            raise
        finally:
            child.pending.pop(request_id, None)
            if not ended and not asked_to_stop:  # abandoned by its reader: the engine need not go on
                child.send((cancel, request_id))

    def _check(self, message: tuple[Any, ...]) -> tuple[Any, ...]:
        if message[0] == "crashed":
            raise EngineCrashedError(self.name, str(message[1]))
        if message[0] == "closed":
            raise EngineFailureError(f"the model {self.name} was unloaded")
        return message

    def close(self) -> None:
        """Stop the engine (and any restart in progress); waiting requests end with an error."""
        with self._lock:
            self.state = "closed"
            child = self._child
            child.stopping = True
        self._stop.set()
        self._ready.set()
        child.send(None)
        if child.process is not None:
            child.process.join(STOP_TIMEOUT_S)
            if child.process.is_alive():
                child.process.kill()
                child.process.join(5)
        self._fail_pending(child, ("closed",))

"""A model's worker threads, fed by a queue that is fair across keys.

Jobs wait in one first-in-first-out line per key and the workers take from the lines in turn, so a key
that floods the queue delays only its own requests. A model that generates several requests together has
one worker per slot: admission to the slots is this queue. A job whose client goes away leaves the queue,
or, if it is running, stops at the next token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from server.errors import RateLimited

log = logging.getLogger(__name__)

T = TypeVar("T")
DRAIN_TIMEOUT_S = 30.0
"""How long a cancelled job that had started may take to stop (a long prompt evaluates uninterrupted)."""
Work = Callable[[Callable[[], bool]], Iterator[T]]


class _End:
    pass


_END = _End()


@dataclass
class _Failure:
    error: BaseException


class _Inbox:
    """What a job hands from the worker thread to the awaiting request's event loop.

    Each hand-over across threads wakes the loop, which costs far more than the item: items put while
    a wake-up is already on its way ride along with it (a result and its end arrive in one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[object] = deque()
        self._waking = False
        self._waiter: asyncio.Future[None] | None = None

    def put(self, item: object) -> None:
        """From the worker thread."""
        self._items.append(item)  # before the flag is read: a wake-up in flight will find it
        if not self._waking:
            self._waking = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._waking = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> object:
        """On the loop: the next item, waiting for one if none has arrived."""
        while not self._items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


@dataclass(eq=False)  # each job is itself: compared and hashed by identity
class _Job(Generic[T]):
    key: str
    work: Work[T]
    emit: Callable[[object], None]
    enqueued_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class QueueStats:
    """What the window shows of a model's queue."""

    running: int
    waiting: int
    waiting_keys: int
    longest_wait_s: float
    served: int
    mean_wait_s: float


class ModelWorker:
    """Runs one model's jobs, ``parallel`` at a time, in fair order across keys."""

    def __init__(self, name: str, max_queue: int, parallel: int = 1) -> None:
        self.name = name
        self.max_queue = max_queue
        self.parallel = parallel
        self._lock = threading.Condition()
        self._lines: OrderedDict[str, deque[_Job[Any]]] = OrderedDict()
        self._waiting = 0
        self._running: set[_Job[Any]] = set()
        self._closed = False
        self._served = 0
        self._total_wait = 0.0
        self._threads = [
            threading.Thread(target=self._loop, name=f"model:{name}:{slot}", daemon=True)
            for slot in range(parallel)
        ]
        for thread in self._threads:
            thread.start()

    async def run(
        self, key: str, work: Work[T], discard: Callable[[T], None] | None = None
    ) -> AsyncIterator[T]:
        """Queue ``work`` under ``key`` and yield what it produces, on the caller's event loop.

        Closing the iterator early (the client disconnected) cancels the job. A job that had started
        is waited for until it stops (within one step of its work), and what it produced after the
        caller stopped listening goes to ``discard``: generated tokens are billed even if never sent.
        """
        inbox = _Inbox(asyncio.get_running_loop())
        job: _Job[T] = _Job(key, work, inbox.put)
        self._enqueue(job)
        ended = False
        try:
            while True:
                item = await inbox.get()
                if item is _END:
                    ended = True
                    return
                if isinstance(item, _Failure):
                    ended = True
                    raise item.error
                yield item  # type: ignore[misc]
        finally:
            job.cancelled.set()
            if not self._forget(job) and not ended:
                await self._drain(inbox, discard)

    async def _drain(self, inbox: _Inbox, discard: Callable[[Any], None] | None) -> None:
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while (item := await inbox.get()) is not _END:
                    if discard is not None and not isinstance(item, _Failure):
                        discard(item)
        except TimeoutError:
            log.warning("a cancelled job on %s did not stop within %.0f s", self.name, DRAIN_TIMEOUT_S)

    def ensure_room(self) -> None:
        """Raise ``RateLimited`` now if the queue is full, before a response has started."""
        with self._lock:
            self._check_room()

    def _check_room(self) -> None:
        if self._waiting >= self.max_queue:
            raise RateLimited(
                f"The queue for model '{self.name}' is full ({self.max_queue} waiting); try again shortly.",
                retry_after=self._estimated_wait(),
            )

    def _enqueue(self, job: _Job[Any]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"model {self.name} is unloaded")
            self._check_room()
            self._lines.setdefault(job.key, deque()).append(job)
            self._waiting += 1
            self._lock.notify()

    def _estimated_wait(self) -> float:
        mean = self._total_wait / self._served if self._served else 1.0
        return max(1.0, mean)

    def _forget(self, job: _Job[Any]) -> bool:
        """Take a job out of its line; False if it was not waiting there (it started, or it ended)."""
        with self._lock:
            line = self._lines.get(job.key)
            if line is not None and job in line:
                line.remove(job)
                self._waiting -= 1
                if not line:
                    del self._lines[job.key]
                return True
            return False

    def _next(self) -> _Job[Any] | None:
        with self._lock:
            while not self._lines and not self._closed:
                self._lock.wait()
            if self._closed and not self._lines:
                return None
            key, line = next(iter(self._lines.items()))
            job = line.popleft()
            self._waiting -= 1
            # The key goes to the back of the rotation; an emptied line leaves it.
            del self._lines[key]
            if line:
                self._lines[key] = line
            job.started_at = time.monotonic()
            self._running.add(job)
            self._served += 1
            self._total_wait += job.started_at - job.enqueued_at
            return job

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                if not job.cancelled.is_set():
                    for item in job.work(job.cancelled.is_set):
                        job.emit(item)
            except BaseException as exc:  # handed to the awaiting request, which renders it
                job.emit(_Failure(exc))
            finally:
                job.emit(_END)
                with self._lock:
                    self._running.discard(job)

    def stats(self) -> QueueStats:
        with self._lock:
            moment = time.monotonic()
            oldest = min((line[0].enqueued_at for line in self._lines.values()), default=moment)
            return QueueStats(
                running=len(self._running),
                waiting=self._waiting,
                waiting_keys=len(self._lines),
                longest_wait_s=moment - oldest,
                served=self._served,
                mean_wait_s=self._total_wait / self._served if self._served else 0.0,
            )

    def finish(self, timeout: float) -> None:
        """Stop taking work, let what waits and what runs end (for up to ``timeout`` seconds), then close."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.close()

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking work, cancel what waits and what runs, and join the thread."""
        with self._lock:
            self._closed = True
            for line in self._lines.values():
                for job in line:
                    job.cancelled.set()
            for job in self._running:
                job.cancelled.set()
            self._lock.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

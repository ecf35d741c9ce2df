"""The one place the window runs blocking work: a thread pool behind the qasync event loop.

Database, file and model calls made from the window go through :meth:`Tasks.call`, which awaits the
result on the GUI thread while the work runs on a worker thread, so painting and input never wait.
Slots that cannot be coroutines start one with :meth:`Tasks.spawn`; a failure there is logged and
announced on :attr:`Tasks.failed` instead of vanishing with the task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from PySide6.QtCore import QObject, Signal

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class Tasks(QObject):
    """Runs blocking calls off the GUI thread and keeps the coroutines it starts alive until they end."""

    failed = Signal(str)
    """A background task raised; the text says what was being done and why it failed."""

    def __init__(self, workers: int = 4, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="window-task")
        self._running: set[asyncio.Task[Any]] = set()
        self._refusing = False
        self._closed = False

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` on a worker thread and return its result (or raise its exception) here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any] | None:
        """Start ``coro`` on the event loop; ``what`` names it in the message if it fails.

        After :meth:`refuse_new` nothing new starts (a timer firing while the window closes is harmless).
        """
        if self._refusing:
            coro.close()
            return None
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(functools.partial(self._finished, what))
        return task

    def _finished(self, what: str, task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("%s failed", what, exc_info=error)
            self.failed.emit(f"{what} failed: {error}")

    @property
    def busy(self) -> bool:
        """Some spawned task has not finished yet."""
        return bool(self._running)

    async def drain(self) -> None:
        """Wait for every other spawned task (those started meanwhile too) to finish."""
        current = asyncio.current_task()
        while others := self._running - {current}:
            await asyncio.wait(others)

    def refuse_new(self) -> None:
        """Start no more tasks from now on; :meth:`call` keeps working for the ones running."""
        self._refusing = True

    def close(self) -> None:
        """Stop accepting work and let the worker threads end once their current call returns."""
        self._refusing = True
        if not self._closed:
            self._closed = True
            self._executor.shutdown(wait=False, cancel_futures=True)

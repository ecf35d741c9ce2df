"""Requests in flight: what each admitted request has used so far, checkpointed off the event loop, so that
a process that dies (``kill -9``, a power cut) loses at most a second or 64 tokens of any request's bill;
and, when the server stops, the requests still running are ended, each billed exactly.

A checkpoint is kept in the request's budget reservation (a reservation of nothing when its key has no
budget), which the request's ledger row removes in its own transaction; at the next start, what a dead
process left there becomes ledger rows marked ``interrupted`` and estimated (:func:`recover`). A checkpoint
is written only while the request's row does not exist yet, so a request that has ended never leaves one
behind, whichever of the two is written first.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from server.config import ModelConfig
from server.generation.events import Meter
from server.metering.ledger import Ledger, UsageEntry, cost_of
from server.store import Store

log = logging.getLogger(__name__)

CHECKPOINT_S = 1.0
CHECKPOINT_TOKENS = 64
"""A request's use is written when it has grown by this many tokens, or this long after it last was."""
LOOK_S = 0.1
"""How often the checkpointer looks for requests due (a request streaming 100 tokens a second is due every
0.64 s)."""

_CHECKPOINT = (
    'INSERT INTO "budget_reservation" ("key_id", "unit", "amount", "boot", "created_at", "request_id", '
    '"model", "endpoint", "stream", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", '
    '"ttft_ms", "checkpointed_at") '
    "SELECT ?1, '', 0, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13 "
    'WHERE NOT EXISTS (SELECT 1 FROM "usage_record" WHERE "request_id" = ?4) '
    'ON CONFLICT ("request_id") DO UPDATE SET "input_tokens" = excluded."input_tokens", '
    '"output_tokens" = excluded."output_tokens", "cached_tokens" = excluded."cached_tokens", '
    '"reasoning_tokens" = excluded."reasoning_tokens", "ttft_ms" = excluded."ttft_ms", '
    '"checkpointed_at" = excluded."checkpointed_at"'
)
_LEFT_BEHIND = (
    'SELECT "id", "request_id", "key_id", "model", "endpoint", "stream", "input_tokens", "output_tokens", '
    '"cached_tokens", "reasoning_tokens", "ttft_ms", "created_at", "checkpointed_at" '
    'FROM "budget_reservation" WHERE "boot" != ? AND "request_id" IS NOT NULL'
)


@dataclass(eq=False)
class Flight:
    """One admitted request, from its admission to its ledger row."""

    request_id: str
    key_id: str
    model: str
    endpoint: str
    stream: bool
    meter: Meter
    task: asyncio.Task[Any] | None
    """The request's task: cancelled when the server stops."""
    created_at: float = field(default_factory=time.time)
    stopped: bool = False
    """Ended by the server stopping: its row says ``server_stopped``."""
    checkpointed: bool = False
    """A checkpoint of it is written, or being written: its ledger row removes it, by request id."""
    written: tuple[int, int, int, int] = (0, 0, 0, 0)
    written_at: float = field(default_factory=time.monotonic)

    def counts(self) -> tuple[int, int, int, int]:
        m = self.meter
        return m.input_tokens, m.output_tokens, m.cached_tokens, m.reasoning_tokens


class InFlight:
    """The admitted requests of one server, checkpointed by a thread of its own."""

    def __init__(self, store: Store, boot: str) -> None:
        self._store = store
        self._boot = boot
        self._lock = threading.Lock()
        self._flights: dict[Flight, None] = {}
        self._busy = threading.Event()  # set while any request is in flight: the thread sleeps otherwise
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="in-flight-checkpoints", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._flights)

    def admit(self, flight: Flight) -> None:
        with self._lock:
            self._flights[flight] = None
            self._busy.set()

    def end(self, flight: Flight) -> bool:
        """The request is being billed: no checkpoint of it is started from now on. Whether one may exist
        (then its row must remove it)."""
        with self._lock:
            self._flights.pop(flight, None)
            if not self._flights:
                self._busy.clear()
            return flight.checkpointed

    def stop_all(self) -> set[asyncio.Task[Any]]:
        """End every request in flight (on the server's event loop, as it stops): each is marked stopped and
        its task cancelled; its handler then bills what it generated, exactly. Returns the tasks cancelled."""
        with self._lock:
            flights = list(self._flights)
        cancelled: set[asyncio.Task[Any]] = set()
        for flight in flights:
            flight.stopped = True
            if flight.task is not None and flight.task not in cancelled and not flight.task.done():
                flight.task.cancel()
                cancelled.add(flight.task)
        if flights:
            log.warning(
                "the server stopped with %d requests running: each is billed for what it used", len(flights)
            )
        return cancelled

    def close(self) -> None:
        self._closing = True
        self._busy.set()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            self._busy.wait()
            if self._closing:
                return
            time.sleep(LOOK_S)
            due = self._due()
            if due:
                self._write(due)

    def _due(self) -> list[tuple[Any, ...]]:
        """The checkpoints to write now, each marked written (under the lock, so that a request billed
        meanwhile knows its row must remove what is written)."""
        now, wall = time.monotonic(), time.time()
        rows = []
        with self._lock:
            for flight in self._flights:
                counts = flight.counts()
                if counts == flight.written:
                    continue
                grown = counts[0] + counts[1] - flight.written[0] - flight.written[1]
                if grown < CHECKPOINT_TOKENS and now - flight.written_at < CHECKPOINT_S:
                    continue
                flight.checkpointed = True
                flight.written, flight.written_at = counts, now
                rows.append(
                    (
                        flight.key_id,
                        self._boot,
                        flight.created_at,
                        flight.request_id,
                        flight.model,
                        flight.endpoint,
                        flight.stream,
                        *counts,
                        flight.meter.ttft_ms,
                        wall,
                    )
                )
        return rows

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        db = self._store.db
        try:
            with db.atomic("IMMEDIATE"):
                db.cursor().executemany(_CHECKPOINT, rows)
        except Exception as exc:  # a full disk: the requests are still billed when they end
            log.warning("cannot checkpoint %d requests in flight: %s", len(rows), exc)


def recover(store: Store, ledger: Ledger, boot: str, models: Iterable[ModelConfig]) -> int:
    """Bill what a process that died left in flight: one ledger row per request, marked ``interrupted`` and
    estimated, with its last checkpointed use; each row removes its reservation. Returns the rows."""
    configs = {config.name: config for config in models}
    left = store.db.execute_sql(_LEFT_BEHIND, (boot,)).fetchall()
    for (
        reservation_id,
        request_id,
        key_id,
        model,
        endpoint,
        stream,
        input_tokens,
        output_tokens,
        cached_tokens,
        reasoning_tokens,
        ttft_ms,
        created_at,
        checkpointed_at,
    ) in left:
        ledger.submit(
            UsageEntry(
                request_id=request_id,
                key_id=key_id,
                model=model,
                endpoint=endpoint,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                cached_tokens=cached_tokens,
                reasoning_tokens=reasoning_tokens,
                cost=cost_of(configs.get(model), input_tokens, output_tokens),
                latency_ms=max(0.0, ((checkpointed_at or created_at) - created_at) * 1000),
                ttft_ms=ttft_ms,
                status="interrupted",
                http_status=0,
                stream=bool(stream),
                exact=False,
                created_at=created_at,
                reservation_id=reservation_id,
            )
        )
    if left:
        try:
            ledger.flush()
        except TimeoutError:  # a full disk: the rows wait in memory, written when the store recovers
            log.warning(
                "the rows of %d interrupted requests wait to be written: %s", len(left), ledger.last_error
            )
    return len(left)

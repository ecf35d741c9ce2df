"""The usage ledger: one row per request, written in batches by one writer thread.

A request awaits its row's commit before its last bytes go out, so a response the client received in
full is never unbilled, even if the process dies right after. Rows are grouped into one transaction per
batch (thousands of rows a second on one SQLite file) and an hourly roll-up is updated in that same
transaction: the graphs read the roll-up and stay fast with millions of ledger rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from server.config import ModelConfig
from server.errors import StorageFailure
from server.store import Store, disk_error

log = logging.getLogger(__name__)

Status = Literal["completed", "disconnected", "failed", "rejected"]


def cost_of(config: ModelConfig | None, input_tokens: int, output_tokens: int) -> float:
    """Cost from the model's price per million input and output tokens."""
    if config is None:
        return 0.0
    return (
        input_tokens * config.price_input_per_million + output_tokens * config.price_output_per_million
    ) / 1_000_000


@dataclass
class UsageEntry:
    """One request as billed."""

    request_id: str
    key_id: str | None
    model: str
    endpoint: str
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: Status = "completed"
    http_status: int = 200
    stream: bool = False
    client_disconnected: bool = False
    exact: bool = True
    created_at: float = field(default_factory=time.time)
    reservation_id: int | None = None
    """The budget reservation this row settles; it is removed in the same transaction."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def billed_tokens(self) -> int:
        """Tokens counted against budgets: none for a failure before the first generated token."""
        if self.status == "failed" and self.output_tokens == 0:
            return 0
        return self.total_tokens


_INSERT = (
    "INSERT OR IGNORE INTO usage_record (request_id, created_at, key_id, model, endpoint, input_tokens, "
    "output_tokens, total_tokens, cached_tokens, reasoning_tokens, cost, latency_ms, ttft_ms, status, "
    "http_status, stream, client_disconnected, exact) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_ROLLUP = (
    "INSERT INTO usage_hourly (hour, key_id, model, endpoint, requests, input_tokens, output_tokens, cost) "
    "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (hour, key_id, model, endpoint) DO UPDATE SET "
    "requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens, "
    "output_tokens = output_tokens + excluded.output_tokens, cost = cost + excluded.cost"
)
_SPEND = (
    'INSERT INTO "key_spend_daily" ("key_id", "day", "tokens", "cost") VALUES (?,?,?,?) '
    'ON CONFLICT ("key_id", "day") DO UPDATE SET "tokens" = "tokens" + excluded."tokens", '
    '"cost" = "cost" + excluded."cost"'
)
_UNRESERVE = 'DELETE FROM "budget_reservation" WHERE "id" = ?'
COMMIT_WAIT_S = 10.0


class Ledger:
    """Writes usage rows on its own thread; ``record`` returns once the row is committed."""

    def __init__(self, store: Store, *, batch: int = 2000, commit_wait_s: float = COMMIT_WAIT_S) -> None:
        self._store = store
        self._batch = batch
        self._commit_wait_s = commit_wait_s
        self._queue: queue.SimpleQueue[tuple[UsageEntry, Any] | None] = queue.SimpleQueue()
        self._requests = 0
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
        self._thread.start()

    @property
    def requests_recorded(self) -> int:
        """Requests recorded since start (the window's live counter)."""
        return self._requests

    def _count(self) -> None:
        with self._lock:
            self._requests += 1

    def submit(self, entry: UsageEntry) -> Future[None]:
        """Queue a row; the future completes when it is committed."""
        done: Future[None] = Future()
        self._count()
        self._queue.put((entry, done))
        return done

    async def record(self, entry: UsageEntry) -> None:
        """Queue a row and wait for its commit; a store that cannot be written raises StorageFailure."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._count()
        self._queue.put((entry, (loop, done)))
        try:
            # A timeout cancels only the waiting: the row stays queued and is written when it can be.
            async with asyncio.timeout(self._commit_wait_s):
                await done
        except TimeoutError as exc:
            raise StorageFailure(
                f"The usage ledger cannot be written ({self.last_error or 'timed out'}); the request is kept "
                "and will be recorded when the store recovers."
            ) from exc

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is committed."""
        marker: Future[None] = Future()
        self._queue.put((_FLUSH, marker))
        marker.result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        closing = False
        while not closing:
            item = self._queue.get()
            if item is None:
                break
            pending = [item]
            while len(pending) < self._batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    closing = True
                    break
                pending.append(nxt)
            self._write_until_done(pending)

    def _write_until_done(self, pending: list[tuple[UsageEntry, Any]]) -> None:
        rows = [entry for entry, _ in pending if entry is not _FLUSH]
        delay = 0.05
        while True:
            try:
                self._write(rows)
                self.last_error = None
                break
            except Exception as exc:  # the rows stay in memory and are written when the store recovers
                cause = disk_error(exc)
                self.last_error = str(cause) if cause is not None else f"{type(exc).__name__}: {exc}"
                log.error("usage ledger write failed, retrying: %s", self.last_error)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        # One wake-up per event loop for the whole batch, not one per row.
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _, waiter in pending:
            if isinstance(waiter, Future):
                if not waiter.done():
                    waiter.set_result(None)
            elif waiter is not None:
                by_loop.setdefault(waiter[0], []).append(waiter[1])
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, futures)


    def _write(self, rows: list[UsageEntry]) -> None:
        if not rows:
            return
        db = self._store.db
        with db.atomic():
            cursor = db.cursor()
            rollup: dict[tuple[int, str, str, str], list[float]] = {}
            spend: dict[tuple[str, int], list[float]] = {}
            for e in rows:
                if e.reservation_id is not None:
                    cursor.execute(_UNRESERVE, (e.reservation_id,))
                cursor.execute(_INSERT, _row(e))
                if cursor.rowcount != 1:
                    continue  # already recorded: a replay after a crash must not count twice
                acc = rollup.setdefault(
                    (int(e.created_at // 3600 * 3600), e.key_id or "", e.model, e.endpoint), [0, 0, 0, 0.0]
                )
                acc[0] += 1
                acc[1] += e.input_tokens
                acc[2] += e.output_tokens
                acc[3] += e.cost
                if e.key_id is not None:
                    day = spend.setdefault((e.key_id, int(e.created_at // 86400 * 86400)), [0, 0.0])
                    day[0] += e.billed_tokens
                    day[1] += e.cost
            cursor.executemany(_ROLLUP, [(*k, *v) for k, v in rollup.items()])
            cursor.executemany(_SPEND, [(*k, *v) for k, v in spend.items()])


_FLUSH: Any = object()


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _row(e: UsageEntry) -> tuple[Any, ...]:
    return (
        e.request_id,
        e.created_at,
        e.key_id,
        e.model,
        e.endpoint,
        e.input_tokens,
        e.output_tokens,
        e.total_tokens,
        e.cached_tokens,
        e.reasoning_tokens,
        e.cost,
        e.latency_ms,
        e.ttft_ms,
        e.status,
        e.http_status,
        e.stream,
        e.client_disconnected,
        e.exact,
    )


LEDGER_COLUMNS = (
    "request_id",
    "created_at",
    "key_id",
    "model",
    "endpoint",
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "latency_ms",
    "ttft_ms",
    "status",
    "http_status",
    "stream",
    "client_disconnected",
    "exact",
)


def ledger_rows(
    store: Store, since: float | None = None, until: float | None = None
) -> Iterator[dict[str, Any]]:
    """Ledger rows in time order, as plain dictionaries."""
    sql = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM usage_record WHERE created_at >= ? AND created_at < ? ORDER BY created_at, id"
    cursor = store.db.execute_sql(sql, (since or 0.0, until if until is not None else 1e18))
    for row in cursor:
        record = dict(zip(LEDGER_COLUMNS, row, strict=True))
        for flag in ("stream", "client_disconnected", "exact"):
            record[flag] = bool(record[flag])
        yield record


def export(
    store: Store, out: io.TextIOBase | Any, fmt: Literal["csv", "json"], since: float | None = None
) -> int:
    """Write the ledger (from ``since``) as CSV or JSON lines of objects; returns the row count."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for record in ledger_rows(store, since):
            writer.writerow(record)
            count += 1
        return count
    out.write("[")
    for record in ledger_rows(store, since):
        out.write(("," if count else "") + "\n" + json.dumps(record))
        count += 1
    out.write("\n]\n")
    return count


def entry_dict(entry: UsageEntry) -> dict[str, Any]:
    return asdict(entry)

"""The usage ledger: one row per request, written in batches by one writer thread.

A completed request's row is made durable before its last bytes go out, so a response the client received
in full is never unbilled, even if the process dies right after. In the server it is appended to the
journal (``server/metering/journal.py``: one system call, and the rows go to SQLite with the next batch;
a process that dies leaves them to the next start); without a journal, or when it cannot be written,
``record`` waits for the row's commit. Rows are grouped into one transaction per batch (thousands of rows
a second on one SQLite file) and an hourly roll-up is updated in that same transaction: the graphs read
the roll-up and stay fast with millions of ledger rows.

Rows committed one by one (no journal) and awaited during one pass of the server's event loop are
committed together at the end of that pass, on the loop's own thread: a wake-up of the writer thread and
the hand-back of its result cost the loop more than the commit itself. That commit never waits for a lock
(nor checkpoints the log): when the database is busy, or failing, its rows go to the writer thread like
any other. Rows committed on the loop are counted, and the writer checkpoints every ``CHECKPOINT_EVERY``
such commits.

Queuing a row for the writer costs an append to a deque: no lock, no future and no wake-up of its own.
Every row queued before the writer takes its next batch shares that batch's :class:`_Commit`, and only
the first row queued after the writer took a batch wakes it. A row someone awaits (``record`` without a
journal, or any row at a ``flush``) is written at once; rows nobody waits for (``submit``, and journaled
rows) gather for up to ``GATHER_S`` and are written in transactions of their own, so that a steady stream
of them neither lengthens the awaited commits nor costs a transaction each. Rows go to SQLite a chunk per
statement, and the roll-up and the daily spend are computed by SQLite over the rows a batch inserted: the
writer gives up the GIL (and waits to get it back from the busy event loop) a few times per batch rather
than per row, and its Python work per row is building one tuple.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import json
import logging
import operator
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any, Literal

from server.config import ModelConfig
from server.errors import StorageFailure
from server.metering.journal import Journal, Segment, encode, read_segment
from server.redaction import redact_keys
from server.store import PRAGMAS, Store, disk_error

log = logging.getLogger(__name__)

Status = Literal["completed", "disconnected", "failed", "rejected", "server_stopped", "interrupted"]
"""``server_stopped``: ended because the server stopped (exact counts); ``interrupted``: the process died
while it ran, billed at the next start from its last checkpoint (estimated)."""


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
    checkpointed: bool = False
    """A checkpoint of the request may be among the reservations: removed, by request id, with the row."""
    error: str | None = None
    """What the client was told went wrong, if anything; kept in memory for the window, never stored."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def billed_tokens(self) -> int:
        """Tokens counted against budgets: none for a failure before the first generated token."""
        if self.status == "failed" and self.output_tokens == 0:
            return 0
        return self.total_tokens


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
_STORED = tuple(column for column in LEDGER_COLUMNS if column != "total_tokens")
_ROW = operator.attrgetter(*_STORED)
"""An entry's parameters for the INSERT, read in C (``total_tokens`` is added up by SQLite)."""
_PER_ROW = len(_STORED)
_CHUNKS = (32, 16, 8, 4, 2, 1)
"""Rows per INSERT statement. SQLite inserts a chunk in one step, so the writer lets go of the GIL (and
waits to take it back from the busy event loop) once per chunk rather than once per row; 32 rows bind 544
parameters, within every SQLite's limit."""


def _insert(rows: int) -> str:
    total_at = LEDGER_COLUMNS.index("total_tokens")
    inputs, outputs = _STORED.index("input_tokens"), _STORED.index("output_tokens")
    values = []
    for first in range(0, rows * _PER_ROW, _PER_ROW):
        p = [f"?{first + n}" for n in range(1, _PER_ROW + 1)]
        values.append(f"({', '.join(p[:total_at])}, {p[inputs]} + {p[outputs]}, {', '.join(p[total_at:])})")
    return f"INSERT OR IGNORE INTO usage_record ({', '.join(LEDGER_COLUMNS)}) VALUES {', '.join(values)}"


_INSERTS = {rows: _insert(rows) for rows in _CHUNKS}
_LAST_ID = "SELECT COALESCE(MAX(id), 0) FROM usage_record"
# The roll-ups read the rows this batch inserted: with the write lock held, SQLite gives new rows ids above
# the highest one, so a replayed row (ignored by the INSERT) is never counted twice. The buckets are
# computed on whole seconds, which for a positive time is the same floor as ``created_at // 3600``.
_ROLLUP = (
    "INSERT INTO usage_hourly (hour, key_id, model, endpoint, requests, input_tokens, output_tokens, cost) "
    "SELECT CAST(created_at AS INTEGER) / 3600 * 3600, COALESCE(key_id, ''), model, endpoint, COUNT(*), "
    "SUM(input_tokens), SUM(output_tokens), SUM(cost) FROM usage_record WHERE id > ? GROUP BY 1, 2, 3, 4 "
    "ON CONFLICT (hour, key_id, model, endpoint) DO UPDATE SET "
    "requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens, "
    "output_tokens = output_tokens + excluded.output_tokens, cost = cost + excluded.cost"
)
# The tokens are UsageEntry.billed_tokens: none for a failure before the first generated token.
_SPEND = (
    "INSERT INTO key_spend_daily (key_id, day, tokens, cost) "
    "SELECT key_id, CAST(created_at AS INTEGER) / 86400 * 86400, "
    "SUM(CASE WHEN status = 'failed' AND output_tokens = 0 THEN 0 ELSE total_tokens END), SUM(cost) "
    "FROM usage_record WHERE id > ? AND key_id IS NOT NULL GROUP BY 1, 2 "
    "ON CONFLICT (key_id, day) DO UPDATE SET tokens = tokens + excluded.tokens, cost = cost + excluded.cost"
)
_UNRESERVE = "DELETE FROM budget_reservation WHERE id IN (SELECT value FROM json_each(?))"
_UNCHECKPOINT = "DELETE FROM budget_reservation WHERE request_id IN (SELECT value FROM json_each(?))"
COMMIT_WAIT_S = 10.0
WAL_AUTOCHECKPOINT = 1000
"""SQLite's default: a commit that leaves the write-ahead log longer than this many pages checkpoints it."""
CHECKPOINT_EVERY = 256
"""Transactions committed on an event loop (which never checkpoints) between two checkpoints by the writer."""
GATHER_S = 0.05
"""How long rows that nobody awaits may wait for others to share their transaction."""
RECENT_ENTRIES = 1000
"""Requests the ledger keeps in memory, as they happen, for the window's Logs page."""


class _Bell:
    """A flag the writer sleeps on, like ``threading.Event`` but rung through a C queue: setting it takes no
    Python-level lock or condition, which on the event loop's thread is most of what a wake-up costs.
    Like an Event, setting it twice before the writer wakes wakes it once; a spurious wake-up is harmless
    (the writer looks at the queues again)."""

    __slots__ = ("_queue", "_set")

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._queue.put(None)

    def clear(self) -> None:
        self._set = False
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        try:
            self._queue.get(timeout=timeout)
        except queue.Empty:
            return self._set
        return True


class _Commit:
    """The commit of the next batch: it settles every row queued before the writer takes that batch."""

    __slots__ = ("future", "_lock", "_loops")

    def __init__(self) -> None:
        self.future: Future[None] = Future()
        self.future.set_running_or_notify_cancel()  # shared by many callers: none may cancel it for the rest
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, asyncio.Event] | None = {}

    def event_for(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event | None:
        """The event set on ``loop`` once committed (one wake-up per loop); None if committed already."""
        with self._lock:
            if self._loops is None:
                return None
            event = self._loops.get(loop)
            if event is None:
                event = self._loops[loop] = asyncio.Event()
            return event

    def done(self) -> None:
        """The rows are committed: wake whoever waits for them."""
        with self._lock:
            loops, self._loops = self._loops or {}, None
        for loop, event in loops.items():
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(event.set)
        self.future.set_result(None)


class Ledger:
    """Writes usage rows on its own thread; ``record`` returns once the row is committed."""

    def __init__(
        self,
        store: Store,
        *,
        batch: int = 2000,
        commit_wait_s: float = COMMIT_WAIT_S,
        gather_s: float = GATHER_S,
        on_loop: bool = True,
        journal: Journal | None = None,
    ) -> None:
        self._store = store
        self._journal = journal
        self._batch = batch
        self._commit_wait_s = commit_wait_s
        self._gather_s = gather_s
        # Rows someone awaits are written at once; the others gather, and are written in their own
        # transactions rather than a few at a time with every awaited commit.
        self._awaited: deque[UsageEntry] = deque()
        self._awaited_commit = _Commit()
        self._gathered: deque[UsageEntry] = deque()
        self._gathered_commit = _Commit()
        self._wake = _Bell()  # something is queued
        self._hurry = _Bell()  # a row is awaited, or the gathered rows are due
        self._due = False  # write the gathered rows now: a flush, a close or a full batch
        self._closing = False
        self._requests = 0  # counted by the writer alone, so without a lock
        self._on_loop = on_loop
        self._passes: dict[asyncio.AbstractEventLoop, list[tuple[UsageEntry, asyncio.Future[None]]]] = {}
        self._committed_on_loops = 0  # counted on the event loop (one per process: the server's)
        self._loop_transactions = 0
        self._checkpoint_due = False
        self.last_error: str | None = None
        self.journal_error: str | None = None
        """Why the journal could not be written, while it cannot (rows are then committed one by one)."""
        self._numbers = itertools.count(1)
        self.recent: deque[tuple[int, UsageEntry]] = deque(maxlen=RECENT_ENTRIES)
        """The latest entries, numbered from 1 as they came (their error messages included)."""
        self.replayed = self._replay(journal) if journal is not None else 0
        """Rows a previous run had journaled but not committed, written at start."""
        self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
        self._thread.start()

    @property
    def requests_recorded(self) -> int:
        """Requests recorded since start (the window's live counter)."""
        return self._requests + self._committed_on_loops

    def submit(self, entry: UsageEntry) -> Future[None]:
        """Queue a row without waiting for it; it is written within ``gather_s`` (or at a flush). The future,
        shared by the rows written with it, completes once the row is committed."""
        self.recent.append((next(self._numbers), entry))
        return self._gather(entry)

    def _gather(self, entry: UsageEntry) -> Future[None]:
        rows = self._gathered
        rows.append(entry)
        # Read after the append: the commit this returns is taken after the row was queued.
        commit = self._gathered_commit
        if len(rows) >= self._batch and not self._due:
            self._due = True
            self._hurry.set()
        if not self._wake.is_set():
            self._wake.set()
        return commit.future

    async def record(self, entry: UsageEntry) -> None:
        """Make a row durable: appended to the journal (and committed with the next batch), or, without a
        journal or when it cannot be written, committed before this returns; a store that cannot be
        written raises StorageFailure."""
        self.recent.append((next(self._numbers), entry))
        if self._journal is not None and self._journaled(self._journal, entry):
            return
        loop = asyncio.get_running_loop()
        if self._on_loop:
            # Committed at the end of this pass, or handed to the writer, whose wait is bounded there.
            await self._join_pass(loop, entry)
            return
        committed = self._queue_awaited(loop, entry)
        if committed is not None:
            await self._bounded(committed)

    def _journaled(self, journal: Journal, entry: UsageEntry) -> bool:
        """Append the row to the journal and queue it for the writer; False if it could not be appended."""
        line = encode(_journal_row(entry))
        with journal.lock:
            try:
                journal.append_locked(line)
            except OSError as exc:
                failed = exc
            else:
                self._gather(entry)
                self.journal_error = None
                return True
        if self.journal_error is None:
            log.warning("usage ledger journal cannot be written, committing rows one by one: %s", failed)
        self.journal_error = str(failed)
        return False

    def _replay(self, journal: Journal) -> int:
        """Write the rows a previous run journaled; delete its segments. Returns the rows read."""
        total = bad = 0
        for path in journal.left_behind():
            try:
                rows, unreadable = read_segment(path)
                entries = [e for e in map(_from_journal, rows) if e is not None]
                for start in range(0, len(entries), self._batch):
                    self._write(entries[start : start + self._batch])
                path.unlink()
            except Exception as exc:  # kept for the next start: the server starts all the same
                log.error("usage ledger: the journal segment %s could not be written: %s", path.name, exc)
                continue
            bad += unreadable + len(rows) - len(entries)
            total += len(entries)
        if total or bad:
            log.warning(
                "usage ledger: %d rows from the journal a previous run left (those not yet committed are now); "
                "%d unreadable lines skipped",
                total,
                bad,
            )
        return total

    async def _bounded(self, committed: Awaitable[Any]) -> None:
        try:
            # A timeout cancels only the waiting: the row stays queued and is written when it can be.
            async with asyncio.timeout(self._commit_wait_s):
                await committed
        except TimeoutError as exc:
            raise StorageFailure(
                f"The usage ledger cannot be written ({self.last_error or 'timed out'}); the request is kept "
                "and will be recorded when the store recovers."
            ) from exc

    def _queue_awaited(self, loop: asyncio.AbstractEventLoop, entry: UsageEntry) -> Awaitable[Any] | None:
        """Hand a row to the writer; what to await for its commit (None: committed already)."""
        self._awaited.append(entry)
        committed = self._awaited_commit.event_for(loop)
        self._nudge()
        return None if committed is None else committed.wait()

    def _join_pass(self, loop: asyncio.AbstractEventLoop, entry: UsageEntry) -> asyncio.Future[None]:
        """Add a row to the rows awaited during this pass of ``loop``, committed together at its end."""
        rows = self._passes.get(loop)
        if rows is None:
            rows = self._passes[loop] = []
            loop.call_soon(self._commit_pass, loop)
        done: asyncio.Future[None] = loop.create_future()
        rows.append((entry, done))
        return done

    def _commit_pass(self, loop: asyncio.AbstractEventLoop) -> None:
        """Commit the rows of one loop pass on the loop's own thread, without waiting for a lock: when
        another writer holds the database, or the store fails, they go to the writer thread instead
        (which waits, and retries until the store recovers)."""
        pending = self._passes.pop(loop, [])
        rows = [entry for entry, _ in pending]
        try:
            if self._checkpoint_due:  # the writer's checkpoint waits for the lock: do not keep taking it
                raise _CheckpointPending
            self._write_without_waiting(rows)
        except Exception:  # busy, failing or checkpointing: the writer thread takes over these rows
            handed = self._queue_awaited(loop, rows[0])
            self._awaited.extend(rows[1:])
            waiters = [done for _, done in pending]
            if handed is None:
                _resolve(waiters)
            else:
                loop.create_task(self._resolve_when(handed, waiters))
            return
        self._committed_on_loops += len(rows)
        _resolve([done for _, done in pending])
        self._loop_transactions += 1
        if self._loop_transactions % CHECKPOINT_EVERY == 0:
            self._checkpoint_due = True
            self._nudge()

    async def _resolve_when(self, committed: Awaitable[Any], waiters: list[asyncio.Future[None]]) -> None:
        try:
            await self._bounded(committed)
        except StorageFailure as failure:
            for done in waiters:
                if not done.done():
                    done.set_exception(failure)
            return
        _resolve(waiters)

    @property
    def transactions_on_loops(self) -> int:
        """Transactions committed on event loops since start."""
        return self._loop_transactions

    def _write_without_waiting(self, rows: list[UsageEntry]) -> None:
        db = self._store.db
        # No waiting for a lock the writer thread or another process holds (that would stall the event
        # loop), and no checkpoint at this commit (the writer thread checkpoints: see _run).
        db.execute_sql("PRAGMA busy_timeout = 0")
        db.execute_sql("PRAGMA wal_autocheckpoint = 0")
        try:
            self._write(rows)
        finally:
            db.execute_sql(f"PRAGMA busy_timeout = {PRAGMAS['busy_timeout']}")
            db.execute_sql(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is committed."""
        deadline = time.monotonic() + timeout
        commits = (self._gathered_commit, self._awaited_commit)
        self._due = True
        self._nudge()
        for commit in commits:
            commit.future.result(max(0.0, deadline - time.monotonic()))

    def catch_up(self, timeout: float = 2.0) -> bool:
        """For a reader of the store (the window): wait until the rows queued so far, journaled ones
        included, are committed, so that it sees every request answered before it began. False if that
        took longer than ``timeout`` (the store is failing): the reader then sees what is committed."""
        try:
            self.flush(timeout)
        except FutureTimeout:
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the writer (rows queued after this are not written)."""
        self._closing = True
        self._due = True
        self._nudge()
        self._thread.join(timeout)
        if self._journal is not None:
            self._journal.close()

    def _nudge(self) -> None:
        """Have the writer write now (setting only a flag that is not set yet, which costs no lock)."""
        self._hurry.set()
        self._wake.set()

    def _run(self) -> None:
        gather_until: float | None = None
        while True:
            if gather_until is None:
                self._wake.wait()
                gather_until = time.monotonic() + self._gather_s
            self._hurry.wait(max(0.0, gather_until - time.monotonic()))
            # Each flag is cleared before the rows it covers are taken: whoever queues a row from here on
            # sets it again (reading the new commit), so no row is left waiting for nothing.
            self._hurry.clear()
            due = self._due or time.monotonic() >= gather_until
            closing = False
            rows: list[UsageEntry] = []
            gathered_commit: _Commit | None = None
            closed: Segment | None = None
            if due:
                self._due = False
                closing = self._closing
                self._wake.clear()
                gather_until = None
                with self._journal.lock if self._journal is not None else contextlib.nullcontext():
                    # Under the journal's lock: every row of the segment closed here is among those taken.
                    closed = self._journal.close_segment_locked() if self._journal is not None else None
                    gathered_commit, self._gathered_commit = self._gathered_commit, _Commit()
                    rows = _take(self._gathered)
            awaited_commit, self._awaited_commit = self._awaited_commit, _Commit()
            rows += _take(self._awaited)
            self._requests += len(rows)
            for start in range(0, len(rows), self._batch):
                self._write_until_done(rows[start : start + self._batch])
            awaited_commit.done()
            if gathered_commit is not None:
                gathered_commit.done()
            if closed is not None:
                Journal.retire(closed)
            if self._checkpoint_due:
                try:
                    # RESTART: the loop keeps committing, so a passive checkpoint would never catch up with
                    # the log and the log would never start over. This one holds off other writers (the
                    # loop then hands its rows here) until the log is copied and can be reused.
                    self._store.db.execute_sql("PRAGMA wal_checkpoint(RESTART)")
                except Exception as exc:  # the next commit here checkpoints anyway
                    log.warning("usage ledger checkpoint failed: %s", exc)
                finally:
                    self._checkpoint_due = False  # the loop commits again
            if closing:
                return

    def _write_until_done(self, rows: list[UsageEntry]) -> None:
        delay = 0.05
        while True:
            try:
                self._write(rows)
                self.last_error = None
                return
            except Exception as exc:  # the rows stay in memory and are written when the store recovers
                cause = disk_error(exc)
                self.last_error = str(cause) if cause is not None else f"{type(exc).__name__}: {exc}"
                log.error("usage ledger write failed, retrying: %s", self.last_error)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _write(self, rows: list[UsageEntry]) -> None:
        db = self._store.db
        # IMMEDIATE takes the write lock at once: no other writer between reading the last id and inserting.
        with db.atomic("IMMEDIATE"):
            cursor = db.cursor()
            last_id = cursor.execute(_LAST_ID).fetchone()[0]
            reserved = [e.reservation_id for e in rows if e.reservation_id is not None]
            if reserved:
                cursor.execute(_UNRESERVE, (json.dumps(reserved),))
            checkpointed = [e.request_id for e in rows if e.checkpointed]
            if checkpointed:
                cursor.execute(_UNCHECKPOINT, (json.dumps(checkpointed),))
            inserted = 0
            for sql, params in _chunks(rows):
                cursor.execute(sql, params)
                inserted += cursor.rowcount
            if inserted:  # not only replays of rows already recorded
                cursor.execute(_ROLLUP, (last_id,))
                cursor.execute(_SPEND, (last_id,))


class _CheckpointPending(Exception):
    """The writer thread is about to checkpoint: rows of a loop pass go to it."""


def _resolve(waiters: list[asyncio.Future[None]]) -> None:
    for done in waiters:
        if not done.done():  # one whose wait timed out was cancelled: its row is written all the same
            done.set_result(None)


def _take(queue: deque[UsageEntry]) -> list[UsageEntry]:
    """Everything queued so far (only the writer takes rows: the queue cannot shrink meanwhile)."""
    return [queue.popleft() for _ in range(len(queue))]


def _chunks(rows: list[UsageEntry]) -> Iterator[tuple[str, list[Any]]]:
    """The INSERT statements for ``rows``, in order (the first row for a request id is the one kept)."""
    start = 0
    while start < len(rows):
        size = next(n for n in _CHUNKS if n <= len(rows) - start)
        yield _INSERTS[size], list(chain.from_iterable(map(_ROW, rows[start : start + size])))
        start += size


_JOURNAL_FIELDS: dict[str, tuple[type, ...]] = {
    "request_id": (str,),
    "created_at": (float, int),
    "key_id": (str, type(None)),
    "model": (str,),
    "endpoint": (str,),
    "input_tokens": (int,),
    "output_tokens": (int,),
    "cached_tokens": (int,),
    "reasoning_tokens": (int,),
    "cost": (float, int),
    "latency_ms": (float, int),
    "ttft_ms": (float, int, type(None)),
    "status": (str,),
    "http_status": (int,),
    "stream": (bool, int),
    "client_disconnected": (bool, int),
    "exact": (bool, int),
    "reservation_id": (int, type(None)),
    "checkpointed": (bool, int),
}
_STATUSES = frozenset(Status.__args__)  # type: ignore[attr-defined]


def _journal_row(entry: UsageEntry) -> dict[str, Any]:
    """What the journal keeps of a row: what the ledger stores, and the reservation it settles."""
    row = dict(zip(_STORED, _ROW(entry), strict=True))
    row["reservation_id"] = entry.reservation_id
    row["checkpointed"] = entry.checkpointed
    return row


def _from_journal(row: dict[str, Any]) -> UsageEntry | None:
    """A journaled row as an entry; None if any field is missing or of the wrong kind."""
    for name, kinds in _JOURNAL_FIELDS.items():
        value = row.get(name, ...)
        if type(value) not in kinds:  # exact types: a bool is not taken for a number, nor a number for it
            return None
    if row["status"] not in _STATUSES or not row["request_id"]:
        return None
    return UsageEntry(**{name: row[name] for name in _JOURNAL_FIELDS})


def ledger_rows(
    store: Store, since: float | None = None, until: float | None = None
) -> Iterator[dict[str, Any]]:
    """Ledger rows in time order, as plain dictionaries."""
    sql = f"SELECT {', '.join(LEDGER_COLUMNS)} FROM usage_record WHERE created_at >= ? AND created_at < ? ORDER BY created_at, id"
    cursor = store.db.execute_sql(sql, (since or 0.0, until if until is not None else 1e18))
    for row in cursor:
        record = dict(zip(LEDGER_COLUMNS, row, strict=True))
        record["model"] = redact_keys(record["model"])  # however old the row, no key leaves in an export
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

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.config import ModelConfig
from server.errors import StorageFailure
from server.metering import ledger as usage
from server.metering.ledger import Ledger, UsageEntry, cost_of, entry_dict, export, ledger_rows
from server.services import Services
from server.store import Store
from tests.support.ledger import usage_entry


def test_rows_rollups_and_spend_agree(make_services: Callable[..., Services]) -> None:
    services = make_services()
    for i in range(500):
        services.ledger.submit(usage_entry(i))
    services.ledger.flush()
    db = services.store.db
    ledger = db.execute_sql(
        "SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cost) FROM usage_record"
    ).fetchone()
    rollup = db.execute_sql(
        "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cost) FROM usage_hourly"
    ).fetchone()
    assert ledger[:3] == rollup[:3] == (500, sum(range(500)), 2 * sum(range(500)))
    assert abs(ledger[3] - rollup[3]) < 1e-9
    spend = db.execute_sql("SELECT SUM(tokens) FROM key_spend_daily").fetchone()[0]
    assert spend == 3 * sum(range(500))


def test_a_replayed_row_is_recorded_once(make_services: Callable[..., Services]) -> None:
    services = make_services()
    services.ledger.submit(usage_entry(7))
    services.ledger.submit(usage_entry(7))
    services.ledger.flush()
    services.ledger.submit(usage_entry(7))
    services.ledger.flush()
    assert services.store.db.execute_sql("SELECT COUNT(*) FROM usage_record").fetchone()[0] == 1
    assert services.store.db.execute_sql("SELECT SUM(requests) FROM usage_hourly").fetchone()[0] == 1


def test_export_csv_and_json(make_services: Callable[..., Services]) -> None:
    services = make_services()
    for i in range(5):
        services.ledger.submit(usage_entry(i))
    services.ledger.flush()
    out = io.StringIO()
    assert export(services.store, out, "csv") == 5
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("request_id,created_at,key_id")
    assert len(lines) == 6
    out = io.StringIO()
    since = 1_700_000_000 + 2 * 600
    assert export(services.store, out, "json", since=since) == 3
    rows = json.loads(out.getvalue())
    assert [r["request_id"] for r in rows] == ["req_2", "req_3", "req_4"]
    assert rows[0]["stream"] is False


def test_ledger_throughput_batches(make_services: Callable[..., Services]) -> None:
    services = make_services()
    started = time.perf_counter()
    for i in range(20_000):
        services.ledger.submit(usage_entry(i))
    services.ledger.flush(timeout=60)
    rate = 20_000 / (time.perf_counter() - started)
    assert len(list(ledger_rows(services.store))) == 20_000
    assert rate > 5_000, f"only {rate:.0f} rows/s"


def _assert_rollups_match_the_ledger(store: Store) -> None:
    """The hourly roll-up (the graphs) and the daily spend (the budgets) add up to the ledger's rows."""
    hourly: dict[tuple[int, str, str, str], list[float]] = {}
    spend: dict[tuple[str, int], list[float]] = {}
    for row in ledger_rows(store):
        at = row["created_at"]
        bucket = hourly.setdefault(
            (int(at // 3600 * 3600), row["key_id"] or "", row["model"], row["endpoint"]), [0, 0, 0, 0.0]
        )
        bucket[0] += 1
        bucket[1] += row["input_tokens"]
        bucket[2] += row["output_tokens"]
        bucket[3] += row["cost"]
        if row["key_id"] is not None:
            free = row["status"] == "failed" and row["output_tokens"] == 0
            day = spend.setdefault((row["key_id"], int(at // 86400 * 86400)), [0, 0.0])
            day[0] += 0 if free else row["total_tokens"]
            day[1] += row["cost"]
    db = store.db
    stored_hourly = {
        (h, k, m, e): (n, i, o, c)
        for h, k, m, e, n, i, o, c in db.execute_sql(
            "SELECT hour, key_id, model, endpoint, requests, input_tokens, output_tokens, cost FROM usage_hourly"
        )
    }
    assert set(stored_hourly) == set(hourly)
    for hour, (n, i, o, c) in stored_hourly.items():
        assert [n, i, o] == hourly[hour][:3], hour
        assert c == pytest.approx(hourly[hour][3], rel=1e-9, abs=1e-12)
    stored_spend = {
        (k, d): (t, c)
        for k, d, t, c in db.execute_sql("SELECT key_id, day, tokens, cost FROM key_spend_daily")
    }
    assert set(stored_spend) == set(spend)
    for key_day, (tokens, cost) in stored_spend.items():
        assert tokens == spend[key_day][0], key_day
        assert cost == pytest.approx(spend[key_day][1], rel=1e-9, abs=1e-12)


def test_a_batch_with_replays_counts_each_request_once(make_services: Callable[..., Services]) -> None:
    services = make_services()
    ledger = services.ledger
    ledger.submit(usage_entry(1))
    ledger.flush()
    batch = [
        usage_entry(1, input_tokens=999),  # already recorded: ignored
        usage_entry(2),
        usage_entry(2, output_tokens=999),  # twice in one batch: the first wins
        usage_entry(3, key_id=None),
        usage_entry(4, status="failed", output_tokens=0),  # free: no tokens against the budget
        usage_entry(5, status="failed"),
        usage_entry(6, created_at=1_700_003_599.999999),  # the last instant of an hour
        usage_entry(7, created_at=1_700_006_400.0),  # the first instant of a day
    ]
    for entry in batch:
        ledger.submit(entry)
    ledger.flush()
    rows = {r["request_id"]: r for r in ledger_rows(services.store)}
    assert sorted(rows) == [f"req_{i}" for i in range(1, 8)]
    assert rows["req_1"]["input_tokens"] == 1
    assert rows["req_2"]["output_tokens"] == 4
    _assert_rollups_match_the_ledger(services.store)
    assert ledger.requests_recorded == 1 + len(batch)  # the window counts what reached the ledger


def test_every_field_is_stored(make_services: Callable[..., Services]) -> None:
    services = make_services()
    entry = UsageEntry(
        request_id="req_all",
        key_id="key_x",
        model="m",
        endpoint="embeddings",
        input_tokens=3,
        output_tokens=4,
        cached_tokens=1,
        reasoning_tokens=2,
        cost=0.5,
        latency_ms=12.5,
        ttft_ms=3.25,
        status="disconnected",
        http_status=499,
        stream=True,
        client_disconnected=True,
        exact=False,
        created_at=1_700_000_123.5,
    )
    services.ledger.submit(entry)
    services.ledger.flush()
    expected = entry_dict(entry)
    del expected["reservation_id"], expected["checkpointed"]
    del expected["error"]  # what the client was told stays in memory, for the window's log
    assert list(ledger_rows(services.store)) == [{**expected, "total_tokens": 7}]


def test_reservations_are_released_with_their_rows(make_services: Callable[..., Services]) -> None:
    services = make_services()
    reservation = services.store.tables.BudgetReservation
    held = [
        reservation.create(key_id="key_0", unit="tokens", amount=100, boot="test", created_at=0.0).id
        for _ in range(4)
    ]
    services.ledger.submit(usage_entry(0, reservation_id=held[0]))
    services.ledger.flush()
    services.ledger.submit(usage_entry(1, reservation_id=held[1]))
    services.ledger.submit(usage_entry(0, reservation_id=held[2]))  # a replay still releases what it held
    services.ledger.submit(usage_entry(2))
    services.ledger.flush()
    assert [r.id for r in reservation.select()] == [held[3]]  # another request's hold stays


def test_record_returns_once_its_row_is_committed(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    # Rows nobody awaits wait a minute for company here: an awaited row must not wait with them.
    ledger = Ledger(store, gather_s=60.0, commit_wait_s=5.0)
    try:

        async def requests(first: int) -> None:
            ledger.submit(usage_entry(first, status="rejected"))
            await asyncio.gather(*(ledger.record(usage_entry(first + i)) for i in range(1, 50)))

        threads = [threading.Thread(target=asyncio.run, args=(requests(n * 100),)) for n in range(3)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert time.monotonic() - started < 5.0
        # Another connection sees every awaited row committed.
        with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3")) as other:
            count = "SELECT COUNT(*) FROM usage_record WHERE status = 'completed'"
            assert other.execute(count).fetchone()[0] == 3 * 49
        ledger.flush()
        assert len(list(ledger_rows(store))) == 3 * 50
        _assert_rollups_match_the_ledger(store)
    finally:
        ledger.close()
        store.close()


def test_rows_nobody_awaits_are_written_within_the_gathering_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    ledger = Ledger(store, gather_s=0.05)
    try:
        done = ledger.submit(usage_entry(1))
        done.result(5)  # without a flush
        assert [r["request_id"] for r in ledger_rows(store)] == ["req_1"]
    finally:
        ledger.close()
        store.close()


def test_a_commit_never_settles_a_row_it_did_not_write(tmp_path: Path) -> None:
    """Rows share their batch's commit: while threads and event loops queue rows as the writer takes its
    batches, whoever is told "committed" finds the row in the database."""
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    ledger = Ledger(store, gather_s=0.0)
    missing: list[str] = []

    def check(con: sqlite3.Connection, request_id: str) -> None:
        if con.execute("SELECT 1 FROM usage_record WHERE request_id = ?", (request_id,)).fetchone() is None:
            missing.append(request_id)

    def submitter(tag: int) -> None:
        with contextlib.closing(sqlite3.connect(path)) as con:
            for i in range(1000):
                done = ledger.submit(usage_entry(tag + i))
                if i % 7 == 0:
                    done.result(10)
                    check(con, f"req_{tag + i}")

    async def recorder(tag: int) -> None:
        with contextlib.closing(sqlite3.connect(path)) as con:
            for i in range(500):
                await ledger.record(usage_entry(tag + i))
                check(con, f"req_{tag + i}")

    threads = [threading.Thread(target=submitter, args=(n * 10_000,)) for n in range(4)]
    threads += [threading.Thread(target=asyncio.run, args=(recorder(n * 10_000),)) for n in range(4, 6)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert missing == []
        ledger.flush()
        assert len(list(ledger_rows(store))) == 4 * 1000 + 2 * 500
    finally:
        ledger.close()
        store.close()


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    ledger = Ledger(store, gather_s=60.0)
    for i in range(10):
        ledger.submit(usage_entry(i))
    ledger.close()
    assert len(list(ledger_rows(store))) == 10
    store.close()


_LEDGER_DOWN = "CREATE TRIGGER ledger_down BEFORE INSERT ON usage_record BEGIN SELECT RAISE(ABORT, 'the ledger is down'); END"


def test_rows_are_kept_while_the_store_fails_and_written_once_it_recovers(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    ledger = Ledger(store, commit_wait_s=0.3)
    try:
        ledger.submit(usage_entry(0))
        ledger.flush()
        store.db.execute_sql(_LEDGER_DOWN)
        queued = ledger.submit(usage_entry(1))
        with pytest.raises(StorageFailure, match="the ledger is down"):
            asyncio.run(ledger.record(usage_entry(2)))
        with pytest.raises(TimeoutError):
            ledger.flush(timeout=0.2)
        assert not queued.done()
        assert ledger.last_error is not None
        store.db.execute_sql("DROP TRIGGER ledger_down")
        queued.result(10)
        ledger.flush()
        assert ledger.last_error is None
        assert sorted(r["request_id"] for r in ledger_rows(store)) == ["req_0", "req_1", "req_2"]
        _assert_rollups_match_the_ledger(store)
    finally:
        ledger.close()
        store.close()


def test_a_batch_rolls_up_only_its_own_rows(tmp_path: Path) -> None:
    """The roll-ups read the rows a batch inserted by id, not an index over the whole ledger, so that a
    batch costs the same with a million rows recorded as with none."""
    store = Store(tmp_path / "db.sqlite3")
    for statement in (usage._ROLLUP, usage._SPEND):
        plan = " ".join(row[3] for row in store.db.execute_sql(f"EXPLAIN QUERY PLAN {statement}", (0,)))
        assert "USING INTEGER PRIMARY KEY (rowid>?)" in plan, plan
        assert "INDEX" not in plan.replace("INTEGER PRIMARY KEY", ""), plan
    store.close()


PRICED = ModelConfig(
    name="p", kind="chat", engine="fake", price_input_per_million=0.4, price_output_per_million=1.6
)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**9), st.integers(0, 10**9))
def test_cost_is_linear_in_each_kind_of_token(inputs: int, outputs: int) -> None:
    total = cost_of(PRICED, inputs, outputs)
    assert abs(total - (cost_of(PRICED, inputs, 0) + cost_of(PRICED, 0, outputs))) <= 1e-9 * max(1.0, total)
    assert abs(total - (inputs * 0.4 + outputs * 1.6) / 1e6) <= 1e-9 * max(1.0, total)
    assert cost_of(None, inputs, outputs) == 0.0


def test_rows_awaited_in_one_loop_pass_share_one_commit_on_the_loop(tmp_path: Path) -> None:
    """Twenty requests finishing in the same pass of the event loop: one transaction, on the loop's own
    thread, committed before any of them returns; none by the writer thread."""
    store = Store(tmp_path / "db.sqlite3")
    ledger = Ledger(store)
    try:

        async def requests() -> tuple[set[str], list[int]]:
            threads: set[str] = set()
            seen: list[int] = []

            async def one(number: int) -> None:
                await ledger.record(usage_entry(number))
                seen.append(len(list(ledger_rows(store))))  # committed by the time it returns

            def traced(statement: str) -> None:
                if statement.startswith("BEGIN"):
                    threads.add(threading.current_thread().name)

            with _tracing_every_connection(traced):
                await asyncio.gather(*(one(i) for i in range(20)))
            return threads, seen

        threads, seen = asyncio.run(requests())
        assert ledger.transactions_on_loops == 1
        assert threads == {threading.current_thread().name}, threads
        assert seen == [20] * 20
        assert len(list(ledger_rows(store))) == 20 and ledger.requests_recorded == 20
        _assert_rollups_match_the_ledger(store)
    finally:
        ledger.close()
        store.close()


@contextlib.contextmanager
def _tracing_every_connection(callback: Callable[[str], None]) -> Iterator[None]:
    """Every SQLite connection opened meanwhile reports its statements to ``callback``."""
    original = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection: sqlite3.Connection = original(*args, **kwargs)
        connection.set_trace_callback(callback)
        return connection

    sqlite3.connect = connect  # type: ignore[assignment]
    try:
        yield
    finally:
        sqlite3.connect = original


def test_a_busy_database_hands_the_rows_to_the_writer_without_stalling_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    ledger = Ledger(store, commit_wait_s=10.0)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process writing: the loop must not wait for it
        threading.Timer(0.5, other.execute, args=("COMMIT",)).start()

        async def request_and_ticks() -> tuple[float, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            beat = asyncio.ensure_future(ticker())
            started = time.monotonic()
            await ledger.record(usage_entry(1))
            waited = time.monotonic() - started
            beat.cancel()
            return waited, ticks

        waited, ticks = asyncio.run(request_and_ticks())
        assert ledger.transactions_on_loops == 0  # the writer thread committed the row ...
        assert waited >= 0.4  # ... once the other writer was done ...
        assert ticks >= 20, (waited, ticks)  # ... and the loop kept turning meanwhile
        assert [r["request_id"] for r in ledger_rows(store)] == ["req_1"]
    finally:
        other.close()
        ledger.close()
        store.close()


def test_commits_on_the_loop_keep_the_log_bounded(tmp_path: Path) -> None:
    """Commits on the loop never checkpoint the write-ahead log; the writer checkpoints it for them."""
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    ledger = Ledger(store)
    try:

        async def requests() -> None:
            for i in range(4 * usage.CHECKPOINT_EVERY):
                await ledger.record(usage_entry(i))

        asyncio.run(requests())
        ledger.flush()
        wal = Path(str(path) + "-wal").stat().st_size
        pages = store.db.execute_sql("PRAGMA page_size").fetchone()[0]
        # Unchecked, each of these transactions would leave its pages in the log: several MB.
        assert wal < 2 * usage.CHECKPOINT_EVERY * 8 * pages, wal
        assert len(list(ledger_rows(store))) == 4 * usage.CHECKPOINT_EVERY
    finally:
        ledger.close()
        store.close()

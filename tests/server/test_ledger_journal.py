"""The ledger's journal: a completed request's row is in a file when ``record`` returns, goes to SQLite with
the next batch, and is written at the next start if the process died first; damage is skipped and
counted; a journal that cannot be written means a commit per row, never a lost row."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from pathlib import Path

import pytest

from server.metering.journal import Journal
from server.metering.ledger import Ledger, ledger_rows
from server.store import Store
from tests.support.ledger import usage_entry


def _line(i: int, **extra: object) -> str:
    """A journal line as the format documents it: one JSON object per row, the ledger's columns."""
    row = {
        "request_id": f"req_{i}",
        "created_at": 1_700_000_000.0 + i,
        "key_id": "key_a",
        "model": "m",
        "endpoint": "chat.completions",
        "input_tokens": i,
        "output_tokens": 2 * i,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "cost": i / 1000,
        "latency_ms": 1.0,
        "ttft_ms": None,
        "status": "completed",
        "http_status": 200,
        "stream": False,
        "client_disconnected": False,
        "exact": True,
        "reservation_id": None,
        "checkpointed": False,
    }
    row.update(extra)
    return json.dumps(row) + "\n"


def _segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("ledger-*.jsonl"))


def _committed(path: Path) -> dict[str, tuple[int, int]]:
    with contextlib.closing(sqlite3.connect(path)) as other:
        rows = other.execute("SELECT request_id, input_tokens, output_tokens FROM usage_record").fetchall()
    return {request_id: (tokens_in, tokens_out) for request_id, tokens_in, tokens_out in rows}


def _rollup_totals(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as other:
        requests, tokens_in = other.execute(
            "SELECT SUM(requests), SUM(input_tokens) FROM usage_hourly"
        ).fetchone()
    return requests, tokens_in


def test_a_recorded_row_is_journaled_at_once_and_committed_with_the_next_batch(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    folder = tmp_path / "journal"
    ledger = Ledger(store, gather_s=60.0, journal=Journal(folder))
    try:
        asyncio.run(ledger.record(usage_entry(1)))
        # Durable now (a process that dies here leaves it in the journal), in SQLite with the next batch.
        (segment,) = _segments(folder)
        assert json.loads(segment.read_text())["request_id"] == "req_1"
        assert _committed(tmp_path / "db.sqlite3") == {}
        assert ledger.catch_up()  # what the window does before it reads
        assert _committed(tmp_path / "db.sqlite3") == {"req_1": (1, 2)}
        assert _segments(folder) == [], "a segment whose rows are all committed is deleted"
        for i in range(2, 300):
            asyncio.run(ledger.record(usage_entry(i)))
            if i % 50 == 0:
                ledger.flush()
    finally:
        ledger.close()
    assert len(_committed(tmp_path / "db.sqlite3")) == 299
    assert _segments(folder) == [], "nothing is left once every row is committed"
    assert _rollup_totals(tmp_path / "db.sqlite3") == (299, sum(range(1, 300)))
    store.close()


def test_rows_a_dead_process_journaled_are_written_at_the_next_start_and_counted_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    folder = tmp_path / "journal"
    first = Ledger(store)
    asyncio.run(first.record(usage_entry(1)))  # committed already: its line is in a segment too (died before
    first.close()  # deleting it)
    folder.mkdir()
    (folder / "ledger-000000007.jsonl").write_text(_line(1) + _line(2) + _line(3, status="disconnected"))
    (folder / "ledger-000000008.jsonl").write_text(_line(4))

    ledger = Ledger(store, journal=Journal(folder))
    try:
        assert ledger.replayed == 4
        assert _segments(folder) == []
        assert _committed(tmp_path / "db.sqlite3") == {
            "req_1": (1, 2),
            "req_2": (2, 4),
            "req_3": (3, 6),
            "req_4": (4, 8),
        }
        assert _rollup_totals(tmp_path / "db.sqlite3") == (4, 1 + 2 + 3 + 4), "req_1 is not counted twice"
        asyncio.run(ledger.record(usage_entry(5)))
        (segment,) = _segments(folder)
        assert segment.name == "ledger-000000009.jsonl", "new segments follow those found"
    finally:
        ledger.close()
        store.close()


def test_damaged_journal_lines_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "db.sqlite3")
    folder = tmp_path / "journal"
    folder.mkdir()
    (folder / "ledger-000000001.jsonl").write_text(
        _line(1)
        + "not json at all\n"
        + json.dumps([1, 2, 3])
        + "\n"
        + _line(2, input_tokens="5")  # a number as text
        + _line(3, stream="yes")
        + _line(4, status="made up")
        + _line(5, request_id="")
        + _line(6).replace('"model": "m", ', "")  # a column missing
        + "x" * 100_000
        + "\n"
        + _line(7)
        + _line(8)[:40]  # cut short: the process (or the machine) stopped mid-line
    )
    (folder / "notes.txt").write_text("not a segment")
    with caplog.at_level(logging.WARNING, logger="server.metering.ledger"):
        ledger = Ledger(store, journal=Journal(folder))
    try:
        assert ledger.replayed == 2
        assert set(_committed(tmp_path / "db.sqlite3")) == {"req_1", "req_7"}
        assert "2 rows from the journal" in caplog.text and "9 unreadable lines skipped" in caplog.text
        assert (folder / "notes.txt").exists()
    finally:
        ledger.close()
        store.close()


def test_when_the_journal_cannot_be_written_each_row_is_committed_before_record_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "db.sqlite3")
    folder = tmp_path / "journal"
    ledger = Ledger(store, gather_s=60.0, journal=Journal(folder))
    blocker = folder / "ledger-000000001.jsonl"
    blocker.mkdir()  # where the next segment would go: it cannot be opened as a file
    try:
        with caplog.at_level(logging.WARNING, logger="server.metering.ledger"):
            asyncio.run(ledger.record(usage_entry(1)))
            asyncio.run(ledger.record(usage_entry(2)))
        assert _committed(tmp_path / "db.sqlite3") == {"req_1": (1, 2), "req_2": (2, 4)}
        assert ledger.journal_error is not None
        assert caplog.text.count("journal cannot be written") == 1, "said once, not per row"
        blocker.rmdir()
        asyncio.run(ledger.record(usage_entry(3)))
        assert ledger.journal_error is None
        assert [p.name for p in _segments(folder)] == ["ledger-000000001.jsonl"]
        assert "req_3" not in _committed(tmp_path / "db.sqlite3")  # journaled: committed with the next batch
        ledger.flush()
        assert len(list(ledger_rows(store))) == 3
    finally:
        ledger.close()
        store.close()

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.access.keys import generate_key
from server.store import _V1, MIGRATIONS, SCHEMA_VERSION, Store


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]


def test_a_new_database_is_at_the_current_version_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.integrity_ok()
    store.close()


def test_migrations_produce_exactly_the_models_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    connection = store.db.connection()
    for model in store.tables.__dict__.values():
        table = model._meta.table_name
        expected = [field.column_name for field in model._meta.sorted_fields]
        assert sorted(_columns(connection, table)) == sorted(expected), table
        indexes = {row[1] for row in connection.execute(f'PRAGMA index_list("{table}")') if row[3] == "c"}
        assert indexes == {index._name for index in model._meta.fields_to_index()}, table
    store.close()


def test_a_version_1_database_is_migrated_keeping_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    for statement in _V1:
        old.execute(statement)
    old.execute(
        "INSERT INTO api_key (public_id, name, owner_note, digest, hint, created_at) "
        "VALUES ('key_1', 'old key', '', ?, 'aisp-…abcd', 1.0)",
        ("d" * 64,),
    )
    old.execute(
        "INSERT INTO usage_record (request_id, created_at, key_id, model, endpoint, input_tokens, output_tokens, "
        "total_tokens, cached_tokens, reasoning_tokens, cost, latency_ms, status, http_status, stream, "
        "client_disconnected, exact) VALUES ('req_1', 86400.5, 'key_1', 'm', 'chat.completions', 10, 5, 15, 0, 0, "
        "0.25, 1.0, 'completed', 200, 0, 0, 1)"
    )
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()

    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    row = store.db.execute_sql("SELECT name, rpm, budget_amount FROM api_key").fetchone()
    assert row == ("old key", None, None)
    spend = store.db.execute_sql("SELECT key_id, day, tokens, cost FROM key_spend_daily").fetchall()
    assert spend == [("key_1", 86400, 15, 0.25)]
    assert store.integrity_ok()
    store.close()


def test_keys_an_older_version_stored_are_scrubbed_by_the_migration(tmp_path: Path) -> None:
    """Before version 4 a rejected request's row kept whatever its body had in ``model``, a key too."""
    key = generate_key()
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    for version in (1, 2, 3):
        for statement in MIGRATIONS[version]:
            old.execute(statement)
    ledger = (
        "INSERT INTO usage_record (request_id, created_at, key_id, model, endpoint, input_tokens, output_tokens, "
        "total_tokens, cached_tokens, reasoning_tokens, cost, latency_ms, status, http_status, stream, "
        "client_disconnected, exact) VALUES (?, 7200.5, 'key_1', ?, 'chat.completions', 0, 0, 0, 0, 0, 0, 1.0, "
        "?, ?, 0, 0, 1)"
    )
    old.execute(ledger, ("req_1", key, "rejected", 400))
    old.execute(ledger, ("req_2", "", "rejected", 404))
    old.execute(ledger, ("req_3", "m", "completed", 200))
    hourly = (
        "INSERT INTO usage_hourly (hour, key_id, model, endpoint, requests, input_tokens, output_tokens, cost) "
        "VALUES (7200, 'key_1', ?, 'chat.completions', ?, 0, 0, 0)"
    )
    old.execute(hourly, (key, 1))
    old.execute(hourly, ("", 1))
    old.execute(hourly, ("m", 1))
    old.execute(
        "INSERT INTO stored_response (response_id, key_id, created_at, model, input_items, body) "
        "VALUES ('resp_1', 'key_1', 1.0, 'm', ?, ?)",
        (f'[{{"content": "my key is {key}"}}]', f'{{"output": "{key}"}}'),
    )
    old.execute("PRAGMA user_version = 3")
    old.commit()
    old.close()

    store = Store(path)
    rows = store.db.execute_sql("SELECT request_id, model FROM usage_record ORDER BY request_id").fetchall()
    assert rows == [("req_1", ""), ("req_2", ""), ("req_3", "m")]
    hours = store.db.execute_sql("SELECT model, requests FROM usage_hourly ORDER BY model").fetchall()
    assert hours == [("", 2), ("m", 1)]
    items, body = store.db.execute_sql("SELECT input_items, body FROM stored_response").fetchone()
    assert key not in items and key not in body
    assert items == '[{"content": "my key is aisp-[redacted]"}]' and body == '{"output": "aisp-[redacted]"}'
    assert store.integrity_ok()
    store.close()
    # Not even in the pages' free space, nor in the log.
    assert key.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    future = sqlite3.connect(path)
    future.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    future.close()
    with pytest.raises(RuntimeError, match="newer"):
        Store(path)


def test_settings_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    store.set_setting("theme", {"mode": "dark", "font": 14})
    store.set_setting("theme", {"mode": "light", "font": 12})
    assert store.get_setting("theme") == {"mode": "light", "font": 12}
    assert store.get_setting("missing", 3) == 3
    store.close()


def test_flags_and_nulls_bind_as_1_0_and_null_without_process_wide_adapters(tmp_path: Path) -> None:
    """The store changes nothing for the process's other SQLite users (see server/tuning.py)."""
    store = Store(tmp_path / "db.sqlite3")
    row = store.db.execute_sql("SELECT ?, ?, ?, typeof(?)", (True, False, None, None)).fetchone()
    assert row == (1, 0, None, "null")
    assert not {adapted for adapted, _protocol in sqlite3.adapters} & {bool, type(None)}
    store.close()

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.store import _V1, SCHEMA_VERSION, Store


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

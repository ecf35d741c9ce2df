"""The store: Peewee models on one SQLite file in WAL mode, with a versioned, migrated schema.

Each :class:`Store` defines its own model classes bound to its own database, so two stores (two test
servers, or the window and a CLI command) never share mutable class state.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

PRAGMAS: dict[str, object] = {
    "journal_mode": "wal",
    "synchronous": "normal",  # durable across a process crash (kill -9); WAL keeps it consistent
    "busy_timeout": 10_000,
    "foreign_keys": 1,
    "cache_size": -16_000,
}


@dataclass(frozen=True)
class Tables:
    """The model classes of one store."""

    ApiKey: Any
    UsageRecord: Any
    UsageHourly: Any
    StoredResponse: Any
    Setting: Any

    def all(self) -> list[Any]:
        return [self.ApiKey, self.UsageRecord, self.UsageHourly, self.StoredResponse, self.Setting]


def _define(db: pw.SqliteDatabase) -> Tables:
    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class ApiKey(Base):
        public_id = pw.CharField(max_length=32, unique=True)
        name = pw.CharField(max_length=200)
        owner_note = pw.TextField(default="")
        digest = pw.FixedCharField(max_length=64, unique=True)
        hint = pw.CharField(max_length=32)
        created_at = pw.FloatField()
        last_used_at = pw.FloatField(null=True)
        expires_at = pw.FloatField(null=True)
        revoked_at = pw.FloatField(null=True)
        allowed_models = pw.TextField(null=True)  # JSON list; NULL means every model
        rolled_to = pw.CharField(max_length=32, null=True)

    class UsageRecord(Base):
        request_id = pw.CharField(max_length=64, unique=True)
        created_at = pw.FloatField(index=True)
        key_id = pw.CharField(max_length=32, null=True, index=True)
        model = pw.CharField(max_length=128)
        endpoint = pw.CharField(max_length=64)
        input_tokens = pw.IntegerField(default=0)
        output_tokens = pw.IntegerField(default=0)
        total_tokens = pw.IntegerField(default=0)
        cached_tokens = pw.IntegerField(default=0)
        reasoning_tokens = pw.IntegerField(default=0)
        cost = pw.FloatField(default=0.0)
        latency_ms = pw.FloatField(default=0.0)
        ttft_ms = pw.FloatField(null=True)
        status = pw.CharField(max_length=16)
        http_status = pw.IntegerField(default=200)
        stream = pw.BooleanField(default=False)
        client_disconnected = pw.BooleanField(default=False)
        exact = pw.BooleanField(default=True)

    class UsageHourly(Base):
        """Hourly roll-up written with each ledger batch: the graphs read this, not the ledger."""

        hour = pw.IntegerField()  # epoch seconds at the start of the hour (UTC)
        key_id = pw.CharField(max_length=32, default="")
        model = pw.CharField(max_length=128)
        endpoint = pw.CharField(max_length=64)
        requests = pw.IntegerField(default=0)
        input_tokens = pw.IntegerField(default=0)
        output_tokens = pw.IntegerField(default=0)
        cost = pw.FloatField(default=0.0)

        class Meta:
            indexes = ((("hour", "key_id", "model", "endpoint"), True),)

    class StoredResponse(Base):
        response_id = pw.CharField(max_length=64, unique=True)
        key_id = pw.CharField(max_length=32, index=True)
        created_at = pw.FloatField()
        model = pw.CharField(max_length=128)
        previous_response_id = pw.CharField(max_length=64, null=True)
        input_items = pw.TextField()  # JSON list of the items this request added
        body = pw.TextField()  # JSON of the response object

    class Setting(Base):
        name = pw.CharField(max_length=64, primary_key=True)
        value = pw.TextField()  # JSON

    return Tables(ApiKey, UsageRecord, UsageHourly, StoredResponse, Setting)


Migration = Callable[[pw.SqliteDatabase, Tables], None]


def _create_v1(db: pw.SqliteDatabase, tables: Tables) -> None:
    db.create_tables(tables.all())


MIGRATIONS: dict[int, Migration] = {1: _create_v1}
"""Schema version → the step that brings the previous version to it."""


class Store:
    """One SQLite database: open it, migrate it, hand out its tables."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = pw.SqliteDatabase(str(path), pragmas=PRAGMAS, check_same_thread=False, timeout=10)
        self.tables = _define(self.db)
        self.migrate()

    def migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION`, one recorded step at a time."""
        with self.db.connection_context():
            current = self.db.execute_sql("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database {self.path} has schema version {current}, newer than this "
                    f"program's {SCHEMA_VERSION}: upgrade the program"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                with self.db.atomic():
                    MIGRATIONS[version](self.db, self.tables)
                    self.db.execute_sql(f"PRAGMA user_version = {version}")
                log.info("database migrated to schema version %d", version)

    @property
    def schema_version(self) -> int:
        return int(self.db.execute_sql("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    # Settings the window saves: tiny JSON values by name.
    def get_setting(self, name: str, default: Any = None) -> Any:
        row = self.tables.Setting.get_or_none(self.tables.Setting.name == name)
        return default if row is None else json.loads(row.value)

    def all_settings(self) -> dict[str, Any]:
        return {row.name: json.loads(row.value) for row in self.tables.Setting.select()}

    def set_setting(self, name: str, value: Any) -> None:
        Setting = self.tables.Setting
        Setting.insert(name=name, value=json.dumps(value)).on_conflict_replace().execute()

    def integrity_ok(self) -> bool:
        return bool(self.db.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok")


def now() -> float:
    return time.time()


def is_disk_error(exc: BaseException) -> bool:
    """A write failed because the disk is full or the data directory is read-only."""
    text = str(exc).lower()
    return isinstance(exc, pw.OperationalError | sqlite3.OperationalError) and (
        "disk" in text or "readonly" in text or "read-only" in text or "unable to open" in text
    )

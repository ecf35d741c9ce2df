"""The store: Peewee models on one SQLite file in WAL mode, with a versioned, migrated schema.

Each :class:`Store` defines its own model classes bound to its own database, so two stores (two test
servers, or the window and a CLI command) never share mutable class state.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw

from server.datadir import create_private
from server.redaction import redact_keys

log = logging.getLogger(__name__)


SCHEMA_VERSION = 4

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
    KeySpendDaily: Any
    BudgetReservation: Any


def _define(db: pw.SqliteDatabase) -> Tables:
    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class ApiKey(Base):
        public_id = pw.CharField(max_length=32, unique=True)
        name = pw.CharField(max_length=200)
        owner_note = pw.TextField(default="")
        digest = pw.CharField(max_length=64, unique=True)
        hint = pw.CharField(max_length=32)
        created_at = pw.FloatField()
        last_used_at = pw.FloatField(null=True)
        expires_at = pw.FloatField(null=True)
        revoked_at = pw.FloatField(null=True)
        allowed_models = pw.TextField(null=True)  # JSON list; NULL means every model
        rolled_to = pw.CharField(max_length=32, null=True)
        rpm = pw.IntegerField(null=True)
        tpm = pw.IntegerField(null=True)
        max_concurrent = pw.IntegerField(null=True)
        budget_unit = pw.CharField(max_length=8, null=True)  # "tokens" or "cost"
        budget_amount = pw.FloatField(null=True)
        budget_period = pw.CharField(max_length=8, null=True)  # day, week, month, lifetime

    class UsageRecord(Base):
        request_id = pw.CharField(max_length=64, unique=True)
        created_at = pw.FloatField(index=True)
        key_id = pw.CharField(max_length=32, null=True)
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

    class KeySpendDaily(Base):
        """Tokens and cost per key per UTC day, written with the ledger: budgets read this."""

        key_id = pw.CharField(max_length=32)
        day = pw.IntegerField()
        tokens = pw.IntegerField(default=0)
        cost = pw.FloatField(default=0.0)

        class Meta:
            indexes = ((("key_id", "day"), True),)

    class BudgetReservation(Base):
        """A request in flight: the worst-case spend held for it (none without a budget), and what it has
        used as last checkpointed; removed with the request's ledger row, or turned into one at the next
        start if the process died first."""

        key_id = pw.CharField(max_length=32, index=True)
        unit = pw.CharField(max_length=8)
        amount = pw.FloatField()
        boot = pw.CharField(max_length=32)
        created_at = pw.FloatField()
        request_id = pw.CharField(max_length=64, null=True, unique=True)
        model = pw.CharField(max_length=128, default="")
        endpoint = pw.CharField(max_length=64, default="")
        stream = pw.BooleanField(default=False)
        input_tokens = pw.IntegerField(default=0)
        output_tokens = pw.IntegerField(default=0)
        cached_tokens = pw.IntegerField(default=0)
        reasoning_tokens = pw.IntegerField(default=0)
        ttft_ms = pw.FloatField(null=True)
        checkpointed_at = pw.FloatField(null=True)

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

    return Tables(ApiKey, UsageRecord, UsageHourly, StoredResponse, Setting, KeySpendDaily, BudgetReservation)


_V1 = (
    'CREATE TABLE "api_key" ("id" INTEGER NOT NULL PRIMARY KEY, "public_id" VARCHAR(32) NOT NULL, '
    '"name" VARCHAR(200) NOT NULL, "owner_note" TEXT NOT NULL, "digest" CHAR(64) NOT NULL, "hint" VARCHAR(32) '
    'NOT NULL, "created_at" REAL NOT NULL, "last_used_at" REAL, "expires_at" REAL, "revoked_at" REAL, '
    '"allowed_models" TEXT, "rolled_to" VARCHAR(32))',
    'CREATE UNIQUE INDEX "api_key_public_id" ON "api_key" ("public_id")',
    'CREATE UNIQUE INDEX "api_key_digest" ON "api_key" ("digest")',
    'CREATE TABLE "setting" ("name" VARCHAR(64) NOT NULL PRIMARY KEY, "value" TEXT NOT NULL)',
    'CREATE TABLE "stored_response" ("id" INTEGER NOT NULL PRIMARY KEY, "response_id" VARCHAR(64) NOT NULL, '
    '"key_id" VARCHAR(32) NOT NULL, "created_at" REAL NOT NULL, "model" VARCHAR(128) NOT NULL, '
    '"previous_response_id" VARCHAR(64), "input_items" TEXT NOT NULL, "body" TEXT NOT NULL)',
    'CREATE UNIQUE INDEX "stored_response_response_id" ON "stored_response" ("response_id")',
    'CREATE INDEX "stored_response_key_id" ON "stored_response" ("key_id")',
    'CREATE TABLE "usage_hourly" ("id" INTEGER NOT NULL PRIMARY KEY, "hour" INTEGER NOT NULL, "key_id" '
    'VARCHAR(32) NOT NULL, "model" VARCHAR(128) NOT NULL, "endpoint" VARCHAR(64) NOT NULL, "requests" INTEGER '
    'NOT NULL, "input_tokens" INTEGER NOT NULL, "output_tokens" INTEGER NOT NULL, "cost" REAL NOT NULL)',
    'CREATE UNIQUE INDEX "usage_hourly_hour_key_id_model_endpoint" ON "usage_hourly" ("hour", "key_id", "model", '
    '"endpoint")',
    'CREATE TABLE "usage_record" ("id" INTEGER NOT NULL PRIMARY KEY, "request_id" VARCHAR(64) NOT NULL, '
    '"created_at" REAL NOT NULL, "key_id" VARCHAR(32), "model" VARCHAR(128) NOT NULL, "endpoint" VARCHAR(64) NOT '
    'NULL, "input_tokens" INTEGER NOT NULL, "output_tokens" INTEGER NOT NULL, "total_tokens" INTEGER NOT NULL, '
    '"cached_tokens" INTEGER NOT NULL, "reasoning_tokens" INTEGER NOT NULL, "cost" REAL NOT NULL, "latency_ms" '
    'REAL NOT NULL, "ttft_ms" REAL, "status" VARCHAR(16) NOT NULL, "http_status" INTEGER NOT NULL, "stream" '
    'INTEGER NOT NULL, "client_disconnected" INTEGER NOT NULL, "exact" INTEGER NOT NULL)',
    'CREATE UNIQUE INDEX "usage_record_request_id" ON "usage_record" ("request_id")',
    'CREATE INDEX "usage_record_created_at" ON "usage_record" ("created_at")',
    'CREATE INDEX "usage_record_key_id" ON "usage_record" ("key_id")',
)

_V2 = (
    'ALTER TABLE "api_key" ADD COLUMN "rpm" INTEGER',
    'ALTER TABLE "api_key" ADD COLUMN "tpm" INTEGER',
    'ALTER TABLE "api_key" ADD COLUMN "max_concurrent" INTEGER',
    'ALTER TABLE "api_key" ADD COLUMN "budget_unit" VARCHAR(8)',
    'ALTER TABLE "api_key" ADD COLUMN "budget_amount" REAL',
    'ALTER TABLE "api_key" ADD COLUMN "budget_period" VARCHAR(8)',
    'CREATE TABLE "key_spend_daily" ("id" INTEGER NOT NULL PRIMARY KEY, "key_id" VARCHAR(32) NOT NULL, '
    '"day" INTEGER NOT NULL, "tokens" INTEGER NOT NULL, "cost" REAL NOT NULL)',
    'CREATE UNIQUE INDEX "key_spend_daily_key_id_day" ON "key_spend_daily" ("key_id", "day")',
    'CREATE TABLE "budget_reservation" ("id" INTEGER NOT NULL PRIMARY KEY, "key_id" VARCHAR(32) NOT NULL, '
    '"unit" VARCHAR(8) NOT NULL, "amount" REAL NOT NULL, "boot" VARCHAR(32) NOT NULL, "created_at" REAL NOT NULL)',
    'CREATE INDEX "budget_reservation_key_id" ON "budget_reservation" ("key_id")',
    # Budgets count what keys spent before limits existed.
    'INSERT INTO "key_spend_daily" ("key_id", "day", "tokens", "cost") SELECT "key_id", '
    'CAST("created_at" / 86400 AS INTEGER) * 86400, SUM("total_tokens"), SUM("cost") FROM "usage_record" '
    'WHERE "key_id" IS NOT NULL GROUP BY 1, 2',
)

_V3 = (
    # Nothing looks ledger rows up by key (the graphs read usage_hourly, budgets key_spend_daily), and
    # the index cost every row written a second B-tree insert.
    'DROP INDEX "usage_record_key_id"',
)

_LEAKED = "{column} LIKE '%aisp-%' AND redact_keys({column}) != {column}"

_V4 = (
    # A rejected request's row used to keep whatever its body had in "model", a key too: such rows (and
    # their roll-ups) now name no model, and keys pasted into stored conversations are redacted.
    "INSERT INTO usage_hourly (hour, key_id, model, endpoint, requests, input_tokens, output_tokens, cost) "
    "SELECT hour, key_id, '', endpoint, SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cost) "
    f"FROM usage_hourly WHERE {_LEAKED.format(column='model')} GROUP BY hour, key_id, endpoint "
    "ON CONFLICT (hour, key_id, model, endpoint) DO UPDATE SET "
    "requests = requests + excluded.requests, input_tokens = input_tokens + excluded.input_tokens, "
    "output_tokens = output_tokens + excluded.output_tokens, cost = cost + excluded.cost",
    f"DELETE FROM usage_hourly WHERE {_LEAKED.format(column='model')}",
    f"UPDATE usage_record SET model = '' WHERE {_LEAKED.format(column='model')}",
    "UPDATE stored_response SET input_items = redact_keys(input_items), body = redact_keys(body) "
    "WHERE input_items LIKE '%aisp-%' OR body LIKE '%aisp-%'",
    # A request in flight keeps in its reservation (one of nothing, from its first checkpoint, when its key
    # has no budget) what it has used as last checkpointed: a process that dies leaves them behind, and the
    # next start bills them.
    'ALTER TABLE "budget_reservation" ADD COLUMN "request_id" VARCHAR(64)',
    'ALTER TABLE "budget_reservation" ADD COLUMN "model" VARCHAR(128) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "budget_reservation" ADD COLUMN "endpoint" VARCHAR(64) NOT NULL DEFAULT \'\'',
    'ALTER TABLE "budget_reservation" ADD COLUMN "stream" INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE "budget_reservation" ADD COLUMN "input_tokens" INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE "budget_reservation" ADD COLUMN "output_tokens" INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE "budget_reservation" ADD COLUMN "cached_tokens" INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE "budget_reservation" ADD COLUMN "reasoning_tokens" INTEGER NOT NULL DEFAULT 0',
    'ALTER TABLE "budget_reservation" ADD COLUMN "ttft_ms" REAL',
    'ALTER TABLE "budget_reservation" ADD COLUMN "checkpointed_at" REAL',
    'CREATE UNIQUE INDEX "budget_reservation_request_id" ON "budget_reservation" ("request_id")',
)

MIGRATIONS: dict[int, tuple[str, ...]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4}
"""Schema version → the statements that bring the previous version to it. Written out, never derived
from the models, so that a step means the same thing forever."""


class StoreUnavailable(RuntimeError):
    """The database cannot be opened or created; the message names the file and the cause."""


class Store:
    """One SQLite database: open it, migrate it, hand out its tables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = pw.SqliteDatabase(str(path), pragmas=PRAGMAS, check_same_thread=False, timeout=10)
        self.db.register_function(redact_keys, "redact_keys", 1)  # for migrations (see _V4)
        self.tables = _define(self.db)
        try:
            create_private(path)  # before SQLite creates it world-readable (its log and index files follow)
            self.migrate()
        except (OSError, pw.OperationalError) as exc:
            raise StoreUnavailable(
                f"cannot open the database {path}: {exc} (is the data directory read-only, or its disk full?)"
            ) from exc

    def migrate(self) -> None:
        """Bring the schema to :data:`SCHEMA_VERSION`, one recorded step at a time."""
        with self.db.connection_context():
            current = self.db.execute_sql("PRAGMA user_version").fetchone()[0]
            if current > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the database {self.path} has schema version {current}, newer than this "
                    f"program's {SCHEMA_VERSION}: upgrade the program"
                )
            # What a step removes (a key a client sent, see _V4) is overwritten, not left in free space.
            self.db.execute_sql("PRAGMA secure_delete = ON")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                with self.db.atomic():
                    for statement in MIGRATIONS[version]:
                        self.db.execute_sql(statement)
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


StoreError = pw.OperationalError
"""What a database operation that fails for want of the database (full, read-only, locked) raises."""


def disk_error(exc: BaseException) -> BaseException | None:
    """The error saying the disk is full or the data directory read-only, if that is what ``exc`` is about.

    A failed write can surface as a later error (SQLite ends the transaction itself when the disk is full,
    so the rollback that follows fails with "no transaction is active"): the chain of errors is searched.
    """
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, pw.OperationalError | sqlite3.OperationalError) and (
            "disk" in text or "readonly" in text or "read-only" in text or "unable to open" in text
        ):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def is_disk_error(exc: BaseException) -> bool:
    """A write failed because the disk is full or the data directory is read-only."""
    return disk_error(exc) is not None

"""The user's data stays the user's: the database and the server secret live in the per-user data directory,
never in the program's folder, and a newer (or reinstalled) program opens them: keys still authenticate,
usage and settings are still there, and an older schema is migrated on the way."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx
import platformdirs
import pytest

from server.access.keys import KeyService, generate_key, hint, load_or_create_secret
from server.config import APP_NAME, load_settings
from server.errors import Unauthenticated
from server.metering.ledger import ledger_rows
from server.redaction import redact_keys
from server.store import MIGRATIONS, SCHEMA_VERSION, Store
from tests.packaging.bundle import (
    BUILD_TIMEOUT,
    CHAT_MODEL,
    NAME,
    ROOT,
    bare_env,
    copy_bundle,
    run,
    serving,
    snapshot,
)

SECRET = bytes(range(32))


def _digest(token: str, scratch: Path) -> str:
    """The stored form of a key under SECRET, as the program computes it."""
    store = Store(scratch / "digest.sqlite3")
    try:
        return KeyService(store, SECRET).digest(token)
    finally:
        store.close()


def _database_at(path: Path, version: int, token: str, digest: str) -> None:
    """A database as a program of schema ``version`` left it, with a key, a ledger row and a setting.

    The rows use only the columns of schema 1, which later versions keep."""
    with sqlite3.connect(path) as db:
        db.create_function("redact_keys", 1, redact_keys)  # as the program's connections have it
        for step in range(1, version + 1):
            for statement in MIGRATIONS[step]:
                db.execute(statement)
        db.execute(
            'INSERT INTO "api_key" ("public_id", "name", "owner_note", "digest", "hint", "created_at") '
            "VALUES (?, ?, ?, ?, ?, ?)",
            ("key_old0000000001", "from an older version", "", digest, hint(token), 1_700_000_000.0),
        )
        db.execute(
            'INSERT INTO "usage_record" ("request_id", "created_at", "key_id", "model", "endpoint", '
            '"input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "cost", '
            '"latency_ms", "status", "http_status", "stream", "client_disconnected", "exact") '
            "VALUES (?, ?, ?, ?, ?, 12, 34, 46, 0, 0, 0.5, 80.0, 'completed', 200, 0, 0, 1)",
            ("req_old", 1_700_000_100.0, "key_old0000000001", CHAT_MODEL, "chat.completions"),
        )
        db.execute(
            'INSERT INTO "setting" ("name", "value") VALUES (?, ?)', ("server", json.dumps({"port": 9001}))
        )
        db.execute(f"PRAGMA user_version = {version}")
    db.close()


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f'PRAGMA table_info("{table}")')}


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_an_older_database_is_migrated_and_keeps_keys_usage_and_settings(
    tmp_path: Path, version: int
) -> None:
    token = generate_key()
    path = tmp_path / "aisp.sqlite3"
    _database_at(path, version, token, _digest(token, tmp_path))

    store = Store(path)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert store.integrity_ok()
        assert KeyService(store, SECRET).authenticate(token).id == "key_old0000000001"
        with pytest.raises(Unauthenticated):
            KeyService(store, SECRET).authenticate(generate_key())
        assert [row["request_id"] for row in ledger_rows(store)] == ["req_old"]
        assert store.get_setting("server") == {"port": 9001}
        # Every field of every model has its column: a model changed without a migration fails here.
        with sqlite3.connect(path) as db:
            for model in store.tables.__dict__.values():
                table = model._meta.table_name
                wanted = {field.column_name for field in model._meta.sorted_fields}
                assert wanted <= _columns(db, table), f"{table} lacks {wanted - _columns(db, table)}"
        db.close()
    finally:
        store.close()
    # ...and it ends with the indexes a new database has, no more and no fewer.
    Store(tmp_path / "new.sqlite3").close()
    assert _indexes(path) == _indexes(tmp_path / "new.sqlite3")


def _indexes(path: Path) -> set[tuple[str, str, str]]:
    with sqlite3.connect(path) as db:
        found = set(db.execute("SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index'"))
    db.close()
    return found


def test_opening_a_database_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "aisp.sqlite3"
    Store(path).close()
    before = path.read_bytes()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    store.close()
    assert path.read_bytes() == before


def test_a_database_from_a_newer_program_is_refused_not_damaged(tmp_path: Path) -> None:
    path = tmp_path / "aisp.sqlite3"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(RuntimeError, match="upgrade the program"):
        Store(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    db.close()


def test_the_database_and_secret_live_in_the_per_user_data_directory() -> None:
    settings = load_settings(environ={})
    assert settings.data_dir == Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
    assert settings.database_path.parent == settings.data_dir
    assert settings.secret_path.parent == settings.data_dir


# The same promise kept by the bundle itself: reinstalled elsewhere, it opens the same data.


@pytest.mark.packaging
@pytest.mark.timeout(BUILD_TIMEOUT + 300)
def test_a_reinstalled_bundle_opens_the_keys_and_usage_of_the_first(bundle: Path, tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = bare_env(home)  # no AISP_DATA_DIR: the default per-user data directory
    data = home / ".local" / "share" / APP_NAME

    first = copy_bundle(bundle, tmp_path / "first" / NAME)
    key = run(first / NAME, "keys", "create", "--name", "from the first install", env=env, cwd=work).strip()
    with serving(first / NAME, key, env, work, tmp_path / "first.log") as (base_url, _):
        answer = httpx.post(
            f"{base_url}/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
    assert (data / "aisp.sqlite3").is_file() and (data / "server-secret").is_file()
    shutil.rmtree(first.parent)  # the first install is gone: nothing may be needed from it

    installed = subprocess.run(
        ["sh", str(ROOT / "packaging" / "linux" / "install.sh"), str(bundle)],
        env=env, cwd=work, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    prefix = home / ".local" / "opt" / NAME
    untouched = snapshot(prefix)
    program = home / ".local" / "bin" / NAME
    with serving(program, key, env, work, tmp_path / "second.log"):
        pass  # serving() waits for /v1/models to answer this key with both models
    ledger = json.loads(run(program, "usage", "export", "--format", "json", env=env, cwd=work))
    assert [row["model"] for row in ledger] == [CHAT_MODEL]
    listed = json.loads(run(program, "keys", "list", "--json", env=env, cwd=work))
    assert [k["name"] for k in listed] == ["from the first install"]
    assert snapshot(prefix) == untouched, "the program wrote inside its install folder"
    assert not (prefix / "aisp.sqlite3").exists() and not list(prefix.rglob("server-secret"))


@pytest.mark.packaging
@pytest.mark.timeout(BUILD_TIMEOUT + 120)
def test_the_bundle_migrates_a_database_left_by_an_older_version(bundle: Path, tmp_path: Path) -> None:
    data, home = tmp_path / "data", tmp_path / "home"
    data.mkdir()
    home.mkdir()
    (data / "server-secret").write_bytes(SECRET)
    token = generate_key()
    _database_at(data / "aisp.sqlite3", 1, token, _digest(token, tmp_path))

    env = bare_env(home, AISP_DATA_DIR=data)
    listed = json.loads(run(bundle / NAME, "keys", "list", "--json", env=env, cwd=tmp_path))
    assert [k["id"] for k in listed] == ["key_old0000000001"]
    with sqlite3.connect(data / "aisp.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
    assert load_or_create_secret(data / "server-secret") == SECRET

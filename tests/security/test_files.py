"""Other accounts of the machine cannot read the data folder: it is 0700 and every file in it 0600, whether
the server made it or an older version left it open. (POSIX; on Windows the folder gets an access list for
its user alone, which this machine cannot check.)"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.store import Store
from tests.security.conftest import SERVE, ServerProcess

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes (Windows uses an access list)")

NOBODY = 65534
READ_AS_NOBODY = (
    "import sqlite3, sys; db = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro&immutable=1', uri=True); "
    "print(db.execute('SELECT COUNT(*) FROM api_key').fetchone()[0])"
)


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A folder every account may pass through, as a home directory often is: only the data folder's own
    modes stand between another account and the database."""
    parent = Path(tempfile.mkdtemp(prefix="aisp-files-"))
    parent.chmod(0o755)
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _modes(directory: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(directory.stat().st_mode)}
    for path in directory.rglob("*"):
        found[str(path.relative_to(directory))] = stat.S_IMODE(path.stat().st_mode)
    return found


def _assert_private(directory: Path) -> None:
    modes = _modes(directory)
    assert modes.pop(".") == 0o700, f"the data folder is {oct(_modes(directory)['.'])}"
    assert modes, "the data folder is empty"
    # Folders in it (the log's) are the user's alone too: 0700, as files are 0600.
    assert {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if (directory / name).is_dir() else 0o600)
    } == {}


def _nobody_reads(database: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/usr/bin/env", "python3", "-c", READ_AS_NOBODY, str(database)],
        user=NOBODY,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _use(server: ServerProcess, key: str) -> None:
    """Requests that write every kind of file: ledger rows (the log, its index), a stored response."""
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        assert client.post("/v1/responses", json={"model": "fake-chat", "input": "a secret plan"}).is_success
        assert client.post("/v1/embeddings", json={"model": "fake-embed", "input": "x"}).is_success


def test_a_new_data_folder_is_its_users_alone(open_parent: Path) -> None:
    server = ServerProcess(open_parent / "data", work_dir=open_parent)
    try:
        key, _ = server.create_key("files")
        server.start()
        _use(server, key)
        names = {path.name for path in server.data_dir.iterdir()}
        assert {
            "aisp.sqlite3",
            "aisp.sqlite3-wal",
            "aisp.sqlite3-shm",
            "server-secret",
            "ledger-journal",
        } <= names
        _assert_private(server.data_dir)  # while serving: the log, shared-memory and journal files too
        assert server.stop() == 0
        _assert_private(server.data_dir)
    finally:
        server.kill()


def test_a_data_folder_an_older_version_left_open_is_closed_at_start(open_parent: Path) -> None:
    data = open_parent / "data"
    data.mkdir(mode=0o755)
    store = Store(data / "aisp.sqlite3")
    store.set_setting("left", "open")
    store.close()
    (data / "server-secret").write_bytes(os.urandom(32))
    (data / "notes.txt").write_text("something the operator put here")
    data.chmod(0o755)
    for path in data.iterdir():
        path.chmod(0o644)
    if os.geteuid() == 0:  # the attack as it was made: another account reads every table
        read = _nobody_reads(data / "aisp.sqlite3")
        assert read.returncode == 0 and read.stdout.strip() == "0", read.stderr
    server = ServerProcess(data, work_dir=open_parent)
    try:
        key, _ = server.create_key("files")
        server.start()
        _use(server, key)
        _assert_private(data)
        if os.geteuid() == 0:
            read = _nobody_reads(data / "aisp.sqlite3")
            assert read.returncode != 0 and "unable to open" in read.stderr, read.stdout + read.stderr
        assert server.stop() == 0
    finally:
        server.kill()


def test_a_command_that_makes_the_folder_makes_it_private(open_parent: Path) -> None:
    """``keys create`` on a machine where the window never ran creates the folder, the database and the
    secret: private from the first byte."""
    server = ServerProcess(open_parent / "data", work_dir=open_parent)
    made = subprocess.run(
        [sys.executable, "-c", SERVE, "keys", "create", "--name", "first"],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    _assert_private(server.data_dir)
    with sqlite3.connect(server.data_dir / "aisp.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM api_key").fetchone()[0] == 1
    db.close()

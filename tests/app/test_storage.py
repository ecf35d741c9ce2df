"""A full disk under the data directory: the window says so plainly, and recovers when space returns."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.window import MainWindow
from server.metering.ledger import ledger_rows
from tests.app.conftest import SDK
from tests.support.disk import fill


def test_a_full_disk_is_shown_in_the_window_and_clears_when_space_returns(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK, small_disk: Path, screenshots: Path
) -> None:
    window = make_window(data_dir=small_disk / "data")
    services = window.services
    secret, record = services.keys.create("on a small disk")
    client = sdk(window, secret, timeout=30)
    client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "before"}])
    header = window.header
    assert not header.storage.isVisible()
    filler = fill(small_disk)
    try:
        # The answer may come back or time out waiting for its ledger row; either way it is not lost.
        with contextlib.suppress(Exception):  # a 503 is the API's business; this test watches the window
            client.chat.completions.create(
                model="fake-chat", messages=[{"role": "user", "content": "during"}]
            )
        qtbot.waitUntil(lambda: header.storage.isVisible(), timeout=15_000)
        assert "Usage cannot be recorded" in header.storage.text()
        assert "full" in header.storage.text().lower()
        window.grab().save(str(screenshots / "storage-full.png"))
    finally:
        filler.unlink()
    qtbot.waitUntil(lambda: not header.storage.isVisible(), timeout=15_000)
    services.ledger.flush()
    rows = [r for r in ledger_rows(services.store) if r["key_id"] == record.id]
    assert len(rows) == 2 and all(r["status"] == "completed" for r in rows)

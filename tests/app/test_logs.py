"""Logs: a request shows within a second of its completion, with its key, model, status, tokens and
timings, filtered by key, model and status, with everything recorded about it for the one selected and
never a word of its prompt or reply; refused and failed requests say what the client was told; the
server's own log shows its warnings and names its file; after a restart the log starts from the ledger."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from app.pages.logs import LogsPage
from app.pages.request_log import COLUMNS
from app.window import PAGES, MainWindow
from server.config import ModelConfig
from tests.conftest import fake_models

from .conftest import SDK, click, close_window, opened
from .test_key_flow import off_thread

PROMPT = "a-prompt-the-log-must-never-show"


def show_logs(qtbot: QtBot, window: MainWindow) -> LogsPage:
    page = window.logs_page
    with qtbot.waitSignal(page.requests_read, timeout=10_000):
        window.show_page(PAGES.index("Logs"))
    return page


def everything_shown(page: LogsPage) -> str:
    model = page.requests.model
    cells = [str(model.data(model.index(r, c))) for r in range(model.rowCount()) for c in range(len(COLUMNS))]
    tips = [
        str(model.data(model.index(r, COLUMNS.index("Error")), Qt.ItemDataRole.ToolTipRole))
        for r in range(model.rowCount())
    ]
    labels = [label.text() for label in page.findChildren(QLabel)]
    return "\n".join(cells + tips + labels + [page.server_log.text.toPlainText()])


def test_a_request_shows_within_a_second_and_never_its_prompt(
    qtbot: QtBot, window: MainWindow, sdk: SDK
) -> None:
    page = show_logs(qtbot, window)
    key, record = window.services.keys.create("Logged")
    client = sdk(window, key)
    reply = off_thread(
        qtbot,
        lambda: client.chat.completions.create(
            model="fake-chat", messages=[{"role": "user", "content": PROMPT}], max_tokens=5
        ),
    )
    answered = time.monotonic()
    qtbot.waitUntil(lambda: len(page.requests.shown()) == 1, timeout=1000)
    assert time.monotonic() - answered <= 1.0
    shown = page.requests.shown()[0]
    model = page.requests.model
    row = dict(zip(COLUMNS, model.cells(shown), strict=True))
    assert row["Key"] == f"Logged (…{record.hint[-4:]})" and row["Model"] == "fake-chat"
    assert row["Endpoint"] == "chat.completions" and row["Status"] == "OK 200"
    usage = opened(reply.usage)
    assert row["Input"] == str(usage.prompt_tokens) and row["Output"] == str(usage.completion_tokens)
    assert row["Duration"].endswith(("ms", " s")) and row["Error"] == ""
    page.requests.select(shown.request_id)
    details = page.requests.details.text()
    assert shown.request_id in details and "Cost: " in details and "USD" in details
    assert PROMPT not in everything_shown(page) and (
        reply.choices[0].message.content or ""
    ) not in everything_shown(page)


def test_refused_and_failed_requests_say_why_and_the_filters_narrow_the_list(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK
) -> None:
    window = make_window(models=fake_models(fail_at="1"))
    page = show_logs(qtbot, window)
    one, _ = window.services.keys.create("One")
    two, _ = window.services.keys.create("Two")
    off_thread(qtbot, lambda: sdk(window, one).embeddings.create(model="fake-embed", input=PROMPT))
    with pytest.raises(openai.NotFoundError):
        off_thread(
            qtbot,
            lambda: sdk(window, two).chat.completions.create(
                model="missing-model", messages=[{"role": "user", "content": PROMPT}]
            ),
        )
    with pytest.raises(openai.APIStatusError):
        off_thread(
            qtbot,
            lambda: sdk(window, two).chat.completions.create(
                model="fake-chat", messages=[{"role": "user", "content": f"{PROMPT} more words"}]
            ),
        )
    qtbot.waitUntil(lambda: len(page.requests.shown()) == 3, timeout=5000)
    statuses = [r.status for r in page.requests.shown()]
    assert statuses == ["failed", "rejected", "completed"]  # newest first
    refused = page.requests.shown()[1]
    assert refused.error is not None and "missing-model" in refused.error and refused.http_status == 404
    page.requests.select(refused.request_id)
    assert "does not exist" in page.requests.details.text()

    view = page.requests
    view.status_filter.setCurrentIndex(view.status_filter.findData("rejected"))
    assert [r.request_id for r in view.shown()] == [refused.request_id]
    view.status_filter.setCurrentIndex(0)
    view.key_filter.setCurrentIndex(view.key_filter.findText("One", Qt.MatchFlag.MatchStartsWith))
    assert [r.status for r in view.shown()] == ["completed"]
    view.key_filter.setCurrentIndex(0)
    view.model_filter.setCurrentIndex(view.model_filter.findData("fake-chat"))
    assert [r.status for r in view.shown()] == ["failed"]
    view.model_filter.setCurrentIndex(0)
    assert len(view.shown()) == 3
    assert PROMPT not in everything_shown(page)


def test_the_server_log_shows_warnings_and_names_its_file(
    qtbot: QtBot, make_window: Callable[..., MainWindow]
) -> None:
    broken = ModelConfig(name="broken", kind="chat", engine="llama.cpp", source="/nowhere/broken.gguf")
    window = make_window(models=(*fake_models(), broken))
    page = show_logs(qtbot, window)
    page.tabs.setCurrentWidget(page.server_log)
    qtbot.waitUntil(lambda: "model broken failed to load" in page.server_log.text.toPlainText(), timeout=5000)
    log_path = window.services.settings.log_path
    assert str(log_path) in page.server_log.path.text()
    click(qtbot, page.server_log.copy_button)
    from PySide6.QtWidgets import QApplication

    assert QApplication.clipboard().text() == str(log_path)


def test_after_a_restart_the_log_starts_from_the_ledger(
    qtbot: QtBot, make_window: Callable[..., MainWindow], sdk: SDK, tmp_path: Path
) -> None:
    window = make_window()
    key, _ = window.services.keys.create("Before")
    off_thread(qtbot, lambda: sdk(window, key).embeddings.create(model="fake-embed", input="x"))
    close_window(qtbot, window)
    again = make_window()
    page = show_logs(qtbot, again)
    shown = page.requests.shown()
    assert len(shown) == 1 and shown[0].model == "fake-embed" and not shown[0].live

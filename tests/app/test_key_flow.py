"""The operator's main path, through the real widgets: create a key, copy it, call the API with it, see the
request on the Usage page with its tokens and cost, revoke it and see the next call refused."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import openai
import pytest
from PySide6.QtCore import QDateTime, Qt
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QLabel, QLineEdit, QMessageBox, QPushButton
from pytestqt.qtbot import QtBot

from app.pages.keys import COLUMNS
from app.window import MainWindow
from server.metering.reports import Metric, format_value

from .conftest import SDK, cell_text, click, opened, shown

T = TypeVar("T")


def off_thread(qtbot: QtBot, fn: Callable[[], T], timeout: float = 15.0) -> T:
    """Run a client call on another thread while the window's event loop keeps running, as it would."""
    with ThreadPoolExecutor(1) as pool:
        future: Future[T] = pool.submit(fn)
        qtbot.waitUntil(future.done, timeout=int(timeout * 1000))
        return future.result()


def press(qtbot: QtBot, window: MainWindow, key: Qt.Key, modifier: Qt.KeyboardModifier) -> None:
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window)  # a dialog just closed may still hold it
    qtbot.keyClick(window, key, modifier)


def create_key_in_window(qtbot: QtBot, window: MainWindow, name: str, **form: Any) -> str:
    """Ctrl+N, fill the dialog, create; returns the secret shown once."""
    press(qtbot, window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    page = window.keys_page
    assert window.current_page() is page
    dialog = page.create_dialog
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    qtbot.keyClicks(dialog.name, name)
    if "note" in form:
        qtbot.keyClicks(dialog.note, form["note"])
    if "only" in form:
        click(qtbot, dialog.all_models)
        for i in range(dialog.models.count()):
            item = dialog.models.item(i)
            if item.text() in form["only"]:
                item.setCheckState(Qt.CheckState.Checked)
    if form.get("expires"):
        click(qtbot, dialog.expires)
    for rate, edit in dialog.limits.rates.items():
        if rate in form:
            qtbot.keyClicks(edit, form[rate])
    with qtbot.waitSignal(page.key_created, timeout=10_000):
        click(qtbot, dialog.buttons.button(QDialogButtonBox.StandardButton.Ok))
    secret_dialog = page.secret_dialog
    assert secret_dialog is not None and secret_dialog.isVisible()
    return secret_dialog.secret


def row_of(window: MainWindow, name: str) -> int:
    table = window.keys_page.table
    rows = [r for r in range(table.rowCount()) if cell_text(table, r, 0) == name]
    assert len(rows) == 1, f"{name!r} in {[cell_text(table, r, 0) for r in range(table.rowCount())]}"
    return rows[0]


def cell(window: MainWindow, name: str, column: str) -> str:
    return cell_text(window.keys_page.table, row_of(window, name), COLUMNS.index(column))


def select_row(qtbot: QtBot, window: MainWindow, name: str) -> None:
    table = window.keys_page.table
    rect = table.visualRect(table.model().index(row_of(window, name), 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert opened(window.keys_page.selected()).name == name


def test_create_copy_call_see_usage_revoke(qtbot: QtBot, window: MainWindow, sdk: SDK) -> None:
    secret = create_key_in_window(qtbot, window, "Alice laptop", note="Alice, 2nd floor")
    page = window.keys_page
    click(qtbot, opened(page.secret_dialog).copy_button)
    copied = QApplication.clipboard().text()
    assert copied == secret and copied.startswith("aisp-")
    assert "only time" in " ".join(w.text() for w in opened(page.secret_dialog).findChildren(QLabel))
    click(qtbot, opened(page.secret_dialog).done_button)
    assert page.secret_dialog is None  # closed, and shown once means once: no widget keeps the secret
    assert all(secret not in edit.text() for edit in window.findChildren(QLineEdit))
    assert cell(window, "Alice laptop", "Hint") == f"aisp-…{secret[-4:]}"
    assert cell(window, "Alice laptop", "Status") == "Active"
    assert cell(window, "Alice laptop", "Last used") == "Never"

    # Watch the Usage page while the request is made: it must update on its own.
    press(qtbot, window, Qt.Key.Key_3, Qt.KeyboardModifier.ControlModifier)
    usage = window.usage_page
    assert window.current_page() is usage
    qtbot.waitUntil(lambda: usage.series is not None)
    with qtbot.waitSignal(usage.usage_loaded, timeout=10_000):
        completion = off_thread(
            qtbot,
            lambda: sdk(window, copied).chat.completions.create(
                model="fake-chat",
                messages=[{"role": "user", "content": "count these seven words right here"}],
            ),
        )
    assert completion.choices[0].message.content == "count these seven words right here"
    usage_reported = opened(completion.usage)
    used_in, used_out = usage_reported.prompt_tokens, usage_reported.completion_tokens
    assert used_out == 6
    cost = used_in * 1.0 / 1e6 + used_out * 2.0 / 1e6
    total_row = len(shown(usage).buckets)
    last_bucket = total_row - 1  # the bucket that holds now
    expected: dict[Metric, float] = {
        "requests": 1,
        "input_tokens": used_in,
        "output_tokens": used_out,
        "cost": cost,
    }
    for metric, value in expected.items():
        view = usage.views[metric]
        assert view.cell(last_bucket, "fake-chat") == format_value(metric, value)
        assert view.cell(total_row, "fake-chat") == format_value(metric, value)
    qtbot.waitUntil(lambda: window.header.requests.text() == "Requests: 1")

    # By key: the key's name (with its hint) heads the column.
    with qtbot.waitSignal(usage.usage_loaded, timeout=10_000):
        usage.breakdown.setCurrentIndex(usage.breakdown.findData("key"))
    label = f"Alice laptop (…{secret[-4:]})"
    assert usage.views["requests"].cell(total_row, label) == "1"
    assert usage.views["cost"].cell(total_row, label) == format_value("cost", cost)

    # Revoke it, confirming in the dialog; the next call is refused.
    press(qtbot, window, Qt.Key.Key_2, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: cell(window, "Alice laptop", "Last used") != "Never", timeout=5000)
    select_row(qtbot, window, "Alice laptop")
    click(qtbot, page.revoke_button)
    box = page.revoke_box
    assert box is not None and box.isVisible()
    revoke = next(b for b in box.findChildren(QPushButton) if b.text() == "Revoke key")
    with qtbot.waitSignal(page.key_revoked, timeout=10_000):
        click(qtbot, revoke)
    assert cell(window, "Alice laptop", "Status") == "Revoked"
    assert not page.revoke_button.isEnabled() and not page.roll_button.isEnabled()
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        off_thread(qtbot, lambda: sdk(window, copied).models.list())


def test_cancelling_the_revoke_dialog_keeps_the_key(qtbot: QtBot, window: MainWindow, sdk: SDK) -> None:
    secret = create_key_in_window(qtbot, window, "Build server")
    click(qtbot, opened(window.keys_page.secret_dialog).done_button)
    select_row(qtbot, window, "Build server")
    click(qtbot, window.keys_page.revoke_button)
    box = opened(window.keys_page.revoke_box)
    click(qtbot, box.button(QMessageBox.StandardButton.Cancel))
    qtbot.wait(200)
    assert cell(window, "Build server", "Status") == "Active"
    models = off_thread(qtbot, lambda: sdk(window, secret).models.list())
    assert {m.id for m in models} == {"fake-chat", "fake-embed"}


def test_rename_and_roll_with_a_grace_period(qtbot: QtBot, window: MainWindow, sdk: SDK) -> None:
    page = window.keys_page
    old = create_key_in_window(qtbot, window, "CI runner")
    click(qtbot, opened(page.secret_dialog).done_button)

    select_row(qtbot, window, "CI runner")
    click(qtbot, page.rename_button)
    qtbot.keyClicks(
        opened(page.rename_dialog).name, "CI runner (east)"
    )  # the old name is selected: typing replaces it
    with qtbot.waitSignal(page.key_renamed, timeout=10_000):
        qtbot.keyClick(opened(page.rename_dialog).name, Qt.Key.Key_Return)
    assert cell(window, "CI runner (east)", "Status") == "Active"

    # Roll with a one-hour grace period: both keys work, the old one says until when.
    select_row(qtbot, window, "CI runner (east)")
    click(qtbot, page.roll_button)
    dialog = opened(page.roll_dialog)
    dialog.grace.setCurrentIndex(dialog.grace.findText("1 hour"))
    with qtbot.waitSignal(page.key_rolled, timeout=10_000) as rolled:
        click(qtbot, next(b for b in dialog.findChildren(QPushButton) if b.text() == "Roll key"))
    new = opened(page.secret_dialog).secret
    assert new != old
    old_id, new_id = rolled.args
    records = {r.id: r for r in page.records()}
    assert records[new_id].name == "CI runner (east)"
    assert records[old_id].status() == "expiring"
    assert opened(records[old_id].expires_at) - records[new_id].created_at == pytest.approx(3600, abs=5)
    click(qtbot, opened(page.secret_dialog).done_button)
    status = COLUMNS.index("Status")
    statuses = sorted(cell_text(page.table, r, status) for r in range(page.table.rowCount()))
    assert statuses[0] == "Active" and statuses[1].startswith("Rolled: works until ")
    for key in (old, new):
        off_thread(qtbot, lambda key=key: sdk(window, key).models.list())  # type: ignore[misc]

    # Roll the new one with no grace: its predecessor-to-be stops at once.
    page.select(new_id)
    click(qtbot, page.roll_button)
    dialog = opened(page.roll_dialog)
    dialog.grace.setCurrentIndex(0)
    with qtbot.waitSignal(page.key_rolled, timeout=10_000):
        click(qtbot, next(b for b in dialog.findChildren(QPushButton) if b.text() == "Roll key"))
    newest = opened(page.secret_dialog).secret
    with pytest.raises(openai.AuthenticationError, match="expired"):
        off_thread(qtbot, lambda: sdk(window, new).models.list())
    off_thread(qtbot, lambda: sdk(window, newest).models.list())


def test_a_key_limited_to_one_model_with_an_expiry(qtbot: QtBot, window: MainWindow, sdk: SDK) -> None:
    secret = create_key_in_window(qtbot, window, "Embedder only", only={"fake-embed"}, expires=True)
    record = next(r for r in window.keys_page.records() if r.name == "Embedder only")
    assert record.allowed_models == ("fake-embed",)
    assert record.expires_at is not None and record.expires_at > record.created_at + 29 * 86400
    assert cell(window, "Embedder only", "Expires") != "Never"
    embedded = off_thread(
        qtbot, lambda: sdk(window, secret).embeddings.create(model="fake-embed", input=["hello"])
    )
    assert len(embedded.data[0].embedding) == 64
    with pytest.raises(openai.NotFoundError):
        off_thread(
            qtbot,
            lambda: sdk(window, secret).chat.completions.create(
                model="fake-chat", messages=[{"role": "user", "content": "hi"}]
            ),
        )


def test_the_create_button_waits_for_a_name(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page(1)
    click(qtbot, window.keys_page.new_button)
    dialog = opened(window.keys_page.create_dialog)
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled()
    qtbot.keyClicks(dialog.name, "   ")
    assert not ok.isEnabled()
    qtbot.keyClicks(dialog.name, "x")
    assert ok.isEnabled()
    click(qtbot, dialog.all_models)  # no model picked yet: nothing to allow
    assert not ok.isEnabled()
    dialog.reject()


def test_the_table_follows_changes_made_elsewhere(qtbot: QtBot, window: MainWindow, sdk: SDK) -> None:
    window.show_page(1)
    page = window.keys_page
    # The command line (or another window) creates and uses a key: the table catches up on its own.
    secret, record = window.services.keys.create("made by the CLI")
    qtbot.waitUntil(lambda: any(r.id == record.id for r in page.records()), timeout=5000)
    assert cell(window, "made by the CLI", "Last used") == "Never"
    off_thread(qtbot, lambda: sdk(window, secret).models.list())
    qtbot.waitUntil(lambda: cell(window, "made by the CLI", "Last used") != "Never", timeout=5000)


def test_escape_asks_before_closing_a_secret_that_was_not_copied(qtbot: QtBot, window: MainWindow) -> None:
    create_key_in_window(qtbot, window, "Not copied yet")
    page = window.keys_page
    dialog = page.secret_dialog
    assert dialog is not None
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)
    box = dialog.confirm_box
    assert dialog.isVisible() and box is not None and box.isVisible()
    qtbot.keyClick(box, Qt.Key.Key_Escape)  # "Go back and copy it"
    assert dialog.isVisible() and dialog.confirm_box is None
    dialog.close()  # the window's close button asks too
    box = dialog.confirm_box
    assert dialog.isVisible() and box is not None
    closing = next(b for b in box.buttons() if b.text() == "Close without copying")
    click(qtbot, closing)
    qtbot.waitUntil(lambda: page.secret_dialog is None)

    create_key_in_window(qtbot, window, "Copied")
    dialog = page.secret_dialog
    assert dialog is not None
    qtbot.keyClick(dialog, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert QApplication.clipboard().text().startswith("aisp-") and dialog.copied
    qtbot.keyClick(dialog, Qt.Key.Key_Escape)  # copied: no question
    qtbot.waitUntil(lambda: page.secret_dialog is None)


def test_expiry_can_change_and_a_revoked_key_can_be_deleted(
    qtbot: QtBot, window: MainWindow, sdk: SDK
) -> None:
    secret = create_key_in_window(qtbot, window, "Temporary")
    page = window.keys_page
    click(qtbot, opened(page.secret_dialog).copy_button)
    click(qtbot, opened(page.secret_dialog).done_button)
    assert cell(window, "Temporary", "Expires") == "Never"
    select_row(qtbot, window, "Temporary")
    click(qtbot, page.limits_button)
    edit = page.limits_dialog
    assert edit is not None and not edit.expiry_row.expires.isChecked()
    click(qtbot, edit.expiry_row.expires)
    moment = QDateTime.currentDateTime().addDays(3)
    edit.expiry_row.expiry.setDateTime(moment)
    with qtbot.waitSignal(page.expiry_changed, timeout=10_000):
        click(qtbot, edit.buttons.button(QDialogButtonBox.StandardButton.Ok))
    assert cell(window, "Temporary", "Expires") == moment.toString("yyyy-MM-dd HH:mm")

    assert not page.delete_button.isEnabled()  # a working key is revoked first
    click(qtbot, page.revoke_button)
    confirm = next(b for b in opened(page.revoke_box).buttons() if b.text() == "Revoke key")
    with qtbot.waitSignal(page.key_revoked, timeout=10_000):
        click(qtbot, confirm)
    select_row(qtbot, window, "Temporary")
    assert page.delete_button.isEnabled()
    click(qtbot, page.delete_button)
    box = page.delete_box
    assert box is not None and box.isVisible()
    with qtbot.waitSignal(page.key_deleted, timeout=10_000):
        click(qtbot, next(b for b in box.buttons() if b.text() == "Delete key"))
    assert all(r.name != "Temporary" for r in page.records())
    with pytest.raises(openai.AuthenticationError):
        off_thread(qtbot, lambda: sdk(window, secret).models.list())

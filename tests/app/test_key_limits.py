"""Per-key limits through the window: a rate set in the create dialog refuses the request over it, a
budget set in the edit dialog shows its spending in the keys table, and values the server would refuse
are explained in the dialog with nothing saved."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox, QPushButton
from pytestqt.qtbot import QtBot

from app.pages.keys import COLUMNS
from app.window import MainWindow
from server.access.keys import KeyLimits
from server.access.limits import period_end
from server.config import ModelConfig
from tests.conftest import fake_models

from .conftest import SDK, cell_text, click, opened, settle
from .test_key_flow import cell, create_key_in_window, off_thread, press, select_row


def embed(qtbot: QtBot, client: openai.OpenAI, text: str = "hello") -> int:
    """One embeddings request; the tokens it used."""
    reply = off_thread(qtbot, lambda: client.embeddings.create(model="fake-embed", input=text))
    return reply.usage.total_tokens


def test_a_key_made_with_two_requests_a_minute_is_refused_the_third(
    qtbot: QtBot, window: MainWindow, sdk: SDK
) -> None:
    secret = create_key_in_window(qtbot, window, "Two a minute", rpm="2", max_concurrent="1")
    click(qtbot, opened(window.keys_page.secret_dialog).done_button)
    record = next(r for r in window.keys_page.records() if r.name == "Two a minute")
    assert record.limits == KeyLimits(rpm=2, max_concurrent=1)
    assert cell(window, "Two a minute", "Last minute") == "0/2 rpm · 0/1 at once"
    assert cell(window, "Two a minute", "Budget") == "No budget"
    client = sdk(window, secret)
    embed(qtbot, client)
    embed(qtbot, client)
    with pytest.raises(openai.RateLimitError) as refused:
        embed(qtbot, client)
    assert refused.value.code == "rate_limit_exceeded" and "2 requests per minute" in refused.value.message
    # The table follows the key's use on its own.
    qtbot.waitUntil(lambda: cell(window, "Two a minute", "Last minute").startswith("2/2 rpm"), timeout=5000)


def test_a_budget_set_in_the_edit_dialog_shows_its_spending(
    qtbot: QtBot, window: MainWindow, sdk: SDK
) -> None:
    secret = create_key_in_window(qtbot, window, "Reporting")
    page = window.keys_page
    click(qtbot, opened(page.secret_dialog).done_button)
    assert cell(window, "Reporting", "Last minute") == "No rate limits"
    select_row(qtbot, window, "Reporting")
    click(qtbot, page.limits_button)
    dialog = page.limits_dialog
    assert dialog is not None and dialog.isVisible()
    qtbot.keyClicks(dialog.limits.budget_amount, "1,000")
    dialog.limits.budget_period.setCurrentIndex(dialog.limits.budget_period.findData("month"))
    click(qtbot, dialog.picker.all_models)
    dialog.picker.models.findItems("fake-embed", Qt.MatchFlag.MatchExactly)[0].setCheckState(
        Qt.CheckState.Checked
    )
    with qtbot.waitSignal(page.limits_changed, timeout=10_000):
        click(qtbot, dialog.buttons.button(QDialogButtonBox.StandardButton.Ok))
    record = next(r for r in page.records() if r.name == "Reporting")
    assert record.limits == KeyLimits(budget_unit="tokens", budget_amount=1000, budget_period="month")
    assert record.allowed_models == ("fake-embed",)
    renews = time.localtime(period_end("month", time.time()))
    month = f"(renews {renews.tm_mday} {time.strftime('%b', renews)})"
    assert cell(window, "Reporting", "Budget") == "0/1,000 tokens this month"
    tip = opened(page.table.item(0, 0)).toolTip()
    assert f"0/1,000 tokens this month {month}" in tip  # when it renews: in the tooltip

    client = sdk(window, secret)
    used = embed(qtbot, client, "four words of input")
    qtbot.waitUntil(
        lambda: cell(window, "Reporting", "Budget") == f"{used}/1,000 tokens this month", timeout=5000
    )
    with pytest.raises(openai.NotFoundError):  # chat is no longer among its models
        off_thread(
            qtbot,
            lambda: client.chat.completions.create(
                model="fake-chat", messages=[{"role": "user", "content": "x"}]
            ),
        )


def test_values_the_server_refuses_are_explained_and_nothing_is_saved(
    qtbot: QtBot, window: MainWindow
) -> None:
    page = window.keys_page
    press(qtbot, window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    dialog = page.create_dialog
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    qtbot.keyClicks(dialog.name, "Refused")
    ok = dialog.buttons.button(QDialogButtonBox.StandardButton.Ok)

    def refused(fragment: str) -> None:
        click(qtbot, ok)
        assert dialog.isVisible() and dialog.error.isVisible(), "the dialog closed"
        assert dialog.error.text() == fragment

    qtbot.keyClicks(dialog.limits.rates["rpm"], "0")
    refused("Requests per minute must be a positive whole number")
    assert dialog.focusWidget() is dialog.limits.rates["rpm"]
    dialog.limits.rates["rpm"].clear()
    qtbot.keyClicks(dialog.limits.rates["tpm"], "lots")
    refused("Tokens per minute must be a whole number")
    dialog.limits.rates["tpm"].clear()
    qtbot.keyClicks(dialog.limits.budget_amount, "500")  # and no period chosen
    refused("A budget needs a unit, an amount and a period")
    assert dialog.focusWidget() is dialog.limits.budget_amount
    dialog.reject()
    qtbot.wait(100)
    assert window.services.keys.list() == []

    _, record = window.services.keys.create("Existing", limits=KeyLimits(rpm=60))
    qtbot.waitUntil(lambda: any(r.id == record.id for r in page.records()), timeout=5000)
    assert cell(window, "Existing", "Last minute") == "0/60 rpm"
    select_row(qtbot, window, "Existing")
    click(qtbot, page.limits_button)
    edit = page.limits_dialog
    assert edit is not None and edit.limits.rates["rpm"].text() == "60"
    edit.limits.rates["rpm"].setText("0")
    click(qtbot, edit.buttons.button(QDialogButtonBox.StandardButton.Ok))
    assert edit.isVisible() and edit.error.text() == "Requests per minute must be a positive whole number"
    edit.reject()
    qtbot.wait(100)
    assert window.services.keys.get(record.id).limits == KeyLimits(rpm=60)


def test_a_rolled_key_shows_the_budget_it_shares_with_the_key_it_replaced(
    qtbot: QtBot, window: MainWindow, sdk: SDK
) -> None:
    page = window.keys_page
    limits = KeyLimits(budget_unit="tokens", budget_amount=1000, budget_period="day")
    secret, record = window.services.keys.create("Shared", limits=limits)
    window.show_page(1)
    qtbot.waitUntil(lambda: any(r.id == record.id for r in page.records()), timeout=5000)
    used = embed(qtbot, sdk(window, secret), "four words of input")
    page.select(record.id)
    click(qtbot, page.roll_button)
    dialog = page.roll_dialog
    assert dialog is not None
    with qtbot.waitSignal(page.key_rolled, timeout=10_000) as rolled:
        click(qtbot, next(b for b in dialog.findChildren(QPushButton) if b.text() == "Roll key"))
    click(qtbot, opened(page.secret_dialog).copy_button)
    click(qtbot, opened(page.secret_dialog).done_button)
    budget = COLUMNS.index("Budget")
    rows = {
        opened(page.table.item(r, 0)).data(Qt.ItemDataRole.UserRole): cell_text(page.table, r, budget)
        for r in range(2)
    }
    assert set(rows) == set(rolled.args)
    assert set(rows.values()) == {f"{used}/1,000 tokens today"}  # one budget, not two
    more = embed(qtbot, sdk(window, secret), "three more words")  # the old key, in its grace period
    qtbot.waitUntil(
        lambda: {cell_text(page.table, r, budget) for r in range(2)} == {f"{used + more}/1,000 tokens today"},
        timeout=5000,
    )


def test_the_budget_column_shows_at_the_default_size_with_a_models_column(
    qtbot: QtBot, window: MainWindow
) -> None:
    keys = window.services.keys
    keys.create(
        "Alice's workstation on the second floor",
        allowed_models=["fake-chat"],
        limits=KeyLimits(rpm=60, tpm=100_000, budget_unit="cost", budget_amount=25, budget_period="month"),
    )
    _, rolled = keys.create("Build server", limits=KeyLimits(max_concurrent=4))
    keys.roll(rolled.id, 86400)
    window.show_page(1)
    page = window.keys_page
    qtbot.waitUntil(lambda: len(page.records()) == 3, timeout=5000)
    assert window.size().toTuple() == (1100, 760)
    settle(qtbot)
    header = page.table.horizontalHeader()
    budget = COLUMNS.index("Budget")
    right = header.sectionViewportPosition(budget) + header.sectionSize(budget)
    assert right <= page.table.viewport().width(), "the Budget column is cut off or off-screen"
    assert cell(window, "Alice's workstation on the second floor", "Models") == "fake-chat"
    assert {cell_text(page.table, r, COLUMNS.index("Models")) for r in range(3)} == {"fake-chat", "All"}


def test_a_failed_model_is_not_offered_to_keys(qtbot: QtBot, make_window: Callable[..., MainWindow]) -> None:
    broken = ModelConfig(name="broken", kind="chat", engine="llama.cpp", source="/nowhere/broken.gguf")
    window = make_window(models=(*fake_models(), broken))
    qtbot.waitUntil(lambda: any(m.name == "broken" for m in window.server.view.models), timeout=5000)
    window.new_key()
    dialog = window.keys_page.create_dialog
    assert dialog is not None
    offered = [dialog.models.item(i).text() for i in range(dialog.models.count())]
    assert offered == ["fake-chat", "fake-embed"]
    dialog.reject()

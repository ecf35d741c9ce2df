"""Per-key limits through the window: a rate set in the create dialog refuses the request over it, a
budget set in the edit dialog shows its spending in the keys table, and values the server would refuse
are explained in the dialog with nothing saved."""

from __future__ import annotations

import time

import openai
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox
from pytestqt.qtbot import QtBot

from app.window import MainWindow
from server.keys import KeyLimits
from server.limits import period_end

from .conftest import SDK, click, opened
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
    assert cell(window, "Reporting", "Budget") == f"0/1,000 tokens this month {month}"

    client = sdk(window, secret)
    used = embed(qtbot, client, "four words of input")
    qtbot.waitUntil(
        lambda: cell(window, "Reporting", "Budget") == f"{used}/1,000 tokens this month {month}", timeout=5000
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

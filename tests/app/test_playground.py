"""Playground: chat with a loaded model through the server's own API, streamed, its reasoning folded
away; stop a reply midway (what was generated is billed); compare two texts by their embeddings; all
with a key the window made for itself and labels as such, whose spending shows in Usage; a revoked key
is replaced when next needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.pages.playground import PlaygroundPage
from app.playground_client import KEY_NAME, cosine
from app.window import PAGES, MainWindow
from server.config import ModelConfig
from server.engines.fake import FakeEmbedder
from server.metering.ledger import ledger_rows
from tests.conftest import FAKE_CHAT, fake_models

from .conftest import click


def show_playground(qtbot: QtBot, window: MainWindow) -> PlaygroundPage:
    page = window.playground_page
    with qtbot.waitSignal(page.key_ready, timeout=10_000):
        window.show_page(PAGES.index("Playground"))
    return page


def test_a_chat_streams_with_its_reasoning_folded_and_is_billed_to_the_windows_own_key(
    qtbot: QtBot, make_window: Callable[..., MainWindow], screenshots: Path
) -> None:
    thinker = FAKE_CHAT.model_copy(update={"source": "think=1,delay=0.01", "reasoning": True})
    window = make_window(models=(thinker,))
    page = show_playground(qtbot, window)
    chat = page.chat
    assert chat.model.currentText() == "fake-chat" and chat.send_button.isEnabled()
    qtbot.keyClicks(chat.input, "hello there playground")
    pieces: list[tuple[str, str]] = []
    chat.pieces.arrived.connect(lambda text, reasoning: pieces.append((text, reasoning)))
    with qtbot.waitSignal(chat.reply_finished, timeout=20_000) as finished:
        qtbot.keyClick(chat.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        assert chat.stop_button.isEnabled() and not chat.send_button.isEnabled()  # under way
    assert len(pieces) >= 5  # streamed, a piece at a time
    outcome = finished.args[0]
    assert outcome.error is None and outcome.finish_reason == "stop" and not outcome.stopped
    user, reply = chat.messages
    assert user.content() == "hello there playground" and reply.content() == "hello there playground"
    assert reply.thoughts() == "Let me think." and reply.reasoning_button.isVisible()
    assert not reply.reasoning.isVisible()  # folded
    click(qtbot, reply.reasoning_button)
    assert reply.reasoning.isVisible() and reply.reasoning.text() == "Let me think."
    assert "tokens in" in chat.status.text()
    for theme in ("light", "dark"):
        window.theme.set_theme(theme)
        qtbot.wait(50)
        assert window.grab().save(str(screenshots / f"6-playground-chat-{theme}.png"))

    record = next(r for r in window.services.keys.list() if r.id == page.key_id)
    assert record.name == KEY_NAME and "Playground" in record.owner_note
    window.services.ledger.flush()
    rows = [r for r in ledger_rows(window.services.store) if r["key_id"] == page.key_id]
    assert len(rows) == 1 and rows[0]["status"] == "completed" and rows[0]["reasoning_tokens"] > 0

    # The conversation goes on: the next request carries the turns so far.
    assert [m["content"] for m in chat.conversation()] == ["hello there playground"] * 2


def test_stop_ends_a_reply_midway_and_what_was_generated_is_billed(
    qtbot: QtBot, make_window: Callable[..., MainWindow]
) -> None:
    window = make_window(models=fake_models(delay="0.05", repeat="1"))
    chat = show_playground(qtbot, window).chat
    chat.max_tokens.setValue(400)
    qtbot.keyClicks(chat.input, "go on and on")
    with qtbot.waitSignal(chat.reply_finished, timeout=20_000) as finished:
        click(qtbot, chat.send_button)
        qtbot.waitUntil(lambda: len(chat.messages[-1].content().split()) >= 5, timeout=10_000)
        click(qtbot, chat.stop_button)
    assert finished.args[0].stopped and chat.send_button.isEnabled()
    window.services.ledger.flush()
    qtbot.waitUntil(
        lambda: any(r["status"] == "disconnected" for r in ledger_rows(window.services.store)), timeout=5000
    )
    row = next(r for r in ledger_rows(window.services.store) if r["status"] == "disconnected")
    assert 5 <= row["output_tokens"] < 400


def test_two_texts_compared_by_their_embeddings(qtbot: QtBot, window: MainWindow, sdk: object) -> None:
    page = show_playground(qtbot, window)
    page.tabs.setCurrentWidget(page.embeddings)
    panel = page.embeddings
    assert panel.model.currentText() == "fake-embed"
    with qtbot.waitSignal(panel.compared, timeout=20_000) as compared:
        click(qtbot, panel.compare_button)
    found = compared.args[0]
    assert found.error is None and 0 < found.cosine < 1 and found.dimensions == 64
    assert f"Similarity {found.cosine:.3f}" in panel.result.text()
    assert panel.meter.value() == round(found.cosine * 1000)
    embedder = window.services.models.get("fake-embed", "embedding")[0]
    assert isinstance(embedder, FakeEmbedder)
    vectors = embedder.embed([panel.first.toPlainText().strip(), panel.second.toPlainText().strip()]).vectors
    assert abs(cosine(vectors[0], vectors[1]) - found.cosine) < 1e-6  # what the server computes


def test_a_revoked_key_is_replaced_and_a_stopped_server_is_said(qtbot: QtBot, window: MainWindow) -> None:
    page = show_playground(qtbot, window)
    first = page.key_id
    assert first is not None
    window.services.keys.revoke(first)
    with qtbot.waitSignal(page.key_ready, timeout=10_000):
        page.find_key()
    assert page.key_id != first
    names = [r.name for r in window.services.keys.list() if r.status() == "active"]
    assert names == [KEY_NAME]

    with qtbot.waitSignal(window.server.server_stopped, timeout=10_000):
        click(qtbot, window.header.toggle)
    qtbot.waitUntil(lambda: not page.chat.send_button.isEnabled())
    assert "not running" in page.chat.status.text() and not page.embeddings.compare_button.isEnabled()


def test_without_a_chat_model_the_playground_says_so(
    qtbot: QtBot, make_window: Callable[..., MainWindow]
) -> None:
    embedder = ModelConfig(name="fake-embed", kind="embedding", engine="fake", source="dims=8")
    window = make_window(models=(embedder,))
    chat = show_playground(qtbot, window).chat
    assert not chat.send_button.isEnabled() and "No chat model" in chat.status.text()

"""General Information: the help documents, filled in with this machine's real address and loaded models,
with a copy button per example; every example runs against the live server and works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication, QLabel, QPlainTextEdit, QScrollArea, QTabWidget, QWidget
from pytestqt.qtbot import QtBot

from app.pages.info import HELP_DIR, SECTIONS
from app.widgets.code_block import CodeBlock
from app.widgets.document import parse
from app.window import PAGES, MainWindow

from .conftest import click, opened

NODE_MODULES = Path(__file__).parents[1] / "clients" / "node_modules"
ENDPOINTS = ("List the models", "Chat completions", "Responses", "Tool calling", "Embeddings")
LANGUAGES = ("curl", "Python", "JavaScript")


def texts(window: MainWindow) -> list[str]:
    page = window.info_page
    return [label.text() for label in page.findChildren(QLabel)] + [b.text() for b in page.examples()]


def test_the_help_lives_in_resources_as_documents() -> None:
    for name in SECTIONS:
        document = (HELP_DIR / f"{name}.md").read_text(encoding="utf-8")
        assert document.startswith("#")
    headings = "\n".join((HELP_DIR / f"{name}.md").read_text(encoding="utf-8") for name in SECTIONS)
    for section in (
        "Overview",
        "Features",
        "Getting started",
        "Best practices",
        "OpenAI compatibility",
        "Support",
    ):
        assert f"## {section}" in headings


def test_every_endpoint_has_an_example_in_each_language_with_a_copy_button(
    qtbot: QtBot, window: MainWindow
) -> None:
    examples = window.info_page.examples()
    assert [(b.section, b.title) for b in examples] == [(e, lang) for e in ENDPOINTS for lang in LANGUAGES]
    for block in examples:
        tabs = opened(block.parentWidget())
        while not isinstance(tabs, QTabWidget):
            tabs = opened(tabs.parentWidget())
        tabs.setCurrentWidget(block)
        click(qtbot, block.copy_button)
        assert QApplication.clipboard().text() == block.text()
        assert block.copy_button.text() == "Copied"


def test_examples_use_the_real_address_and_the_loaded_models(qtbot: QtBot, window: MainWindow) -> None:
    base_url = window.server.view.base_url
    everything = "\n".join(texts(window))
    assert "{{" not in everything and "}}" not in everything
    for block in window.info_page.examples():
        assert base_url in block.text()
        wanted = "fake-embed" if block.section == "Embeddings" else "fake-chat"
        if block.section != "List the models":
            assert f"{wanted}" in block.text()
    assert "`fake-chat` (chat), `fake-embed` (embeddings)" in everything
    assert "text only" in everything.lower() and "images, audio or files" in everything


def test_the_examples_follow_the_server_to_the_lan(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page(PAGES.index("Settings"))
    page = window.settings_page
    click(qtbot, page.lan_check)
    with qtbot.waitSignal(page.network_applied, timeout=15_000):
        click(qtbot, page.apply_button)
    view = window.server.view
    qtbot.waitUntil(lambda: all(view.base_url in b.text() for b in window.info_page.examples()))
    if view.lan_address is not None:  # a machine with a network: the LAN address, not the loopback one
        assert "127.0.0.1" not in "\n".join(b.text() for b in window.info_page.examples())
    assert any("LAN serving is on" in text for text in texts(window))


def _run(block: CodeBlock, key: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": key}
    if block.title == "curl":
        command = [
            "bash",
            "-c",
            "set -euo pipefail\n" + block.text().replace("curl ", "curl -sS --fail-with-body ", 1),
        ]
    elif block.title == "Python":
        command = [sys.executable, "-c", block.text()]
    else:
        script = workdir / f"example-{abs(hash(block.text()))}.mjs"
        script.write_text(block.text(), encoding="utf-8")
        command = ["node", str(script)]
    return subprocess.run(command, env=env, cwd=workdir, capture_output=True, text=True, timeout=60)


def test_every_example_works_against_this_server(window: MainWindow, tmp_path: Path) -> None:
    key, _ = window.services.keys.create("examples")
    blocks = window.info_page.examples()
    node = NODE_MODULES.is_dir() and shutil.which("node") is not None
    if node:
        (tmp_path / "node_modules").symlink_to(NODE_MODULES)  # ES modules resolve packages beside the script
    else:
        blocks = [b for b in blocks if b.title != "JavaScript"]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda b: _run(b, key, tmp_path), blocks))
    for block, result in zip(blocks, results, strict=True):
        assert result.returncode == 0, f"{block.section} / {block.title}:\n{result.stdout}\n{result.stderr}"
    outputs = {(b.section, b.title): r.stdout for b, r in zip(blocks, results, strict=True)}
    assert "fake-chat" in outputs[("List the models", "Python")]
    assert "Say hello in one short sentence." in outputs[("Chat completions", "Python")]
    assert "2 vectors of 64 numbers" in outputs[("Embeddings", "Python")]
    assert '"max_tokens":100' not in outputs[("Chat completions", "curl")]  # a reply, not the request
    assert '"object":"response"' in outputs[("Responses", "curl")].replace(" ", "")
    if not node:
        pytest.skip("the JavaScript examples need node and tests/clients/node_modules (make test-clients)")


def test_parse_groups_consecutive_code_blocks_under_their_heading() -> None:
    parts = parse("# A\n\ntext\n\n### Sub\n\n```bash curl\none\n```\n\n```python Python\ntwo\n```\nafter\n")
    kinds = [type(p).__name__ for p in parts]
    assert kinds == ["Prose", "Example", "Prose"]
    example = parts[1]
    assert example.section == "Sub"  # type: ignore[union-attr]
    assert [(c.title, c.text) for c in example.blocks] == [("curl", "one"), ("Python", "two")]  # type: ignore[union-attr]


def _wheel(widget: QWidget, at: QPoint, steps: int = -3) -> None:
    """Turn the mouse wheel (downwards for negative steps) over ``at`` in ``widget``."""
    event = QWheelEvent(
        QPointF(at),
        QPointF(widget.mapToGlobal(at)),
        QPoint(0, 0),
        QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(widget, event)


def test_the_mouse_wheel_scrolls_the_page_over_tabs_and_code(qtbot: QtBot, window: MainWindow) -> None:
    window.show_page(0)
    area = window.stack.currentWidget()
    assert isinstance(area, QScrollArea)
    scroll = area.verticalScrollBar()
    block = next(b for b in window.info_page.examples() if b.section == "Chat completions")
    tabs = block.parentWidget()
    while not isinstance(tabs, QTabWidget):
        tabs = opened(tabs).parentWidget()
    area.ensureWidgetVisible(tabs)
    qtbot.wait(20)
    scroll.setValue(scroll.maximum() // 2)
    qtbot.wait(20)
    chosen = tabs.currentIndex()
    before = scroll.value()
    _wheel(tabs.tabBar(), tabs.tabBar().rect().center())
    assert tabs.currentIndex() == chosen, "the wheel switched the example's language"
    assert scroll.value() > before, "the page did not scroll"
    code = tabs.currentWidget().findChild(QPlainTextEdit)
    assert code is not None
    code.horizontalScrollBar().setMaximum(100)  # as if a line were too long for the box
    sideways, before = code.horizontalScrollBar().value(), scroll.value()
    _wheel(code.viewport(), code.viewport().rect().center(), steps=3)
    assert code.horizontalScrollBar().value() == sideways, "the wheel scrolled the code sideways"
    assert scroll.value() < before


def test_no_example_needs_scrolling_sideways_at_the_default_size(qtbot: QtBot, window: MainWindow) -> None:
    assert window.size().toTuple() == (1100, 760)
    window.show_page(0)
    for block in window.info_page.examples():
        tabs = block.parentWidget()
        while not isinstance(tabs, QTabWidget):
            tabs = opened(tabs).parentWidget()
        tabs.setCurrentWidget(block)
        qtbot.wait(10)
        assert block.code.horizontalScrollBar().maximum() == 0, f"{block.section} / {block.title}"


def test_every_example_that_generates_caps_its_reply(window: MainWindow) -> None:
    for block in window.info_page.examples():
        if block.section in ("Chat completions", "Responses"):
            cap = "max_output_tokens" if block.section == "Responses" else "max_tokens"
            assert cap in block.text(), f"{block.section} / {block.title} sets no maximum"

"""A help document from ``resources/help``: Markdown prose, with code examples as copyable blocks.

Fenced code blocks become :class:`CodeBlock` widgets; code blocks that follow one another become the
tabs of one example (``curl`` · ``Python`` · ``JavaScript``), titled by the words after the fence's
language (```` ```python Python ````). ``{{name}}`` placeholders are filled from a mapping and can be
refilled at any time (the server's address and the loaded models change while the window is open).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QLabel, QTabBar, QTabWidget, QVBoxLayout, QWidget

from app.widgets.code_block import CodeBlock, scroll_page

_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")
_FENCE = re.compile(r"^```\s*([\w+-]*)\s*(.*)$")
_HEADING = re.compile(r"^#{1,6}\s+(.*)$")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Replace ``{{name}}`` with ``values[name]``; unknown names stay visible rather than vanish."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


@dataclass(frozen=True)
class Prose:
    text: str


@dataclass(frozen=True)
class Code:
    language: str
    title: str
    text: str


@dataclass(frozen=True)
class Example:
    section: str
    blocks: tuple[Code, ...]


Part = Prose | Example


def parse(markdown: str) -> list[Part]:
    """Split a document into prose and examples (runs of code blocks under the latest heading)."""
    parts: list[Part] = []
    prose: list[str] = []
    run: list[Code] = []
    section = ""
    lines = iter(markdown.splitlines())

    def close_run() -> None:
        if run:
            parts.append(Example(section, tuple(run)))
            run.clear()

    for line in lines:
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and run:
                close_run()
            if line.strip() or prose:
                prose.append(line)
            heading = _HEADING.match(line)
            if heading:
                section = heading.group(1).strip()
            continue
        if "".join(prose).strip():
            parts.append(Prose("\n".join(prose).strip()))
        prose.clear()
        body: list[str] = []
        for code_line in lines:
            if code_line.startswith("```"):
                break
            body.append(code_line)
        language = fence.group(1) or "text"
        run.append(Code(language, fence.group(2).strip() or language, "\n".join(body)))
    close_run()
    if "".join(prose).strip():
        parts.append(Prose("\n".join(prose).strip()))
    return parts


class _WheelPassingTabBar(QTabBar):
    def wheelEvent(self, event: QWheelEvent) -> None:
        scroll_page(self, event)  # tabs change by click or keyboard only


class ExampleTabs(QTabWidget):
    """The languages of one example. Turning the mouse wheel over them scrolls the page, as it does
    everywhere else on it, rather than switch the language under the pointer."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setTabBar(_WheelPassingTabBar(self))
        self.setDocumentMode(True)


class DocumentView(QWidget):
    """One rendered help document."""

    copied = Signal(str)
    """An example was copied to the clipboard."""

    def __init__(self, markdown: str, values: Mapping[str, str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._labels: list[tuple[QLabel, str]] = []
        self._blocks: list[tuple[CodeBlock, str]] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for part in parse(markdown):
            if isinstance(part, Prose):
                layout.addWidget(self._prose(part.text))
            else:
                layout.addWidget(self._example(part))
        self.set_values(values)

    def _prose(self, text: str) -> QLabel:
        label = QLabel(self)
        label.setTextFormat(Qt.TextFormat.MarkdownText)
        label.setWordWrap(True)
        label.setOpenExternalLinks(True)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextBrowserInteraction)
        label.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # selectable with the mouse; Tab goes to controls only
        self._labels.append((label, text))
        return label

    def _example(self, example: Example) -> QWidget:
        # The tabs exist before the blocks inside them, so Tab visits the tab bar first, then the example.
        tabs = ExampleTabs(self) if len(example.blocks) > 1 else None
        owner: QWidget = tabs if tabs is not None else self
        blocks = [
            CodeBlock("", section=example.section, title=code.title, language=code.language, parent=owner)
            for code in example.blocks
        ]
        for block, code in zip(blocks, example.blocks, strict=True):
            block.copied.connect(self.copied)
            self._blocks.append((block, code.text))
        if tabs is None:
            return blocks[0]
        tabs.setAccessibleName(f"{example.section} examples")
        for block in blocks:
            tabs.addTab(block, block.title)
        return tabs

    def set_values(self, values: Mapping[str, str]) -> None:
        """Fill the placeholders again (only what changed is redrawn)."""
        for label, template in self._labels:
            text = fill(template, values)
            if text != label.text():
                label.setText(text)
        for block, template in self._blocks:
            block.set_text(fill(template, values))

    def code_blocks(self) -> list[CodeBlock]:
        return [block for block, _ in self._blocks]

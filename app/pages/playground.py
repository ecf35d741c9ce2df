"""Playground: try the models as a client would, through the server's own API, with a key the window
made for itself (so what the Playground spends shows in Usage and the Logs like any other key's).

Chat with a loaded chat model (see :mod:`app.pages.playground_chat`), or compare two texts by the
embeddings of a loaded embedding model.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QShowEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.pages.playground_chat import ChatPanel
from app.playground_client import KEY_NAME, Similarity, playground_key, similarity
from app.server_control import ServerView
from app.tasks import Tasks
from app.theme import set_tone
from server.access.keys import KeyService


class EmbeddingPanel(QWidget):
    """Two texts and how alike a loaded embedding model finds them."""

    compared = Signal(object)
    """A comparison finished (a :class:`Similarity`)."""

    def __init__(self, tasks: Tasks, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._tasks = tasks
        self._base_url = ""
        self._key = ""
        self.model = QComboBox(self)
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self.first = QPlainTextEdit("The quick brown fox jumps over the lazy dog.", self)
        self.second = QPlainTextEdit("A fast auburn fox leaps over a sleepy hound.", self)
        for edit in (self.first, self.second):
            edit.setTabChangesFocus(True)
            edit.setMaximumHeight(edit.fontMetrics().lineSpacing() * 4 + 16)
        self.compare_button = QPushButton("&Compare", self)
        self.compare_button.clicked.connect(self.compare)
        self.meter = QProgressBar(self)
        self.meter.setRange(0, 1000)
        self.meter.setTextVisible(False)
        self.meter.setAccessibleName("How alike the texts are")
        self.result = QLabel(self)
        self.result.setWordWrap(True)
        form = QFormLayout()
        form.addRow(self._label("&Model:", self.model), self.model)
        form.addRow(self._label("&First text:", self.first), self.first)
        form.addRow(self._label("Seco&nd text:", self.second), self.second)
        buttons = QHBoxLayout()
        buttons.addWidget(self.compare_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.meter)
        layout.addWidget(self.result)
        layout.addStretch(1)
        self._update()

    def _label(self, text: str, buddy: QWidget) -> QLabel:
        label = QLabel(text, self)
        label.setBuddy(buddy)
        return label

    def set_models(self, names: list[str]) -> None:
        if names != [self.model.itemText(i) for i in range(self.model.count())]:
            current = self.model.currentText()
            self.model.clear()
            self.model.addItems(names)
            if current in names:
                self.model.setCurrentText(current)
        self._update()

    def set_server(self, base_url: str) -> None:
        self._base_url = base_url
        self._update()

    def set_key(self, secret: str) -> None:
        self._key = secret
        self._update()

    def _update(self) -> None:
        self.compare_button.setEnabled(bool(self._base_url and self._key) and self.model.count() > 0)

    def compare(self) -> None:
        first, second = self.first.toPlainText().strip(), self.second.toPlainText().strip()
        if not (first and second) or not self.compare_button.isEnabled():
            return
        self.compare_button.setEnabled(False)
        self.result.setText("Comparing…")
        set_tone(self.result, "")
        self._tasks.spawn(self._compare(self.model.currentText(), first, second), "comparing two texts")

    async def _compare(self, model: str, first: str, second: str) -> None:
        try:
            found: Similarity = await self._tasks.call(
                similarity, self._base_url, self._key, model, first, second
            )
        finally:
            self._update()
        if found.error is not None or found.cosine is None:
            self.result.setText(f"The request failed: {found.error}")
            set_tone(self.result, "error")
        else:
            self.meter.setValue(round(max(0.0, found.cosine) * 1000))
            self.result.setText(
                f"Similarity {found.cosine:.3f} (cosine of the two {found.dimensions}-number embeddings: 1 "
                f"is the same meaning, 0 unrelated); {found.tokens} tokens."
            )
        self.compared.emit(found)


class PlaygroundPage(QWidget):
    """The Playground page."""

    key_ready = Signal(str)
    """The window's own key is known (the argument is its id)."""

    def __init__(self, keys: KeyService, data_dir: Path, tasks: Tasks, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._keys = keys
        self._data_dir = data_dir
        self._tasks = tasks
        self._key_id: str | None = None
        self._finding_key = False
        title = QLabel("<h2>Playground</h2>", self)
        self.intro = QLabel(self)
        self.intro.setWordWrap(True)
        self.intro.setTextFormat(Qt.TextFormat.RichText)
        self.intro.setText(
            f"Try the loaded models through this server's own API, as any client would. Requests use a key "
            f"this window made for itself, <b>{KEY_NAME}</b>: what they spend shows on the Usage and Logs "
            "pages under it."
        )
        self.tabs = QTabWidget(self)
        self.tabs.setAccessibleName("Playground")
        self.chat = ChatPanel(tasks, self.tabs)
        self.embeddings = EmbeddingPanel(tasks, self.tabs)
        self.tabs.addTab(self.chat, "Chat")
        self.tabs.addTab(self.embeddings, "Embeddings")
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.intro)
        layout.addWidget(self.tabs, 1)

    @property
    def key_id(self) -> str | None:
        return self._key_id

    def show_server(self, view: ServerView) -> None:
        """The server's address and loaded models changed."""
        # The loopback address: the window is on this computer, whichever addresses the LAN uses.
        base_url = f"http://127.0.0.1:{view.port}/v1" if view.running else ""
        self.chat.set_server(base_url)
        self.embeddings.set_server(base_url)
        self.chat.set_models(view.loaded("chat"))
        self.embeddings.set_models(view.loaded("embedding"))

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.find_key()

    def find_key(self) -> None:
        """Make sure the window's own key exists and still works (a new one if it was revoked)."""
        if not self._finding_key:
            self._finding_key = True
            self._tasks.spawn(self._find_key(), "finding the Playground's key")

    async def _find_key(self) -> None:
        try:
            secret, record = await self._tasks.call(playground_key, self._keys, self._data_dir)
        finally:
            self._finding_key = False
        self._key_id = record.id
        self.chat.set_key(secret, record.hint)
        self.embeddings.set_key(secret)
        self.key_ready.emit(record.id)

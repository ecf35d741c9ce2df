"""The Playground's chat: a conversation with a loaded chat model, streamed as it is generated, each
reply's reasoning folded away under a button that opens it.

Requests go through the server's own API (see :mod:`app.playground_client`) on a worker thread; each
piece of the reply comes back to the GUI thread as a signal.
"""

from __future__ import annotations

import threading
import time

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.playground_client import ChatOutcome, stream_chat
from app.tasks import Tasks
from app.theme import Tone, set_tone
from app.widgets.flow import FlowRow

DEFAULT_MAX_TOKENS = 512


class Pieces(QObject):
    """Carries the pieces of a reply from the worker thread to the GUI thread."""

    arrived = Signal(str, str)
    """Text and reasoning of one piece."""


class MessageView(QFrame):
    """One turn of the conversation; a reply's reasoning is folded until its button is pressed."""

    def __init__(self, role: str, text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.role = role
        self.setFrameShape(QFrame.Shape.StyledPanel)
        heading = QLabel(f"<b>{'You' if role == 'user' else 'Assistant'}</b>", self)
        self.reasoning_button = QToolButton(self)
        self.reasoning_button.setCheckable(True)
        self.reasoning_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.reasoning_button.setArrowType(Qt.ArrowType.RightArrow)
        self.reasoning_button.setAccessibleName("Show or hide the model's reasoning")
        self.reasoning_button.toggled.connect(self._fold)
        self.reasoning_button.hide()
        self.reasoning = QLabel(self)
        self.reasoning.setWordWrap(True)
        self.reasoning.setTextFormat(Qt.TextFormat.PlainText)
        self.reasoning.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.reasoning.setAccessibleName("The model's reasoning")
        self.reasoning.setIndent(12)
        set_tone(self.reasoning, "")
        self.reasoning.setEnabled(False)  # drawn in the muted colour of disabled text: it is not the answer
        self.reasoning.hide()
        self.text = QLabel(text, self)
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setAccessibleName("Your message" if role == "user" else "The reply")
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(self.reasoning_button, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.reasoning)
        layout.addWidget(self.text)
        self._content: list[str] = [text]
        self._thoughts: list[str] = []

    def add(self, text: str, reasoning: str) -> None:
        if reasoning:
            self._thoughts.append(reasoning)
            self.reasoning.setText("".join(self._thoughts).strip())
            words = len(self.reasoning.text().split())
            self.reasoning_button.setText(f"Reasoning ({words} words)")
            self.reasoning_button.show()
        if text:
            self._content.append(text)
            self.text.setText("".join(self._content).lstrip())

    def content(self) -> str:
        return "".join(self._content).strip()

    def thoughts(self) -> str:
        return "".join(self._thoughts).strip()

    def _fold(self, open_: bool) -> None:
        self.reasoning.setVisible(open_)
        self.reasoning_button.setArrowType(Qt.ArrowType.DownArrow if open_ else Qt.ArrowType.RightArrow)


class ChatPanel(QWidget):
    """Model, length and system prompt; the conversation; the message box with Send, Stop and Clear."""

    reply_finished = Signal(object)
    """A reply ended (a :class:`ChatOutcome`)."""

    def __init__(self, tasks: Tasks, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._tasks = tasks
        self._base_url = ""
        self._key: tuple[str, str] | None = None
        self._stop = threading.Event()
        self._streaming = False
        self.messages: list[MessageView] = []
        self.pieces = Pieces(self)
        self.pieces.arrived.connect(self._arrived)

        self.settings = FlowRow(self)
        group = self.settings.group()
        model_label = QLabel("&Model:", group)
        self.model = QComboBox(group)
        self.model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.model.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        model_label.setBuddy(self.model)
        FlowRow.fill(group, model_label, self.model)
        group = self.settings.group()
        length_label = QLabel("Longest &reply:", group)
        self.max_tokens = QSpinBox(group)
        self.max_tokens.setRange(1, 32768)
        self.max_tokens.setValue(DEFAULT_MAX_TOKENS)
        self.max_tokens.setSuffix(" tokens")
        self.max_tokens.setGroupSeparatorShown(True)
        length_label.setBuddy(self.max_tokens)
        FlowRow.fill(group, length_label, self.max_tokens)
        system_label = QLabel("S&ystem prompt:", self)
        self.system = QLineEdit(self)
        self.system.setPlaceholderText("optional: how the assistant should behave")
        system_label.setBuddy(self.system)
        self.transcript = QWidget(self)
        self.turns = QVBoxLayout(self.transcript)
        self.turns.addStretch(1)
        self.view = QScrollArea(self)
        self.view.setWidgetResizable(True)
        self.view.setWidget(self.transcript)
        self.view.setMinimumHeight(200)
        self.view.setAccessibleName("The conversation")
        self.input = QPlainTextEdit(self)
        self.input.setPlaceholderText("Write a message (Ctrl+Enter sends it)")
        self.input.setAccessibleName("Your message")
        self.input.setTabChangesFocus(True)
        self.input.setMaximumHeight(self.input.fontMetrics().lineSpacing() * 4 + 16)
        self.send_button = QPushButton("&Send", self)
        self.send_button.setToolTip("Send the message (Ctrl+Enter)")
        self.stop_button = QPushButton("S&top", self)
        self.stop_button.setToolTip("Stop the reply here (what was generated is billed)")
        self.clear_button = QPushButton("C&lear", self)
        self.clear_button.setToolTip("Start a new conversation")
        self.status = QLabel(self)
        self.status.setWordWrap(True)
        self.send_button.clicked.connect(self.send)
        self.stop_button.clicked.connect(self.stop)
        self.clear_button.clicked.connect(self.clear)
        self.input.installEventFilter(self)  # Ctrl+Enter sends

        system = QHBoxLayout()
        system.addWidget(system_label)
        system.addWidget(self.system, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.send_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.clear_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.settings)
        layout.addLayout(system)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.input)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self._update_buttons()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.input
            and isinstance(event, QKeyEvent)
            and event.type() == QEvent.Type.KeyPress
            and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
            and event.modifiers() & Qt.KeyboardModifier.ControlModifier
        ):
            self.send()
            return True
        return super().eventFilter(watched, event)

    # -- what it talks to ------------------------------------------------------------------------
    def set_models(self, names: list[str]) -> None:
        current = self.model.currentText()
        if names == [self.model.itemText(i) for i in range(self.model.count())]:
            return
        self.model.clear()
        self.model.addItems(names)
        if current in names:
            self.model.setCurrentText(current)
        self._update_buttons()

    def set_server(self, base_url: str) -> None:
        """The address to send to ("" while the server is not running)."""
        self._base_url = base_url
        self._update_buttons()

    def set_key(self, secret: str, hint: str) -> None:
        self._key = (secret, hint)
        self._update_buttons()

    def _update_buttons(self) -> None:
        ready = bool(self._base_url) and self.model.count() > 0
        self.send_button.setEnabled(ready and not self._streaming)
        self.stop_button.setEnabled(self._streaming)
        self.clear_button.setEnabled(not self._streaming and bool(self.messages))
        if not self._streaming:
            if not self._base_url:
                self._say("The server is not running: start it to use the Playground.", "warning")
            elif self.model.count() == 0:
                self._say("No chat model is loaded (see the Models page).", "warning")
            elif self.status.property("tone") == "warning":
                self._say("", "")

    def _say(self, text: str, tone: Tone) -> None:
        self.status.setText(text)
        set_tone(self.status, tone)

    # -- talking -----------------------------------------------------------------------------------
    def conversation(self) -> list[dict[str, str]]:
        """The messages sent with the next request: the system prompt, then every turn so far."""
        turns = (
            [{"role": "system", "content": self.system.text().strip()}] if self.system.text().strip() else []
        )
        return turns + [{"role": m.role, "content": m.content()} for m in self.messages if m.content()]

    def send(self) -> None:
        text = self.input.toPlainText().strip()
        if not text or not self.send_button.isEnabled() or self._key is None:
            return
        self.input.clear()
        self._add(MessageView("user", text, self.transcript))
        messages = self.conversation()
        reply = MessageView("assistant", "", self.transcript)
        self._add(reply)
        self._stop.clear()
        self._streaming = True
        self._update_buttons()
        self._say("Generating…", "")
        self._tasks.spawn(
            self._stream(self.model.currentText(), messages, self.max_tokens.value()),
            "chatting in the Playground",
        )

    def _add(self, message: MessageView) -> None:
        self.messages.append(message)
        self.turns.insertWidget(self.turns.count() - 1, message)
        self.view.ensureWidgetVisible(message)

    async def _stream(self, model: str, messages: list[dict[str, str]], max_tokens: int) -> None:
        assert self._key is not None
        started = time.monotonic()
        try:
            outcome: ChatOutcome = await self._tasks.call(
                stream_chat,
                self._base_url,
                self._key[0],
                model,
                messages,
                max_tokens,
                self._stop,
                self.pieces.arrived.emit,
            )
        finally:
            self._streaming = False
            self._update_buttons()
        seconds = time.monotonic() - started
        if outcome.error is not None:
            self._say(f"The request failed: {outcome.error}", "error")
        elif outcome.stopped:
            self._say("Stopped. What was generated is billed to this window's key.", "")
        else:
            tokens = f"{outcome.output_tokens} tokens" if outcome.output_tokens is not None else "the reply"
            ending = " (the longest reply allowed)" if outcome.finish_reason == "length" else ""
            self._say(f"{tokens} in {seconds:.1f} s{ending}.", "good")
        self.reply_finished.emit(outcome)

    def _arrived(self, text: str, reasoning: str) -> None:
        if self.messages:
            self.messages[-1].add(text, reasoning)
            self.view.ensureWidgetVisible(self.messages[-1].text)

    def stop(self) -> None:
        self._stop.set()

    def clear(self) -> None:
        for message in self.messages:
            self.turns.removeWidget(message)
            message.deleteLater()
        self.messages = []
        self._say("", "")
        self._update_buttons()

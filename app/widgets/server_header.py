"""The strip above every page: where the server listens (with a button that copies the address, and each
LAN address when there are several), for whom, which models are loaded, how many requests it has
answered, and a button to start or stop it."""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMenu,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.server_control import ServerController, ServerView
from app.tasks import Tasks
from app.theme import Tone, set_tone
from server.engines.manager import ModelStatus

MODEL_STATES = {"loaded": "ready", "loading": "loading…", "failed": "failed", "unloaded": "not loaded"}
COPIED_FEEDBACK_MS = 2000


def models_text(models: tuple[ModelStatus, ...]) -> str:
    if not models:
        return "Models: none configured"
    return "Models: " + " · ".join(f"{m.name} ({MODEL_STATES.get(m.state, m.state)})" for m in models)


class ServerHeader(QFrame):
    """Live status of the server, with start and stop."""

    copied = Signal(str)
    """An address was put on the clipboard."""

    def __init__(self, server: ServerController, tasks: Tasks, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._server = server
        self._tasks = tasks
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.state = QLabel(self)
        self.state.setAccessibleName("Server state")
        self.address = QLabel(self)
        self.address.setAccessibleName("Server address")
        self.address.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_button = QPushButton("&Copy", self)
        self.copy_button.setAccessibleName("Copy the base URL")
        self.copy_button.setToolTip("Copy the address clients use (their base URL)")
        self.copy_button.clicked.connect(lambda: self.copy(self._urls[0] if self._urls else ""))
        self.copy_menu = QMenu(self)
        self.more_button = QToolButton(self)
        self.more_button.setText("All &addresses")
        self.more_button.setAccessibleName("Copy another address of this computer")
        self.more_button.setToolTip("Every address other computers may reach this one at")
        self.more_button.setMenu(self.copy_menu)
        self.more_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.more_button.hide()
        self._urls: list[str] = []
        self._reset = QTimer(self)
        self._reset.setSingleShot(True)
        self._reset.setInterval(COPIED_FEEDBACK_MS)
        self._reset.timeout.connect(lambda: self.copy_button.setText("&Copy"))
        self.scope = QLabel(self)
        self.scope.setAccessibleName("Who can reach the server")
        self.models = QLabel(self)
        self.models.setAccessibleName("Loaded models")
        self.models.setWordWrap(True)
        self.requests = QLabel(self)
        self.requests.setAccessibleName("Requests answered")
        self.storage = QLabel(self)
        self.storage.setAccessibleName("Storage problem")
        self.storage.setWordWrap(True)
        self.storage.hide()
        self.toggle = QPushButton(self)
        self.toggle.setAccessibleName("Start or stop the server")
        self.toggle.clicked.connect(self._toggle)

        top = QHBoxLayout()
        top.addWidget(self.state)
        top.addWidget(self.address)
        top.addWidget(self.copy_button)
        top.addWidget(self.more_button)
        top.addStretch(1)
        top.addWidget(self.toggle)
        bottom = QHBoxLayout()
        bottom.addWidget(self.scope)
        bottom.addWidget(self.models, 1)
        bottom.addWidget(self.requests)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(bottom)
        layout.addWidget(self.storage)
        server.status_changed.connect(self.show_status)
        self.show_status(server.view)

    def show_status(self, view: ServerView) -> None:
        tone: Tone
        if view.transition is not None:
            state, tone = ("Starting…" if view.transition == "starting" else "Stopping…"), ""
        elif view.running:
            state, tone = "Running", "good"
        else:
            state, tone = "Stopped", "error" if view.error else ""
        self.state.setText(f"<b>{state}</b>")
        if self.state.property("tone") != tone:
            set_tone(self.state, tone)
        if view.running:
            self.address.setText(f"at {view.base_url}")
        elif view.error:
            self.address.setText(view.error)
        else:
            self.address.setText("not listening")
        self._show_urls(view.urls() if view.running else [])
        if view.lan:
            self.scope.setText(f"LAN: {view.lan_address or 'no network'}")
        else:
            self.scope.setText("This computer only")
        self.models.setText(models_text(view.models))
        recorded = view.recorded if view.recorded is not None else view.requests
        self.requests.setText(f"Requests: {recorded:,}")
        self.requests.setToolTip(
            f"{recorded:,} requests recorded in all, {view.requests:,} of them since this window opened"
        )
        if view.storage_error:
            self.storage.setText(
                f"<b>Usage cannot be recorded:</b> {view.storage_error}. Requests already recorded are safe; "
                "new ones are kept in memory and written when the data folder can be written again."
            )
            set_tone(self.storage, "error")
        self.storage.setVisible(bool(view.storage_error))
        self.toggle.setText("&Stop server" if view.running else "St&art server")
        self.toggle.setEnabled(view.transition is None)

    def _show_urls(self, urls: list[str]) -> None:
        """The copy button copies the main address; with several, a menu offers each."""
        self.copy_button.setVisible(bool(urls))
        self.more_button.setVisible(len(urls) > 1)
        if urls == self._urls:
            return
        self._urls = urls
        self.copy_menu.clear()
        for url in urls:
            action = QAction(f"Copy {url}", self.copy_menu)
            action.triggered.connect(lambda _=False, url=url: self.copy(url))
            self.copy_menu.addAction(action)

    def urls(self) -> list[str]:
        """The addresses the copy button offers, the one it copies first."""
        return list(self._urls)

    def copy(self, url: str) -> None:
        if url:
            QApplication.clipboard().setText(url)
            self.copy_button.setText("Copied")
            self._reset.start()
            self.copied.emit(url)

    def _toggle(self) -> None:
        action = self._server.stop() if self._server.view.running else self._server.start()
        self._tasks.spawn(
            action, "stopping the server" if self._server.view.running else "starting the server"
        )

"""The strip above every page: where the server listens, for whom, which models are loaded, how many
requests it has answered, and a button to start or stop it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.server_control import ServerController, ServerView
from app.tasks import Tasks
from app.theme import Tone, set_tone
from server.engines.manager import ModelStatus

MODEL_STATES = {"loaded": "ready", "loading": "loading…", "failed": "failed", "unloaded": "not loaded"}


def models_text(models: tuple[ModelStatus, ...]) -> str:
    if not models:
        return "Models: none configured"
    return "Models: " + " · ".join(f"{m.name} ({MODEL_STATES.get(m.state, m.state)})" for m in models)


class ServerHeader(QFrame):
    """Live status of the server, with start and stop."""

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
        top.addWidget(self.address, 1)
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

    def _toggle(self) -> None:
        action = self._server.stop() if self._server.view.running else self._server.start()
        self._tasks.spawn(
            action, "stopping the server" if self._server.view.running else "starting the server"
        )

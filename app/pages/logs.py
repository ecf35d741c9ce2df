"""Logs: the requests as they happen (see :mod:`app.pages.request_log`) and the server's own log (model
loads, crashes, warnings), which also goes to a rotating file in the data folder.

While the page is visible both are read twice a second, the requests off the GUI thread; a request shows
here within a second of its completion.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.pages.request_log import LogRead, RequestLogView, read_requests
from app.tasks import Tasks
from app.widgets.code_block import monospace
from app.widgets.refresh import RefreshWhileShown
from server.logs import LogLine, RecentRecords
from server.services import Services

REFRESH_MS = 500
SERVER_LINES = 2000
LEVELS = (("all", "Everything"), ("warning", "Warnings and errors"))
WARNING = 30


class ServerLogView(QWidget):
    """The server's latest log records, and where the whole log is kept."""

    def __init__(self, records: RecentRecords, path: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._records = records
        self._seen = 0
        self._lines: list[LogLine] = []
        self.level = QComboBox(self)
        for value, text in LEVELS:
            self.level.addItem(text, value)
        self.level.setSizePolicy(QSizePolicy.Policy.Minimum, QSizePolicy.Policy.Fixed)
        self.level.currentIndexChanged.connect(self._refill)
        level_label = QLabel("&Show:", self)
        level_label.setBuddy(self.level)
        self.text = QPlainTextEdit(self)
        self.text.setReadOnly(True)
        self.text.setFont(monospace())
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.text.setMaximumBlockCount(SERVER_LINES)
        self.text.setAccessibleName("The server's log")
        self.text.setTabChangesFocus(True)
        self.path = QLabel(f"The whole log is kept in {path} (rotated at 5 MB, the last four kept).", self)
        self.path.setWordWrap(True)
        self.path.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._path = path
        self.copy_button = QPushButton("Copy the log file's &path", self)
        self.copy_button.clicked.connect(self.copy_path)
        top = QHBoxLayout()
        top.addWidget(level_label)
        top.addWidget(self.level)
        top.addStretch(1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.path, 1)
        bottom.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.text, 1)
        layout.addLayout(bottom)

    def _wanted(self, line: LogLine) -> bool:
        return self.level.currentData() == "all" or line.levelno >= WARNING

    def refresh(self) -> None:
        """Append what was logged since the last look."""
        new = self._records.since(self._seen)
        if not new:
            return
        self._seen = new[-1].number
        self._lines = (self._lines + new)[-SERVER_LINES:]
        for line in new:
            if self._wanted(line):
                self.text.appendPlainText(line.text)

    def _refill(self) -> None:
        self.text.setPlainText("\n".join(line.text for line in self._lines if self._wanted(line)))

    def copy_path(self) -> None:
        QApplication.clipboard().setText(str(self._path))
        self.copy_button.setText("Copied")


class LogsPage(QWidget):
    """The Logs page."""

    requests_read = Signal()
    """The request log was read again (and shows whatever was new)."""

    def __init__(
        self,
        services: Services,
        records: RecentRecords,
        tasks: Tasks,
        currency: str,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._services = services
        self._tasks = tasks
        self._last = 0
        self._reading = False
        title = QLabel("<h2>Logs</h2>", self)
        self.tabs = QTabWidget(self)
        self.tabs.setAccessibleName("Logs")
        self.requests = RequestLogView(currency, self.tabs)
        self.server_log = ServerLogView(records, services.settings.log_path, self.tabs)
        self.tabs.addTab(self.requests, "Requests")
        self.tabs.addTab(self.server_log, "Server log")
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.tabs, 1)
        self._while_shown = RefreshWhileShown(self, REFRESH_MS, self.reload)

    def requests_recorded(self, _count: int) -> None:
        """The server recorded requests: show them now if anyone is looking."""
        if self.isVisible():
            self.reload()

    def set_currency(self, currency: str) -> None:
        self.requests.set_currency(currency)

    def reload(self) -> None:
        self.server_log.refresh()
        if not self._reading:
            self._reading = True
            self._tasks.spawn(self._read(), "reading the request log")

    async def _read(self) -> None:
        try:
            read: LogRead = await self._tasks.call(read_requests, self._services, self._last)
        finally:
            self._reading = False
        self._last = read.last
        self.requests.add(read)
        self.requests_read.emit()

"""Models: a read-only table of the model table's run-time state, refreshed while the page is visible.

Each row is one :class:`server.engines.manager.ModelStatus`: name, kind, engine, state, error, source
and the requests waiting in its queue.
"""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.tasks import Tasks
from server.engines.manager import ModelManager, ModelStatus

REFRESH_MS = 1000
COLUMNS = ("Name", "Kind", "Engine", "State", "Error", "Source", "Waiting")
STATES = {"loading": "Loading…", "loaded": "Loaded", "failed": "Failed", "unloaded": "Not loaded"}


def _cells(status: ModelStatus) -> tuple[str, ...]:
    waiting = str(status.queue.waiting) if status.queue is not None else "–"
    return (
        status.name,
        "Embeddings" if status.kind == "embedding" else "Chat",
        status.engine,
        STATES.get(status.state, status.state),
        status.error or "",
        status.source or "",
        waiting,
    )


class ModelsPage(QWidget):
    """The Models page."""

    models_loaded = Signal()
    """The table has been refilled."""

    def __init__(self, models: ModelManager, tasks: Tasks, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._models = models
        self._tasks = tasks
        self._rows: list[tuple[str, ...]] = []
        self._reading = False
        title = QLabel("<h2>Models</h2>", self)
        intro = QLabel(
            "The models this server runs. Clients name them in the <code>model</code> field of a request.",
            self,
        )
        intro.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setAccessibleName("Models")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setTabKeyNavigation(False)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Source"), QHeaderView.ResizeMode.Stretch)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(intro)
        layout.addWidget(self.table, 1)
        self._timer = QTimer(self)
        self._timer.setInterval(REFRESH_MS)
        self._timer.timeout.connect(self.reload)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._timer.start()
        self.reload()

    def hideEvent(self, event: QHideEvent) -> None:
        super().hideEvent(event)
        self._timer.stop()

    def reload(self) -> None:
        if not self._reading:
            self._reading = True
            self._tasks.spawn(self._load(), "reading the models' state")

    async def _load(self) -> None:
        try:
            statuses = await self._tasks.call(self._models.statuses)
        finally:
            self._reading = False
        rows = [_cells(s) for s in statuses]
        if rows != self._rows:
            self._rows = rows
            self.table.setRowCount(len(rows))
            for r, row in enumerate(rows):
                for c, text in enumerate(row):
                    item = QTableWidgetItem(text)
                    item.setToolTip(text)
                    self.table.setItem(r, c, item)
        self.models_loaded.emit()

    def rows(self) -> list[tuple[str, ...]]:
        return list(self._rows)

"""A read-only table that keeps room for a few rows at any font size, so a page never squeezes it to
one line, and asks for no more than its rows need."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QSize
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem, QWidget


class RowsTable(QTableWidget):
    """A table that asks for room for ``rows`` rows at the current font (all of its rows, if fewer)."""

    def __init__(self, columns: tuple[str, ...], name: str, rows: int, parent: QWidget) -> None:
        super().__init__(0, len(columns), parent)
        self._rows = rows
        self.setAccessibleName(name)
        self.setHorizontalHeaderLabels(columns)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setTabKeyNavigation(False)  # Tab leaves the table; arrow keys move within it
        self.setAlternatingRowColors(True)
        self.setWordWrap(False)  # one line a model; the whole text is in the tooltip and the details
        self.verticalHeader().hide()
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        # Columns as wide as their text: the table scrolls sideways rather than cut a value short.
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)

    def _height(self, rows: int) -> int:
        row = self.fontMetrics().height() + 8
        return (
            self.horizontalHeader().sizeHint().height()
            + rows * row
            + self.horizontalScrollBar().sizeHint().height()
            + 2 * self.frameWidth()
        )

    def sizeHint(self) -> QSize:
        return QSize(super().sizeHint().width(), self._height(max(self._rows, self.rowCount())))

    def minimumSizeHint(self) -> QSize:
        return QSize(super().minimumSizeHint().width(), self._height(self._rows))

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:
            self.updateGeometry()


def fill(table: QTableWidget, rows: list[tuple[str, ...]], tips: list[tuple[str, ...]]) -> None:
    """Put ``rows`` of text in ``table``, each cell with the matching tooltip from ``tips``."""
    if table.rowCount() != len(rows):
        table.setRowCount(len(rows))
        table.updateGeometry()
    for r, (row, tip) in enumerate(zip(rows, tips, strict=True)):
        for c, (text, full) in enumerate(zip(row, tip, strict=True)):
            item = QTableWidgetItem(text)
            item.setToolTip(full)
            table.setItem(r, c, item)

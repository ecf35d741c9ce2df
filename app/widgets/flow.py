"""A row of controls that wraps onto the next line when the window is too narrow (a large font, a small
window), instead of making the whole page scroll sideways.

(Built from box layouts rearranged on resize, not from a ``QLayout`` subclass: PySide's override of
``QLayout.itemAt`` gives ``None`` back to Qt on every pass past the last item, and loses a reference to
``None`` each time, until the interpreter aborts.)
"""

from __future__ import annotations

from PySide6.QtCore import QSize
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QHBoxLayout, QSizePolicy, QVBoxLayout, QWidget


class FlowRow(QWidget):
    """Groups of controls (a label and its field, say) left to right; a group wraps whole, never apart.

    Create each group's widgets with the widget :meth:`group` returns as their parent, in reading order
    (which is the order Tab visits them in), and lay them out in it with :meth:`fill`."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._groups: list[QWidget] = []
        self._lines: list[list[QWidget]] = []
        self._column = QVBoxLayout(self)
        self._column.setContentsMargins(0, 0, 0, 0)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)

    def group(self) -> QWidget:
        """A new, empty group at the end of the row."""
        holder = QWidget(self)
        line = QHBoxLayout(holder)
        line.setContentsMargins(0, 0, 0, 0)
        holder.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self._groups.append(holder)
        self._reflow(self.width() if self.width() > 0 else 1 << 20)
        return holder

    @staticmethod
    def fill(holder: QWidget, *widgets: QWidget) -> None:
        layout = holder.layout()
        assert layout is not None
        for widget in widgets:
            layout.addWidget(widget)

    def lines(self) -> list[list[QWidget]]:
        """The groups on each line, as laid out now."""
        return [list(line) for line in self._lines]

    def minimumSizeHint(self) -> QSize:
        """As wide as the widest group: narrower than that, everything wraps."""
        widest = max((group.sizeHint().width() for group in self._groups), default=0)
        return QSize(widest, super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._reflow(event.size().width())

    def _reflow(self, width: int) -> None:
        spacing = max(self._column.spacing(), 6)
        lines: list[list[QWidget]] = []
        used = 0
        for group in self._groups:
            need = group.sizeHint().width()
            if lines and used + spacing + need <= width:
                lines[-1].append(group)
                used += spacing + need
            else:
                lines.append([group])
                used = need
        if lines == self._lines:
            return
        self._lines = lines
        while self._column.count():
            item = self._column.takeAt(0)
            layout = item.layout() if item is not None else None
            if layout is not None:
                while layout.count():
                    layout.takeAt(0)
                layout.deleteLater()
        for line in lines:
            row = QHBoxLayout()
            for group in line:
                row.addWidget(group)
            row.addStretch(1)
            self._column.addLayout(row)
        self.updateGeometry()

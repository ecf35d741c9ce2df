"""A scroll area that gives its page the whole viewport, but never less than the page needs.

``QScrollArea.setWidgetResizable`` sizes a page that holds word-wrapped text to its *preferred*
height, so a page with a table or a graph always scrolls. This area sizes the page to the larger of the
viewport and the page's *minimum* height for the width it gets: tables and graphs fill the window, and
only a page that cannot fit (the largest font, a small window) scrolls, instead of being squeezed until
its text clips.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QFrame, QScrollArea, QWidget


class PageArea(QScrollArea):
    """Holds one page of the window."""

    def __init__(self, page: QWidget, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.page = page
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Tab goes to the page's controls, which scroll into view
        self.setWidget(page)
        page.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self.page and event.type() == QEvent.Type.LayoutRequest:
            self.fit()
        return super().eventFilter(watched, event)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.fit()

    def _needed_height(self, width: int) -> int:
        layout = self.page.layout()
        if layout is None:
            return self.page.minimumSizeHint().height()
        if layout.hasHeightForWidth():
            return layout.totalMinimumHeightForWidth(width)
        return layout.totalMinimumSize().height()

    def fit(self) -> None:
        """Size the page for the current viewport."""
        page = self.page
        layout = page.layout()
        minimum_width = (
            layout.totalMinimumSize().width() if layout is not None else page.minimumSizeHint().width()
        )
        available = self.maximumViewportSize()
        width = max(available.width(), minimum_width)
        height = self._needed_height(width)
        if height > available.height():
            # A vertical scroll bar will appear and take some of the width.
            width = max(available.width() - self.verticalScrollBar().sizeHint().width(), minimum_width)
            height = self._needed_height(width)
        room = available.height()
        if width > available.width():
            room -= self.horizontalScrollBar().sizeHint().height()
        page.resize(width, max(height, room))

"""Re-reading what a page shows on a timer, only while the page is on screen.

A hidden page reads nothing: the timer starts, and the page reads once at once, when it is shown, and stops
when it is hidden (another page chosen, or the window closed to the tray).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QWidget


class RefreshWhileShown(QObject):
    """Calls ``reload`` when ``page`` is shown and every ``interval_ms`` after, until it is hidden."""

    def __init__(self, page: QWidget, interval_ms: int, reload: Callable[[], None]) -> None:
        super().__init__(page)
        self._page = page
        self._reload = reload
        self.timer = QTimer(self)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(reload)
        page.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._page:
            if event.type() == QEvent.Type.Show:
                self.timer.start()
                self._reload()
            elif event.type() == QEvent.Type.Hide:
                self.timer.stop()
        return super().eventFilter(watched, event)

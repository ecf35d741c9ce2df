"""``ai-service-platform`` (the window) with a probe: the moment its first page has painted.

The application has no start-up hook yet, so this runs the console script's own entry point
(``app.main.main([])``) after creating the QApplication with an event filter that notes the first
paint of the window's current page, writes ``time.monotonic()`` (CLOCK_MONOTONIC, comparable across
processes) to ``BENCH_STARTUP_FILE`` and exits at once. Models load in the background as usual.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEvent, QObject, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication, QMainWindow, QStackedWidget, QWidget  # noqa: E402


class FirstPage(QObject):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.done = False

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802  (Qt's name)
        if self.done or event.type() != QEvent.Type.Paint or not isinstance(watched, QWidget):
            return False
        window = watched.window()
        if not isinstance(window, QMainWindow) or not window.isVisible():
            return False
        stack = window.findChild(QStackedWidget)
        page = stack.currentWidget() if stack is not None else None
        if page is not None and (page is watched or page.isAncestorOf(watched)):
            self.done = True
            QTimer.singleShot(0, self.record)  # after this paint has been handled
        return False

    def record(self) -> None:
        with open(self.path, "w", encoding="utf-8") as out:
            out.write(f"{time.monotonic():.6f}\n")
        os._exit(0)  # the measurement is taken; nothing else of this run matters


def main() -> None:
    app = QApplication(sys.argv[:1])
    probe = FirstPage(os.environ["BENCH_STARTUP_FILE"])
    app.installEventFilter(probe)
    from app.main import main as window_main  # noqa: PLC0415  (after the QApplication, which it reuses)

    sys.exit(window_main([]))


if __name__ == "__main__":
    main()

"""The system tray icon, while the window runs: open the window, serve the LAN on or off, copy the
address clients use, quit. With it the server keeps serving after the window is closed, when the operator
chose so (Settings → When the window is closed)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction, QIcon
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon

from app.server_control import ServerView


class Tray(QObject):
    """The icon and its menu; it says what the operator asked for, the window acts on it."""

    open_requested = Signal()
    lan_toggled = Signal(bool)
    """The operator switched LAN serving on (True) or off from the menu."""
    quit_requested = Signal()

    def __init__(self, icon: QIcon, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.menu = QMenu()
        self.open_action = QAction("&Open AI Service Platform", self)
        self.lan_action = QAction("Serve the &LAN", self)
        self.lan_action.setCheckable(True)
        self.copy_action = QAction("&Copy the base URL", self)
        self.quit_action = QAction("&Quit (stop serving)", self)
        for action in (self.open_action, self.lan_action, self.copy_action):
            self.menu.addAction(action)
        self.menu.addSeparator()
        self.menu.addAction(self.quit_action)
        self.open_action.triggered.connect(self.open_requested)
        self.lan_action.triggered.connect(self.lan_toggled)
        self.quit_action.triggered.connect(self.quit_requested)
        self.copy_action.triggered.connect(self._copy)
        self.icon = QSystemTrayIcon(icon, self)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self._view: ServerView | None = None

    @staticmethod
    def available() -> bool:
        """This desktop shows tray icons (without one, closing the window quits)."""
        return QSystemTrayIcon.isSystemTrayAvailable()

    def show(self) -> None:
        self.icon.show()

    def hide(self) -> None:
        self.icon.hide()

    def show_status(self, view: ServerView) -> None:
        """What the menu and the tooltip say follows the server."""
        self._view = view
        state = "serving" if view.running else "not serving"
        self.icon.setToolTip(
            f"AI Service Platform: {state}" + (f" at {view.base_url}" if view.running else "")
        )
        self.lan_action.setChecked(view.lan)
        self.lan_action.setEnabled(view.transition is None)
        self.copy_action.setEnabled(view.running)

    def notify(self, title: str, message: str) -> None:
        if self.icon.isVisible() and QSystemTrayIcon.supportsMessages():
            self.icon.showMessage(title, message, QSystemTrayIcon.MessageIcon.Information, 8000)

    def _copy(self) -> None:
        """The address clients use (the LAN one while LAN serving is on)."""
        if self._view is not None and self._view.running:
            QApplication.clipboard().setText(self._view.base_url)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_requested.emit()

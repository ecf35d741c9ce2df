"""The question asked before anything that cannot be undone (revoking a key, deleting a file)."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtWidgets import QMessageBox, QWidget


def confirm_destructive(
    parent: QWidget, title: str, text: str, action: str, on_confirmed: Callable[[], object]
) -> QMessageBox:
    """Open (window-modal, without blocking the event loop) a warning whose default is Cancel; call
    ``on_confirmed`` only when the user picks ``action``. The box is returned for the caller to keep."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Cancel, parent)
    button = box.addButton(action, QMessageBox.ButtonRole.DestructiveRole)
    box.setDefaultButton(QMessageBox.StandardButton.Cancel)
    box.finished.connect(lambda _: on_confirmed() if box.clickedButton() is button else None)
    box.open()
    return box
